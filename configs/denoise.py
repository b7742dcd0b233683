"""Denoising on the embedded offline data (paper §IV-D on CPU; issue 11, in progress).

PudNet predicts a depth-2 Noise2Void UNet (`unet_n2v_small`, width 16) for a group of
40 noisy 28x28 MNIST-5k digits (4 classes x 10, σ = 25 on the 255 scale); trained on
groups of digits 0-5 with the Noise2Void loss (no clean image reaches the loss), tested
on groups of digits 6-9 beside the noisy input, the untrained UNet and the mean-sketch
UNet (PSNR/SSIM). Digits are a stand-in: the paper's images are natural photographs.
"""

import ml_collections

from configs import default


def get_config():
    config = default.get_config()
    config.task = 'denoising'
    config.target.name = 'unet_n2v_small'
    config.target.width = 16
    config.noise = ml_collections.ConfigDict()
    config.noise.sigma = 25.0          # on the 255 scale, as the paper's σ = 25 / 50 / 75
    config.noise.mask_fraction = 0.1   # Noise2Void: pixels replaced per image and channel
    config.noise.mask_radius = 2       # from the 5x5 neighbourhood, centre excluded
    t = config.train
    t.ways, t.shots = 4, 10            # 40 images per group (the authors' groups: 50)
    t.episodes_per_step = 4
    t.num_train_steps = 300
    t.learning_rate = 1e-3
    t.val_every = 0                    # no validation curve for this task yet
    e = config.eval
    e.ways, e.shots = 4, 10
    e.groups = 50
    e.untrained_seeds = 2
    e.mean_sketch_images = 400
    return config
