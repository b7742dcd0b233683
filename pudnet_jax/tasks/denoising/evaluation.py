"""Denoising evaluation: PudNet's UNet per group beside the noisy input and the controls,
on the same groups and the same noise (DENOISING.md §5.3).

Intra: `eval.groups` groups of the held-out classes (`eval.ways` × `eval.shots` images,
noise seeded by (eval.seed, 4, group)); each group is sketched, gets its UNet (BatchNorm
statistics from the noisy group itself, transductive as in the paper and in Noise2Void)
and is denoised. Full images (`eval.full_images`, sources with whole photographs): each
held-out photograph, noisy as a whole (seeded by (eval.seed, 5, index)), is sketched from
all its image_size tiles, gets its UNet and is denoised whole, as a group of overlapping
tiles (`denoise_image`): the protocol to compare with classical denoisers (a mean of per-tile PSNRs is not a
full-image PSNR).

Rows: PudNet; the noisy input; the untrained UNet (random init, `eval.untrained_seeds`
of them, BatchNorm statistics from the group); the mean-sketch UNet (one UNet generated
from the mean sketch of training groups); and, when the workdir has it, the Pretrained-N2V
UNet (the same UNet trained with Noise2Void on the training pool with PudNet's budget:
the control for what the hypernetwork adds); with learned steps on the sketch
(`refine_steps`), PudNet after them and the mean sketch after the same steps. The same
rows on `eval.val_groups` groups of the validation photographs go under `validation`:
what settings are selected on. PSNR (outputs clipped to [0, 1]) and SSIM
(`metrics`); `predict_seconds`: median over groups of sketch + generate after
compilation, `denoise_seconds` the UNet's pass, compilation timed apart."""

import time

import jax
import jax.numpy as jnp
import numpy as np

from pudnet_jax import controls, inner_loop, metrics, noise
from pudnet_jax.hypernet import PudNet
from pudnet_jax.targets import TargetSpec, apply_with_dataset_stats, random_init_params
from pudnet_jax.tasks import denoising as task

ROWS = ('pudnet', 'refined', 'noisy', 'untrained', 'mean_sketch', 'mean_sketch_refined',
        'pretrained_n2v')
LABELS = {'pudnet': 'PudNet', 'refined': 'PudNet + learned step', 'noisy': 'noisy input',
          'untrained': 'untrained UNet', 'mean_sketch': 'mean-sketch UNet',
          'mean_sketch_refined': 'mean sketch + learned step',
          'pretrained_n2v': 'Pretrained-N2V UNet'}
CONTROLS = ('untrained', 'mean_sketch', 'mean_sketch_refined', 'pretrained_n2v')


def refine_steps(config) -> int:
    """The learned steps prediction takes (`eval.refine_steps` with
    `eval.refine_optimizer='learned'`; 0 without)."""
    e = config.eval
    return int(e.get('refine_steps', 0) or 0) if e.get('refine_optimizer') == 'learned' else 0


class Predictor:
    """PudNet's UNet for a noisy group: `params(noisy)` (sketch + generate, one jit each)
    and `denoise(params, noisy)`; `images` pads, denoises and crops whole images. With
    `config` asking for learned steps (`refine_steps`): `refined_params(noisy, key)`, the
    UNet of the sketch after those steps on the group's Noise2Void loss (mask from `key`
    folded with the step), one jitted step looped in Python."""

    def __init__(self, model: PudNet, hyper_vars, spec: TargetSpec, config=None):
        self.spec, self.hyper_vars = spec, hyper_vars
        self._encode = jax.jit(lambda hv, x: model.apply(hv, x, train=False,
                                                         method=PudNet.encode).mean(0))
        self._generate = jax.jit(lambda hv, s: model.apply(hv, s, method=PudNet.generate))
        self.denoise = task.denoise_fn(spec)
        self.refine_steps = 0 if config is None else refine_steps(config)
        if self.refine_steps:
            # The step of meta-training's inner loop (the restored params hold α too).
            loss = task.make_step_loss(config, model, spec)
            self._step = jax.jit(lambda hv, s, group, k: inner_loop.step(
                loss, hv['params'], hv['params'], s, group, k))

    def sketch(self, noisy):
        return self._encode(self.hyper_vars, task.normalize(jnp.asarray(noisy)))

    def generate(self, sketch):
        return self._generate(self.hyper_vars, sketch)

    def params(self, noisy):
        return self.generate(self.sketch(noisy))

    def refined_sketch(self, noisy, key, start=None):
        """The sketch after the learned steps on the group `noisy`, from its own sketch
        (or from `start`: the control that steps the mean sketch)."""
        noisy = jnp.asarray(noisy)
        s = self.sketch(noisy) if start is None else start
        group = task.NoisyGroups(clean=None, noisy=noisy, mask_keys=key)
        for k in range(self.refine_steps):
            s = self._step(self.hyper_vars, s, group, k)
        return s

    def refined_params(self, noisy, key, start=None):
        return self.generate(self.refined_sketch(noisy, key, start))

    def image(self, params, noisy_image: np.ndarray) -> np.ndarray:
        """One whole (H, W, C) noisy image denoised tile by tile (`denoise_image`)."""
        return denoise_image(self, params, noisy_image)

    def stats_and_apply(self):
        if not hasattr(self, '_tiled'):
            spec = self.spec
            stats = jax.jit(lambda p, x: apply_with_dataset_stats(spec, p, x)[2])
            apply = jax.jit(lambda p, st, x: spec.module().apply(
                {'params': p, 'batch_stats': st}, x, train=False))
            self._tiled = stats, apply
        return self._tiled


