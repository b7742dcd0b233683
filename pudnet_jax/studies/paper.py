"""The paper's Figs. 5, 6 and 7 as commands with figures, scaled to the CPU on the offline default.

  python -m pudnet_jax.studies groups --workdir runs/fig5   # Fig. 5: accuracy vs training groups
  python -m pudnet_jax.studies eta --workdir runs/fig6      # Fig. 6: sensitivity to η
  python -m pudnet_jax.studies losses --workdir runs/fig7   # Fig. 7: L1, L2, L3 while training

Each point of a sweep is an ordinary training run of the config (default
configs/default.py) with one field changed, in `<workdir>/<field>=<value>/` (a finished
run is reused, an interrupted one resumes); the figure goes to `<out>/<name>.png` and
every number to `<out>/<name>.json` (default out: docs/). Every accuracy stands beside its
controls on the same groups (the untrained network and the mean-sketch network, with the
paired conditioning gain), on test groups and on validation groups; a value is selected
(marked in the figure) on the validation groups only, never on the test groups.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import ml_collections
import numpy as np

from pudnet_jax.files import write_json


@dataclasses.dataclass(frozen=True)
class Study:
    name: str                 # the output files' name
    title: str
    field: str | None         # the swept config field (None: one run)
    values: tuple
    label: str                # the x axis
    overrides: dict           # the CPU scale of every run
    log_x: bool = False


# The CPU scale: 100 steps (400 episodes) per sweep point, 100 test and 50 validation
# groups with the controls; the loss curves train the default itself, logged every 10 steps.
SWEEP_SCALE = {'train.num_train_steps': 100, 'eval.groups': 100, 'eval.val_groups': 50}
STUDIES = {
    'groups': Study('fig5_training_groups',
                    'Fig. 5: accuracy against the number of training groups',
                    'train.num_groups', (4, 16, 64, 400), 'training groups (log scale)',
                    SWEEP_SCALE, log_x=True),
    'eta': Study('fig6_eta', 'Fig. 6: sensitivity to the initial residual η',
                 'model.eta', (0.0, 0.1, 0.3, 0.5, 0.9), 'η (initial residual, eq. 5)',
                 SWEEP_SCALE),
    'losses': Study('fig7_losses', 'Fig. 7: the three losses during meta-training', None,
                    (None,), 'training step', {'train.log_every': 10}),
}
LOSS_TAGS = (('train/l1_metric', 'L1 metric (eq. 8)'), ('train/l2_full_head', 'L2 full head (eq. 9)'),
             ('train/l3_consistency', 'L3 consistency (eq. 10)'), ('train/loss', 'objective'))


def _set(config, field: str, value) -> None:
    *groups, key = field.split('.')
    node = config
    for g in groups:
        node = node[g]
    node[key] = value


def run_dir(workdir: str, study: Study, value, seed=None) -> str:
    """`<workdir>/<field>=<value>`, with `,seed=<s>` for a training seed other than the
    config's own (so the first seed's runs keep their folders when seeds are added)."""
    if study.field is None:
        return workdir
    return os.path.join(workdir, f'{study.field}={value}' + ('' if seed is None else f',seed={seed}'))


def point(results: dict, value) -> dict:
    """The numbers of one run: validation and test, each beside its controls."""
    def block(r):
        c = r['controls']
        return {'accuracy': r['accuracy'], 'ci95': r['ci95'], 'groups': r['groups'],
                'untrained': c['untrained']['accuracy'], 'untrained_ci95': c['untrained']['ci95'],
                'mean_sketch': c['mean_sketch']['accuracy'],
                'mean_sketch_ci95': c['mean_sketch']['ci95'],
                'conditioning_gain': r['conditioning_gain'],
                'conditioning_gain_ci95': r['conditioning_gain_ci95'],
                'gain_over_untrained': r['gain_over_untrained'],
                'gain_over_untrained_ci95': r['gain_over_untrained_ci95']}
    out = {'value': value, 'test': block(results), 'validation': block(results['validation']),
           'train_seconds': results.get('train_seconds'), 'train_steps': results.get('train_steps')}
    if 'validation_curve' in results:
        out['validation_curve'] = {k: results['validation_curve'][k]
                                   for k in ('best_step', 'best_accuracy', 'groups', 'every')}
    return out


def run_study(study: Study, base_config, workdir: str, out_dir: str,
              values=None, overrides: dict | None = None, seeds=None) -> dict:
    """Trains (or reuses) every run of the study (each value × each training seed), then
    writes the figure and the JSON."""
    from pudnet_jax import train as train_lib
    from pudnet_jax import workdir as workdir_lib
    values = tuple(values) if values is not None else study.values
    settings = dict(study.overrides, **(overrides or {}))
    base_seed = base_config.seed
    seeds = tuple(seeds) if seeds else (base_seed,)
    t0 = time.time()
    points = []
    for value in values:
        for seed in seeds:
            config = ml_collections.ConfigDict(workdir_lib.config_to_dict(base_config))
            for field, v in settings.items():
                _set(config, field, v)
            if study.field is not None:
                _set(config, study.field, value)
            config.seed = seed
            path = run_dir(workdir, study, value, None if seed == base_seed else seed)
            if _finished(path, config):
                with open(os.path.join(path, 'results.json')) as f:
                    results = json.load(f)
            else:     # trains, resumes an interrupted run, or re-evaluates with new settings
                results = train_lib.train_and_evaluate(config, path)
            points.append(dict(point(results, value), seed=seed, workdir=path))
    summary = {'study': study.name, 'title': study.title, 'field': study.field,
               'settings': settings, 'seeds': list(seeds), 'base_config': base_config.data.name,
               'target': base_config.target.name, 'points': points,
               'seconds': round(time.time() - t0, 1)}
    if study.field is not None and len(values) > 1:
        summary['by_value'] = by_value(points, values)
        rows = summary['by_value']
        best = max(rows, key=lambda r: (r['validation'], -rows.index(r)))
        summary['selected_on_validation'] = {
            'value': best['value'], 'validation': best['validation'], 'test': best['test'],
            'test_ci95': best['test_ci95'], 'test_seed_std': best['test_seed_std'],
            'rule': 'the highest validation accuracy (mean over the training seeds; the first '
                    'of equals); test groups are never looked at for the choice'}
        spread = [r['test_seed_std'] for r in rows if r['test_seed_std'] is not None]
        if spread:   # the largest gap between values, against the seeds' own spread
            tests = [r['test'] for r in rows]
            summary['seed_spread'] = {
                'test_range_over_values': max(tests) - min(tests),
                'mean_seed_std': float(np.mean(spread)),
                'note': 'a gap between values inside about two seed standard deviations is '
                        'not a difference'}
        _plot_sweep(study, summary, os.path.join(out_dir, study.name + '.png'))
    else:
        summary['curves'] = _plot_losses(study, run_dir(workdir, study, values[0]),
                                         os.path.join(out_dir, study.name + '.png'))
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, study.name + '.json'), summary)
    return summary


def by_value(points: list, values) -> list:
    """One row per swept value: validation and test accuracy and the controls, averaged
    over the training seeds, the seeds' standard deviation of the test accuracy (None for
    one seed) and, for one seed, the test groups' 95 % CI."""
    rows = []
    for value in values:
        runs = [p for p in points if p['value'] == value]
        mean = lambda split, key: float(np.mean([p[split][key] for p in runs]))
        test = [p['test']['accuracy'] for p in runs]
        rows.append({'value': value, 'seeds': [p['seed'] for p in runs],
                     'validation': mean('validation', 'accuracy'), 'test': float(np.mean(test)),
                     'test_ci95': runs[0]['test']['ci95'] if len(runs) == 1 else None,
                     'test_seed_std': float(np.std(test, ddof=1)) if len(runs) > 1 else None,
                     'untrained': mean('test', 'untrained'),
                     'untrained_ci95': mean('test', 'untrained_ci95'),
                     'mean_sketch': mean('test', 'mean_sketch'),
                     'mean_sketch_ci95': mean('test', 'mean_sketch_ci95'),
                     'conditioning_gain': mean('test', 'conditioning_gain')})
    return rows


