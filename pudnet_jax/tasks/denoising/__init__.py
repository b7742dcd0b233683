"""Denoising (paper §IV-D; DENOISING.md §5): PudNet predicts the UNet (`unet_n2v*`
targets) that denoises a group of noisy images, trained self-supervised with Noise2Void.

A group: `train.ways` classes × `train.shots` images of the training classes, clean on
[0, 1], plus Gaussian noise of σ = `config.noise.sigma` (on the 255 scale, unclipped,
seeded by (seed, step), `noise.add_gaussian_noise`). Per group, the noisy images are
normalised by the group's own per-channel mean and standard deviation (restored after
the UNet: with BatchNorm statistics from the group the network cannot know the absolute
intensity). The sketch is the encoder's mean over the normalised noisy group; the UNet
generated from it runs on the Noise2Void-masked group (`noise.n2v_mask`, BatchNorm
statistics of that input) and the loss is the mean squared error at the masked pixels
only (normalised units). The clean images are used for the reported PSNR alone, never by
the loss.

Evaluation (intra): `eval.groups` groups of the held-out classes, `eval.ways` ×
`eval.shots` images, noise seeded by (eval.seed, group); each group is sketched, gets its
UNet (BatchNorm statistics from the noisy group itself, transductive as in the paper and
in Noise2Void) and is denoised. PSNR and SSIM against the clean images (`metrics`), beside
the noisy input and the controls on the same groups: the untrained UNet (random init,
`eval.untrained_seeds` of them, BatchNorm statistics from the group) and the UNet of the
mean sketch of training groups. No head, no τ.

With `config.train.inner_steps` = K > 0 (`inner_loop`), each training group's sketch
takes K learned steps on the Noise2Void loss of the group itself (another mask than the
outer loss's) before its UNet is generated; the task's only parameter is then the step
size `log_inner_lr`, and prediction takes the same steps (`eval.refine_steps`,
`eval.refine_optimizer='learned'`): still self-supervised, no clean image.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics

from pudnet_jax import data as data_lib
from pudnet_jax import inner_loop, metrics, noise
from pudnet_jax.tasks import classification
from pudnet_jax.targets import TargetSpec, apply_with_dataset_stats

PARAM_NAMES = (inner_loop.PARAM,)
PROGRESS = ('psnr', 'PSNR (masked input, vs clean)')
TARGET_OUTPUT = 'image'
MODES = ('train', 'evaluate', 'predict', 'compare')
COMPARE_METHODS = ('finetune_pudnet', 'adam', 'gc', 'classical')
EPS = 1e-6


@flax.struct.dataclass
class NoisyGroups:
    """E groups of n images: clean and noisy (N, n, H, W, C) on [0, 1] (noisy unclipped),
    and each group's Noise2Void mask key."""
    clean: np.ndarray
    noisy: np.ndarray
    mask_keys: np.ndarray          # (E, 2) uint32


class GroupSampler:
    """Groups of the training classes (`data.EpisodeSampler`'s draws, shots only), with
    noise and mask keys seeded by (seed, step): deterministic, so resumption is exact."""

    def __init__(self, config, pool):
        t = config.train
        self.episodes_sampler = data_lib.EpisodeSampler(
            pool, config.data.train_classes, t.ways, t.shots, 0, seed=config.seed,
            what='training groups')
        self.sigma, self.seed = float(config.noise.sigma), int(config.seed)

    def sample_indices(self, step: int, count: int):
        return step, self.episodes_sampler.sample_indices(step, count)

    def episodes(self, indices) -> NoisyGroups:
        step, inner = indices
        return make_groups(clean01(self.episodes_sampler.episodes(inner)), self.sigma,
                           (self.seed, 1, step))


def clean01(episodes: data_lib.Episodes) -> np.ndarray:
    """The support images of `episodes` back on [0, 1] (the sampler normalises them)."""
    return episodes.support * data_lib.NORMALIZE_STD + data_lib.NORMALIZE_MEAN


