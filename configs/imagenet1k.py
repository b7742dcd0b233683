"""The paper's ImageNet-1K-set: ILSVRC-2012 (TFDS `imagenet2012`, manual download), the
first 600 classes (TFDS label order) train, the next 200 are validation classes (model
selection; 200 so that validation groups can be 200-way too), the last 200 are held out, 20,000 training
groups of 5-way episodes. Evaluation: 200-way groups over all held-out classes (our
reading of the paper's top-5 metric, which is only meaningful many-way), top-1 and top-5.

Images are resized to 32×32 (the pool lives in memory: ≈3.9 GB of uint8 at 32×32,
≈15.7 GB at --config.data.image_size=64).
"""

from configs import cifar100


def get_config():
    config = cifar100.get_config()
    config.data.name = 'imagenet2012'
    config.data.image_size = 32
    config.data.train_classes = tuple(range(600))
    config.data.val_classes = tuple(range(600, 800))   # model selection
    config.data.test_classes = tuple(range(800, 1000))
    config.train.num_train_steps = 20_000 // 4
    config.eval.ways = 200
    config.eval.groups = 100
    config.eval.top_k = 5
    return config
