"""The paper's ImageNet-100-set: mini-ImageNet from a folder (config.data.data_dir: all 100
classes as subfolders), the first 64 classes in name order train, the next 16 are
validation classes (model selection), the last 20 are held out (recorded in the workdir's classes.json), 5-way, ResNet-18 at 84×84, η = 0.5,
50,000 training groups."""

from configs import cifar100


def get_config():
    config = cifar100.get_config()
    config.data.name = 'mini_imagenet'
    config.data.image_size = 84
    config.data.train_classes = tuple(range(64))
    config.data.val_classes = tuple(range(64, 80))   # model selection
    config.data.test_classes = tuple(range(80, 100))
    config.train.num_train_steps = 50_000 // 4
    return config
