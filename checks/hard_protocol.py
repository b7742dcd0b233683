"""Calibrates a harder test protocol by the untrained network alone.

    python -m checks.hard_protocol [--domains greek_lower,cyrillic,math]
        [--ways 5,10,20] [--shots 2,3,5] [--target 62.08] [--groups 150] [--out P]

For every (ways W, labelled images a class s) cell: the untrained control (random
initialisation, BatchNorm statistics from the group's prediction set, nearest centroid
by cosine; the mean of `eval.untrained_seeds` inits) on the test groups of each held-out
domain of `configs/multidomain.py:<domain>`, with `eval.ways=W`, `eval.shots=s`,
`eval.prediction_shots=s`: the same sampler, seeds and networks as `--mode=evaluate`.
The selected cell is the one whose mean over the domains is closest to `--target`
(ties: the larger s). It reads no training: the untrained network is the same for every
hypernetwork, so the protocol it picks favours no arm (docs/preregistration.md, third
entry of 2026-12-06). Writes P.json and P.md.

    python -m checks.hard_protocol --workdirs W1,W2,... [--out P]

evaluates each trained workdir (its own saved config) on its test groups at the cell
selected in P.json (or `--protocol W:s`): PudNet, the learned step and the controls, as
`--mode=evaluate` computes them (`evaluate.evaluate`, test split only: the validation
domains have too few classes for a wide group). Writes W/hard_protocol.json.

    python -m checks.hard_protocol --pairs DOMAIN:W_DEFAULT:W_CANDIDATE,... --decision P

the preregistered rule's table from those files (no evaluation): per held-out domain,
both arms at the selected cell (W/hard_protocol.json) and at the default protocol
(W/results.json), D = candidate − default of the refined accuracy, and the rule's
reading (mean D > 0 and D > 0 on at least two domains of three). Writes P.json and P.md.
"""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
from absl import app, flags

from configs import multidomain as md_config
from pudnet_jax import controls
from pudnet_jax import data as data_lib
from pudnet_jax import evaluate as evaluate_lib
from pudnet_jax.hypernet import build_model
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.files import write_json, write_report

flags.DEFINE_list('domains', ['greek_lower', 'cyrillic', 'math'], 'Held-out domains.')
flags.DEFINE_list('ways', ['5', '10', '20'], 'Ways W of a group.')
flags.DEFINE_list('shots', ['2', '3', '5'], 'Labelled images a class s (the prediction set).')
flags.DEFINE_float('target', 62.08, 'The untrained accuracy (%) to calibrate to.')
flags.DEFINE_integer('groups', 150, 'Test groups a domain.')
flags.DEFINE_string('out', 'docs/hard_protocol', 'Output prefix (.json, .md).')
flags.DEFINE_list('workdirs', [], 'Trained workdirs to evaluate at the selected protocol.')
flags.DEFINE_list('pairs', [], 'DOMAIN:W_DEFAULT:W_CANDIDATE triples for the decision.')
flags.DEFINE_string('decision', 'docs/typefaces_decision', 'Output prefix of --pairs.')
flags.DEFINE_string('protocol', None, 'W:s for --workdirs (default: the selection in '
                    '--out.json).')
FLAGS = flags.FLAGS


def protocol_config(domain: str, ways: int, shots: int, groups: int):
    """`configs/multidomain.py:<domain>` at W ways, s labelled images a class."""
    config = set_protocol(md_config.get_config(domain), ways, shots)
    config.eval.groups = groups
    return config


def set_protocol(config, ways: int, shots: int):
    """`config` at W ways, s labelled images a class, the prediction set the labelled set."""
    with config.unlocked():
        config.eval.ways, config.eval.shots = ways, shots
        config.eval.prediction_shots = shots
    return config


