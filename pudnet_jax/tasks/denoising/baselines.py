"""Baselines of the denoising comparison (DENOISING.md §4, §5.3), on the same groups and
noise as PudNet. Pixel scale [0, 1]; noisy images unclipped; outputs clipped to [0, 1].

- `classical`: NLM, TV (J-invariant calibration), wavelet (BayesShrink) and BM3D (the
  optional `bm3d` package, non-commercial licence), with the settings of §4 fixed before
  any test image was seen, run per image on the host and timed. `NEEDS_SIGMA` says which
  rows are given the true σ (NLM, BM3D: an oracle a user does not have).
- `N2VTrainer`: Noise2Void on one group's noisy images alone, from a random initialisation
  (the paper's per-dataset baseline) or from given parameters (fine-tuning PudNet's
  predicted UNet), with Adam or GC+Adam (`baselines.make_optimizer`): a PSNR/SSIM curve
  at milestone epochs against cumulative training seconds (compilation excluded).
- `choose_learning_rate`: the scratch runs' learning rate, by PSNR on validation groups.
- `pretrain_n2v`: the Pretrained-N2V control, one UNet (not generated) trained with
  PudNet's loss on PudNet's own training groups for the same steps.

The loss is the task's: the group normalised by its per-channel mean and std
(`denoising.group_stats`), Noise2Void-masked (`noise.n2v_mask`, fresh keys each step),
the MSE at the masked pixels, BatchNorm statistics of the batch. A trained UNet is scored
as PudNet's prediction is (`denoising.denoise_fn`: BatchNorm statistics of the whole
noisy group, output denormalised).
"""

import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from pudnet_jax.baselines import init_opt_state, make_optimizer
from pudnet_jax.targets import TargetSpec, random_init_params
from pudnet_jax.tasks import denoising

# ----------------------------------------------------------------------------- classical

CLASSICAL_METHODS = ('nlm', 'tv_jinv', 'wavelet', 'bm3d')
# Which rows are given the noise level: True = the true σ (known / oracle), False = none
# (self-supervised calibration or σ estimated from the image).
NEEDS_SIGMA = {'nlm': True, 'tv_jinv': False, 'wavelet': False, 'bm3d': True}
TV_WEIGHTS = np.linspace(0.02, 0.3, 15)
SMALL_IMAGE = 32          # at most this many pixels a side: NLM patch 3, distance 4


def bm3d_available() -> str | None:
    """None if the optional `bm3d` package imports, else the reason it does not."""
    try:
        import bm3d  # noqa: F401
    except ImportError as e:    # (an absent package, or a broken libbm4d)
        return f'bm3d is not installed ({e}); pip install bm3d (free for non-commercial use)'
    return None


def _denoiser(method: str, sigma: float, rgb: bool, size: int):
    """A function of one (H, W) or (H, W, 3) noisy image."""
    from skimage import restoration as r
    axis = -1 if rgb else None
    if method == 'nlm':
        patch, distance = (3, 4) if size <= SMALL_IMAGE else (5, 6)
        return lambda y: r.denoise_nl_means(y, h=0.8 * sigma, sigma=sigma, patch_size=patch,
                                            patch_distance=distance, fast_mode=True,
                                            channel_axis=axis)
    if method == 'tv_jinv':
        grid = {'weight': list(TV_WEIGHTS)}
        if rgb:
            grid['channel_axis'] = [-1]
        return lambda y: r.calibrate_denoiser(y, r.denoise_tv_chambolle, grid)(y)
    if method == 'wavelet':
        return lambda y: r.denoise_wavelet(y, method='BayesShrink', mode='soft',
                                           rescale_sigma=True, channel_axis=axis)
    if method == 'bm3d':
        import bm3d
        # Colour: CBM3D (matching in the opponent colour space's luminance).
        return (lambda y: bm3d.bm3d_rgb(y, sigma_psd=sigma)) if rgb else (
            lambda y: bm3d.bm3d(y, sigma_psd=sigma))
    raise ValueError(f'Unknown classical method {method!r}; known: {CLASSICAL_METHODS}.')


def classical(noisy: np.ndarray, sigma: float, methods: Sequence[str] = CLASSICAL_METHODS
              ) -> dict:
    """The classical denoisers on noisy images (N, H, W, C), C in (1, 3), on [0, 1].

    `sigma` is the noise std **on [0, 1]** (config.noise.sigma / 255), used by the rows of
    `NEEDS_SIGMA` only. Returns {method: {'output': (N, H, W, C) float32 clipped to [0, 1],
    'seconds_per_image': float, 'needs_sigma': bool}}; a method that cannot run (BM3D
    without its package) gets {'skipped': reason, 'needs_sigma': ...} instead.
    """
    noisy = np.asarray(noisy, np.float64)
    if noisy.ndim != 4 or noisy.shape[-1] not in (1, 3):
        raise ValueError(f'classical takes images (N, H, W, C) with C in (1, 3); '
                         f'got shape {noisy.shape}.')
    if not 0 < sigma < 1:
        raise ValueError(f'sigma={sigma} is the noise std on the [0, 1] scale '
                         f'(config.noise.sigma / 255).')
    rgb = noisy.shape[-1] == 3
    size = min(noisy.shape[1:3])
    results = {}
    for method in methods:
        row = {'needs_sigma': NEEDS_SIGMA[method]}
        reason = bm3d_available() if method == 'bm3d' else None
        if reason is not None:
            logging.warning('Classical row %s skipped: %s', method, reason)
            results[method] = dict(row, skipped=reason)
            continue
        fn = _denoiser(method, sigma, rgb, size)
        outs = []
        t0 = time.perf_counter()
        for y in noisy:
            out = np.asarray(fn(y if rgb else y[..., 0]))
            outs.append(out if rgb else out[..., None])
        seconds = (time.perf_counter() - t0) / len(noisy)
        logging.info('Classical %s: %d image(s), %.3f s each.', method, len(noisy), seconds)
        results[method] = dict(row, output=np.clip(np.stack(outs), 0, 1).astype(np.float32),
                               seconds_per_image=seconds)
    return results


