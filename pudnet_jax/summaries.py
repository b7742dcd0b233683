"""TensorBoard scalars without TensorFlow (`ScalarWriter`; `read_scalars` reads them back).

clu's SummaryWriter writes through `tf.summary` (importing TensorFlow, ~6 s and its C++
start-up lines, in every training run) and its default writer also echoes every metric to
the log. This writer appends TensorBoard event records (TFRecord framing from the
`tensorboard` package, scalar summaries as protocol buffers) to one events file, and
nothing else: the progress line of `train` is the only console output per log point.
"""

from __future__ import annotations

import os
import socket
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter


class ScalarWriter:
    """`write_scalars(step, {tag: value})`, `flush()`, `close()`; a context manager."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        name = (f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.'
                f'{os.getpid()}.pudnet')
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, 'ab')
        self._records = RecordWriter(self._file)
        self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())

    def write_scalars(self, step: int, scalars: dict) -> None:
        values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                  for k, v in scalars.items()]
        self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                    summary=summary_pb2.Summary(value=values)))

    def write_text(self, step: int, tag: str, text: str) -> None:
        """A text summary (TensorBoard's Text tab), e.g. the run's config."""
        from tensorboard.compat.proto import tensor_pb2, types_pb2
        from tensorboard.plugins.text import metadata
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING,
                                        string_val=[text.encode()])
        value = summary_pb2.Summary.Value(tag=tag, tensor=tensor,
                                          metadata=metadata.create_summary_metadata(tag, ''))
        self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                    summary=summary_pb2.Summary(value=[value])))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...] by step} from the events files in `logdir` (this writer's
    or TensorFlow's; TFRecord framing read directly). A step written twice (a run resumed
    after its last log point) keeps the later value."""
    import struct
    found: dict[str, dict[int, float]] = {}
    names = sorted(n for n in os.listdir(logdir) if n.startswith('events.out.tfevents'))
    for name in sorted(names, key=lambda n: os.path.getmtime(os.path.join(logdir, n))):
        with open(os.path.join(logdir, name), 'rb') as f:
            data = f.read()
        i = 0
        while i + 12 <= len(data):
            (n,) = struct.unpack('<Q', data[i:i + 8])
            if i + 12 + n + 4 > len(data):
                break                # a record cut short by a killed run
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                if v.HasField('simple_value'):
                    found.setdefault(v.tag, {})[int(event.step)] = float(v.simple_value)
    return {tag: sorted(points.items()) for tag, points in found.items()}
