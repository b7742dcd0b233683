"""Noise and Noise2Void masking for the denoising task (DENOISING.md §1.3, §5.1).

Pixel scale [0, 1] throughout. `add_gaussian_noise`: σ given on the 0-255 scale (the
paper's σ = 25, 50, 75), float32, not clipped, seeded by a tuple (resumable and
deterministic). `n2v_mask`: jit-able; per image and channel, round(fraction·H·W)
distinct pixels are replaced by the same channel's pixel at a uniform offset in
[−r, r]² (without (0, 0) unless `exclude_center=False`, N2V's `uniform_withCP`), the
borders reflected. The authors' mask indexed CHW tensors as HWC (another colour
channel, a vertical offset only, §1.3): this one is in the right layout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def add_gaussian_noise(clean01: np.ndarray, sigma255: float, seed) -> np.ndarray:
    """clean (…, H, W, C) in [0, 1] + σ/255 · N(0, 1), float32, unclipped; `seed`: an int
    or a tuple of ints (e.g. (seed, group, image))."""
    rng = np.random.default_rng(seed)
    clean = np.asarray(clean01, np.float32)
    return clean + np.float32(sigma255 / 255.0) * rng.standard_normal(clean.shape, np.float32)


def _reflect(i, n):
    """Index i in [-(n-1), 2(n-1)] reflected into [0, n-1] (edge not repeated)."""
    i = jnp.abs(i)
    return jnp.where(i > n - 1, 2 * (n - 1) - i, i)


def n2v_mask(key, images, fraction: float = 0.1, radius: int = 2,
             exclude_center: bool = True):
    """(masked images, mask) for images (N, H, W, C): mask is 1.0 at the replaced pixels.
    Needs H, W > radius."""
    n, h, w, c = images.shape
    count = int(round(fraction * h * w))
    offsets = np.array([(dy, dx) for dy in range(-radius, radius + 1)
                        for dx in range(-radius, radius + 1)
                        if not (exclude_center and dy == 0 and dx == 0)], np.int32)

    def one(key, image):            # image (H, W, C)
        k_pos, k_off = jax.random.split(key)
        # Distinct positions per channel: the first `count` of a random permutation.
        scores = jax.random.uniform(k_pos, (c, h * w))
        pos = jnp.argsort(scores, axis=1)[:, :count]                  # (C, count)
        y, x = pos // w, pos % w
        off = jnp.asarray(offsets)[jax.random.randint(k_off, (c, count), 0, len(offsets))]
        sy, sx = _reflect(y + off[..., 0], h), _reflect(x + off[..., 1], w)
        ch = jnp.broadcast_to(jnp.arange(c)[:, None], (c, count))
        values = image[sy, sx, ch]
        masked = image.at[y, x, ch].set(values)
        mask = jnp.zeros((h, w, c), image.dtype).at[y, x, ch].set(1.0)
        return masked, mask

    return jax.vmap(one)(jax.random.split(key, n), images)
