"""pudnet_jax: PudNet, a hypernetwork that generates the convolution kernels of a ConvNet
for an unseen image dataset in one forward pass (BatchNorm statistics are computed from
that dataset; BatchNorm scale and bias are learned once and shared), in JAX/Flax."""

import glob as _glob
import os as _os
import sys as _sys


def _use_cpu_when_no_gpu() -> None:
    """Without an NVIDIA device, select JAX's CPU backend up front.

    With `jax[cuda12]` installed on a machine without a GPU, JAX otherwise tries the CUDA
    plugin first and prints an alarming warning before falling back to the CPU. An
    explicit JAX_PLATFORMS from the user always wins.
    """
    if 'JAX_PLATFORMS' in _os.environ or _glob.glob('/dev/nvidia[0-9]*'):
        return
    _os.environ['JAX_PLATFORMS'] = 'cpu'
    if 'jax' in _sys.modules:     # imported before us: set it before any backend starts
        _sys.modules['jax'].config.update('jax_platforms', 'cpu')


_use_cpu_when_no_gpu()
# TensorFlow (imported only where TFDS decodes a dataset) logs C++ INFO lines at import;
# its oneDNN notice and absl's "before InitializeLog" line go only with oneDNN off (it
# changes nothing here: TensorFlow only decodes images). A user's own setting wins.
_os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
_os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
