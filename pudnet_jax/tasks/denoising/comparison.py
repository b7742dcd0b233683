"""`--mode=compare` for a denoising workdir: PudNet against the denoisers a user would
otherwise reach for, on the same groups and the same noise (DENOISING.md §5.3).

Groups: the first `compare.groups` test groups of `results.json` (same draws, same noise
seeds). Rows, each scored by PSNR/SSIM (outputs clipped to [0, 1]) against the clean
images: PudNet (one forward pass per group, seconds = sketch + generate + denoise, median
after compilation); its controls (noisy input, untrained UNet, mean-sketch UNet) and the
Pretrained-N2V UNet (trained once on PudNet's training groups with its budget:
`pretrained.py`); fine-tuning PudNet's UNet on the group with Noise2Void; Noise2Void from
scratch on the group with Adam and with GC, at `compare.epochs`; the classical
denoisers of scikit-image (NLM, TV with J-invariant calibration, wavelet BayesShrink) and
BM3D when the optional `bm3d` package is installed. NLM and BM3D are given the true σ
(an oracle a user lacks); TV and wavelet are not.

Selection: the learning rates of scratch and fine-tuning are chosen by PSNR on
`compare.tune_groups` groups of the validation classes (`config.data.val_classes`,
never the test photographs), at the last epoch milestone. Nothing is selected on the
test groups.

Headline: the speedup at equal PSNR, the seconds the fastest scratch run needs to reach
PudNet's PSNR (interpolated along its epoch curve, from (0 s, the noisy input's PSNR):
generous to the baseline) over PudNet's seconds per group; and the epoch at which it gets
there. With `compare.full_images` (sources of whole photographs), the whole held-out
photographs too: PudNet, Pretrained-N2V and the classical rows (the protocol of the
classical table in DENOISING.md §4; Noise2Void from scratch is not run on them).

Writes `compare.{md,csv,json}`, `compare.png` (PSNR against seconds per group, log
scale) and `compare_examples.png` (as the paper's Fig. 8: tiles of one group and a crop of
a whole photograph, noisy / PudNet / N2V scratch / best classical / clean)."""

import csv
import json
import os
import time

import jax
import numpy as np
from absl import logging

from pudnet_jax import baselines as baselines_lib
from pudnet_jax import compare as compare_lib
from pudnet_jax import controls
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.files import write_json
from pudnet_jax.tasks import denoising as task
from pudnet_jax.tasks.denoising import baselines, evaluation, pretrained

METHODS = task.COMPARE_METHODS
TUNE_SEED = 100_000
LABELS = {'nlm': 'NLM (σ given)', 'tv_jinv': 'TV, J-invariant', 'wavelet': 'wavelet BayesShrink',
          'bm3d': 'BM3D (σ given)'}


def run_compare(workdir: str, config=None) -> dict:
    has_checkpoint = workdir_lib.checkpoint_manager(
        workdir, config or workdir_lib.load_config(workdir)).latest_step() is not None
    if not has_checkpoint:
        if config is None:
            raise FileNotFoundError(f'No trained PudNet in {workdir!r}: pass --config to train.')
        logging.info('No checkpoint in %s: training PudNet first.', workdir)
        from pudnet_jax import train as train_lib
        train_lib.train_and_evaluate(config, workdir)
    config, model, spec, hyper_vars = workdir_lib.restore_hypernet(workdir, config)
    train_seconds = None
    results_path = os.path.join(workdir, workdir_lib.RESULTS_FILE)
    if os.path.exists(results_path):
        with open(results_path) as f:
            train_seconds = json.load(f).get('train_seconds')
    loaded = task.load(config)
    summary = compare_denoising(config, model, spec, hyper_vars, loaded, workdir, train_seconds)
    write_outputs(summary, workdir)
    return summary


