"""The paper's inter-dataset denoising (Table XI): the ImageNet-1K denoising run, tested
on the images of another dataset.

  --config=configs/denoise_inter.py:<target>,<σ>       e.g. cifar10,25

The pool and training are `configs/denoise_imagenet1k.py:<σ>` (train there, then
`--mode=evaluate` with this config on the same workdir). The target's test images, resized
to the pool's 128×128 RGB, are shuffled (seeded) and cut into groups of 50
(`eval.group_order='class'`: the authors' consecutive batches instead):

| target | images | source |
|---|---|---|
| animals10 | the whole folder (the 20 % test part in the paper) | folder, `eval.data_dir` |
| cifar10 | test split, first 100 per class (1,000) | TFDS |
| cifar100 | test split, first 10 per class (1,000) | TFDS |
| caltech_birds2011 | test split, first 10 per class (2,000) | TFDS (CUB-200) |
| dtd | test split | TFDS |
| bsds500 | a folder of class subfolders (e.g. its `val` images), `eval.data_dir` | folder |

CIFAR images are 32×32 upsampled to 128: smooth, hence easy to denoise; say so next to
their numbers. Images are resized whole (squashed), not centre-cropped.
"""

from configs import denoise_imagenet1k

TARGETS = {
    'animals10': dict(test_split=None, per_class=None),
    'cifar10': dict(test_split='test', per_class=100),
    'cifar100': dict(test_split='test', per_class=10),
    'caltech_birds2011': dict(test_split='test', per_class=10),
    'dtd': dict(test_split='test', per_class=None),
    'bsds500': dict(test_split=None, per_class=None),
}


def get_config(arg: str = 'cifar10,25'):
    target, _, sigma = arg.partition(',')
    if target not in TARGETS:
        raise ValueError(f'configs/denoise_inter.py:<target>,<σ> with target in '
                         f'{sorted(TARGETS)}; got {arg!r}.')
    config = denoise_imagenet1k.get_config(sigma or '25')
    e = config.eval
    e.protocol = 'inter'
    e.dataset = target
    e.data_dir = None                  # for the folder targets
    e.test_split = TARGETS[target]['test_split']
    e.per_class = TARGETS[target]['per_class']
    e.group_size = 50
    e.group_order = 'shuffled'         # 'class': consecutive batches, as the authors
    e.groups = 40
    return config