def noisy_group(sampler: data_lib.EpisodeSampler, g: int, sigma: float, seed: tuple):
    """(clean, noisy) images of group `g` of `sampler`, the noise seeded by `seed`."""
    group = make_groups(clean01(sampler.sample(g, 1)), sigma, seed)
    return group.clean[0], jnp.asarray(group.noisy[0])


def make_groups(clean01: np.ndarray, sigma: float, seed: tuple) -> NoisyGroups:
    noisy = noise.add_gaussian_noise(clean01, sigma, seed)
    keys = np.random.default_rng(seed + (2,)).integers(0, 2**32, (clean01.shape[0], 2),
                                                       dtype=np.uint32)
    return NoisyGroups(clean=np.asarray(clean01, np.float32), noisy=noisy, mask_keys=keys)


def group_stats(noisy):
    """Per group and channel (mean, std) over its images and pixels: (..., 1, 1, 1, C)."""
    axes = (-4, -3, -2)
    return (jnp.mean(noisy, axis=axes, keepdims=True),
            jnp.std(noisy, axis=axes, keepdims=True) + EPS)


def normalize(noisy):
    mu, s = group_stats(noisy)
    return (noisy - mu) / s


# ----------------------------------------------------------------------------- seam

def load(config):
    return classification.load(config)


def make_sampler(config, loaded) -> GroupSampler:
    return GroupSampler(config, loaded.pool)


def check(config, loaded, spec: TargetSpec) -> None:
    loss_kind(config)
    if config.eval.get('protocol') == 'inter':
        from pudnet_jax.tasks.denoising import evaluation
        evaluation.inter_images(config)       # the target loads, and has a group's images
    else:
        eval_sampler(config, loaded.pool)


def sketch_images(batch: NoisyGroups):
    return normalize(batch.noisy)


def init_params(config, spec, seed) -> dict:
    """Only the inner loop's step size, when there is one."""
    return inner_loop.init_params(config, classification.sketch_size(config))


@flax.struct.dataclass
class Metrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output('loss')
    psnr: clu_metrics.Average.from_output('psnr')


LOSSES = ('mse', 'l1')


def n2v_loss(spec: TargetSpec, params, x, key, fraction: float, radius: int,
             kind: str = 'mse'):
    """(loss, output) on normalised images x (n, H, W, C): the UNet on the
    Noise2Void-masked x (BatchNorm statistics of that input), the mean squared (`kind`
    'mse') or absolute ('l1', the authors' code) error at the masked pixels only. The loss
    of PudNet's training, of Pretrained-N2V and of the Noise2Void baselines."""
    masked, mask = noise.n2v_mask(key, x, fraction, radius)
    out, _, _ = apply_with_dataset_stats(spec, params, masked)
    err = jnp.square(out - x) if kind == 'mse' else jnp.abs(out - x)
    return jnp.sum(mask * err) / jnp.maximum(jnp.sum(mask), 1.0), out


def loss_kind(config) -> str:
    kind = config.noise.get('loss', 'mse')
    if kind not in LOSSES:
        raise ValueError(f'config.noise.loss={kind!r}: must be one of {LOSSES}.')
    return kind


def make_episode_loss(config, spec: TargetSpec):
    fraction, radius = float(config.noise.mask_fraction), int(config.noise.mask_radius)
    kind = loss_kind(config)

    def episode_loss(task_params, generated, ep: NoisyGroups):
        mu, s = group_stats(ep.noisy)
        loss, out = n2v_loss(spec, generated, (ep.noisy - mu) / s, ep.mask_keys, fraction,
                             radius, kind)
        psnr = jnp.mean(metrics.psnr_jax(ep.clean, out * s + mu))
        return loss, {'loss': loss, 'psnr': psnr}
    return episode_loss