def _finished(path: str, config) -> bool:
    """The run has its results.json, trained and evaluated with this config: the same
    settings except `compare.*` (which neither training nor results.json reads), a
    setting added to the code since (workdir_lib.ADDED_FIELDS) counting as its default."""
    from pudnet_jax import workdir as workdir_lib
    if not os.path.exists(os.path.join(path, workdir_lib.RESULTS_FILE)):
        return False
    return workdir_lib.config_differences(config, path, ignore=('compare',)) == {}


def _plot_sweep(study: Study, summary: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows, pts = summary['by_value'], summary['points']
    values = [r['value'] for r in rows]
    x = np.array(values, float)
    pct = lambda key: 100 * np.array([r[key] if r[key] is not None else 0.0 for r in rows])
    seeds = len(summary['seeds'])
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    if seeds > 1:
        ax.errorbar(x, pct('test'), yerr=pct('test_seed_std'), fmt='o-', color='C2', capsize=3,
                    label=f"PudNet, test: mean of {seeds} training seeds ± their std "
                          f"({pts[0]['test']['groups']} groups each)")
        ax.plot([float(p['value']) for p in pts], [100 * p['test']['accuracy'] for p in pts],
                '.', color='C2', alpha=0.45, label='PudNet, test: each seed')
    else:
        ax.errorbar(x, pct('test'), yerr=pct('test_ci95'), fmt='o-', color='C2', capsize=3,
                    label=f"PudNet, test ({pts[0]['test']['groups']} groups, 95% CI; "
                          'one training seed)')
    ax.errorbar(x, pct('mean_sketch'), yerr=pct('mean_sketch_ci95'), fmt='s--', color='C8',
                capsize=3, ms=4, label='mean-sketch control, test')
    ax.errorbar(x, pct('untrained'), yerr=pct('untrained_ci95'), fmt='^:', color='C7',
                capsize=3, ms=4, label='untrained control, test')
    ax.plot(x, pct('validation'), 'o--', color='C0', ms=4, alpha=0.8,
            label=f"PudNet, validation ({pts[0]['validation']['groups']} groups"
                  + (', seed mean)' if seeds > 1 else ')'))
    sel = summary['selected_on_validation']
    i = values.index(sel['value'])
    ax.plot([x[i]], [100 * sel['test']], marker='*', ms=16, color='C3', ls='none',
            label=f"selected on validation: {sel['value']} (its test accuracy)")
    if study.log_x:
        ax.set_xscale('log')
    ax.set_xticks(x)
    ax.set_xticklabels([str(v) for v in values])
    ax.set_xlabel(study.label)
    ax.set_ylabel('held-out accuracy (%)')
    s = summary['settings']
    ax.set_title(f"{study.title}\n{summary['base_config']} / {summary['target']}, "
                 f"{s.get('train.num_train_steps', '')} steps per run", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc='best')
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_losses(study: Study, workdir: str, path: str) -> dict:
    """L1, L2, L3 and the objective from the run's TensorBoard scalars, and its
    validation curve beside them."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from pudnet_jax.summaries import read_scalars
    scalars = read_scalars(workdir)
    curves = {tag: scalars.get(tag, []) for tag, _ in LOSS_TAGS}
    curves['train/validation_accuracy'] = scalars.get('train/validation_accuracy', [])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    for (tag, label), color in zip(LOSS_TAGS, ('C0', 'C1', 'C2', 'k')):
        if curves[tag]:
            steps, values = zip(*curves[tag])
            ax.plot(steps, values, '-', color=color, lw=1.5 if tag != 'train/loss' else 1,
                    label=label, alpha=1 if tag != 'train/loss' else 0.6)
    ax.set_yscale('log')
    ax.set_xlabel(study.label)
    ax.set_ylabel('loss (mean over the log interval)')
    ax.set_title('the three losses (eq. 11)', fontsize=10)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8)
    if curves['train/validation_accuracy']:
        steps, values = zip(*curves['train/validation_accuracy'])
        ci = np.zeros(len(steps))
        from pudnet_jax.evaluate import VALIDATION_CURVE_FILE
        curve_file = os.path.join(workdir, VALIDATION_CURVE_FILE)
        if os.path.exists(curve_file):        # the 95 % CIs of the points
            with open(curve_file) as f:
                by_step = {p['step']: p['ci95'] for p in json.load(f)['points']}
            ci = np.array([by_step.get(s, 0.0) for s in steps])
        ax2.errorbar(steps, 100 * np.array(values), yerr=100 * ci, fmt='o-', color='C3',
                     capsize=3)
        best = int(np.argmax(values))
        ax2.plot([steps[best]], [100 * values[best]], '*', ms=14, color='C3')
        ax2.annotate(f'best: step {steps[best]}', (steps[best], 100 * values[best]),
                     textcoords='offset points', xytext=(-30, -14), fontsize=8)
    ax2.set_xlabel(study.label)
    ax2.set_ylabel('validation accuracy (%)')
    ax2.set_title('PudNet on validation groups during training (95% CI)', fontsize=10)
    ax2.grid(True, alpha=0.3)
    fig.suptitle(study.title, fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {tag: [[s, v] for s, v in pts] for tag, pts in curves.items()}


def load_config_file(path: str):
    """`get_config()` of a config file (run from the repository root: configs import each
    other as the `configs` package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('_study_config', path)
    if spec is None or not os.path.isfile(path):
        raise FileNotFoundError(f'no such file {path!r}')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _parse_value(text: str):
    return None if text == 'None' else (float(text) if '.' in text else int(text))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m pudnet_jax.studies',  # STUDY ...
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('study', choices=sorted(STUDIES))
    parser.add_argument('--workdir', required=True, help='where the runs go')
    parser.add_argument('--config', default='configs/default.py',
                        help='the base config file (default: configs/default.py)')
    parser.add_argument('--out', default='docs', help='folder of the figure and the JSON')
    parser.add_argument('--values', default=None,
                        help='comma-separated values of the swept field instead of the '
                             "study's own")
    parser.add_argument('--seeds', default=None,
                        help='comma-separated training seeds of every point (default: the '
                             "config's seed); the figure then shows their mean and spread")
    parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                        help='override a setting of every run, e.g. --set '
                             'train.num_train_steps=50 (repeatable)')
    args = parser.parse_args(argv)
    from pudnet_jax.process import prepare_process
    prepare_process()
    from absl import logging
    from pudnet_jax.cli import quiet_checkpointing
    logging.set_verbosity(logging.INFO)      # the runs' progress lines, as the command line
    quiet_checkpointing()
    from pudnet_jax import config_check
    from pudnet_jax.errors import UserError
    try:
        base = load_config_file(args.config)
    except Exception as e:   # noqa: BLE001
        raise SystemExit(f'error: --config: cannot load {args.config} ({type(e).__name__}: {e}).')
    study = STUDIES[args.study]
    values = None if args.values is None else [_parse_value(v) for v in args.values.split(',')]
    overrides = {}
    for item in args.set:
        field, _, text = item.partition('=')
        overrides[field] = _parse_value(text)
    try:
        config_check.validate(base)
        seeds = None if args.seeds is None else [int(v) for v in args.seeds.split(',')]
        summary = run_study(study, base, args.workdir, args.out, values, overrides, seeds)
    except UserError as e:
        raise SystemExit(f'error: {e}')
    print(json.dumps({k: v for k, v in summary.items() if k not in ('points', 'curves')},
                     indent=2))
    for p in summary['points']:
        t, v = p['test'], p['validation']
        print(f"{study.field or 'run'}={p['value']} (seed {p['seed']}): validation {100 * v['accuracy']:.2f} ± "
              f"{100 * v['ci95']:.2f}; test {100 * t['accuracy']:.2f} ± {100 * t['ci95']:.2f} "
              f"(untrained {100 * t['untrained']:.2f}, mean sketch {100 * t['mean_sketch']:.2f}, "
              f"conditioning gain {100 * t['conditioning_gain']:+.2f} ± "
              f"{100 * t['conditioning_gain_ci95']:.2f})")
    print(f"wrote {os.path.join(args.out, study.name + '.png')} and .json")


if __name__ == '__main__':
    main()
