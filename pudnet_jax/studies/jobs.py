"""Running a study's jobs side by side: each a subprocess with its own log, at most
`parallel` at once, each pinned to a CPU core of its own (Linux `taskset`) when more than
one runs, with a line of progress when a job starts and when it ends."""

from __future__ import annotations

import os
import subprocess
import sys
import time


def run_pinned(jobs, parallel: int = 1, verb: str = 'running', poll_s: float = 2.0) -> dict:
    """`jobs`: (name, command list, log path) in order. Returns {name: exit status}."""
    pending, running, status = list(jobs), [], {}
    free, t0 = list(range(os.cpu_count() or 1)), time.time()
    stamp = lambda: f'[{time.time() - t0:6.0f} s]'
    while pending or running:
        while pending and len(running) < parallel:
            name, cmd, log_path = pending.pop(0)
            os.makedirs(os.path.dirname(log_path) or '.', exist_ok=True)
            core = free.pop(0) if parallel > 1 and free else None
            if core is not None and sys.platform.startswith('linux'):
                cmd = ['taskset', '-c', str(core)] + list(cmd)
            print(f'{stamp()} {verb} {name} ({len(pending)} more waiting): {" ".join(cmd)}',
                  flush=True)
            with open(log_path, 'a') as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            running.append((name, proc, core, log_path))
        time.sleep(poll_s)
        for item in list(running):
            name, proc, core, log_path = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if core is not None:
                free.append(core)
            status[name] = proc.returncode
            said = 'done' if proc.returncode == 0 else f'FAILED (exit {proc.returncode})'
            print(f'{stamp()} {name}: {said}; log in {log_path}', flush=True)
    return status
