"""The paper's Fashion-set: Fashion-MNIST (TFDS), 6 training classes, 4 held out, 4-way,
ResNet-18, η = 0.2; 2,000 training groups (4 per step), 500 evaluation groups."""

from configs import default


def get_config():
    config = default.get_config()
    config.data.name = 'fashion_mnist'
    config.data.image_size = 28
    config.data.channels = 1
    config.data.train_classes = tuple(range(6))
    config.data.test_classes = (6, 7, 8, 9)
    config.target.name = 'resnet18'
    config.target.width = 64
    config.model.sketch_dim = 256
    config.model.eta = 0.2
    config.loss.metric_weight = 1.0   # the paper's L = L1 + L2 + L3 (eq. 11)
    config.loss.kl_weight = 1.0
    config.train.num_train_steps = 2000 // 4
    config.eval.groups = 500
    return config
