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
mean sketch of training groups. No task parameters: no head, no τ.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics

from pudnet_jax import controls
from pudnet_jax import data as data_lib
from pudnet_jax import metrics, noise
from pudnet_jax.hypernet import PudNet
from pudnet_jax.tasks import classification
from pudnet_jax.targets import TargetSpec, apply_with_dataset_stats, random_init_params

PARAM_NAMES = ()
PROGRESS = ('psnr', 'PSNR (masked input, vs clean)')
TARGET_OUTPUT = 'image'
MODES = ('train', 'evaluate')
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
    _eval_sampler(config, loaded.pool)


def sketch_images(batch: NoisyGroups):
    return normalize(batch.noisy)


def init_params(config, spec, seed) -> dict:
    return {}


@flax.struct.dataclass
class Metrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output('loss')
    psnr: clu_metrics.Average.from_output('psnr')


def make_episode_loss(config, spec: TargetSpec):
    fraction, radius = float(config.noise.mask_fraction), int(config.noise.mask_radius)

    def episode_loss(task_params, generated, ep: NoisyGroups):
        mu, s = group_stats(ep.noisy)
        x = (ep.noisy - mu) / s
        masked, mask = noise.n2v_mask(ep.mask_keys, x, fraction, radius)
        out, _, _ = apply_with_dataset_stats(spec, generated, masked)
        loss = jnp.sum(mask * jnp.square(out - x)) / jnp.maximum(jnp.sum(mask), 1.0)
        psnr = jnp.mean(metrics.psnr_jax(ep.clean, out * s + mu))
        return loss, {'loss': loss, 'psnr': psnr}
    return episode_loss


def validation_curve(config, model, spec, loaded, workdir, start_step=0):
    return None


def record(config, loaded, workdir) -> None:
    classification.record(config, loaded, workdir)


# ----------------------------------------------------------------------------- evaluation

def _eval_sampler(config, pool) -> data_lib.EpisodeSampler:
    e = config.eval
    return data_lib.EpisodeSampler(pool, config.data.test_classes, e.ways, e.shots, 0,
                                   seed=e.seed, what='denoising test groups')


def _denoise_fn(spec: TargetSpec):
    @jax.jit
    def denoise(params, noisy):
        mu, s = group_stats(noisy)
        out, _, _ = apply_with_dataset_stats(spec, params, (noisy - mu) / s)
        return out * s + mu
    return denoise


def evaluate(config, model: PudNet, spec: TargetSpec, hyper_vars, loaded, workdir) -> dict:
    e = config.eval
    pool = loaded.pool
    sampler = _eval_sampler(config, pool)
    encode = jax.jit(lambda hv, x: model.apply(hv, x, train=False, method=PudNet.encode).mean(0))
    generate = jax.jit(lambda hv, s: model.apply(hv, s, method=PudNet.generate))
    denoise = _denoise_fn(spec)
    # The mean-sketch control: the mean sketch of training groups (seeded, fixed).
    train_groups = data_lib.EpisodeSampler(pool, config.data.train_classes, e.ways, e.shots, 0,
                                           seed=e.seed + 1, what='mean-sketch groups')
    sketches = []
    for g in range(max(1, int(e.mean_sketch_images) // (e.ways * e.shots))):
        _, noisy = noisy_group(train_groups, g, config.noise.sigma, (e.seed, 3, g))
        sketches.append(encode(hyper_vars, normalize(noisy)))
    mean_params = generate(hyper_vars, jnp.mean(jnp.stack(sketches), axis=0))
    untrained = [random_init_params(spec, e.seed + 100 + i) for i in range(e.untrained_seeds)]

    rows = {k: ([], []) for k in ('pudnet', 'noisy', 'untrained', 'mean_sketch')}

    def scores(clean, out) -> tuple[float, float]:
        """The group's mean PSNR and SSIM."""
        return (float(np.mean(metrics.psnr(clean, out))),
                float(np.mean(np.asarray(metrics.ssim_jax(clean, out)))))

    def add(name, psnr_ssim):
        rows[name][0].append(float(psnr_ssim[0]))
        rows[name][1].append(float(psnr_ssim[1]))

    for g in range(e.groups):
        clean, noisy = noisy_group(sampler, g, config.noise.sigma, (e.seed, 4, g))
        params = generate(hyper_vars, encode(hyper_vars, normalize(noisy)))
        add('pudnet', scores(clean, denoise(params, noisy)))
        add('noisy', scores(clean, noisy))
        add('mean_sketch', scores(clean, denoise(mean_params, noisy)))
        # The untrained control of a group: the mean over its initialisations.
        add('untrained', np.mean([scores(clean, denoise(p, noisy)) for p in untrained], axis=0))

    def summary(name):
        p, s = rows[name]
        (pm, pc), (sm, sc) = controls.mean_ci95(p), controls.mean_ci95(s)
        return {'psnr': pm, 'psnr_ci95': pc, 'ssim': sm, 'ssim_ci95': sc}

    paired = lambda a, b: controls.mean_ci95(np.asarray(rows[a][0]) - np.asarray(rows[b][0]))
    gain, gain_ci = paired('pudnet', 'mean_sketch')
    over, over_ci = paired('pudnet', 'untrained')
    results = dict(summary('pudnet'), task='denoising', target=spec.name,
                   dataset=config.data.name, sigma=float(config.noise.sigma),
                   groups=int(e.groups), images_per_group=int(e.ways * e.shots),
                   noisy=summary('noisy'),
                   controls={'untrained': dict(summary('untrained'), networks=len(untrained)),
                             'mean_sketch': dict(summary('mean_sketch'),
                                                 sketches=len(sketches))},
                   conditioning_gain_db=gain, conditioning_gain_db_ci95=gain_ci,
                   gain_over_untrained_db=over, gain_over_untrained_db_ci95=over_ci)
    print(format_results(results))
    return results


def format_results(r: dict) -> str:
    row = lambda name, d: (f"{name:<24}{d['psnr']:7.2f} ± {d['psnr_ci95']:.2f} dB   "
                           f"SSIM {d['ssim']:.4f} ± {d['ssim_ci95']:.4f}")
    lines = [f"Denoising, σ = {r['sigma']:g}, {r['groups']} groups of {r['images_per_group']} "
             f"held-out images ({r['dataset']}, {r['target']}):",
             row('PudNet', r), row('noisy input', r['noisy']),
             row('untrained UNet', r['controls']['untrained']),
             row('mean-sketch UNet', r['controls']['mean_sketch']),
             f"conditioning gain (vs mean sketch) {r['conditioning_gain_db']:+.2f} ± "
             f"{r['conditioning_gain_db_ci95']:.2f} dB; over untrained "
             f"{r['gain_over_untrained_db']:+.2f} ± {r['gain_over_untrained_db_ci95']:.2f} dB"]
    return '\n'.join(lines)


def summary_scalars(results: dict) -> dict:
    return {'eval/psnr': results['psnr'], 'eval/ssim': results['ssim'],
            'eval/noisy_psnr': results['noisy']['psnr'],
            'eval/untrained_psnr': results['controls']['untrained']['psnr'],
            'eval/mean_sketch_psnr': results['controls']['mean_sketch']['psnr'],
            'eval/conditioning_gain_db': results['conditioning_gain_db']}