def untrained_accuracy(config, pool) -> tuple[float, float]:
    """Mean and 95 % CI over the test groups of the untrained control (%), as
    `evaluate.evaluate` computes it."""
    e = config.eval
    _, spec = build_model(config)
    params = {'untrained': controls.untrained_params(config, spec)}
    scores = evaluate_lib.make_scores_fn(spec, e.ways)
    sampler = evaluate_lib.group_sampler(config, pool, 'test')
    per_group = []
    for g in range(e.groups):
        group = sampler.sample(g, 1)[0]
        accs = evaluate_lib.control_accuracies(spec, params, scores, group, e.ways,
                                               e.shots)['untrained']
        per_group.append(float(np.mean(accs)))
    mean, ci = controls.mean_ci95(per_group)
    return 100 * mean, 100 * ci


def select(cells: list[dict], target: float) -> dict:
    """The cell closest to `target` by its mean over domains; ties: the larger s."""
    return min(cells, key=lambda c: (round(abs(c['mean'] - target), 6), -c['shots']))


def evaluate_workdir(workdir: str, ways: int, shots: int) -> dict:
    """`evaluate.evaluate` of a workdir's test groups at W ways, s labelled images."""
    config, model, spec, hyper = workdir_lib.restore_hypernet(workdir)
    config = set_protocol(config.copy_and_resolve_references(), ways, shots)
    pool = data_lib.load_pool(config.data.name, config.data.image_size, config.data.channels,
                              config.data.data_dir, cache_dir=config.data.get('cache_dir'))
    results = evaluate_lib.evaluate(config, model, spec, hyper, pool, workdir, split='test')
    write_json(os.path.join(workdir, 'hard_protocol.json'), results)
    return results


def arm_row(workdir: str) -> dict:
    """A workdir's numbers at the selected cell and at its training's own protocol."""
    out = {'workdir': workdir}
    for name, file in (('hard', 'hard_protocol.json'), ('default_protocol', 'results.json')):
        path = os.path.join(workdir, file)
        if not os.path.exists(path):
            raise SystemExit(f'{path}: not found (train the workdir, then evaluate it with '
                             f'--workdirs, first).')
        with open(path) as f:
            r = json.load(f)
        f_ = r['refined']
        out[name] = {'ways': r['ways'], 'shots': r['shots'], 'refined': f_['accuracy'],
                     'refined_ci95': f_['ci95'], 'single_pass': r['accuracy'],
                     'untrained': r['controls']['untrained']['accuracy'],
                     'mean_sketch': r['controls']['mean_sketch']['accuracy'],
                     'over_other_group': f_.get('gain_over_other_group'),
                     'validation': (r.get('validation') or {}).get('refined', {}).get('accuracy')}
    return out