def _row(method, scores, seconds=None, one_off=None, epochs=None, family='', note=''):
    s = evaluation._summary(scores)
    return dict(method=method, family=family, epochs=epochs, psnr=s['psnr'],
                psnr_ci95=s['psnr_ci95'], ssim=s['ssim'], ssim_ci95=s['ssim_ci95'],
                seconds=seconds, one_off_seconds=one_off, note=note)


def _groups(config, sampler, count, seed_tag):
    return [task.noisy_group(sampler, g, config.noise.sigma, (config.eval.seed, seed_tag, g))
            for g in range(count)]


def compare_denoising(config, model, spec, hyper_vars, loaded, workdir, train_seconds=None):
    c, e = config.compare, config.eval
    methods = tuple(c.get('methods') or METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f'config.compare.methods={methods!r}: each must be one of {METHODS}.')
    t_start = time.time()
    pool = loaded.pool
    test = list(evaluation.test_groups(config, loaded, int(c.groups)))   # = results.json's
    val_classes = tuple(config.data.get('val_classes') or ())
    if not val_classes and any(m in methods for m in ('adam', 'gc', 'finetune_pudnet')):
        raise ValueError('--mode=compare on a denoising run selects the baselines\' learning '
                         'rates on validation photographs: set config.data.val_classes.')
    tune = _groups(config, task.eval_sampler(config, pool, val_classes, e.seed + TUNE_SEED,
                                             'validation groups'), int(c.tune_groups), 6) \
        if val_classes else []
    sigma01 = float(config.noise.sigma) / 255.0
    predictor = evaluation.Predictor(model, hyper_vars, spec)
    rows, curves, outputs = [], {}, {}

    # PudNet, timed per group (the first group's time is its compilation).
    scores, secs, predicted = [], [], []
    for clean, noisy in test:
        params, s1 = evaluation.timed(predictor.params, noisy)
        out, s2 = evaluation.timed(predictor.denoise, params, noisy)
        scores.append(evaluation.scores(clean, out))
        secs.append(s1 + s2)
        predicted.append(params)
        outputs.setdefault('PudNet', np.asarray(out))
    pudnet_seconds = float(np.median(secs[1:] if len(secs) > 1 else secs))
    rows.append(_row('PudNet', scores, pudnet_seconds, train_seconds, family='pudnet',
                     note='one forward pass (sketch + generate + denoise); one-off: meta-training'))
    pudnet = rows[-1]
    logging.info('PudNet: %.2f dB on %d groups, %.1f ms per group', pudnet['psnr'], len(test),
                 1000 * pudnet_seconds)

    # Controls and the Pretrained-N2V UNet (as in results.json).
    ctrl = evaluation.control_params(config, spec, predictor, loaded, workdir)
    noisy_scores = [evaluation.scores(cl, ny) for cl, ny in test]
    rows.append(_row('noisy input', noisy_scores, 0.0, family='noisy'))
    rows.append(_row('untrained UNet', [np.mean([evaluation.scores(cl, predictor.denoise(p, ny))
                                                 for p in ctrl['untrained']], axis=0)
                                        for cl, ny in test], family='control',
                     note=f"random init, mean of {len(ctrl['untrained'])}"))
    on_test = lambda params: [evaluation.scores(cl, predictor.denoise(params, ny))
                              for cl, ny in test]
    control_scores = {name: on_test(ctrl[name]) for name in ('mean_sketch', 'pretrained_n2v')
                      if name in ctrl}
    rows.append(_row('mean-sketch UNet', control_scores['mean_sketch'], family='mean_sketch',
                     note="generated from the training groups' mean sketch"))
    if 'pretrained_n2v' in ctrl:
        meta = _pretrained_meta(workdir)
        rows.append(_row('Pretrained-N2V UNet', control_scores['pretrained_n2v'], None,
                         meta.get('train_seconds'), family='pretrained',
                         note=f"one UNet, N2V on PudNet's training groups, "
                              f"{meta.get('steps')} steps"))
    noisy_psnr = rows[1]['psnr']
    d = lambda ref: controls.mean_ci95(np.asarray(scores)[:, 0] - np.asarray(ref)[:, 0])

    # Noise2Void on each group: fine-tuning PudNet's UNet, and from scratch (Adam, GC).
    runs = [('finetune_pudnet', 'Fine-tune PudNet', 'adam', c.finetune_epochs,
             c.finetune_learning_rates, True),
            ('adam', 'Adam N2V scratch', 'adam', c.epochs, c.learning_rates, False),
            ('gc', 'GC N2V scratch', 'gc', c.epochs, c.learning_rates, False)]
    trainers = {}
    for key, name, opt, milestones, lrs, from_pudnet in runs:
        if key not in methods:
            continue
        trainer = trainers.setdefault(opt, baselines.N2VTrainer(
            spec, opt, int(c.batch_size), float(config.noise.mask_fraction),
            int(config.noise.mask_radius), task.loss_kind(config)))
        milestones = tuple(int(m) for m in milestones)
        lr, table = baselines.choose_learning_rate(
            trainer, tune, milestones[-1], TUNE_SEED, tuple(lrs),
            predictor.params if from_pudnet else None)
        progress = compare_lib.Progress(name, len(test))
        per_group = []
        for g, (clean, noisy) in enumerate(test):
            per_group.append(trainer.curve(clean, noisy, lr, milestones, seed=g,
                                           init_params=predicted[g] if from_pudnet else None))
            progress(g + 1)
        outputs[name] = np.asarray(trainer.denoise(per_group[0]['params'], test[0][1]))
        for i, m in enumerate(milestones):
            rows.append(_row(f'{name} {m} epoch{"s" * (m > 1)}',
                             [(pg['psnr'][i], pg['ssim'][i]) for pg in per_group],
                             float(np.median([pg['seconds'][i] for pg in per_group])),
                             epochs=m, family='finetune' if from_pudnet else 'scratch',
                             note=f'lr {lr:g} (validation), batch {c.batch_size}'))
        curves[name] = {'epochs': list(milestones), 'lr': lr, 'lr_tuning': table,
                        'psnr': [r['psnr'] for r in rows[-len(milestones):]],
                        'seconds': [r['seconds'] for r in rows[-len(milestones):]],
                        'compile_seconds': per_group[0]['compile_seconds']}

    # Classical denoisers, per image on the host.
    classical_rows = {}
    if 'classical' in methods:
        noisy_all = np.concatenate([ny for _, ny in test])
        clean_all = [cl for cl, _ in test]
        n = len(test[0][0])
        for method, res in baselines.classical(np.asarray(noisy_all), sigma01,
                                               tuple(c.classical)).items():
            if 'skipped' in res:
                rows.append(dict(_row(LABELS[method], [(np.nan, np.nan)]), family='classical',
                                 psnr=None, ssim=None, psnr_ci95=None, ssim_ci95=None,
                                 note='skipped: ' + res['skipped']))
                continue
            outs = res['output'].reshape((len(test), n) + res['output'].shape[1:])
            rows.append(_row(LABELS[method], [evaluation.scores(cl, o) for cl, o in
                                              zip(clean_all, outs)],
                             res['seconds_per_image'] * n, family='classical',
                             note=('σ given' if res['needs_sigma'] else 'σ not given')
                             + '; seconds per group on the host'))
            classical_rows[LABELS[method]] = rows[-1]['psnr']
            outputs[LABELS[method]] = outs[0]

    speedup = _speedup(curves, pudnet['psnr'], pudnet_seconds, noisy_psnr)
    protocol, dataset = workdir_lib.evaluated(config)
    summary = {'task': 'denoising', 'dataset': dataset, 'pool': config.data.name,
               'protocol': protocol, 'target': spec.name,
               'sigma': float(config.noise.sigma), 'groups': len(test),
               'images_per_group': len(test[0][0]), 'backend': jax.default_backend(),
               'selection': f'learning rates on {len(tune)} groups of the validation '
                            f'classes {list(val_classes)} at the last epoch milestone',
               'rows': rows, 'curves': curves, 'speedup': speedup, 'methods': list(methods)}
    summary['conditioning_gain_db'], summary['conditioning_gain_db_ci95'] = \
        d(control_scores['mean_sketch'])
    if 'pretrained_n2v' in control_scores:
        summary['gain_over_pretrained_n2v_db'], summary['gain_over_pretrained_n2v_db_ci95'] = \
            d(control_scores['pretrained_n2v'])
    if c.get('full_images', False) and e.get('full_images', False) and protocol == 'intra':
        summary['full_images'] = compare_full_images(config, predictor, ctrl, sigma01,
                                                     tuple(c.classical) if 'classical' in
                                                     methods else ())
    summary['examples'] = {'tiles': {k: v[:c.get('example_tiles', 6)] for k, v in
                                     outputs.items()},
                           'clean': test[0][0][:c.get('example_tiles', 6)],
                           'noisy': np.asarray(test[0][1])[:c.get('example_tiles', 6)]}
    summary['compare_seconds'] = round(time.time() - t_start, 1)
    return summary


