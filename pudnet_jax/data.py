"""Pools of images (through `sources`), normalisation and the N-way episode sampler.

A *pool* is a dict {class label: uint8 array (n, H, W, C)} holding every image of each
class after resizing and channel conversion. Episodes and evaluation groups are drawn
from a pool with a NumPy generator seeded by (seed, index), so the episode of a given
step is the same whether or not training was interrupted and resumed.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import flax
from absl import logging
import numpy as np

from pudnet_jax import sources

# Images are fed to the networks as float32 in [-1, 1].
NORMALIZE_MEAN = 0.5
NORMALIZE_STD = 0.5

Pool = dict[int, np.ndarray]


def _normalize(images_uint8):
    return ((images_uint8.astype(np.float32) / 255.0) - NORMALIZE_MEAN) / NORMALIZE_STD


# The same float32 arithmetic tabulated for the 256 uint8 values: one gather instead of
# four full-size temporaries (the sampler's main cost), bit-identical results.
_NORMALIZED = _normalize(np.arange(256, dtype=np.uint8))


def normalize(images_uint8):
    """uint8 images → float32 in [-1, 1] (NumPy arrays, or JAX arrays inside jit)."""
    if isinstance(images_uint8, np.ndarray) and images_uint8.dtype == np.uint8:
        return _NORMALIZED[images_uint8]
    return _normalize(images_uint8)


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
    """Deterministic grayscale <-> RGB conversion and resize (see `sources.preprocess`)."""
    return sources.preprocess(images, image_size, channels, where)


def group_by_class(images: np.ndarray, labels: np.ndarray) -> Pool:
    labels = np.asarray(labels).astype(np.int64)
    return {int(c): images[labels == c] for c in np.unique(labels)}


def load_pool(name: str, image_size: int, channels: int, data_dir: Optional[str] = None, *,
              split: str = 'all', cache_dir: Optional[str] = None, cache: bool = True) -> Pool:
    """{class: uint8 (n, S, S, C)} of a source (`sources.SOURCES`), through the cache.
    split='all' merges every split: the intra-dataset protocol separates classes."""
    return sources.load(name, image_size, channels, data_dir, split, cache_dir, cache).pool


def split_pool(pool: Pool, predict_fraction: float, seed: int) -> tuple[Pool, Pool]:
    """Per class, a deterministic (seed, class) shuffle: the first round(fraction · n)
    images predict, the rest test (at least one of each when n >= 2)."""
    if not 0.0 < predict_fraction < 1.0:
        raise ValueError(f'predict_fraction must be in (0, 1), got {predict_fraction}.')
    predict, test = {}, {}
    for c, images in pool.items():
        n = len(images)
        k = min(max(int(round(predict_fraction * n)), 1), max(n - 1, 1))
        order = np.random.default_rng([seed, c]).permutation(n)
        predict[c], test[c] = images[np.sort(order[:k])], images[np.sort(order[k:])]
    return predict, test


# ----------------------------------------------------------------------------- roles

@dataclasses.dataclass(frozen=True)
class Roles:
    """The three disjoint roles of the intra-dataset protocol: training classes,
    validation (model selection for PudNet and every baseline) and test, each a pool
    and its class list. `how` says how validation was set apart."""
    train: tuple[Pool, list[int]]
    validation: tuple[Pool, list[int]]
    test: tuple[Pool, list[int]]
    how: str


def split_roles(pool: Pool, train_classes: Sequence[int], val_classes: Sequence[int],
                test_classes: Sequence[int], val_fraction: float, seed: int = 0) -> Roles:
    """Training, validation and test pools, disjoint in classes and in images.

    With `val_classes`, validation groups come from those classes (as the few-shot
    literature's 64/16/20 splits). Without (a dataset with too few classes, such as the
    MNIST default), each test class's images are split once (deterministic, `seed`):
    a `val_fraction` part is reserved for validation groups and test groups never use it.
    """
    train, val, test = (list(map(int, c)) for c in (train_classes, val_classes, test_classes))
    for (a, an), (b, bn) in (((train, 'train'), (test, 'test')), ((train, 'train'), (val, 'val')),
                             ((val, 'val'), (test, 'test'))):
        both = sorted(set(a) & set(b))
        if both:
            raise ValueError(f'config.data.{an}_classes and config.data.{bn}_classes must be '
                             f'disjoint; both contain {both}.')
    missing = [c for c in train + val + test if c not in pool]
    if missing:
        raise ValueError(f'classes {missing} are not in the dataset (it has classes '
                         f'{sorted(pool)}).')
    sub = lambda classes: {c: pool[c] for c in classes}
    if val:
        return Roles((sub(train), train), (sub(val), val), (sub(test), test),
                     f'validation classes {val}')
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f'config.eval.val_fraction must be in (0, 1) when '
                         f'config.data.val_classes is empty; got {val_fraction}.')
    val_pool, test_pool = split_pool(sub(test), val_fraction, seed)
    return Roles((sub(train), train), (val_pool, test), (test_pool, test),
                 f'{val_fraction:g} of each test class\'s images reserved for validation '
                 f'(seed {seed})')


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
                 queries: int, seed: int, what: str = 'episodes',
                 domains: Optional[dict] = None):
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
        self._sizes = np.asarray([len(pool[c]) for c in self.classes], np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self._sizes)[:-1]]).astype(np.int64)
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, seed
        # With `domains` (name → classes): every episode's classes come from one domain,
        # drawn uniformly among the domains with >= `ways` of these classes.
        self.domains = None
        if domains:
            position = {c: i for i, c in enumerate(self.classes)}
            groups = [[position[c] for c in members if c in position]
                      for members in domains.values()]
            self.domains = [g for g in groups if len(g) >= ways]
            if not self.domains:
                raise ValueError(f'{what}: no domain has {ways} of the classes '
                                 f'{list(classes)} (config.data.domains).')
            unused = sorted(set(self.classes) - {self.classes[i] for g in self.domains
                                                 for i in g})
            if unused:
                logging.warning('%s: classes %s are in no domain with >= %d of them; '
                                'they are never drawn.', what, unused, ways)

    def flat_images(self) -> np.ndarray:
        """Every image of the sampler's classes in one new uint8 array (M, H, W, C), class
        by class in `classes` order: what `EpisodeIndices` index (the on-device pool)."""
        return np.concatenate([self.pool[c] for c in self.classes])

    def images_at(self, positions: np.ndarray) -> np.ndarray:
        """The normalised images at `positions` of `flat_images()`, gathered from the
        pool's per-class arrays (no flat copy on the host)."""
        shape = next(iter(self.pool.values())).shape[1:]
        out = np.empty(positions.shape + shape, np.float32)
        owner = np.searchsorted(self._offsets, positions, side='right') - 1
        for k in np.unique(owner):
            at = owner == k
            out[at] = _NORMALIZED[self.pool[self.classes[k]][positions[at] - self._offsets[k]]]
        return out

    def episodes(self, indices: 'EpisodeIndices') -> Episodes:
        """The episodes of `indices` with their images, on the host."""
        return Episodes(support=self.images_at(indices.support),
                        support_labels=indices.support_labels,
                        query=self.images_at(indices.query), query_labels=indices.query_labels,
                        classes=indices.classes)

    def sample_indices(self, index: int, num_episodes: int) -> 'EpisodeIndices':
        """The episodes of `sample(index, num_episodes)` as positions in `flat_images`
        (the same draws: `gather_episodes` of these is bitwise `sample`'s batch)."""
        rng = np.random.default_rng([self.seed, index])
        n, s, q = self.ways, self.shots, self.queries
        sup = np.empty((num_episodes, n * s), np.int32)
        qry = np.empty((num_episodes, n * q), np.int32)
        cls = np.empty((num_episodes, n), np.int32)
        for e in range(num_episodes):
            if self.domains:
                members = self.domains[int(rng.integers(len(self.domains)))]
                chosen = np.asarray(members)[rng.choice(len(members), size=n, replace=False)]
            else:
                chosen = rng.choice(len(self.classes), size=n, replace=False)
            for j, k in enumerate(chosen):
                pick = self._offsets[k] + rng.choice(self._sizes[k], size=s + q, replace=False)
                sup[e, j * s:(j + 1) * s] = pick[:s]
                qry[e, j * q:(j + 1) * q] = pick[s:]
            cls[e] = chosen
        labels = lambda per: np.tile(np.repeat(np.arange(n, dtype=np.int32), per),
                                     (num_episodes, 1))
        return EpisodeIndices(support=sup, support_labels=labels(s), query=qry,
                              query_labels=labels(q), classes=cls)

    def sample(self, index: int, num_episodes: int) -> Episodes:
        """E = `num_episodes` episodes drawn with the generator seeded by (seed, index)."""
        return self.episodes(self.sample_indices(index, num_episodes))

    def group_indices(self, ids: Sequence[int]) -> 'EpisodeIndices':
        """One episode per id: group g is `sample_indices(g, 1)`, the same whenever drawn."""
        episodes = [self.sample_indices(int(g), 1) for g in ids]
        return EpisodeIndices(*(np.concatenate([getattr(e, f.name) for e in episodes])
                                for f in dataclasses.fields(EpisodeIndices)))

    def sample_groups(self, ids: Sequence[int]) -> Episodes:
        """One episode per id: group g is `sample(g, 1)`, the same whenever it is drawn."""
        return self.episodes(self.group_indices(ids))


@flax.struct.dataclass
class EpisodeIndices:
    """`Episodes` with the images as positions in a sampler's `flat_images`: a few
    kilobytes per step instead of the images (on-device episodes, `input_pipeline`)."""
    support: np.ndarray          # (E, N*shots) int32
    support_labels: np.ndarray   # (E, N*shots) int32
    query: np.ndarray            # (E, N*queries) int32
    query_labels: np.ndarray     # (E, N*queries) int32
    classes: np.ndarray          # (E, N) int32


def gather_episodes(images, indices: EpisodeIndices, table) -> Episodes:
    """Inside jit: the episodes of `indices` gathered from the uint8 pool `images`
    (M, H, W, C) on the device and normalised with `table` (`normalization_table()`):
    bitwise the images `EpisodeSampler.episodes` gathers on the host."""
    return Episodes(support=table[images[indices.support]],
                    support_labels=indices.support_labels,
                    query=table[images[indices.query]], query_labels=indices.query_labels,
                    classes=indices.classes)


def normalization_table() -> np.ndarray:
    """The 256 float32 values uint8 pixels map to (`normalize`)."""
    return _NORMALIZED.copy()
