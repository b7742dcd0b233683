"""Every preset runs a few steps and an evaluation under `tfds.testing.mock_data` (no
download) or on folders written by the test: the preset's data, classes, protocol and
target, with tiny widths and counts for speed. A few minutes on 2 CPU cores."""

import importlib
import os

import numpy as np
import pytest
from PIL import Image

import pudnet_jax  # noqa: F401
from configs import inter_dataset as inter_configs
from pudnet_jax import train as train_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.tasks import classification

tfds = pytest.importorskip('tensorflow_datasets')


def _shrink(config, ways=None):
    config.target.width = 4
    config.model.sketch_dim = 8
    config.model.sketch_features = (4, 4, 4)
    config.train.shots, config.train.queries = 1, 1
    config.train.episodes_per_step = 1
    config.train.num_train_steps = 1
    config.train.log_every = config.train.checkpoint_every = 1
    config.train.val_groups = 1      # the validation curve (at the last step), tiny
    e = config.eval
    e.shots, e.groups = 1, 1
    e.val_groups, e.untrained_seeds, e.mean_sketch_images = 1, 1, 20   # the controls, tiny
    e.test_shots = 1      # validation groups (and intra test groups) fit the mock data
    if e.get('protocol') == 'inter':
        e.draws, e.chunk_size, e.bn_images = 2, 64, 32
    return config


def _folder(root, classes, per_class, size=12):
    rng = np.random.default_rng(0)
    for k in range(classes):
        d = os.path.join(root, f'class_{k:03d}')
        os.makedirs(d)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size + i, 3), dtype=np.uint8)).save(
                os.path.join(d, f'{i}.png'))
    return str(root)


@pytest.mark.parametrize('preset,examples', [('fashion', 100), ('cifar100', 1200),
                                             ('imagenet1k', 8000)])
def test_intra_tfds_preset(preset, examples, tmp_path):
    config = _shrink(importlib.import_module(f'configs.{preset}').get_config())
    config.data.cache_dir = str(tmp_path / 'cache')   # this test's mock data only
    with tfds.testing.mock_data(num_examples=examples):
        results = train_lib.train_and_evaluate(config, str(tmp_path / preset))
    assert results['target'] == 'resnet18' and results['ways'] == config.eval.ways
    assert results['dataset'] == config.data.name and 0.0 <= results['accuracy'] <= 1.0
    if preset == 'imagenet1k':
        assert results['ways'] == 200 and 0.0 <= results['top5_accuracy'] <= 1.0


def test_imagenet100_preset_from_a_folder(tmp_path):
    config = _shrink(importlib.import_module('configs.imagenet100').get_config())
    config.data.data_dir = _folder(tmp_path / 'mini_imagenet', 100, 2)
    results = train_lib.train_and_evaluate(config, str(tmp_path / 'run'))
    assert results['ways'] == 5 and results['dataset'] == 'mini_imagenet'


def test_inter_dataset_presets(tmp_path):
    """Trains the cifar100 pool once, then evaluates it on each inter-dataset target."""
    workdir = str(tmp_path / 'run')
    animals = _folder(tmp_path / 'animals10', 10, 5)
    cache = str(tmp_path / 'cache')   # this test's mock data only (not another test's)
    # 1,200 mock examples per split: every one of CIFAR-100's classes has images.
    with tfds.testing.mock_data(num_examples=1200):
        config = _shrink(inter_configs.get_config('cifar100,cifar10'))
        config.data.cache_dir = cache
        results = train_lib.train_and_evaluate(config, workdir)
        assert results['protocol'] == 'inter' and results['ways'] == 10
        assert results['prediction_images'] == 1200 and results['test_images'] == 1200
        _, model, spec, hyper = workdir_lib.restore_hypernet(workdir)
        for target in ('dtd', 'animals10'):
            config = _shrink(inter_configs.get_config(f'cifar100,{target}'))
            config.data.cache_dir = cache
            config.eval.data_dir = animals if target == 'animals10' else None
            results = classification.evaluate(config, model, spec, hyper, None, workdir)
            assert results['dataset'] == target and 0.0 <= results['accuracy'] <= 1.0
    assert results['prediction_images'] == 40 and results['test_images'] == 10   # 80 / 20
    for pool in inter_configs.POOLS:       # every pair is a valid config
        for target in inter_configs.TARGETS:
            config = inter_configs.get_config(f'{pool},{target}')
            assert config.eval.protocol == 'inter' and config.eval.dataset == target
    with pytest.raises(ValueError, match='pool in'):
        inter_configs.get_config('cifar100,mnist')