def sketch_loss(model, spec: TargetSpec, hyper_params: dict, sketch, x, key,
                fraction: float, radius: int, kind: str = 'mse'):
    """The loss a sketch is stepped on: the Noise2Void loss (`n2v_loss`, mask from `key`)
    of the normalised noisy group `x` through the UNet generated from `sketch`. The inner
    loop of meta-training and the learned step at prediction both descend it."""
    from pudnet_jax.hypernet import PudNet
    generated = model.apply({'params': hyper_params}, sketch, method=PudNet.generate)
    return n2v_loss(spec, generated, x, key, fraction, radius, kind)[0]


def make_step_loss(config, model, spec: TargetSpec):
    """(hyper params, task params, sketch, one group, k) → what the k-th learned step
    descends: `sketch_loss` of the normalised noisy group, masked with the group's mask
    key folded with k + 1 (the outer loss keeps the key itself). Meta-training's inner
    loop (`make_sketch_adaptation`) and prediction (`evaluation.Predictor`) both use it."""
    fraction, radius = float(config.noise.mask_fraction), int(config.noise.mask_radius)
    kind = loss_kind(config)

    def loss(hyper_params, task_params, sketch, ep: NoisyGroups, k):
        key = jax.random.fold_in(ep.mask_keys, k + 1)
        return sketch_loss(model, spec, hyper_params, sketch, normalize(ep.noisy), key,
                           fraction, radius, kind)
    return loss


def make_sketch_adaptation(config, model, spec: TargetSpec):
    """With `config.train.inner_steps` = K > 0: (hyper params, task params, sketch, one
    group) → the sketch after K steps (`inner_loop.step`) on `make_step_loss`'s loss.
    None when K = 0."""
    return inner_loop.make_adaptation(config, make_step_loss(config, model, spec))


def validation_curve(config, model, spec, loaded, workdir, start_step=0):
    return None


def record(config, loaded, workdir) -> None:
    classification.record(config, loaded, workdir)


# ----------------------------------------------------------------------------- evaluation

def evaluate(config, model, spec, hyper_vars, loaded, workdir) -> dict:
    from pudnet_jax.tasks.denoising import evaluation
    return evaluation.evaluate(config, model, spec, hyper_vars, loaded, workdir)


def summary_scalars(results: dict) -> dict:
    from pudnet_jax.tasks.denoising import evaluation
    return evaluation.summary_scalars(results)


def eval_sampler(config, pool, classes=None, seed=None, what='denoising test groups'):
    """Groups of `eval.ways` x `eval.shots` images of `classes` (the test classes)."""
    e = config.eval
    return data_lib.EpisodeSampler(pool, config.data.test_classes if classes is None else classes,
                                   e.ways, e.shots, 0, seed=e.seed if seed is None else seed,
                                   what=what)


def denoise_fn(spec: TargetSpec):
    """jit: (UNet params, noisy group (n, H, W, C)) → the denoised group: normalised by the
    group's statistics, the UNet with BatchNorm statistics of the group, restored."""
    @jax.jit
    def denoise(params, noisy):
        mu, s = group_stats(noisy)
        out, _, _ = apply_with_dataset_stats(spec, params, (noisy - mu) / s)
        return out * s + mu
    return denoise


# ----------------------------------------------------------------------------- other modes

def check_folder(folder: str) -> None:
    """--data: a folder of noisy images (no class subfolders)."""
    from pudnet_jax.tasks.denoising import predict
    predict.check_folder(folder)


def predict_folder(workdir, folder, config=None, baselines=True, clean_folder=None):
    from pudnet_jax.tasks.denoising import predict
    return predict.predict_folder(workdir, folder, config, clean_folder=clean_folder)


def predict_and_save(workdir):
    from pudnet_jax.errors import UserError
    raise UserError('--mode=predict with a denoising workdir needs --data=<folder of noisy '
                    'images> (and optionally --clean=<folder of the clean ones>).')


def compare(workdir, config):
    from pudnet_jax.tasks.denoising import comparison
    return comparison.run_compare(workdir, config)
