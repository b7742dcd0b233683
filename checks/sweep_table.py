"""One leave-one-domain-out table from rows measured by different commands.

    python -m checks.sweep_table --lodo docs/lodo_styles.json \\
        --seeds docs/animal_styles.json:styles:0:animal \\
        --seeds docs/conflicting_labels.json:S:0:typefaces_b \\
        --before docs/lodo.json --out docs/lodo_default

`--lodo`: a `studies lodo` output (its rows, one per held-out domain). `--seeds`
FILE:ARM:SEED:DOMAIN: the row of one training seed of one arm of a `studies seeds`
output, for a held-out domain the sweep did not train (its workdir already measured by
another study). `--before`: a sweep of the configuration this one replaces, its learned
step's accuracy as the last column. Every number is copied from those files, none is
recomputed; the order is `multidomain.HOLDABLE_DOMAINS`. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json

from pudnet_jax import multidomain
from pudnet_jax.studies import seeds
from pudnet_jax.files import write_report


def from_lodo(r: dict) -> dict:
    """A `studies lodo` row as `studies seeds` reads it (PudNet = PudNet + learned step);
    a row from before the sweep recorded its seed is seed 0, the sweep's."""
    return {'domain': r['domain']} | seeds.from_lodo_row(r) | {
        'seed': r.get('seed', 0), 'pudnet_ci95': r.get('refined_ci95')}


def from_seeds(path: str, arm: str, seed: str, domain: str) -> dict:
    """One seed of one arm of a `studies seeds` output (`seeds.recorded_row`)."""
    return {'domain': domain, 'source': f'{path}:{arm}'} | seeds.recorded_row(
        f'{path}:{arm}:{seed}')


def markdown(rows) -> str:
    pct = lambda v: '' if v is None else f'{100 * v:.2f}'
    pts = lambda r, k: ('' if r.get(k) is None
                        else f"{100 * r[k]:+.2f} ± {100 * r[k + '_ci95']:.2f}")
    lines = ['| held-out domain | seed | untrained | mean sketch | single pass | '
             '**PudNet + learned step** | over untrained | over mean sketch | over another '
             "group's step | pretrained | over pretrained | before (learned step) |",
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(
            f"| {r['domain']} | {r['seed']} | {pct(r['untrained'])} | {pct(r['mean_sketch'])} | "
            f"{pct(r['single_pass'])} | **{pct(r['pudnet'])}** | {pts(r, 'over_untrained')} | "
            f"{pts(r, 'over_mean_sketch')} | {pts(r, 'over_other_group')} | "
            f"{pct(r.get('pretrained'))} | {pts(r, 'over_pretrained')} | "
            f"{pct(r.get('before'))} |")
    return '\n'.join(lines) + '\n'


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m checks.sweep_table',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--lodo', required=True)
    parser.add_argument('--seeds', action='append', default=[],
                        metavar='FILE:ARM:SEED:DOMAIN')
    parser.add_argument('--before')
    parser.add_argument('--out', required=True)
    args = parser.parse_args(argv)
    with open(args.lodo) as f:
        sweep = json.load(f)
    rows = {r['domain']: from_lodo(r) | {'source': args.lodo} for r in sweep['rows']}
    for item in args.seeds:
        parts = item.rsplit(':', 3)
        if len(parts) != 4 or not all(parts):
            parser.error(f'--seeds: expected FILE:ARM:SEED:DOMAIN; got {item!r}')
        path, arm, seed, domain = parts
        rows[domain] = from_seeds(path, arm, seed, domain)
    if args.before:
        with open(args.before) as f:
            for r in json.load(f)['rows']:
                if r['domain'] in rows and 'refined' in r:
                    rows[r['domain']]['before'] = r['refined']
    order = list(multidomain.HOLDABLE_DOMAINS)
    rows = sorted(rows.values(), key=lambda r: order.index(r['domain']))
    text = markdown(rows)
    write_report(args.out, {'rows': rows, 'lodo': args.lodo, 'seeds': args.seeds,
                            'before': args.before}, text)
    print(text)


if __name__ == '__main__':
    main()