TILE_CHUNK = 1024       # tiles per UNet call, and the most BatchNorm statistics are taken over


def denoise_image(predictor: Predictor, params, noisy_image: np.ndarray) -> np.ndarray:
    """A whole image denoised the way the UNet was trained: as a group of S x S tiles
    (S = the hypernetwork's image size). Tiles at stride S/2 over the image reflect-padded
    by S/4, each contributing its central S/2 x S/2 (so every pixel comes from the middle of
    a tile, away from the tile's zero-padded border); the tiles are normalised by their
    group's mean and std and run with BatchNorm statistics of the group (of at most
    `TILE_CHUNK` of them, evenly spread, for very large images), then restored."""
    size = predictor.spec.image_shape[0]
    s, q = size // 2, size // 4
    h, w, c = noisy_image.shape
    H, W = -(-h // s) * s, -(-w // s) * s
    padded = np.pad(np.asarray(noisy_image, np.float32),
                    ((q, q + H - h), (q, q + W - w), (0, 0)), mode='reflect')
    ny, nx = H // s, W // s
    tiles = np.stack([padded[i * s:i * s + size, j * s:j * s + size]
                      for i in range(ny) for j in range(nx)])
    mu = tiles.mean(axis=(0, 1, 2), keepdims=True)
    sd = tiles.std(axis=(0, 1, 2), keepdims=True) + task.EPS
    x = (tiles - mu) / sd
    stats_fn, apply_fn = predictor.stats_and_apply()
    sub = x if len(x) <= TILE_CHUNK else \
        x[np.linspace(0, len(x) - 1, TILE_CHUNK).round().astype(int)]
    stats = stats_fn(params, jnp.asarray(sub))
    out = []
    for i in range(0, len(x), TILE_CHUNK):
        chunk = x[i:i + TILE_CHUNK]
        n = len(chunk)
        if len(x) > TILE_CHUNK and n < TILE_CHUNK:       # one compiled shape
            chunk = np.concatenate([chunk, np.zeros((TILE_CHUNK - n,) + chunk.shape[1:],
                                                    chunk.dtype)])
        out.append(np.asarray(apply_fn(params, stats, jnp.asarray(chunk)))[:n])
    den = np.concatenate(out) * sd + mu
    centres = den[:, q:q + s, q:q + s]
    full = centres.reshape(ny, nx, s, s, c).transpose(0, 2, 1, 3, 4).reshape(H, W, c)
    return full[:h, :w]


def timed(fn, *args):
    """(result, seconds) of fn(*args), waited for."""
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def scores(clean, out) -> tuple[float, float]:
    """The group's mean PSNR and SSIM."""
    return (float(np.mean(metrics.psnr(clean, out))),
            float(np.mean(np.asarray(metrics.ssim_jax(jnp.asarray(clean), jnp.asarray(out))))))


def image_scores(clean, out) -> tuple[float, float]:
    """PSNR and SSIM of one whole image (SSIM by scikit-image: any size)."""
    from skimage.metrics import structural_similarity
    out = np.clip(out, 0.0, 1.0)
    c = clean.shape[-1]
    ssim = structural_similarity(clean[..., 0] if c == 1 else clean, out[..., 0] if c == 1 else out,
                                 data_range=1.0, channel_axis=None if c == 1 else -1)
    return float(metrics.psnr(clean[None], out[None])[0]), float(ssim)


def mean_sketch_params(config, predictor: Predictor, pool):
    """The UNet of the mean sketch of training groups (seeded, fixed), and the count."""
    e = config.eval
    groups = task.eval_sampler(config, pool, config.data.train_classes, e.seed + 1,
                               'mean-sketch groups')
    sketches = []
    for g in range(max(1, int(e.mean_sketch_images) // (e.ways * e.shots))):
        _, noisy = task.noisy_group(groups, g, config.noise.sigma, (e.seed, 3, g))
        sketches.append(predictor.sketch(noisy))
    mean = jnp.mean(jnp.stack(sketches), axis=0)
    return predictor.generate(mean), len(sketches), mean


def control_params(config, spec, predictor, loaded, workdir) -> dict:
    """{row: UNet params or None}: the controls' networks (None: per group, PudNet's)."""
    from pudnet_jax.tasks.denoising import pretrained
    mean_params, _, mean = mean_sketch_params(config, predictor, loaded.pool)
    out = {'mean_sketch': mean_params, 'mean_sketch_sketch': mean,
           'untrained': [random_init_params(spec, config.eval.seed + 100 + i)
                         for i in range(config.eval.untrained_seeds)]}
    if workdir and config.eval.get('pretrained_n2v', True):
        out['pretrained_n2v'] = pretrained.ensure(config, spec, loaded, workdir)
    return out


def _summary(values) -> dict:
    p, s = np.asarray(values).T
    (pm, pc), (sm, sc) = controls.mean_ci95(p), controls.mean_ci95(s)
    return {'psnr': pm, 'psnr_ci95': pc, 'ssim': sm, 'ssim_ci95': sc}


def inter_images(config) -> np.ndarray:
    """The inter-dataset target's test images (uint8, (N, S, S, C) at the run's size):
    `eval.dataset` (`eval.test_split`, `eval.data_dir` for folders), the first
    `eval.per_class` of each class (all when None), in class order."""
    from pudnet_jax import sources
    e = config.eval
    loaded = sources.load(e.dataset, config.data.image_size, config.data.channels,
                          e.get('data_dir'), e.get('test_split') or 'all',
                          cache_dir=config.data.get('cache_dir'))
    per_class = e.get('per_class')
    images = np.concatenate([loaded.pool[k][:per_class] for k in sorted(loaded.pool)])
    if len(images) < e.group_size:
        raise ValueError(f'config.eval.dataset={e.dataset!r} has {len(images)} test images, '
                         f'fewer than one group (config.eval.group_size={e.group_size}).')
    return images


def test_groups(config, loaded, count=None):
    """(clean, noisy) test groups: intra, groups of the held-out classes (`eval_sampler`,
    noise seeded by (eval.seed, 4, group)); inter (`eval.protocol='inter'`), the target's
    test images shuffled (seeded by eval.seed; `eval.group_order='class'`: in class order,
    as the authors' consecutive batches) and cut into groups of `eval.group_size`, at most
    `eval.groups` of them, noise seeded by (eval.seed, 7, group)."""
    e = config.eval
    count = int(e.groups if count is None else count)
    if e.get('protocol') != 'inter':
        sampler = task.eval_sampler(config, loaded.pool)
        for g in range(count):
            yield task.noisy_group(sampler, g, config.noise.sigma, (e.seed, 4, g))
        return
    images = inter_images(config)
    order = (np.arange(len(images)) if e.get('group_order', 'shuffled') == 'class'
             else np.random.default_rng([e.seed, 8]).permutation(len(images)))
    n = int(e.group_size)
    for g in range(min(count, len(images) // n)):
        clean = images[order[g * n:(g + 1) * n]].astype(np.float32) / 255.0
        yield clean, jnp.asarray(noise.add_gaussian_noise(clean, config.noise.sigma,
                                                          (e.seed, 7, g)))


def refine_key(seed: tuple):
    """A Noise2Void mask key for the learned steps, seeded by a tuple (deterministic)."""
    return jnp.asarray(np.random.default_rng(seed).integers(0, 2**32, 2, dtype=np.uint32))


def score_groups(predictor: Predictor, ctrl: dict, groups, seed: tuple) -> tuple[dict, dict]:
    """({row: [(PSNR, SSIM) per group]}, {timings}) of PudNet, the noisy input and each
    control on `groups` ((clean, noisy) pairs), and with learned steps the stepped PudNet
    and the stepped mean sketch (mask keys seeded by `seed` + (group,))."""
    stepped = predictor.refine_steps > 0
    rows = {k: [] for k in ROWS if k in ctrl or k in ('pudnet', 'noisy')
            or (stepped and k in ('refined', 'mean_sketch_refined'))}
    times = {'predict': [], 'denoise': [], 'refined': [], 'compile': None}
    for g, (clean, noisy) in enumerate(groups):
        params, seconds = timed(predictor.params, noisy)
        out, d_seconds = timed(predictor.denoise, params, noisy)
        if g == 0:
            times['compile'] = seconds + d_seconds
        else:
            times['predict'].append(seconds)
            times['denoise'].append(d_seconds)
        rows['pudnet'].append(scores(clean, out))
        rows['noisy'].append(scores(clean, noisy))
        rows['mean_sketch'].append(scores(clean, predictor.denoise(ctrl['mean_sketch'], noisy)))
        # The untrained control of a group: the mean over its initialisations.
        rows['untrained'].append(np.mean([scores(clean, predictor.denoise(p, noisy))
                                          for p in ctrl['untrained']], axis=0))
        if 'pretrained_n2v' in rows:
            rows['pretrained_n2v'].append(scores(clean, predictor.denoise(ctrl['pretrained_n2v'],
                                                                         noisy)))
        if stepped:
            key = refine_key(tuple(seed) + (g,))
            params, seconds = timed(predictor.refined_params, noisy, key)
            if g:
                times['refined'].append(seconds)
            rows['refined'].append(scores(clean, predictor.denoise(params, noisy)))
            start = predictor.refined_params(noisy, key, ctrl['mean_sketch_sketch'])
            rows['mean_sketch_refined'].append(scores(clean, predictor.denoise(start, noisy)))
    return rows, times


def summarise(rows: dict, ctrl: dict, steps: int, times: dict | None = None) -> dict:
    """PudNet's PSNR/SSIM, its controls and the paired gains (and the learned step's row,
    `refined`, with its own gains) from `score_groups`' rows."""
    def paired(a, b):
        return controls.mean_ci95(np.asarray(rows[a])[:, 0] - np.asarray(rows[b])[:, 0])

    median = lambda k: float(np.median(times[k])) if times and times[k] else None
    gain, gain_ci = paired('pudnet', 'mean_sketch')
    over, over_ci = paired('pudnet', 'untrained')
    out = dict(_summary(rows['pudnet']), groups=len(rows['pudnet']),
               noisy=_summary(rows['noisy']),
               psnr_noisy=float(np.mean(np.asarray(rows['noisy'])[:, 0])),
               ssim_noisy=float(np.mean(np.asarray(rows['noisy'])[:, 1])),
               controls={'untrained': dict(_summary(rows['untrained']),
                                           networks=len(ctrl['untrained'])),
                         'mean_sketch': _summary(rows['mean_sketch'])},
               conditioning_gain_db=gain, conditioning_gain_db_ci95=gain_ci,
               gain_over_untrained_db=over, gain_over_untrained_db_ci95=over_ci)
    if 'pretrained_n2v' in rows:
        out['controls']['pretrained_n2v'] = _summary(rows['pretrained_n2v'])
        d, dc = paired('pudnet', 'pretrained_n2v')
        out['gain_over_pretrained_n2v_db'], out['gain_over_pretrained_n2v_db_ci95'] = d, dc
    if 'refined' in rows:
        # The learned step's own row, paired against each control and the single pass.
        out['controls']['mean_sketch_refined'] = _summary(rows['mean_sketch_refined'])
        ref = dict(_summary(rows['refined']), steps=steps, predict_seconds=median('refined'))
        for name, other in (('single_pass', 'pudnet'), ('mean_sketch', 'mean_sketch'),
                            ('mean_sketch_refined', 'mean_sketch_refined'),
                            ('untrained', 'untrained'), ('pretrained_n2v', 'pretrained_n2v')):
            if other in rows:
                ref[f'gain_over_{name}_db'], ref[f'gain_over_{name}_db_ci95'] = \
                    paired('refined', other)
        out['refined'] = ref
    if times is not None:
        out.update(predict_seconds=median('predict'), denoise_seconds=median('denoise'),
                   compile_seconds=times['compile'])
    return out


def validation_groups(config, loaded):
    """(clean, noisy) groups of the validation photographs (`data.val_classes`), as the
    test groups of the held-out ones: `eval.val_groups` of them, noise seeded by
    (eval.seed, 10, group). What settings are selected on."""
    e = config.eval
    sampler = task.eval_sampler(config, loaded.pool, tuple(config.data.val_classes),
                                e.seed + 2, 'validation groups')
    for g in range(int(e.get('val_groups') or 20)):
        yield task.noisy_group(sampler, g, config.noise.sigma, (e.seed, 10, g))


def evaluate(config, model: PudNet, spec: TargetSpec, hyper_vars, loaded, workdir) -> dict:
    e = config.eval
    predictor = Predictor(model, hyper_vars, spec, config)
    ctrl = control_params(config, spec, predictor, loaded, workdir)
    inter = e.get('protocol') == 'inter'
    results = {'task': 'denoising', 'target': spec.name,
               'protocol': 'inter' if inter else 'intra',
               'dataset': e.dataset if inter else config.data.name, 'pool': config.data.name,
               'sigma': float(config.noise.sigma),
               'images_per_group': int(e.group_size if inter else e.ways * e.shots)}
    rows, times = score_groups(predictor, ctrl, test_groups(config, loaded), (e.seed, 6))
    results.update(summarise(rows, ctrl, predictor.refine_steps, times))
    if not inter and config.data.get('val_classes'):
        rows, _ = score_groups(predictor, ctrl, validation_groups(config, loaded), (e.seed, 11))
        results['validation'] = dict(summarise(rows, ctrl, predictor.refine_steps),
                                     classes=list(config.data.val_classes))
    if e.get('full_images', False) and not inter:
        results['full_images'] = evaluate_full_images(config, predictor, ctrl)
    print(format_results(results))
    return results


def full_image_pairs(config) -> dict:
    """{photograph: (clean (H, W, C) on [0, 1], noisy)} of the held-out photographs."""
    from pudnet_jax.sources import photos
    if config.data.name not in photos.SETS:
        raise ValueError(f'config.eval.full_images=True needs a source of whole photographs '
                         f'({sorted(photos.SETS)}); config.data.name={config.data.name!r}.')
    images = photos.full_images(config.data.name, config.data.channels, config.data.test_classes)
    return {name: (img.astype(np.float32) / 255.0,
                   noise.add_gaussian_noise(img.astype(np.float32) / 255.0, config.noise.sigma,
                                            (config.eval.seed, 5, i)))
            for i, (name, img) in enumerate(images.items())}


def image_tiles(noisy_image: np.ndarray, size: int) -> np.ndarray:
    from pudnet_jax.sources import photos
    return photos.tiles(noisy_image, size)


def evaluate_full_images(config, predictor: Predictor, ctrl: dict) -> dict:
    out = {}
    for i, (name, (clean, noisy)) in enumerate(full_image_pairs(config).items()):
        tiles = image_tiles(noisy, config.data.image_size)
        t = time.perf_counter()
        params = jax.block_until_ready(predictor.params(tiles))
        seconds = time.perf_counter() - t
        row = {'pudnet': image_scores(clean, predictor.image(params, noisy)),
               'noisy': image_scores(clean, noisy),
               'mean_sketch': image_scores(clean, predictor.image(ctrl['mean_sketch'], noisy)),
               'untrained': tuple(np.mean([image_scores(clean, predictor.image(p, noisy))
                                           for p in ctrl['untrained']], axis=0))}
        if 'pretrained_n2v' in ctrl:
            row['pretrained_n2v'] = image_scores(clean, predictor.image(ctrl['pretrained_n2v'],
                                                                        noisy))
        if predictor.refine_steps:
            key = refine_key((config.eval.seed, 9, i))
            row['refined'] = image_scores(clean, predictor.image(
                predictor.refined_params(tiles, key), noisy))
            row['mean_sketch_refined'] = image_scores(clean, predictor.image(
                predictor.refined_params(tiles, key, ctrl['mean_sketch_sketch']), noisy))
        out[name] = {k: {'psnr': float(v[0]), 'ssim': float(v[1])} for k, v in row.items()}
        out[name]['shape'] = list(clean.shape)
        out[name]['predict_seconds_incl_compile'] = seconds
    return out


def format_results(r: dict) -> str:
    row = lambda name, d: (f"{name:<28}{d['psnr']:7.2f} ± {d['psnr_ci95']:.2f} dB   "
                           f"SSIM {d['ssim']:.4f} ± {d['ssim_ci95']:.4f}")
    where = (f"{r['dataset']} (inter-dataset, trained on {r['pool']})"
             if r.get('protocol') == 'inter' else r['dataset'])
    lines = [f"Denoising, σ = {r['sigma']:g}, {r['groups']} groups of {r['images_per_group']} "
             f"held-out images ({where}, {r['target']}):",
             row('PudNet', r), row('noisy input', r['noisy'])]
    if 'refined' in r:
        lines.insert(2, row(f"PudNet + {r['refined']['steps']} learned step"
                            f"{'s' if r['refined']['steps'] > 1 else ''}", r['refined']))
    lines += [row(LABELS[k], r['controls'][k]) for k in CONTROLS if k in r['controls']]
    lines.append(f"conditioning gain (vs mean sketch) {r['conditioning_gain_db']:+.2f} ± "
                 f"{r['conditioning_gain_db_ci95']:.2f} dB; over untrained "
                 f"{r['gain_over_untrained_db']:+.2f} ± {r['gain_over_untrained_db_ci95']:.2f} dB"
                 + (f"; over Pretrained-N2V {r['gain_over_pretrained_n2v_db']:+.2f} ± "
                    f"{r['gain_over_pretrained_n2v_db_ci95']:.2f} dB"
                    if 'gain_over_pretrained_n2v_db' in r else ''))
    if 'refined' in r:
        f = r['refined']
        lines.append('learned step: ' + '; '.join(
            f"over {name.replace('_', ' ')} {f[f'gain_over_{name}_db']:+.2f} ± "
            f"{f[f'gain_over_{name}_db_ci95']:.2f} dB"
            for name in ('single_pass', 'mean_sketch', 'mean_sketch_refined', 'untrained',
                         'pretrained_n2v') if f'gain_over_{name}_db' in f)
            + (f"; {1000 * f['predict_seconds']:.1f} ms per group"
               if f.get('predict_seconds') is not None else ''))
    if r.get('predict_seconds') is not None:
        lines.append(f"predict (sketch + generate) {1000 * r['predict_seconds']:.1f} ms per "
                     f"group, denoise {1000 * r['denoise_seconds']:.1f} ms (median, compiled)")
    if 'validation' in r:
        v = r['validation']
        lines.append(f"validation (selection; {v['groups']} groups of photographs "
                     f"{v['classes']}): PudNet {v['psnr']:.2f} dB"
                     + (f", + learned step {v['refined']['psnr']:.2f}" if 'refined' in v else '')
                     + f", mean sketch {v['controls']['mean_sketch']['psnr']:.2f}, noisy "
                     f"{v['psnr_noisy']:.2f}")
    for name, f in r.get('full_images', {}).items():
        cells = '  '.join(f"{LABELS[k]} {f[k]['psnr']:.2f}/{f[k]['ssim']:.3f}"
                          for k in ROWS if k in f)
        lines.append(f"full image {name} {f['shape'][0]}x{f['shape'][1]} (PSNR/SSIM): {cells}")
    return '\n'.join(lines)


def summary_scalars(results: dict) -> dict:
    out = {'eval/psnr': results['psnr'], 'eval/ssim': results['ssim'],
           'eval/noisy_psnr': results['noisy']['psnr'],
           'eval/untrained_psnr': results['controls']['untrained']['psnr'],
           'eval/mean_sketch_psnr': results['controls']['mean_sketch']['psnr'],
           'eval/conditioning_gain_db': results['conditioning_gain_db']}
    if 'pretrained_n2v' in results['controls']:
        out['eval/pretrained_n2v_psnr'] = results['controls']['pretrained_n2v']['psnr']
    if 'refined' in results:
        out['eval/refined_psnr'] = results['refined']['psnr']
    return out
