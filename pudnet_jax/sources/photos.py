"""Photographs bundled with scikit-image (no download): a class per photograph, its images
the photograph's non-overlapping image_size x image_size tiles (rows, then columns; the
ragged right and bottom borders dropped), channels converted as every other source
(`images.to_channels`: ITU-R 601 luma for grayscale). The denoising task's offline data
(DENOISING.md §5.4); `full_images` gives the whole photographs for the full-image
protocol. Only images that `skimage.data` loads from its own package directory are used
(those needing `pooch` and a download are not)."""

from __future__ import annotations

import numpy as np

from pudnet_jax.sources.images import to_channels

# Set → classes (skimage.data loader names; 'motorcycle' is the left view of
# `stereo_motorcycle`). Order fixes the class indices used by configs.
SETS: dict[str, tuple[str, ...]] = {
    'skimage_photos': ('astronaut', 'coffee', 'motorcycle', 'moon', 'rocket', 'coins',
                       'camera', 'chelsea'),
    'skimage_textures': ('brick', 'gravel', 'grass'),
    'skimage_microscopy': ('cell', 'immunohistochemistry'),
    # The first eight as `skimage_photos` (same indices), then the other bundled
    # grayscale-convertible images with at least 16 tiles of 32x32 that no other set
    # uses: a clock, the Hubble deep field, a retina, a scanned page, printed text
    # (the denoising default, configs/denoise.py, trains on them too).
    'skimage_photos_wide': ('astronaut', 'coffee', 'motorcycle', 'moon', 'rocket', 'coins',
                            'camera', 'chelsea', 'clock', 'hubble_deep_field', 'retina',
                            'page', 'text'),
}


def photograph(name: str, channels: int) -> np.ndarray:
    """One bundled photograph as uint8 (H, W, channels)."""
    from skimage import data
    image = data.stereo_motorcycle()[0] if name == 'motorcycle' else getattr(data, name)()
    return to_channels(np.asarray(image)[None], channels, f'skimage.data.{name}')[0]


def tiles(image: np.ndarray, size: int) -> np.ndarray:
    """The non-overlapping size x size tiles of an (H, W, C) image: (n, size, size, C)."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    if rows == 0 or cols == 0:
        raise ValueError(f'a {image.shape[0]}x{image.shape[1]} image has no {size}x{size} tile.')
    cut = image[:rows * size, :cols * size]
    return (cut.reshape(rows, size, cols, size, -1).transpose(0, 2, 1, 3, 4)
            .reshape(rows * cols, size, size, image.shape[-1]))


def full_images(name: str, channels: int, classes=None) -> dict[str, np.ndarray]:
    """{photograph: uint8 (H, W, channels)} of a set (of its `classes` indices if given)."""
    names = SETS[name]
    chosen = range(len(names)) if classes is None else classes
    return {names[c]: photograph(names[c], channels) for c in chosen}


def loader(name: str):
    def load(image_size, channels, data_dir, split):
        names = list(SETS[name])
        parts = [tiles(photograph(n, channels), image_size) for n in names]
        labels = np.concatenate([np.full(len(p), c) for c, p in enumerate(parts)])
        return names, iter([(np.concatenate(parts), labels)])
    return load
