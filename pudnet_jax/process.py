"""Process-wide settings of the entry points (the command line, the benchmarks, the tests).

Importing the library changes none of them; an entry point calls `prepare_process()` first,
before JAX starts a backend (the function works after `import jax` too).
"""

import glob
import os
import sys


def prepare_process() -> None:
    """The settings, each unless the user set it:

    - without an NVIDIA device, JAX's CPU backend up front: with `jax[cuda12]` installed on
      a machine without a GPU, JAX otherwise tries the CUDA plugin first and prints an
      alarming warning before falling back to the CPU;
    - TensorFlow (imported only where TFDS decodes a dataset) quiet at import: its C++ INFO
      lines, oneDNN notice and absl's "before InitializeLog" line (oneDNN off changes
      nothing here: TensorFlow only decodes images).
    (JAX_PLATFORMS, TF_CPP_MIN_LOG_LEVEL and TF_ENABLE_ONEDNN_OPTS set by the user win.)
    """
    if 'JAX_PLATFORMS' not in os.environ and not glob.glob('/dev/nvidia[0-9]*'):
        os.environ['JAX_PLATFORMS'] = 'cpu'
        if 'jax' in sys.modules:     # imported before us: set it before any backend starts
            sys.modules['jax'].config.update('jax_platforms', 'cpu')
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
