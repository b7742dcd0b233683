"""Image-quality metrics of the denoising task, on the pixel scale [0, 1] (data range 1).

`psnr` (NumPy, float64) and `psnr_jax`, `ssim_jax` (jit-able) per image; a group's value is
the mean of its images' values. The output is clipped to [0, 1], the reference is not
(the clean image already is). SSIM as scikit-image's `structural_similarity` with its
defaults (Wang et al.'s constants K1 = 0.01, K2 = 0.03, a 7x7 uniform window, sample
covariance, the mean over the pixels whose window fits in the image; RGB: the mean over
channels); `tests/test_denoising_parts.py` checks both against `skimage.metrics`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

WINDOW = 7
K1, K2 = 0.01, 0.03


def psnr(clean: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Per image of (N, H, W, C): 10 log10(1 / MSE), float64 (inf for a perfect one)."""
    clean = np.asarray(clean, np.float64)
    out = np.clip(np.asarray(output, np.float64), 0.0, 1.0)
    mse = np.mean((clean - out) ** 2, axis=tuple(range(1, clean.ndim)))
    with np.errstate(divide='ignore'):
        return 10.0 * np.log10(1.0 / mse)


def psnr_jax(clean, output):
    out = jnp.clip(output, 0.0, 1.0)
    mse = jnp.mean(jnp.square(clean - out), axis=tuple(range(1, clean.ndim)))
    return 10.0 * jnp.log10(1.0 / mse)


def _box_mean(x):
    """The 7x7 window mean at every pixel whose window fits (VALID), per channel."""
    window = (1, WINDOW, WINDOW, 1)
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1, 1, 1, 1), 'VALID') / WINDOW**2


def ssim_jax(clean, output):
    """Per image of (N, H, W, C), H and W ≥ 7."""
    x = clean.astype(jnp.float32)
    y = jnp.clip(output, 0.0, 1.0).astype(jnp.float32)
    cov_norm = WINDOW**2 / (WINDOW**2 - 1.0)          # sample covariance
    ux, uy = _box_mean(x), _box_mean(y)
    vx = cov_norm * (_box_mean(x * x) - ux * ux)
    vy = cov_norm * (_box_mean(y * y) - uy * uy)
    vxy = cov_norm * (_box_mean(x * y) - ux * uy)
    c1, c2 = K1**2, K2**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return jnp.mean(s, axis=(1, 2, 3))
