"""The paper's denoising setting (§IV-D, Tables IX-X) on ImageNet-1K:

  --config=configs/denoise_imagenet1k.py:<σ>       σ ∈ {25, 50, 75} (default 25)

One run per σ, as the authors (one checkpoint per noise level). ILSVRC-2012 (TFDS
`imagenet2012`, manual download) as in `configs/imagenet1k.py`: classes 0-599 train,
600-799 validation (the baselines' learning rates), 800-999 held out. 128×128 RGB; a group
is 5 classes × 10 images (the authors' batches of 50), one group per step; the authors'
UNet (`unet_n2v`: depth 4, width 64, 18 generated kernels), sketch of 256, η = 0.1;
Noise2Void with the authors' L1 loss, 10 % of the pixels masked, replaced from the 5×5
neighbourhood; Adam 1e-3, β = (0.5, 0.999) (theirs). 100,000 steps to start (their code
allows up to 2 M; the paper does not say how many it used). Evaluation: 200 groups of 5
held-out classes × 10 images, PSNR/SSIM beside the noisy input and the controls.

Memory: the pool is decoded into memory, ≈ 63 GB of uint8 at 128×128×3 for the whole
training set; `--config.data.image_size=64` needs ≈ 16 GB.
"""

from configs import denoise

SIGMAS = (25, 50, 75)


def get_config(sigma: str = '25'):
    if not sigma.isdigit() or int(sigma) not in SIGMAS:
        raise ValueError(f'configs/denoise_imagenet1k.py:<σ> with σ in {SIGMAS}; got {sigma!r}.')
    config = denoise.get_config()
    config.data.name = 'imagenet2012'
    config.data.image_size = 128
    config.data.channels = 3
    config.data.train_classes = tuple(range(600))
    config.data.val_classes = tuple(range(600, 800))
    config.data.test_classes = tuple(range(800, 1000))
    config.target.name = 'unet_n2v'
    config.target.width = 64
    config.model.sketch_dim = 256
    config.model.eta = 0.1
    config.model.residual = False      # the paper's generator (the offline default's is residual)
    config.noise.sigma = float(sigma)
    config.noise.loss = 'l1'
    t = config.train
    t.ways, t.shots, t.episodes_per_step = 5, 10, 1
    t.num_train_steps = 100_000
    t.learning_rate, t.b1, t.b2 = 1e-3, 0.5, 0.999
    t.log_every, t.checkpoint_every = 200, 2000
    e = config.eval
    e.ways, e.shots, e.groups = 5, 10, 200
    e.mean_sketch_images = 500
    e.full_images = False
    c = config.compare
    c.groups, c.tune_groups = 20, 2
    c.epochs = (1, 50, 100, 300)
    c.batch_size = 8
    c.full_images = False
    return config
