"""`--mode=compare`: PudNet against the baselines on exactly the same groups.

Writes to the workdir: compare.md and compare.csv (method, ACC ± 95% CI, seconds to
produce the network, one-off training cost), compare.png (accuracy against seconds, log
scale) and compare.json (every number), with the headline *speedup at equal accuracy*:
the time the best scratch baseline needs to reach PudNet's accuracy (interpolated along
its epoch curve) divided by PudNet's time to predict.

Groups: the test groups are the first `compare.groups` test groups (the same draws as
`results.json`'s). Every setting of a baseline is selected on the validation role, which
shares no class or image with the test groups (`evaluate.roles`): learning rates on
`compare.tune_groups` validation groups, Pretrained's epoch and ProtoNet's step on
`compare.val_groups` other validation groups. The controls (untrained, mean sketch) are
rows, scored on the same test groups as everything else.

With `eval.prediction_shots` above `eval.shots`, the outputs are named
`compare_p<prediction_shots>.*` so the runs at both sizes sit side by side.
"""

import csv
import json
import os
import time

import jax
import numpy as np
from absl import logging

from pudnet_jax.files import write_json
from pudnet_jax import baselines, controls
from pudnet_jax import data as data_lib
from pudnet_jax import evaluate as evaluate_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.tasks import classification

TUNE_OFFSET, VAL_OFFSET = 100_000, 200_000   # in the validation role's group stream
# The baselines (config.compare.methods); PudNet and its controls are always measured.
METHODS = classification.COMPARE_METHODS
time_to_reach = baselines.time_to_reach


class Progress:
    """Logs `i/total` with an ETA for one phase of a long comparison."""

    def __init__(self, name: str, total: int):
        self.name, self.total, self.t0 = name, total, time.time()

    def __call__(self, done: int, extra: str = ''):
        elapsed = time.time() - self.t0
        eta = elapsed / max(done, 1) * (self.total - done)
        logging.info('%s: %d/%d  %s elapsed %.0fs, ETA %.0fs', self.name, done, self.total,
                     extra, elapsed, eta)


def _row(method, accs, seconds=None, one_off=None, epochs=None, family='', note=''):
    acc, ci = evaluate_lib.mean_ci95(accs)
    return {'method': method, 'family': family, 'epochs': epochs, 'accuracy': acc, 'ci95': ci,
            'seconds': seconds, 'one_off_seconds': one_off, 'note': note}


def _curve_rows(name, family, milestones, per_group, lr):
    """per_group: list of (accs, seconds) per group → one row per milestone."""
    rows = []
    for i, e in enumerate(milestones):
        rows.append(_row(f'{name} {e} epoch{"s" if e > 1 else ""}', [a[i] for a, _ in per_group],
                         seconds=float(np.median([s[i] for _, s in per_group])), epochs=e,
                         family=family, note=f'lr {lr:g}'))
    return rows


def _tune_lr(trainer, groups, lrs, milestones, init_fn, what):
    """The learning rate with the best mean accuracy at the last milestone."""
    scores = {}
    for lr in lrs:
        accs = [trainer.curve(g, lr, [max(milestones)], seed=TUNE_OFFSET + i,
                              init_target_vars=init_fn(g))[0][0] for i, g in enumerate(groups)]
        scores[lr] = float(np.mean(accs))
    best = max(scores, key=scores.get)
    logging.info('%s: learning-rate tuning %s -> %g', what,
                 {f'{k:g}': round(v, 4) for k, v in scores.items()}, best)
    return best, scores


def run_compare(workdir: str, config=None) -> dict:
    has_checkpoint = workdir_lib.checkpoint_manager(
        workdir, config or workdir_lib.load_config(workdir)).latest_step() is not None
    pudnet_training = None
    if not has_checkpoint:
        if config is None:
            raise FileNotFoundError(f'No trained PudNet in {workdir!r}: pass --config to train.')
        logging.info('No checkpoint in %s: training PudNet first.', workdir)
        from pudnet_jax import train as train_lib   # only to train a workdir that has none
        pudnet_training = train_lib.train_and_evaluate(config, workdir)
    config, model, spec, hyper_vars = workdir_lib.restore_hypernet(workdir, config)
    results_path = os.path.join(workdir, workdir_lib.RESULTS_FILE)
    if pudnet_training is None and os.path.exists(results_path):
        with open(results_path) as f:
            pudnet_training = json.load(f)
    return compare_hypernet(config, model, spec, hyper_vars, workdir, workdir,
                            (pudnet_training or {}).get('train_seconds'))