def _pretrained_meta(workdir) -> dict:
    path = os.path.join(pretrained.path(workdir), 'network.json')
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _speedup(curves, pudnet_psnr, pudnet_seconds, noisy_psnr) -> dict:
    scratch = {n: cv for n, cv in curves.items() if 'scratch' in n}
    out = {'pudnet_psnr': pudnet_psnr, 'pudnet_seconds': pudnet_seconds}
    if not scratch:
        return dict(out, reached=None, text='no scratch baseline was run')
    best = None
    for name, cv in scratch.items():
        t = baselines_lib.time_to_reach(cv['seconds'], cv['psnr'], pudnet_psnr, noisy_psnr)
        if t is not None and (best is None or t < best[1]):
            epoch = float(np.interp(t, [0.0] + cv['seconds'], [0.0] + cv['epochs']))
            best = (name, t, epoch)
    if best is None:
        longest = max(max(cv['seconds']) for cv in scratch.values())
        last = {n: cv['epochs'][-1] for n, cv in scratch.items()}
        return dict(out, reached=False, longest_scratch_seconds=longest,
                    lower_bound=longest / pudnet_seconds,
                    text=f"no scratch run reached PudNet's PSNR ({pudnet_psnr:.2f} dB) within "
                         f"{max(last.values())} epochs ({longest:.2f} s): speedup > "
                         f"{longest / pudnet_seconds:.0f}x")
    name, t, epoch = best
    return dict(out, reached=True, baseline=name, baseline_seconds=t, baseline_epochs=epoch,
                speedup=t / pudnet_seconds,
                text=f"{name} needs {t:.2f} s (≈ {epoch:.0f} epochs) to reach PudNet's PSNR "
                     f"({pudnet_psnr:.2f} dB); PudNet takes {1000 * pudnet_seconds:.1f} ms: "
                     f"{compare_lib._ratio_text(t / pudnet_seconds)}")


