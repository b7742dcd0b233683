"""The cache of decoded images: the uint8 images of one (source, split, size, channels,
preprocessing version) as one `.npy` per class plus `meta.json` under
`cache_dir/<source>/<split>-<S>x<S>x<C>-v<version>[-c<content version>]/`, readable with NumPy alone (a machine
without TensorFlow trains and predicts from it). Written to a temporary directory and
renamed into place (atomic). Caches of another preprocessing version, or of an earlier
content of a source whose content changed (`Source.version`, e.g. a pool that gained a
domain), live in other
directories and are never touched; a cache whose `meta.json` disagrees with its place is
refused naming the fields; a folder's cache records a fingerprint of its files and is
rebuilt when they change."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from typing import Optional

import numpy as np
from absl import logging

from pudnet_jax.errors import UserError
from pudnet_jax.sources import images as images_lib
from pudnet_jax.sources.folder import folder_fingerprint

DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'pudnet_jax')
CACHE_ENV = 'PUDNET_CACHE_DIR'


@dataclasses.dataclass
class Loaded:
    pool: dict[int, np.ndarray]      # class label → uint8 (n, S, S, C)
    class_names: list[str]
    meta: dict                       # source, split, sizes, counts, skipped files, cache


def cache_root(cache_dir: Optional[str] = None) -> str:
    return os.path.expanduser(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def expected_meta(kind: str, name, image_size, channels, data_dir, split,
                  version: int = 1) -> dict:
    meta = {'source': name, 'split': split, 'image_size': int(image_size),
            'channels': int(channels), 'preprocessing_version': images_lib.PREPROCESSING_VERSION}
    if version > 1:
        meta['content_version'] = int(version)
    if kind == 'folder':
        meta['folder'] = os.path.abspath(data_dir)
    return meta


def cache_path(kind: str, name, image_size, channels, data_dir=None, split='all', cache_dir=None,
               version: int = 1) -> str:
    sub = name
    if kind == 'folder':   # one cache per folder
        folder = os.path.abspath(data_dir)
        sub += '-' + os.path.basename(folder.rstrip('/')) + '-' + \
            hashlib.sha256(folder.encode()).hexdigest()[:8]
    leaf = f'{split.replace("+", "_")}-{image_size}x{image_size}x{channels}-v{images_lib.PREPROCESSING_VERSION}'
    if version > 1:
        leaf += f'-c{version}'
    return os.path.join(cache_root(cache_dir), sub, leaf)


def read(path: str, expected: dict) -> Optional[Loaded]:
    meta_file = os.path.join(path, 'meta.json')
    if not os.path.exists(meta_file):
        return None
    with open(meta_file) as f:
        meta = json.load(f)
    differ = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if differ:
        detail = ', '.join(f'{k}: cache {a!r} vs wanted {b!r}' for k, (a, b) in differ.items())
        raise UserError(f'The cache at {path} was written with a different preprocessing '
                         f'({detail}). It was left untouched; delete it to rebuild it, or '
                         f'use another config.data.cache_dir.')
    if meta.get('fingerprint') and folder_fingerprint(meta['folder']) != meta['fingerprint']:
        logging.info('The folder %s changed since its cache %s was written: rebuilding.',
                     meta['folder'], path)
        return None
    return Loaded(_read_cached_arrays(path, meta), meta['class_names'],
                  dict(meta, cache=path, from_cache=True))


def _read_cached_arrays(path: str, meta: dict) -> dict[int, np.ndarray]:
    """The class arrays of a cache, each checked against meta.json (count, image size,
    channels, uint8): a cache edited or damaged by hand is refused, naming the array."""
    def damaged(detail: str):
        return UserError(f'The cache at {path} is damaged: {detail}. It was left untouched; '
                         f'delete it to rebuild it, or use another config.data.cache_dir.')
    if not isinstance(meta.get('counts'), dict) or not isinstance(meta.get('class_names'), list):
        raise damaged("meta.json lacks 'counts' or 'class_names'")
    size, channels = meta['image_size'], meta['channels']
    pool = {}
    for k, count in meta['counts'].items():
        name = f'class_{int(k):05d}.npy'
        try:
            array = np.load(os.path.join(path, name), allow_pickle=False)
        except (OSError, ValueError) as e:
            raise damaged(f'{name} cannot be read ({type(e).__name__}: {e})') from None
        expected = (int(count), size, size, channels)
        if array.shape != expected or array.dtype != np.uint8:
            raise damaged(f'{name} holds an array of shape {array.shape} and dtype '
                          f'{array.dtype}, expected {expected} uint8 (meta.json)')
        pool[int(k)] = array
    return pool


def write(path: str, loaded: Loaded) -> None:
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.tmp-', dir=parent)
    try:
        for k, images in loaded.pool.items():
            np.save(os.path.join(tmp, f'class_{k:05d}.npy'), images, allow_pickle=False)
        with open(os.path.join(tmp, 'meta.json'), 'w') as f:
            json.dump(loaded.meta, f, indent=1)
        if os.path.exists(path):          # a stale cache of a changed folder
            shutil.rmtree(path)
        try:
            os.rename(tmp, path)
        except OSError:
            if not os.path.exists(os.path.join(path, 'meta.json')):
                raise
            shutil.rmtree(tmp)            # another process wrote the same cache first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

