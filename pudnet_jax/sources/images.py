"""Every image's conversion, in one place: `decode_image` (an image file as Pillow loaded
it → uint8 array: EXIF orientation applied, 16-bit scaled to 8 bits, transparency
composited onto white) and `preprocess` (channels, then a deterministic Pillow bilinear
resize to image_size x image_size, no crop). `PREPROCESSING_VERSION` names this
conversion in every cache (`cache.py`)."""

from __future__ import annotations

import numpy as np

# Bump whenever decoding, channel conversion or resizing changes: old caches are then
# ignored (kept on disk) and rebuilt under the new version.
PREPROCESSING_VERSION = 3     # 3: EXIF orientation, 16-bit scaling, alpha onto white
BACKGROUND = 255                  # transparent pixels become white
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)   # ITU-R 601 luma


def preprocess(images: np.ndarray, image_size: int, channels: int,
               where: str = 'images') -> np.ndarray:
    """(N, H, W[, 1|3]) uint8 → (N, S, S, channels) uint8: channels, then resize."""
    images = to_channels(images, channels, where)
    if images.shape[1:3] == (image_size, image_size):
        return images
    from PIL import Image
    out = np.empty((images.shape[0], image_size, image_size, channels), np.uint8)
    for i, img in enumerate(images):
        pil = Image.fromarray(img[..., 0] if channels == 1 else img)
        resized = np.asarray(pil.resize((image_size, image_size), Image.Resampling.BILINEAR))
        out[i] = resized.reshape(image_size, image_size, channels)
    return out


def to_channels(images: np.ndarray, channels: int, where: str = 'images') -> np.ndarray:
    """(N, H, W[, 1|3|4]) → uint8 (N, H, W, channels): 16-bit scaled, transparency onto
    the background, RGB → gray by ITU-R 601 luma, gray → RGB by repetition; no resize."""
    images = np.asarray(images)
    if images.ndim == 3:        # (N, H, W) grayscale
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f'{where}: expected (N, H, W[, 1|3]) images, got shape {images.shape}.')
    if images.dtype == np.uint16:   # 16-bit: scale, not clip
        images = np.round(images / 257.0).astype(np.uint8)
    elif images.dtype != np.uint8:
        images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    if images.shape[-1] == 4:   # RGBA: composite onto the background
        alpha = images[..., 3:].astype(np.float32) / 255.0
        rgb = images[..., :3].astype(np.float32) * alpha + BACKGROUND * (1.0 - alpha)
        images = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    if images.shape[-1] == 3 and channels == 1:
        gray = images.astype(np.float32) @ GRAY_WEIGHTS
        images = np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None]
    elif images.shape[-1] == 1 and channels == 3:
        images = np.repeat(images, 3, axis=-1)
    return images


_SIXTEEN_BIT = ('I;16', 'I;16L', 'I;16B', 'I;16N')


def decode_image(img) -> np.ndarray:
    """A loaded Pillow image → uint8 (H, W) grayscale or (H, W, 3) RGB.

    The EXIF orientation is applied; 16-bit (and 32-bit integer / float) grayscale is
    scaled to 8 bits, not clipped; transparent pixels (RGBA, LA, palette or grayscale with
    a transparent colour) are composited onto a white background, so that a silhouette
    drawn only in the alpha channel stays visible."""
    from PIL import Image, ImageOps
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in _SIXTEEN_BIT or mode in ('I', 'F'):
        a = np.asarray(img).astype(np.float64)
        top = float(a.max()) if a.size else 0.0
        if mode in _SIXTEEN_BIT or 255 < top <= 65535:
            a = a / 257.0
        elif top > 65535:
            a = a * (255.0 / top)
        elif mode == 'F' and top <= 1.0:
            a = a * 255.0
        return np.clip(np.round(a), 0, 255).astype(np.uint8)
    if mode == '1':
        return np.asarray(img.convert('L'))
    has_alpha = mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or 'transparency' in img.info
    if has_alpha:
        gray = mode in ('LA', 'La', 'L')
        rgba = img.convert('RGBA')
        background = Image.new('RGBA', rgba.size, (BACKGROUND,) * 3 + (255,))
        return np.asarray(Image.alpha_composite(background, rgba).convert('L' if gray else 'RGB'))
    if mode == 'L':
        return np.asarray(img)
    return np.asarray(img.convert('RGB'))