def compare_full_images(config, predictor, ctrl, sigma01, classical_methods) -> dict:
    out = {}
    for name, (clean, noisy) in evaluation.full_image_pairs(config).items():
        rows = {}
        t = time.perf_counter()
        params = jax.block_until_ready(predictor.params(
            evaluation.image_tiles(noisy, config.data.image_size)))
        den = predictor.image(params, noisy)
        rows['PudNet'] = dict(zip(('psnr', 'ssim'), evaluation.image_scores(clean, den)),
                              seconds_incl_compile=time.perf_counter() - t)
        images = {'noisy': noisy, 'PudNet': den, 'clean': clean}
        rows['noisy input'] = dict(zip(('psnr', 'ssim'), evaluation.image_scores(clean, noisy)))
        if 'pretrained_n2v' in ctrl:
            rows['Pretrained-N2V UNet'] = dict(zip(('psnr', 'ssim'), evaluation.image_scores(
                clean, predictor.image(ctrl['pretrained_n2v'], noisy))))
        rows['mean-sketch UNet'] = dict(zip(('psnr', 'ssim'), evaluation.image_scores(
            clean, predictor.image(ctrl['mean_sketch'], noisy))))
        if classical_methods:
            for method, res in baselines.classical(noisy[None], sigma01,
                                                   classical_methods).items():
                if 'skipped' in res:
                    rows[LABELS[method]] = {'skipped': res['skipped']}
                    continue
                rows[LABELS[method]] = dict(
                    zip(('psnr', 'ssim'), evaluation.image_scores(clean, res['output'][0])),
                    seconds=res['seconds_per_image'])
                images[LABELS[method]] = res['output'][0]
        out[name] = {'shape': list(clean.shape), 'rows': rows, '_images': images}
        logging.info('full image %s: %s', name, {k: round(v['psnr'], 2) for k, v in rows.items()
                                                 if 'psnr' in v})
    return out