# ----------------------------------------------------------------------------- N2V training

def score(clean, output) -> tuple[float, float]:
    """A group's mean PSNR and SSIM (the evaluation's metrics)."""
    from pudnet_jax.tasks.denoising import evaluation
    return evaluation.scores(clean, output)


class N2VTrainer:
    """Noise2Void training of the UNet of `spec` on one group's noisy images, mini-batches
    of `batch_size` images (a shuffled epoch drops its last partial batch), Adam or GC+Adam
    (`optimizer` 'adam' | 'gc'), the learning rate as optimiser state: one compilation per
    group shape serves every learning rate, seed and initialisation."""

    def __init__(self, spec: TargetSpec, optimizer: str = 'gc', batch_size: int = 8,
                 mask_fraction: float = 0.1, mask_radius: int = 2, loss: str = 'mse'):
        if spec.output != 'image':
            raise ValueError(f'N2VTrainer trains an image-to-image target; {spec.name!r} '
                             f'is a feature extractor.')
        self.spec, self.optimizer, self.batch_size = spec, optimizer, int(batch_size)
        self.tx = make_optimizer(optimizer)
        fraction, radius, kind = float(mask_fraction), int(mask_radius), loss
        tx = self.tx

        def step(params, opt_state, x_all, idx, key):
            loss, grads = jax.value_and_grad(
                lambda p: denoising.n2v_loss(spec, p, x_all[idx], key, fraction, radius,
                                             kind)[0])(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self._step = jax.jit(step)
        self._compiled = {}            # group shape -> (compiled step, compile seconds)
        self.denoise = denoising.denoise_fn(spec)

    def compiled_step(self, params, opt_state, x_all):
        """The step compiled for this group shape (once); returns (step, compile seconds,
        0 if it was already compiled)."""
        shape = tuple(x_all.shape)
        if shape in self._compiled:
            return self._compiled[shape], 0.0
        idx = jnp.zeros((self.batch_size,), jnp.int32)
        t0 = time.perf_counter()
        compiled = self._step.lower(params, opt_state, x_all, idx,
                                    jax.random.PRNGKey(0)).compile()
        self._compiled[shape] = compiled
        return compiled, time.perf_counter() - t0

    def curve(self, clean, noisy, lr: float, milestones: Sequence[int], seed: int,
              init_params: dict | None = None) -> dict:
        """Trains on the group's noisy images (N, H, W, C) for max(milestones) epochs and at
        each milestone (0 allowed: the starting point) denoises the whole group (BatchNorm
        statistics of the noisy group) and scores it against `clean`.

        `init_params`: start from these UNet params (fine-tuning) instead of
        `random_init_params(spec, seed)`. Seed also fixes the batch order and the masks.
        Returns {'epochs', 'seconds' (cumulative training seconds, compilation and scoring
        excluded), 'psnr', 'ssim', 'loss' (mean over each milestone's last epoch),
        'compile_seconds', 'lr', 'optimizer', 'params' (the final ones)}.
        """
        milestones = sorted(int(m) for m in milestones)
        noisy = jnp.asarray(noisy, jnp.float32)
        n = noisy.shape[0]
        if n < self.batch_size:
            raise ValueError(f'batch_size {self.batch_size} exceeds the group '
                             f'({n} images).')
        mu, s = denoising.group_stats(noisy)
        x_all = (noisy - mu) / s
        params = random_init_params(self.spec, seed) if init_params is None else init_params
        params = jax.tree.map(jnp.asarray, params)
        opt_state = init_opt_state(self.tx, params, lr)
        step, compile_seconds = self.compiled_step(params, opt_state, x_all)
        t0 = time.perf_counter()
        jax.block_until_ready(self.denoise(params, noisy))   # (its compilation, untimed)
        eval_compile_seconds = time.perf_counter() - t0
        rng = np.random.default_rng([seed, 7])
        base_key = jax.random.PRNGKey(seed)
        out = {'epochs': [], 'seconds': [], 'psnr': [], 'ssim': [], 'loss': []}

        def record(epoch, elapsed, loss):
            p, q = score(clean, self.denoise(params, noisy))
            for k, v in zip(out, (epoch, elapsed, p, q, loss)):
                out[k].append(v)

        if milestones and milestones[0] == 0:
            record(0, 0.0, float('nan'))
        elapsed, count = 0.0, 0
        per_epoch = n // self.batch_size
        for e in range(1, (milestones[-1] if milestones else 0) + 1):
            order = rng.permutation(n).astype(np.int32)
            batches = [jnp.asarray(order[i * self.batch_size:(i + 1) * self.batch_size])
                       for i in range(per_epoch)]
            keys = jax.random.split(jax.random.fold_in(base_key, e), per_epoch)
            losses = []
            t1 = time.perf_counter()
            for b in range(per_epoch):
                params, opt_state, loss = step(params, opt_state, x_all, batches[b], keys[b])
                losses.append(loss)
            jax.block_until_ready(params)
            elapsed += time.perf_counter() - t1
            count += per_epoch
            if e in milestones:
                record(e, elapsed, float(jnp.mean(jnp.stack(losses))))
        return dict(out, compile_seconds=compile_seconds,
                    eval_compile_seconds=eval_compile_seconds, lr=float(lr),
                    optimizer=self.optimizer, steps=count, params=params)


def choose_learning_rate(trainer: N2VTrainer, val_groups, epochs: int, seed: int,
                         learning_rates: Sequence[float] = (3e-4, 1e-3, 3e-3),
                         init_params=None) -> tuple[float, dict]:
    """The learning rate of `learning_rates` whose run gives the best mean PSNR after
    `epochs` epochs on `val_groups`, a list of (clean, noisy) groups of validation classes
    (never test groups); `init_params`: None (scratch), UNet params, or a function of the
    noisy group giving them (fine-tuning PudNet's prediction for that group). A single
    learning rate, or no validation group, is returned as it is. Returns (lr, {lr: mean
    validation PSNR})."""
    if len(learning_rates) == 1 or not val_groups:
        return float(learning_rates[0]), {}
    init = init_params if callable(init_params) else (lambda noisy: init_params)
    table = {}
    for lr in learning_rates:
        psnrs = [trainer.curve(clean, noisy, lr, (epochs,), seed + g, init(noisy))['psnr'][-1]
                 for g, (clean, noisy) in enumerate(val_groups)]
        table[float(lr)] = float(np.mean(psnrs))
        logging.info('N2V %s lr %g: validation PSNR %.2f dB after %d epochs (%d groups).',
                     trainer.optimizer, lr, table[float(lr)], epochs, len(val_groups))
    return max(table, key=table.get), table


# ----------------------------------------------------------------------------- Pretrained-N2V

@functools.lru_cache(maxsize=8)
def _pretrain_step(spec: TargetSpec, fraction: float, radius: int, lr: float, b1: float,
                   b2: float):
    """The jitted Pretrained-N2V step and its optimiser (cached: a second run with the same
    settings, e.g. another seed, does not compile again)."""
    noise_config = ml_collections.ConfigDict({'noise': {'mask_fraction': fraction,
                                                        'mask_radius': radius}})
    episode_loss = denoising.make_episode_loss(noise_config, spec)
    tx = optax.adam(lr, b1=b1, b2=b2)

    @jax.jit
    def step(params, opt_state, batch):
        def loss_fn(p):
            # Unrolled over the episodes (PudNet's CPU default).
            losses = [episode_loss({}, p, jax.tree.map(lambda v: v[e], batch))[0]
                      for e in range(batch.noisy.shape[0])]
            return jnp.mean(jnp.stack(losses))
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss
    return step, tx


def pretrain_n2v(config, spec: TargetSpec, sampler, steps: int, seed: int
                 ) -> tuple[dict, float]:
    """Pretrained-N2V: one UNet of `spec` (`random_init_params(spec, seed)`) trained with
    the task's episode loss (`denoising.make_episode_loss`) on the groups PudNet trains
    on: `sampler` is the task's `GroupSampler`, step s takes
    `sampler.sample_indices(s, config.train.episodes_per_step)` (the same groups, noise
    and mask keys as PudNet's step s); the loss is the mean over those episodes. Adam at
    config.train.learning_rate (b1, b2 of config.train), no schedule.

    Returns (params in the layout `apply_with_dataset_stats` takes, training seconds:
    the step's compilation included on the first run with these settings, not on later
    ones (cached); the initialisation excluded)."""
    t = config.train
    step, tx = _pretrain_step(spec, float(config.noise.mask_fraction),
                              int(config.noise.mask_radius), float(t.learning_rate),
                              float(t.b1), float(t.b2))
    params = random_init_params(spec, seed)
    opt_state = tx.init(params)
    every = max(1, steps // 10)
    t0 = time.perf_counter()
    for s in range(1, steps + 1):
        batch = sampler.episodes(sampler.sample_indices(s, t.episodes_per_step))
        params, opt_state, loss = step(params, opt_state, batch)
        if s % every == 0 or s == steps:
            logging.info('Pretrained-N2V: step %d/%d, N2V loss %.4f, %.1f s', s, steps,
                         float(loss), time.perf_counter() - t0)
    jax.block_until_ready(params)
    return params, time.perf_counter() - t0
