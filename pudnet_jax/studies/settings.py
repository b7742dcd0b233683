"""Prediction settings on held-out domains: λ (`eval.delta_scale`) × learned steps
(`eval.refine_steps`), measured on trainings that exist, without training anything.

  python -m pudnet_jax.studies settings --root runs/lodo
      [--domains latin_upper,...,mnist] [--scales 0.5,0.75,1] [--steps 3]
      [--candidates 2] [--default 0.5:1] [--variant ''] [--parallel 2]
      [--out docs/prediction_settings]

Run from the repository root. ROOT/<domain> is a training of
`configs/multidomain.py:<domain>[,<variant>]` (the leave-one-domain-out sweep's,
`studies lodo`). For each domain and each λ, on that config's 150 held-out groups: the
single forward pass, the untrained and mean-sketch controls, and the network after
k = 1 … `--steps` learned steps (each k timed as a prediction of its own). Every cell
sees the same groups, so cells are compared paired, group by group, against the
`--default` cell (λ:k).

The score of a cell is S, the unweighted mean over the measured domains of its refined
accuracy; the candidates are the cells with k ≤ `--candidates`. The rule of
docs/preregistration.md ("prediction settings chosen on held-out training domains"):
the candidate with the highest S replaces the default if its S is above the default's
and it is above the default on at least half the domains plus one. The study prints that
decision and writes it with every cell to OUT.json and OUT.md. A domain's cells are kept
in ROOT/<domain>/settings.json, reused when the scales and steps are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from pudnet_jax import multidomain
from pudnet_jax.studies import jobs, lodo
from pudnet_jax.files import write_json, write_report

CONFIG = os.path.join('configs', 'multidomain.py')
CELLS_FILE = 'settings.json'


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='python -m pudnet_jax.studies settings',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--root', default='runs/lodo', help='one trained workdir per domain')
    parser.add_argument('--domains', default=','.join(d for d in multidomain.DOMAINS
                                                      if d != 'animal'),
                        help='comma-separated held-out domains (default: all but animal, '
                             'the default config\'s test domain)')
    parser.add_argument('--scales', default='0.5,0.75,1', help='λ values (eval.delta_scale)')
    parser.add_argument('--steps', type=int, default=3, help='learned steps measured: 1 … N')
    parser.add_argument('--candidates', type=int, default=2,
                        help='cells with at most this many steps are candidates')
    parser.add_argument('--default', default='0.5:1', help='the default cell, λ:k')
    parser.add_argument('--variant', default='', help='a variant of configs/multidomain.py')
    parser.add_argument('--parallel', type=int, default=1, help='domains measured at once')
    parser.add_argument('--out', default='docs/prediction_settings', help='output prefix')
    parser.add_argument('--one', default='', help=argparse.SUPPRESS)  # internal: one domain
    args = parser.parse_args(argv)
    args.domains = [d for d in args.domains.split(',') if d]
    unknown = [d for d in args.domains if d not in multidomain.HOLDABLE_DOMAINS]
    if unknown:
        parser.error(f'--domains: unknown {unknown}; the domains are '
                     f'{list(multidomain.HOLDABLE_DOMAINS)}')
    try:
        args.scales = [float(s) for s in args.scales.split(',') if s]
        scale, k = args.default.split(':')
        args.default = (float(scale), int(k))
    except ValueError:
        parser.error('--scales takes numbers (0.5,1); --default takes λ:k (0.5:1)')
    if args.steps < 1 or not 1 <= args.candidates <= args.steps:
        parser.error('--steps ≥ 1 and 1 ≤ --candidates ≤ --steps')
    if args.default[0] not in args.scales or not 1 <= args.default[1] <= args.candidates:
        parser.error(f'--default {args.default} is not a candidate cell of --scales '
                     f'{args.scales} and --candidates {args.candidates}')
    missing = [d for d in args.domains if not os.path.isdir(os.path.join(args.root, d))]
    if not args.one and missing:
        parser.error(f'--root {args.root}: no workdir for {missing}; train them first '
                     f'(python -m pudnet_jax.studies lodo --root {args.root})')
    if not os.path.isfile(CONFIG):
        parser.error(f'{CONFIG} not found: run from the repository root')
    return args


def key(scale: float, k: int) -> str:
    return f'{scale:g}:{k}'


def measure(root: str, domain: str, scales, steps: int, variant: str = '',
            config=None) -> dict:
    """Every cell of one domain's training on its held-out groups: per λ, the single pass,
    the controls and the refined network after 1 … `steps` learned steps, with the
    per-group accuracies (for paired differences). `config`: the workdir's config (default:
    `configs/multidomain.py:<domain>[,<variant>]`)."""
    from pudnet_jax import controls
    from pudnet_jax import evaluate as ev
    from pudnet_jax import tasks
    from pudnet_jax import workdir as workdir_lib
    if config is None:
        config = lodo.multidomain_config(domain, variant)
    config = config.copy_and_resolve_references()
    workdir = os.path.join(root, domain)
    config, model, spec, hyper_vars, step = workdir_lib.restore_hypernet_with_step(
        workdir, config)
    if config.eval.get('refine_optimizer') != 'learned':
        raise SystemExit(f'{workdir}: the config does not take learned steps at prediction '
                         f"(eval.refine_optimizer={config.eval.get('refine_optimizer')!r}).")
    pool = tasks.of(config).load(config).pool
    e = config.eval
    sampler = ev.group_sampler(config, pool, 'test')
    groups = [sampler.sample(g, 1)[0] for g in range(e.groups)]
    out = {'domain': domain, 'workdir': workdir, 'checkpoint_step': step,
           'groups': len(groups), 'scales': list(scales), 'steps': steps, 'cells': {}}
    for scale in scales:
        t0 = time.time()
        with config.unlocked():
            config.eval.delta_scale = scale
            config.eval.refine_steps = steps
        m = model.clone(delta_scale=scale)
        predict_c, scores_c, _ = ev.compiled_predict_and_scores(
            m, spec, hyper_vars, groups[0], e.ways, e.shots, e.get('bn_images'))
        params = controls.control_params(config, m, spec, hyper_vars, pool, workdir)
        if 'controls' in out:     # untrained and pretrained do not depend on λ: scored once
            params = {'mean_sketch': params['mean_sketch']}
        refined = ev.Refined(config, m, spec, groups[0], milestones=range(1, steps + 1))
        single, control_accs = [], {name: [] for name in params}
        for group, _, scores, _ in ev.predict_groups(predict_c, scores_c, hyper_vars, groups,
                                                     e.ways, e.shots):
            single.append(ev.group_accuracy(scores, group.query_labels)[0])
            for name, accs in ev.control_accuracies(spec, params, scores_c, group, e.ways,
                                                    e.shots).items():
                control_accs[name].append(float(np.mean(accs)))
            refined.add(hyper_vars, group, scores_c)
        for k in range(1, steps + 1):
            accs, seconds = refined.curve[k]
            out['cells'][key(scale, k)] = {
                'scale': scale, 'steps': k, 'per_group': [float(a) for a in accs],
                'seconds': ev.median_after_first(seconds)}
        out['cells'][key(scale, 0)] = {'scale': scale, 'steps': 0,
                                       'per_group': [float(a) for a in single]}
        out.setdefault('controls', {n: [float(a) for a in v] for n, v in control_accs.items()
                                    if n != 'mean_sketch'})
        out['controls'][f'mean_sketch:{scale:g}'] = control_accs['mean_sketch']
        print(f'{domain} λ {scale:g}: single pass {100 * np.mean(single):.2f} %, '
              + ', '.join(f'{k} step{"s" * (k > 1)} {100 * np.mean(refined.curve[k][0]):.2f} %'
                          for k in range(1, steps + 1))
              + f', untrained {100 * np.mean(out["controls"]["untrained"]):.2f} % '
              f'({time.time() - t0:.0f} s)', flush=True)
    return out


def cells_of(args, domain: str) -> dict | None:
    path = os.path.join(args.root, domain, CELLS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    same = (saved.get('scales') == list(args.scales) and saved.get('steps') == args.steps)
    return saved if same else None


def run_all(args) -> None:
    def cmd(d):
        return [sys.executable, '-m', 'pudnet_jax.studies', 'settings', '--one', d,
                '--root', args.root, '--domains', d, '--steps', str(args.steps),
                '--candidates', str(args.candidates),
                '--scales', ','.join(f'{s:g}' for s in args.scales),
                '--default', key(*args.default), '--variant', args.variant]
    jobs.run_pinned([(d, cmd(d), os.path.join(args.root, d, 'settings.log'))
                     for d in args.domains if cells_of(args, d) is None],
                    args.parallel, verb='measuring')


def paired(a, b) -> tuple[float, float]:
    from pudnet_jax.controls import mean_ci95
    return mean_ci95(np.asarray(a) - np.asarray(b))


def summarize(args, per_domain: dict) -> dict:
    """Per cell: accuracy per domain, S, paired difference with the default per domain, the
    number of domains above the default; then the decision of the rule."""
    domains = list(per_domain)
    default = key(*args.default)
    cells = {}
    for scale in args.scales:
        for k in range(0, args.steps + 1):
            c = key(scale, k)
            acc = {d: float(np.mean(per_domain[d]['cells'][c]['per_group'])) for d in domains}
            diff = {d: paired(per_domain[d]['cells'][c]['per_group'],
                              per_domain[d]['cells'][default]['per_group']) for d in domains}
            cells[c] = {'scale': scale, 'steps': k, 'accuracy': acc,
                        'S': float(np.mean(list(acc.values()))),
                        'minus_default': {d: {'points': v[0], 'ci95': v[1]}
                                          for d, v in diff.items()},
                        'above_default': int(sum(v[0] > 0 for v in diff.values())),
                        'candidate': 1 <= k <= args.candidates,
                        'seconds': (float(np.median([per_domain[d]['cells'][c]['seconds']
                                                     for d in domains])) if k else None)}
    candidates = {c: v for c, v in cells.items() if v['candidate']}
    best = max(candidates, key=lambda c: candidates[c]['S'])
    need = len(domains) // 2 + 1
    adopt = (best != default and cells[best]['S'] > cells[default]['S']
             and cells[best]['above_default'] >= need)
    controls = {d: {**{n: float(np.mean(per_domain[d]['controls'][n]))
                       for n in ('untrained', 'pretrained') if n in per_domain[d]['controls']},
                    **{f'mean_sketch λ {s:g}':
                       float(np.mean(per_domain[d]['controls'][f'mean_sketch:{s:g}']))
                       for s in args.scales}}
                for d in domains}
    return {'domains': domains, 'default': default, 'cells': cells, 'controls': controls,
            'decision': {'best_candidate': best, 'adopted': best if adopt else default,
                         'changed': adopt, 'needs_domains_above_default': need,
                         'rule': 'highest S among candidates; adopted if S above the '
                                 "default's and above it on at least half the domains + 1"},
            'groups': {d: per_domain[d]['groups'] for d in domains},
            'checkpoint_steps': {d: per_domain[d]['checkpoint_step'] for d in domains},
            'variant': args.variant}


def markdown(s: dict) -> str:
    pct = lambda v: f'{100 * v:.2f}'
    domains, default = s['domains'], s['default']
    order = sorted(s['cells'], key=lambda c: (s['cells'][c]['steps'] == 0,
                                              s['cells'][c]['scale'], s['cells'][c]['steps']))
    name = lambda c: (f"λ {s['cells'][c]['scale']:g}, single pass" if s['cells'][c]['steps'] == 0
                      else f"λ {s['cells'][c]['scale']:g}, {s['cells'][c]['steps']} "
                           f"step{'s' * (s['cells'][c]['steps'] > 1)}")
    lines = ['| cell | ' + ' | '.join(domains) + ' | **S** | − default, domains above | '
             'seconds |', '|---' * (len(domains) + 4) + '|']
    for c in order:
        v = s['cells'][c]
        mark = ' (default)' if c == default else ('' if v['candidate'] else ' (not a candidate)')
        above = (f"{v['above_default']} / {len(domains)}" if c != default else '')
        sec = f"{v['seconds']:.3f}" if v['seconds'] is not None else ''
        lines.append(f'| {name(c)}{mark} | ' + ' | '.join(pct(v['accuracy'][d]) for d in domains)
                     + f" | **{pct(v['S'])}** | {above} | {sec} |")
    lines.append('| untrained control | ' + ' | '.join(pct(s['controls'][d]['untrained'])
                                                       for d in domains)
                 + f" | {pct(np.mean([s['controls'][d]['untrained'] for d in domains]))} | | |")
    if all('pretrained' in s['controls'][d] for d in domains):   # eval.pretrained_control
        lines.append('| pretrained control | ' + ' | '.join(
            pct(s['controls'][d]['pretrained']) for d in domains)
            + f" | {pct(np.mean([s['controls'][d]['pretrained'] for d in domains]))} | | |")
    d = s['decision']
    lines += ['', f"Paired differences with the default ({name(default)}), points ± 95 % CI "
                  'over groups:', '',
              '| cell | ' + ' | '.join(domains) + ' |', '|---' * (len(domains) + 1) + '|']
    for c in order:
        if c == default or s['cells'][c]['steps'] == 0:
            continue
        m = s['cells'][c]['minus_default']
        lines.append(f'| {name(c)} | ' + ' | '.join(
            f"{100 * m[x]['points']:+.2f} ± {100 * m[x]['ci95']:.2f}" for x in domains) + ' |')
    lines += ['', f"Decision (docs/preregistration.md): best candidate {name(d['best_candidate'])}"
                  f" (S {pct(s['cells'][d['best_candidate']]['S'])}, above the default on "
                  f"{s['cells'][d['best_candidate']]['above_default']} of {len(domains)}, "
                  f"{d['needs_domains_above_default']} needed) → "
                  + (f"adopted: {name(d['adopted'])}." if d['changed']
                     else f"the default stays: {name(default)}.")]
    return '\n'.join(lines) + '\n'


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.one:
        out = measure(args.root, args.one, args.scales, args.steps, args.variant)
        write_json(os.path.join(args.root, args.one, CELLS_FILE), out)
        return
    run_all(args)
    per_domain = {d: cells_of(args, d) for d in args.domains}
    missing = [d for d, v in per_domain.items() if v is None]
    if missing:
        raise SystemExit(f'no cells for {missing}: see their settings.log under {args.root}')
    summary = summarize(args, per_domain)
    text = markdown(summary)
    write_report(args.out, summary, text)
    print(text)


if __name__ == '__main__':
    main()