def decide(pairs: list[str], prefix: str) -> dict:
    """The rule of docs/preregistration.md (third entry of 2026-12-06) on the pairs."""
    rows = []
    for item in pairs:
        parts = item.split(':')
        if len(parts) != 3 or not all(parts):
            raise SystemExit(f'--pairs: expected DOMAIN:W_DEFAULT:W_CANDIDATE; got {item!r}.')
        domain, w_default, w_candidate = parts
        a, b = arm_row(w_default), arm_row(w_candidate)
        rows.append({'domain': domain, 'default': a, 'candidate': b,
                     'D': b['hard']['refined'] - a['hard']['refined'],
                     'D_default_protocol': (b['default_protocol']['refined']
                                            - a['default_protocol']['refined'])})
    mean_d = float(np.mean([r['D'] for r in rows]))
    above = sum(r['D'] > 0 for r in rows)
    adopted = bool(mean_d > 0 and above >= 2)
    out = {'rows': rows, 'mean_D': mean_d, 'above': above, 'adopted': adopted}
    pct = lambda v: f'{100 * v:.2f}'
    h = rows[0]['default']['hard']
    lines = [f"| held-out domain | untrained | default: mean sketch | default: single pass | "
             f"default: learned step | candidate: mean sketch | candidate: single pass | "
             f"candidate: learned step | **D** | default protocol: default / candidate (D) |",
             '|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        a, b = r['default'], r['candidate']
        lines.append(
            f"| {r['domain']} | {pct(a['hard']['untrained'])} | {pct(a['hard']['mean_sketch'])} "
            f"| {pct(a['hard']['single_pass'])} "
            f"| {pct(a['hard']['refined'])} ± {pct(a['hard']['refined_ci95'])} | "
            f"{pct(b['hard']['mean_sketch'])} | "
            f"{pct(b['hard']['single_pass'])} | {pct(b['hard']['refined'])} ± "
            f"{pct(b['hard']['refined_ci95'])} | **{100 * r['D']:+.2f}** | "
            f"{pct(a['default_protocol']['refined'])} / {pct(b['default_protocol']['refined'])} "
            f"({100 * r['D_default_protocol']:+.2f}) |")
    lines.append(f"\n{h['ways']} ways, {h['shots']} labelled images a class. Mean D "
                 f"{100 * mean_d:+.2f}, D > 0 on {above} of {len(rows)}: "
                 f"**{'adopted' if adopted else 'not adopted'}**.")
    write_report(prefix, out, '\n'.join(lines) + '\n')
    print('\n'.join(lines))
    return out


def main(_):
    if FLAGS.pairs:
        decide(FLAGS.pairs, FLAGS.decision)
        return
    if FLAGS.workdirs:
        if FLAGS.protocol:
            try:
                ways, shots = map(int, FLAGS.protocol.split(':'))
            except ValueError:
                raise SystemExit(f'--protocol: expected W:s (two integers, e.g. 10:3); '
                                 f'got {FLAGS.protocol!r}.') from None
        else:
            with open(FLAGS.out + '.json') as f:
                selected = json.load(f)['selected']
            ways, shots = selected['ways'], selected['shots']
        for w in FLAGS.workdirs:
            r = evaluate_workdir(w, ways, shots)
            print(f"{w}: W {ways}, s {shots}: refined {100 * r['refined']['accuracy']:.2f}, "
                  f"single pass {100 * r['accuracy']:.2f}, untrained "
                  f"{100 * r['controls']['untrained']['accuracy']:.2f}", flush=True)
        return
    cells, pool = [], None
    for ways, shots in itertools.product(map(int, FLAGS.ways), map(int, FLAGS.shots)):
        by_domain = {}
        for d in FLAGS.domains:
            config = protocol_config(d, ways, shots, FLAGS.groups)
            if pool is None:
                pool = data_lib.load_pool(config.data.name, config.data.image_size,
                                          config.data.channels)
            by_domain[d] = untrained_accuracy(config, pool)
        mean = float(np.mean([a for a, _ in by_domain.values()]))
        cells.append({'ways': ways, 'shots': shots, 'mean': mean,
                      'domains': {d: {'accuracy': a, 'ci95': c}
                                  for d, (a, c) in by_domain.items()}})
        print(f'W {ways:2d}, s {shots}: ' + ', '.join(
            f'{d} {a:.2f}' for d, (a, _) in by_domain.items()) + f'; mean {mean:.2f}',
            flush=True)
    chosen = select(cells, FLAGS.target)
    out = {'target': FLAGS.target, 'groups': FLAGS.groups, 'domains': FLAGS.domains,
           'cells': cells, 'selected': {'ways': chosen['ways'], 'shots': chosen['shots']}}
    lines = ['| ways | labelled a class | ' + ' | '.join(FLAGS.domains) + ' | mean |',
             '|---|---|' + '---|' * (len(FLAGS.domains) + 1)]
    for c in cells:
        mark = '**' if c is chosen else ''
        lines.append(f"| {mark}{c['ways']}{mark} | {mark}{c['shots']}{mark} | " + ' | '.join(
            f"{c['domains'][d]['accuracy']:.2f} ± {c['domains'][d]['ci95']:.2f}"
            for d in FLAGS.domains) + f" | {mark}{c['mean']:.2f}{mark} |")
    lines.append(f"\nUntrained control (%), {FLAGS.groups} test groups a domain; selected "
                 f"(closest to {FLAGS.target:.2f}): W {chosen['ways']}, s {chosen['shots']}.")
    write_report(FLAGS.out, out, '\n'.join(lines) + '\n')
    print(json.dumps(out['selected']))


if __name__ == '__main__':
    app.run(main)
