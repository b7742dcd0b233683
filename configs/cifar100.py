"""The paper's CIFAR-100-set: 20 held-out test classes, 5-way, ResNet-18, η = 0.5. The paper's
80 other classes are split as the few-shot literature does: 64 train the hypernetwork, 16
are validation classes (model selection).

Needs TFDS `cifar100` (downloaded and prepared on first use into data_dir). Every split is
used: the protocol separates classes, not images.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.name = 'cifar100'
    config.data.image_size = 32
    config.data.channels = 3
    config.data.train_classes = tuple(range(64))
    config.data.val_classes = tuple(range(64, 80))   # model selection
    config.data.test_classes = tuple(range(80, 100))
    config.target.name = 'resnet18'
    config.target.width = 64
    config.model.sketch_dim = 256
    config.model.eta = 0.5
    config.loss.metric_weight = 1.0   # the paper's L = L1 + L2 + L3 (eq. 11)
    config.loss.kl_weight = 1.0
    config.train.ways = 5
    config.train.shots = 10
    config.train.queries = 15
    config.train.num_train_steps = 100_000 // 4   # 100,000 groups, 4 per step
    config.train.checkpoint_every = 1000
    config.train.log_every = 100
    config.train.val_every = 1000     # the validation curve (validation classes)
    config.eval.ways = 5
    config.eval.shots = 10
    config.eval.test_shots = 15
    config.eval.groups = 500
    return config
