"""Leave-one-domain-out sweep of the multi-domain config: one row per held-out domain.

  python -m pudnet_jax.studies lodo --root runs/lodo [--domains animal,mnist] [--parallel 2]
      [--variant paper] [--set model.residual=True ...] [--out docs/lodo]

Run from the repository root (configs/multidomain.py). For each domain,
`python -m pudnet_jax --config configs/multidomain.py:<domain>[,<variant>]` trains in
ROOT/<domain> (a finished workdir, one with results.json, is not retrained; an
interrupted one resumes), then the row: PudNet's single forward pass, the untrained and
mean-sketch controls, the conditioning gain and the gain over untrained (paired 95% CIs)
and PudNet + refined sketch (or + learned step) when the config refines. `--parallel N` runs N trainings at
once, each pinned to its own CPU core when the machine has that many. Writes OUT.json and
OUT.md (wins and losses alike: nothing is dropped); rows OUT.json already holds for other
domains, or for domains whose workdir is gone, made with the same --variant and --set,
are kept.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from pudnet_jax import multidomain
from pudnet_jax.studies import jobs
from pudnet_jax.files import write_report

CONFIG = os.path.join('configs', 'multidomain.py')


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='python -m pudnet_jax.studies lodo',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--root', default='runs/lodo', help='one workdir per domain under it')
    parser.add_argument('--domains', default=None,
                        help="comma-separated held-out domains (default: every domain the "
                             "variant's pool can hold out)")
    parser.add_argument('--parallel', type=int, default=1, help='trainings at once')
    parser.add_argument('--variant', default='',
                        help="a variant of configs/multidomain.py, e.g. 'paper' (the paper's "
                             'model with 10 Adam refinement steps)')
    parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                        help='config override of every run, e.g. model.residual=True')
    parser.add_argument('--out', default='docs/lodo', help='output prefix (.json, .md)')
    args = parser.parse_args(argv)
    if not os.path.isfile(CONFIG):
        parser.error(f'{CONFIG} not found: run from the repository root')
    if args.domains is None:
        args.domains = ','.join(holdable(args.variant))
    args.domains = [d for d in args.domains.split(',') if d]
    unknown = [d for d in args.domains if d not in multidomain.HOLDABLE_DOMAINS]
    if unknown:
        parser.error(f'--domains: unknown {unknown}; the domains are '
                     f'{list(multidomain.HOLDABLE_DOMAINS)}')
    return args


def multidomain_config(domain: str, variant: str = ''):
    """`configs/multidomain.py:<domain>[,<variant>]`, imported from the repository root
    (the working directory)."""
    sys.path.insert(0, os.getcwd())
    return importlib.import_module('configs.multidomain').get_config(
        domain + (f',{variant}' if variant else ''))


def holdable(variant: str = '') -> list[str]:
    """The domains `configs/multidomain.py:<domain>[,<variant>]` can hold out: its pool's,
    but the validation-only ones (the default's pool holds the typeface domains)."""
    config = multidomain_config('animal', variant)
    return [d for d in multidomain.POOLS[config.data.name]
            if d not in multidomain.VALIDATION_DOMAINS]


def command(args, domain: str, workdir: str) -> list[str]:
    variant = f',{args.variant}' if args.variant else ''
    return ([sys.executable, '-m', 'pudnet_jax', f'--config={CONFIG}:{domain}{variant}',
             f'--workdir={workdir}'] + [f'--config.{s}' for s in args.set])


def run_all(args) -> None:
    pending = [d for d in args.domains
               if not os.path.exists(os.path.join(args.root, d, 'results.json'))]
    jobs.run_pinned([(f'held-out {d}', command(args, d, os.path.join(args.root, d)),
                      os.path.join(args.root, d, 'lodo.log')) for d in pending],
                    args.parallel, verb='training')


def row(root: str, domain: str) -> dict | None:
    path = os.path.join(root, domain, 'results.json')
    if not os.path.exists(path):
        return None
    with open(path) as f:
        r = json.load(f)
    with open(os.path.join(root, domain, 'config.json')) as f:
        cfg = json.load(f)
    # The validation domains the results were measured on (a workdir evaluated again
    # under a later protocol), else those of its training config.
    val_domains = (list((r.get('validation') or {}).get('domains') or ())
                   or cfg['data'].get('val_domains') or [cfg['data'].get('val_domain')])
    out = {'domain': domain, 'seed': cfg.get('seed'),
           'validation_domain': ' + '.join(map(str, val_domains)),
           'train_classes': len(cfg['data']['train_classes']),
           'test_classes': len(cfg['data']['test_classes']), 'groups': r['groups'],
           'pudnet': r['accuracy'], 'pudnet_ci95': r['ci95'],
           'untrained': r['controls']['untrained']['accuracy'],
           'mean_sketch': r['controls']['mean_sketch']['accuracy'],
           'conditioning_gain': r['conditioning_gain'],
           'conditioning_gain_ci95': r['conditioning_gain_ci95'],
           'gain_over_untrained': r['gain_over_untrained'],
           'gain_over_untrained_ci95': r['gain_over_untrained_ci95'],
           'validation': (r.get('validation') or {}).get('accuracy'),
           'delta_scale': r.get('delta_scale'),     # eval.delta_scale, where recorded
           'train_seconds': r.get('train_seconds')}
    if 'pretrained' in r['controls']:          # eval.pretrained_control
        out.update(pretrained=r['controls']['pretrained']['accuracy'],
                   gain_over_pretrained=r['gain_over_pretrained'],
                   gain_over_pretrained_ci95=r['gain_over_pretrained_ci95'])
    f = r.get('refined')
    if f:
        out.update(refined=f['accuracy'], refined_ci95=f['ci95'],
                   refined_gain=f['conditioning_gain'], refined_gain_ci95=f['conditioning_gain_ci95'],
                   refined_over_untrained=f['gain_over_untrained'],
                   refined_over_untrained_ci95=f['gain_over_untrained_ci95'],
                   refined_seconds=f['seconds'], refined_steps=f.get('steps'),
                   refined_optimizer=f.get('optimizer', 'adam'))
        if 'gain_over_pretrained' in f:
            out.update(refined_over_pretrained=f['gain_over_pretrained'],
                       refined_over_pretrained_ci95=f['gain_over_pretrained_ci95'])
        if 'gain_over_other_group' in f:
            out.update(refined_over_other_group=f['gain_over_other_group'],
                       refined_over_other_group_ci95=f['gain_over_other_group_ci95'])
    return out


def markdown(rows) -> str:
    pct = lambda v: f'{100 * v:.2f}'
    pts = lambda g, ci: f'{100 * g:+.2f} ± {100 * ci:.2f}'
    refined = any('refined' in r for r in rows)
    head = ('| held-out domain | validation domain | PudNet | untrained | mean sketch | '
            'conditioning gain | gain over untrained |')
    sep = '|---|---|---|---|---|---|---|'
    if refined:
        first = next(r for r in rows if 'refined' in r)
        name = ('PudNet + learned step' if first.get('refined_optimizer') == 'learned'
                else 'PudNet + refined sketch')
        head += f' {name} | its gain over mean sketch | its gain over untrained |'
        sep += '---|---|---|'
    other = any('refined_over_other_group' in r for r in rows)
    if other:
        head += " its gain over another group's refined sketch |"
        sep += '---|'
    pretrained = any('pretrained' in r for r in rows)
    if pretrained:
        head += ' pretrained control | PudNet (refined, where it is) − pretrained |'
        sep += '---|---|'
    lines = [head, sep]
    for r in rows:
        line = (f"| {r['domain']} ({r['test_classes']} classes) | {r['validation_domain']} | "
                f"{pct(r['pudnet'])} ± {pct(r['pudnet_ci95'])} | {pct(r['untrained'])} | "
                f"{pct(r['mean_sketch'])} | {pts(r['conditioning_gain'], r['conditioning_gain_ci95'])} | "
                f"{pts(r['gain_over_untrained'], r['gain_over_untrained_ci95'])} |")
        if refined:
            line += (f" {pct(r['refined'])} ± {pct(r['refined_ci95'])} | "
                     f"{pts(r['refined_gain'], r['refined_gain_ci95'])} | "
                     f"{pts(r['refined_over_untrained'], r['refined_over_untrained_ci95'])} |"
                     if 'refined' in r else ' | | |')
        if other:
            line += (f" {pts(r['refined_over_other_group'], r['refined_over_other_group_ci95'])} |"
                     if 'refined_over_other_group' in r else ' |')
        if pretrained:
            k = 'refined_over_pretrained' if 'refined_over_pretrained' in r else 'gain_over_pretrained'
            line += (f" {pct(r['pretrained'])} | {pts(r[k], r[k + '_ci95'])} |"
                     if 'pretrained' in r else ' | |')
        lines.append(line)
    return '\n'.join(lines) + '\n'


def earlier_rows(args) -> dict:
    """The rows OUT.json already holds, made with the same overrides: a domain whose
    workdir is gone (another machine, a cleaned runs/) keeps its measured row."""
    path = args.out + '.json'
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        saved = json.load(f)
    if (saved.get('overrides', []) != list(args.set)
            or saved.get('variant', '') != args.variant):
        return {}
    return {r['domain']: r for r in saved.get('rows', [])}


def main(argv=None) -> None:
    args = parse_args(argv)
    run_all(args)
    earlier = earlier_rows(args)
    order = list(multidomain.HOLDABLE_DOMAINS)
    wanted = sorted(set(args.domains) | set(earlier), key=order.index)
    rows = []
    for d in wanted:     # a row from its workdir, else the one OUT.json already holds
        r = (row(args.root, d) if d in args.domains else None) or earlier.get(d)
        if r is not None:
            rows.append(r)
    missing = [d for d in args.domains if d not in {r['domain'] for r in rows}]
    text = markdown(rows)
    write_report(args.out, {'rows': rows, 'missing': missing, 'overrides': args.set,
                            'variant': args.variant}, text)
    print(text)
    if missing:
        print(f'no results for {missing} (see their lodo.log)')


if __name__ == '__main__':
    main()