# ----------------------------------------------------------------------------- outputs

def _fmt(v, digits=2):
    return '-' if v is None else f'{v:.{digits}f}'


def write_outputs(summary: dict, workdir: str, name: str = 'compare') -> None:
    out = lambda ext: os.path.join(workdir, f'{name}.{ext}')
    examples = summary.pop('examples')
    full_images = {k: v.pop('_images') for k, v in summary.get('full_images', {}).items()}
    write_json(out('json'), summary)
    rows = summary['rows']
    with open(out('csv'), 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    s = summary
    lines = [f"# PudNet vs denoising baselines: {s['dataset']}, {s['target']}, σ = {s['sigma']:g}, "
             f"{s['groups']} test groups of {s['images_per_group']} images ({s['backend']})", '',
             f"Same groups and noise for every row. Selection: {s['selection']}; nothing on "
             f"the test groups.", '',
             f"**Conditioning gain** (PudNet − mean-sketch UNet, paired): "
             f"{s['conditioning_gain_db']:+.2f} ± {s['conditioning_gain_db_ci95']:.2f} dB"
             + (f"; **over Pretrained-N2V** {s['gain_over_pretrained_n2v_db']:+.2f} ± "
                f"{s['gain_over_pretrained_n2v_db_ci95']:.2f} dB"
                if 'gain_over_pretrained_n2v_db' in s else '') + '.', '',
             f"**Speedup at equal PSNR:** {s['speedup']['text']}.", '',
             '| method | PSNR (dB) ± 95% CI | SSIM ± 95% CI | seconds per group | one-off | note |',
             '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['method']} | {_fmt(r['psnr'])} ± {_fmt(r['psnr_ci95'])} | "
                     f"{_fmt(r['ssim'], 3)} ± {_fmt(r['ssim_ci95'], 3)} | "
                     f"{compare_lib._fmt_seconds(r['seconds'])} | "
                     f"{compare_lib._fmt_seconds(r['one_off_seconds'])} | {r['note']} |")
    for img, f in s.get('full_images', {}).items():
        lines += ['', f"**Whole photograph `{img}`** ({f['shape'][0]}×{f['shape'][1]}):", '',
                  '| method | PSNR (dB) | SSIM | seconds |', '|---|---|---|---|']
        for k, v in f['rows'].items():
            sec = v.get('seconds', v.get('seconds_incl_compile'))
            lines.append(f"| {k} | {_fmt(v.get('psnr'))} | {_fmt(v.get('ssim'), 3)} | "
                         f"{compare_lib._fmt_seconds(sec)}"
                         f"{' (incl. compilation)' if 'seconds_incl_compile' in v else ''} |"
                         if 'skipped' not in v else f"| {k} | - | - | skipped: {v['skipped']} |")
        gaps = [f"{k} {f['rows']['PudNet']['psnr'] - v['psnr']:+.2f} dB" for k, v in f['rows'].items()
                if k in LABELS.values() and 'psnr' in v]
        if gaps:
            lines += ['', 'PudNet − ' + '; − '.join(gaps) + '.']
    with open(out('md'), 'w') as fh:
        fh.write('\n'.join(lines) + '\n')
    _plot(summary, out('png'))
    _plot_examples(examples, full_images, os.path.join(workdir, f'{name}_examples.png'))
    print('\n'.join(lines))


def _plot(summary: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (name, cv) in enumerate(summary['curves'].items()):
        ax.plot(cv['seconds'], cv['psnr'], 'o-', color=f'C{i}', ms=4,
                label=f"{name} (epochs {cv['epochs'][0]}-{cv['epochs'][-1]})")
    for r in summary['rows']:
        if r['psnr'] is None:
            continue
        if r['family'] == 'pudnet':
            ax.errorbar([r['seconds']], [r['psnr']], yerr=[r['psnr_ci95']], fmt='*', color='C2',
                        ms=14, label=f"PudNet ({compare_lib._fmt_seconds(r['seconds'])})")
        elif r['family'] == 'classical':
            ax.plot([r['seconds']], [r['psnr']], 's', ms=7, label=r['method'])
        elif r['family'] in ('noisy', 'mean_sketch', 'pretrained', 'control'):
            ax.axhline(r['psnr'], ls='--', lw=1, color={'noisy': 'k', 'mean_sketch': 'C8',
                                                        'pretrained': 'C5',
                                                        'control': 'C7'}[r['family']],
                       label=r['method'])
    ax.set_xscale('log')
    ax.set_xlabel('seconds to denoise one group (log scale)')
    ax.set_ylabel('PSNR (dB)')
    ax.set_title(f"{summary['dataset']} / {summary['target']}: σ = {summary['sigma']:g}, "
                 f"{summary['groups']} groups of {summary['images_per_group']}", fontsize=10)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7, loc='lower right')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_examples(examples: dict, full_images: dict, path: str) -> None:
    """Fig. 8: columns noisy / PudNet / N2V scratch / best classical / clean; rows the
    first tiles of the first test group, then a 128x128 crop of each whole photograph."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    tiles = examples['tiles']
    scratch = next((k for k in tiles if 'scratch' in k and k.startswith('GC')), None) or \
        next((k for k in tiles if 'scratch' in k), None)
    classical = [k for k in tiles if k in LABELS.values()]
    columns = ['noisy', 'PudNet'] + ([scratch] if scratch else []) + classical[-1:] + ['clean']
    # (best classical on tiles is chosen below from the full images when there are any)
    pics = []
    for i in range(len(examples['clean'])):
        pics.append({'noisy': examples['noisy'][i], 'clean': examples['clean'][i],
                     **{k: v[i] for k, v in tiles.items()}})
    for img in full_images.values():
        h, w = img['clean'].shape[:2]
        y, x = max(0, h // 2 - 64), max(0, w // 2 - 64)
        pics.append({k: v[y:y + 128, x:x + 128] for k, v in img.items()})
    fig, axes = plt.subplots(len(pics), len(columns), figsize=(1.6 * len(columns), 1.6 * len(pics)),
                             squeeze=False)
    for r, pic in enumerate(pics):
        for col, name in enumerate(columns):
            ax = axes[r, col]
            ax.axis('off')
            image = pic.get(name)
            if image is None and name in classical:
                image = next((pic[k] for k in LABELS.values() if k in pic), None)
            if image is not None:
                ax.imshow(np.clip(np.asarray(image)[..., 0] if np.asarray(image).shape[-1] == 1
                                  else image, 0, 1), cmap='gray', vmin=0, vmax=1)
            if r == 0:
                ax.set_title(name.replace(' N2V scratch', '\nN2V scratch'), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
