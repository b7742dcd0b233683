"""TFDS presets under `tfds.testing.mock_data` (no download)."""

import numpy as np
import pytest

import pudnet_jax  # noqa: F401
from configs import cifar100
from pudnet_jax import data as data_lib
from pudnet_jax import train as train_lib

tfds = pytest.importorskip('tensorflow_datasets')


def test_cifar100_preset_trains_and_evaluates(tmp_path):
    config = cifar100.get_config()
    # The preset's data, classes, protocol and target; tiny widths and counts for speed.
    config.target.width = 4
    config.model.sketch_dim = 8
    config.model.sketch_features = (4, 4, 4)
    config.train.shots, config.train.queries = 2, 1
    config.train.episodes_per_step = 1
    config.train.num_train_steps = 2
    config.train.log_every = config.train.checkpoint_every = 1
    config.eval.shots, config.eval.test_shots, config.eval.groups = 2, 2, 2
    with tfds.testing.mock_data(num_examples=1200):
        pool = data_lib.load_pool('cifar100', 32, 3)
        results = train_lib.train_and_evaluate(config, str(tmp_path / 'cifar100'))
    assert sorted(pool) == list(range(100))
    assert all(v.shape[1:] == (32, 32, 3) and v.dtype == np.uint8 for v in pool.values())
    assert results['target'] == 'resnet18' and results['ways'] == 5 and results['groups'] == 2
    assert 0.0 <= results['accuracy'] <= 1.0
