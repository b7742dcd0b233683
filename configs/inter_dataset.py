"""The paper's inter-dataset settings: train on one pool, predict for another dataset.

  --config=configs/inter_dataset.py:<pool>,<target>
pool ∈ {cifar100, imagenet100, imagenet1k} (the intra presets' training), target ∈
{animals10, cifar10, dtd}:
- animals10: folder (config.eval.data_dir), 80% of each class predicts, 20% tests;
- cifar10: TFDS, the train split (50,000 images) predicts, the test split tests;
- dtd: TFDS, train + validation (2/3) predict, test (1/3) tests.
N-way over all the target's classes, centroids from 10 labelled images per class, 95% CI
over 20 draws of them. Images are resized to the pool's image size and channels.
"""

import importlib

POOLS = ('cifar100', 'imagenet100', 'imagenet1k')
TARGETS = {
    'animals10': dict(predict_split=None, test_split=None, predict_fraction=0.8),
    'cifar10': dict(predict_split='train', test_split='test', predict_fraction=None),
    'dtd': dict(predict_split='train+validation', test_split='test', predict_fraction=None),
}


def set_inter(config, dataset: str, *, predict_split=None, test_split=None,
              predict_fraction=None, data_dir=None, shots=10, draws=20):
    """Switches a training config's evaluation to the inter-dataset protocol."""
    e = config.eval
    e.protocol = 'inter'
    e.dataset = dataset
    e.data_dir = data_dir
    e.predict_split = predict_split
    e.test_split = test_split
    e.predict_fraction = predict_fraction
    e.shots = shots                  # labelled images per class for the centroids
    e.draws = draws                  # repeated draws of those images → 95% CI
    e.chunk_size = 500               # images per chunk of the streaming sketch / features
    e.bn_images = 1000               # random prediction images for the BatchNorm statistics
    e.top_k = None
    return config


def get_config(arg: str = 'cifar100,cifar10'):
    pool, _, target = arg.partition(',')
    if pool not in POOLS or target not in TARGETS:
        raise ValueError(f'configs/inter_dataset.py:<pool>,<target> with pool in {POOLS} and '
                         f'target in {sorted(TARGETS)}; got {arg!r}.')
    config = importlib.import_module(f'configs.{pool}').get_config()
    return set_inter(config, target, **TARGETS[target])
