"""Writing result files so that a crash never leaves a half-written one behind, and the
workdir lock that keeps two runs from writing into one workdir at once."""

import errno
import fcntl
import json
import os
import threading
from contextlib import contextmanager

from pudnet_jax.errors import UserError

LOCK_FILE = '.lock'


def write_json(path: str, obj, **dump_kwargs) -> str:
    """json.dump to `path` atomically: a temporary file renamed into place.

    Strict JSON: a NaN or infinity is refused (ValueError) rather than written as a bare
    `NaN` that other JSON readers reject; nothing is written then."""
    tmp = path + '.tmp'
    try:
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=2, allow_nan=False, **dump_kwargs)
    except ValueError as e:
        os.remove(tmp)
        raise ValueError(f'{path}: refusing to write a non-finite number ({e}).') from e
    os.replace(tmp, path)
    return path


def write_report(prefix: str, obj, text: str) -> None:
    """A study's outputs: PREFIX.json (`write_json`) and the table PREFIX.md, in
    PREFIX's folder (made if missing)."""
    os.makedirs(os.path.dirname(prefix) or '.', exist_ok=True)
    write_json(prefix + '.json', obj)
    with open(prefix + '.md', 'w') as f:
        f.write(text)


# ----------------------------------------------------------------------------- lock

# Process i > 0 of a multi-process run (`mesh.initialize_distributed`) locks
# `workdir/.lock.<i>`: the processes of one run share the workdir, and process 0's lock
# still keeps a second run out.
_process_index = 0
_held: dict[str, list] = {}          # realpath of a lock file → [fd, depth] (this process)
_held_guard = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(fd: int):
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors='replace').strip()
    return int(text) if text.isdigit() else None


def set_process_index(index: int) -> None:
    global _process_index
    _process_index = int(index)


def lock_file_name() -> str:
    return LOCK_FILE if _process_index == 0 else f'{LOCK_FILE}.{_process_index}'


@contextmanager
def workdir_lock(workdir: str):
    """Holds `workdir/.lock` (an exclusive `flock`, with this process's pid written in
    the file) for the duration, so that a second run on the same workdir refuses at once,
    naming the process that holds it. The kernel releases a `flock` when its process dies
    (even by SIGKILL), so a lock file left by a dead run is simply taken over. Re-entrant
    within one process (train inside compare)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.realpath(os.path.join(workdir, lock_file_name()))
    with _held_guard:
        if path in _held:
            _held[path][1] += 1
            fd = None
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_pid(fd)
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                who = f'process {holder}' if holder else 'another process'
                raise UserError(f'Workdir {workdir!r} is in use by {who} (lock {path}): '
                                f'wait for it to finish, or use another --workdir.') from None
            previous = _read_pid(fd)
            if previous and previous != os.getpid() and not _pid_alive(previous):
                from absl import logging
                logging.warning('Taking over the lock %s left by process %d, which is no '
                                'longer running.', path, previous)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f'{os.getpid()}\n'.encode())
            os.fsync(fd)
            _held[path] = [fd, 1]
    try:
        yield path
    finally:
        with _held_guard:
            entry = _held[path]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[path]
                os.ftruncate(entry[0], 0)
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                os.close(entry[0])