def check_methods(methods) -> tuple[str, ...]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f'config.compare.methods={tuple(methods)!r}: each must be one of '
                         f'{METHODS} (and at least one).')
    return tuple(methods)


def selection_groups(config, pool) -> list:
    """The `compare.val_groups` validation groups that select the Pretrained baseline's
    epoch and ProtoNet's step."""
    validation = evaluate_lib.group_sampler(config, pool, 'validation')
    return [validation.sample(VAL_OFFSET + g, 1)[0] for g in range(config.compare.val_groups)]


def train_pretrained(config, spec, pool, val=None):
    """The Pretrained baseline's network (`baselines.train_pretrained` with the
    `config.compare` settings, the epoch selected on `selection_groups`): what the
    comparison reports, and what `model.base_init='pretrained'` starts residual
    generation from. Returns (target variables, seconds, best epoch, validation accuracy)."""
    c = config.compare
    if val is None:
        val = selection_groups(config, pool)
    return baselines.train_pretrained(
        spec, pool, config.data.train_classes, val, c.pretrain_epochs, c.pretrain_batch_size,
        c.pretrain_learning_rate, config.seed, config.eval.ways, config.eval.shots)


def compare_hypernet(config, model, spec, hyper_vars, output_dir: str, workdir=None,
                     pudnet_train_seconds=None) -> dict:
    """The comparison for a loaded hypernetwork, its outputs written to `output_dir`
    (`workdir`: where the mean sketch of the controls is cached). PudNet and the controls
    are always measured; the baselines are those of `config.compare.methods` (all by
    default)."""
    c, e = config.compare, config.eval
    methods = check_methods(c.get('methods') or METHODS)
    os.makedirs(output_dir, exist_ok=True)
    ways, shots = e.ways, e.shots
    pool = data_lib.load_pool(config.data.name, config.data.image_size, config.data.channels,
                              config.data.data_dir, cache_dir=config.data.get('cache_dir'))
    sampler = evaluate_lib.group_sampler(config, pool, 'test')
    validation = evaluate_lib.group_sampler(config, pool, 'validation')
    test = [sampler.sample(g, 1)[0] for g in range(c.groups)]
    tune = [validation.sample(TUNE_OFFSET + g, 1)[0] for g in range(c.tune_groups)]
    val = selection_groups(config, pool)
    chance = 1.0 / ways
    t_start = time.time()
    rows = []

    # PudNet: one forward pass per group, timed as in results.json.
    predict_c, scores_c, _ = evaluate_lib.compiled_predict_and_scores(
        model, spec, hyper_vars, test[0], ways, shots, config.eval.get('bn_images'))
    accs, secs, predicted = [], [], []
    for g, v, scores, s in evaluate_lib.predict_groups(predict_c, scores_c, hyper_vars, test,
                                                       ways, shots):
        accs.append(evaluate_lib.group_accuracy(scores, g.query_labels)[0])
        secs.append(s)
        predicted.append(v)
    pudnet_seconds = float(np.median(secs))
    rows.append(_row('PudNet', accs, seconds=pudnet_seconds, one_off=pudnet_train_seconds,
                     family='pudnet', note='one forward pass; one-off: meta-training'))
    pudnet_acc = rows[-1]['accuracy']
    logging.info('PudNet: %.4f on %d groups, %.1f ms per group', pudnet_acc, len(test),
                 1000 * pudnet_seconds)

    # PudNet + refined sketch (eval.refine_steps > 0), on the same groups, after each of
    # compare.refine_milestones steps too (a curve, as the baselines' epochs).
    refined = evaluate_lib.Refined(config, model, spec, test[0],
                                   milestones=c.get('refine_milestones') or ())
    if refined.steps:
        for g in test:
            refined.add(hyper_vars, g, scores_c)
        for k in refined.milestones:
            rows.append(_row('PudNet + refined sketch' + ('' if k == refined.steps else
                                                          f', {k} step{"s" * (k > 1)}'),
                             refined.curve[k][0], seconds=refined.median_seconds(k),
                             one_off=pudnet_train_seconds,
                             family='pudnet_refined' if k == refined.steps
                             else 'pudnet_refined_curve', epochs=k,
                             note=(f'{k} learned step{"s" * (k > 1)} on the sketch'
                                   if refined.optimizer == 'learned'
                                   else f'{k} Adam steps of {refined.lr:g} on the sketch')))

    # The controls, as in results.json: untrained target, mean-sketch network.
    params = controls.control_params(config, model, spec, hyper_vars, pool, workdir)
    control_accs = {name: [] for name in params}
    for g in test:
        for name, a in evaluate_lib.control_accuracies(spec, params, scores_c, g, ways,
                                                       shots).items():
            control_accs[name].append(a)
    gains = controls.summarize(accs, control_accs)
    rows.append(_row('Untrained + prototypes', [np.mean(a) for a in control_accs['untrained']],
                     seconds=0.0, family='control',
                     note=f"random init, mean of {len(params['untrained'])} seeds"))
    rows.append(_row('Mean-sketch network', [np.mean(a) for a in control_accs['mean_sketch']],
                     family='mean_sketch',
                     note="generated from the training pool's mean sketch"))
    proto = baselines.prototype_accuracy_fn(spec, ways, shots)

    # Pretrained (full head on all training classes) and ProtoNet, then prototypes.
    t = config.train
    pretrained = None
    if 'pretrained' in methods or 'finetune_pretrained' in methods:
        pretrained, pre_s, pre_epoch, _ = train_pretrained(config, spec, pool, val)
    if 'pretrained' in methods:
        pre_note = f'{len(config.data.train_classes)}-way head, best epoch {pre_epoch}'
        with_own_stats = baselines.fixed_stats_accuracy_fn(spec, ways, shots)
        rows.append(_row('Pretrained', [with_own_stats(pretrained, g) for g in test],
                         one_off=pre_s, family='pretrained',
                         note=pre_note + ', its running BN statistics'))
        rows.append(_row('Pretrained + group BN stats',
                         [proto(pretrained['params'], g) for g in test], one_off=pre_s,
                         family='pretrained_bn',
                         note=pre_note + ', BN statistics from the prediction set as PudNet'))
        logging.info('Pretrained %.4f / %.4f', rows[-2]['accuracy'], rows[-1]['accuracy'])
    if 'protonet' in methods:
        train_sampler = data_lib.EpisodeSampler(pool, config.data.train_classes, t.ways,
                                                t.shots, t.queries, seed=config.seed + 1,
                                                domains=config.data.get('domains'))
        protonet, proto_s, proto_step, _ = baselines.train_protonet(
            spec, train_sampler, val, c.protonet_steps, t.episodes_per_step,
            c.protonet_eval_every, t.learning_rate, config.loss.temperature, config.seed,
            ways, shots)
        rows.append(_row('ProtoNet', [proto(protonet, g) for g in test], one_off=proto_s,
                         family='protonet', note=f'metric loss, best step {proto_step}'))
        logging.info('ProtoNet %.4f', rows[-1]['accuracy'])

    # Training from scratch (Adam, GC) and fine-tuning (Table VIII), per group.
    curves, per_group_curves = {}, {}
    pred_by_group = {id(g): v for g, v in zip(test, predicted)}
    predict_for = lambda g: pred_by_group.get(id(g)) or predict_c(hyper_vars, g.support)
    pretrained_vars = lambda g: {'params': pretrained['params'], 'batch_stats':
                                 baselines.prototype_stats(spec, pretrained['params'], g)}
    runs = [('adam', 'Adam scratch', 'scratch', 'adam', c.epochs, c.learning_rates,
             lambda g: None),
            ('gc', 'GC scratch', 'scratch', 'gc', c.epochs, c.learning_rates, lambda g: None),
            ('finetune_pudnet', 'Fine-tune PudNet', 'finetune', 'adam', c.finetune_epochs,
             c.finetune_learning_rates, predict_for),
            ('finetune_pretrained', 'Fine-tune Pretrained', 'finetune', 'adam',
             c.finetune_epochs, c.finetune_learning_rates, pretrained_vars)]
    runs = [r[1:] for r in runs if r[0] in methods]
    trainers = {}
    for name, family, opt, milestones, lrs, init_fn in runs:
        trainer = trainers.setdefault(opt, baselines.GroupTrainer(spec, ways, c.batch_size, opt))
        lr, scores = _tune_lr(trainer, tune, lrs, milestones, init_fn, name)
        progress = Progress(name, len(test))
        per_group = []
        for i, g in enumerate(test):
            per_group.append(trainer.curve(g, lr, milestones, seed=i, init_target_vars=init_fn(g)))
            if (i + 1) % max(1, len(test) // 5) == 0 or i + 1 == len(test):
                progress(i + 1)
        rows += _curve_rows(name, family, milestones, per_group, lr)
        curves[name] = {'epochs': list(milestones), 'lr': lr, 'lr_tuning': scores,
                        'accuracy': [r['accuracy'] for r in rows[-len(milestones):]],
                        'seconds': [r['seconds'] for r in rows[-len(milestones):]]}
        per_group_curves[name] = per_group

    speedup = _speedup(curves, pudnet_acc, pudnet_seconds, chance)
    summary = {'preset': config.data.name, 'target': spec.name, 'ways': ways,
               'shots': shots, 'prediction_shots': evaluate_lib.prediction_shots(e),
               'test_shots': e.test_shots, 'groups': len(test),
               'roles': evaluate_lib.roles(config, pool).how,
               'selection': f'{c.tune_groups} validation groups for learning rates, '
                            f'{c.val_groups} for Pretrained epoch / ProtoNet step',
               'backend': jax.default_backend(), 'methods': list(methods), 'rows': rows,
               'curves': curves, 'speedup': speedup,
               'compare_seconds': round(time.time() - t_start, 1)}
    summary.update(gains)
    summary['verdict'] = controls.verdict(dict(gains, accuracy=pudnet_acc))
    if refined.steps:
        summary['refined'] = refined.summary(control_accs)
        summary['speedup_refined'] = _speedup(curves, summary['refined']['accuracy'],
                                              summary['refined']['seconds'], chance)
        summary['refined_curve'] = {
            'steps': list(refined.milestones),
            'accuracy': [float(np.mean(refined.curve[k][0])) for k in refined.milestones],
            'seconds': [refined.median_seconds(k) for k in refined.milestones]}
        summary['refined_at_equal_time'] = {
            name: equal_time(refined, per_group_curves[name], chance)
            for name in curves if name.endswith('scratch')}
    write_outputs(summary, output_dir, output_name(config))
    return summary


def equal_time(refined, per_group, chance) -> list:
    """PudNet + refined sketch against a training curve at equal wall time, paired over
    the groups: per group and refinement milestone k, the baseline's accuracy at the
    k-step prediction's seconds (linear between its epochs, from (0 s, chance): generous
    to the baseline, whose accuracy rises concavely), subtracted from the refined
    network's. The first group's refinement times include compilation, so every group
    uses the median time of the others."""
    out = []
    for k in refined.milestones:
        accs, secs = refined.curve[k]
        t = evaluate_lib.median_after_first(secs)
        baseline = [float(np.interp(t, [0.0] + list(s), [chance] + list(a)))
                    for a, s in per_group]
        diff, ci = evaluate_lib.mean_ci95(np.asarray(accs) - np.asarray(baseline))
        out.append({'steps': k, 'seconds': t, 'refined': float(np.mean(accs)),
                    'baseline': float(np.mean(baseline)), 'difference': diff,
                    'difference_ci95': ci,
                    'beyond_curve': bool(t > min(s[-1] for _, s in per_group))})
    return out


def _speedup(curves, pudnet_acc, pudnet_seconds, chance) -> dict:
    if not any(name.endswith('scratch') for name in curves):
        return {'reached': None, 'pudnet_accuracy': pudnet_acc, 'pudnet_seconds': pudnet_seconds,
                'text': 'no scratch baseline was run (config.compare.methods)'}
    best = None
    for name, cv in curves.items():
        if not name.endswith('scratch'):
            continue
        t = time_to_reach(cv['seconds'], cv['accuracy'], pudnet_acc, chance)
        if t is not None and (best is None or t < best[1]):
            best = (name, t)
    if best is None:
        slowest = max(max(cv['seconds']) for n, cv in curves.items() if n.endswith('scratch'))
        return {'reached': False, 'pudnet_accuracy': pudnet_acc,
                'pudnet_seconds': pudnet_seconds, 'longest_scratch_seconds': slowest,
                'lower_bound': slowest / pudnet_seconds,
                'text': f'no scratch baseline reached PudNet\'s accuracy '
                        f'({100 * pudnet_acc:.2f} %) within {slowest:.2f} s; speedup '
                        f'> {slowest / pudnet_seconds:.0f}x'}
    return {'reached': True, 'baseline': best[0], 'baseline_seconds': best[1],
            'pudnet_accuracy': pudnet_acc, 'pudnet_seconds': pudnet_seconds,
            'speedup': best[1] / pudnet_seconds,
            'text': f'{best[0]} needs {best[1]:.2f} s to reach PudNet\'s accuracy '
                    f'({100 * pudnet_acc:.2f} %); PudNet predicts in '
                    f'{1000 * pudnet_seconds:.1f} ms: {_ratio_text(best[1] / pudnet_seconds)}'}


def _equal_time_text(name: str, pts: list) -> str:
    return (f"**At equal wall time** ({name}, paired over the groups; its accuracy "
            f"interpolated between epochs): " + '; '.join(
                f"{p['steps']} step{'s' * (p['steps'] > 1)} ({_fmt_seconds(p['seconds'])}) "
                f"{100 * p['refined']:.2f} vs {100 * p['baseline']:.2f} %, "
                f"{100 * p['difference']:+.2f} ± {100 * p['difference_ci95']:.2f} points"
                for p in pts) + '.')


def _ratio_text(ratio: float) -> str:
    """'147x faster', '1.8x faster', or '1.8x SLOWER' (never a rounded '1x faster')."""
    if ratio >= 1.0:
        return f'{ratio:.0f}x faster' if ratio >= 10 else f'{ratio:.1f}x faster'
    return f'{1.0 / ratio:.1f}x SLOWER (the baseline gets there first)'


def _fmt_seconds(s):
    return '-' if s is None else (f'{1000 * s:.1f} ms' if s < 1 else f'{s:.2f} s')


def output_name(config) -> str:
    """'compare', or 'compare_p<N>' when groups predict from N > shots images per class."""
    p = evaluate_lib.prediction_shots(config.eval)
    return 'compare' if p == config.eval.shots else f'compare_p{p}'


def write_outputs(summary: dict, workdir: str, name: str = 'compare') -> None:
    rows = summary['rows']
    out = lambda ext: os.path.join(workdir, f'{name}.{ext}')
    write_json(out('json'), summary)
    with open(out('csv'), 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"# PudNet vs baselines: {summary['preset']}, {summary['target']}, "
             f"{summary['ways']}-way, per class {summary['prediction_shots']} prediction images "
             f"({summary['shots']} of them labelled for the centroids; scratch and fine-tuning "
             f"train on all, labelled) + {summary['test_shots']} test images, "
             f"{summary['groups']} test groups ({summary['backend']})", '',
             f"Roles: {summary['roles']}; baselines' settings selected on the validation "
             f"role ({summary['selection']}).", '',
             f"**Controls:** conditioning gain (PudNet − mean-sketch network, paired) "
             f"{100 * summary['conditioning_gain']:+.2f} ± "
             f"{100 * summary['conditioning_gain_ci95']:.2f} points; gain over the untrained "
             f"network {100 * summary['gain_over_untrained']:+.2f} ± "
             f"{100 * summary['gain_over_untrained_ci95']:.2f} points. {summary['verdict']}.", '',
             f"**Speedup at equal accuracy:** {summary['speedup']['text']}.", '',
             *([f"**PudNet + refined sketch:** conditioning gain "
                f"{100 * summary['refined']['conditioning_gain']:+.2f} ± "
                f"{100 * summary['refined']['conditioning_gain_ci95']:.2f} points, over the "
                f"untrained network {100 * summary['refined']['gain_over_untrained']:+.2f} ± "
                f"{100 * summary['refined']['gain_over_untrained_ci95']:.2f} points; "
                f"{summary['speedup_refined']['text'].replace('PudNet', 'PudNet + refined sketch')}.",
                ''] if 'refined' in summary else []),
             *[line for name, pts in summary.get('refined_at_equal_time', {}).items()
               for line in (_equal_time_text(name, pts), '')],
             '| method | ACC (%) ± 95% CI | seconds to produce the network | one-off training | note |',
             '|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['method']} | {100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} | "
                     f"{_fmt_seconds(r['seconds'])} | {_fmt_seconds(r['one_off_seconds'])} | "
                     f"{r['note']} |")
    with open(out('md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    _plot(summary, out('png'))
    print('\n'.join(lines))


def _plot(summary: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    styles = {'Adam scratch': 'C0', 'GC scratch': 'C1', 'Fine-tune PudNet': 'C3',
              'Fine-tune Pretrained': 'C4'}
    for name, cv in summary['curves'].items():
        ax.plot(cv['seconds'], 100 * np.array(cv['accuracy']), 'o-', color=styles.get(name),
                label=f"{name} (epochs {cv['epochs'][0]}-{cv['epochs'][-1]})", ms=4)
        ax.annotate(str(cv['epochs'][-1]), (cv['seconds'][-1], 100 * cv['accuracy'][-1]),
                    textcoords='offset points', xytext=(4, -3), fontsize=7)
    for r in summary['rows']:
        if r['family'] == 'pudnet':
            ax.errorbar([r['seconds']], [100 * r['accuracy']], yerr=[100 * r['ci95']], fmt='*',
                        color='C2', ms=14, label=f"PudNet ({_fmt_seconds(r['seconds'])})")
        elif r['family'] == 'pudnet_refined':
            ax.errorbar([r['seconds']], [100 * r['accuracy']], yerr=[100 * r['ci95']], fmt='P',
                        color='C9', ms=11,
                        label=f"PudNet + refined sketch ({_fmt_seconds(r['seconds'])})")
            cv = summary.get('refined_curve')
            if cv and len(cv['steps']) > 1:
                ax.plot(cv['seconds'], 100 * np.array(cv['accuracy']), '-', color='C9', lw=1,
                        marker='.', label=f"PudNet + refined sketch, steps "
                                          f"{cv['steps'][0]}-{cv['steps'][-1]}")
        elif r['family'] in ('pretrained', 'pretrained_bn', 'protonet', 'control', 'mean_sketch'):
            ax.axhline(100 * r['accuracy'], ls=':' if r['family'] == 'pretrained_bn' else '--',
                       lw=1, color={'pretrained': 'C5', 'pretrained_bn': 'C5', 'protonet': 'C6',
                                    'control': 'C7', 'mean_sketch': 'C8'}[r['family']],
                       label=r['method'] + ('' if 'prototypes' in r['method'] else ' (prototypes)'))
    ax.set_xscale('log')
    ax.set_xlabel('seconds to produce the network for one group (log scale)')
    ax.set_ylabel('held-out accuracy (%)')
    ax.set_title(f"{summary['preset']} / {summary['target']}: {summary['ways']}-way, "
                 f"{summary['prediction_shots']} prediction images per class, "
                 f"{summary['groups']} groups", fontsize=10)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7, loc='lower right')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
