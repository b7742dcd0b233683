"""TFDS datasets (imported only when a dataset is not in the cache)."""

from __future__ import annotations

import os

import numpy as np

from pudnet_jax.sources.images import preprocess


def import_tfds(what: str):
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


def decode(name: str, source, image_size, channels, data_dir, split):
    tfds = import_tfds(f'Dataset {name!r}')
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
