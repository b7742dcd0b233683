"""One Markdown row per workdir: the validation accuracy (what selection looks at), then the
test accuracy beside its controls and the conditioning gain.

    python -m checks.collect runs/l1_1 runs/l1_0.5 ...   [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os


def pct(x: float, ci: float | None = None) -> str:
    return f'{100 * x:.2f}' + (f' ± {100 * ci:.2f}' if ci is not None else '')


def row(workdir: str) -> dict:
    with open(os.path.join(workdir, 'results.json')) as f:
        r = json.load(f)
    with open(os.path.join(workdir, 'config.json')) as f:
        config = json.load(f)
    c = r['controls']
    out = {'workdir': workdir, 'seed': config['seed'],
           'metric_weight': config['loss'].get('metric_weight'),
           'kl_weight': config['loss'].get('kl_weight'),
           'test': pct(r['accuracy'], r['ci95']),
           'untrained': pct(c['untrained']['accuracy'], c['untrained']['ci95']),
           'mean_sketch': pct(c['mean_sketch']['accuracy'], c['mean_sketch']['ci95']),
           'conditioning_gain': pct(r['conditioning_gain'], r['conditioning_gain_ci95']),
           'train_seconds': r.get('train_seconds'), 'raw': r}
    v = r.get('validation')
    out['validation'] = pct(v['accuracy'], v['ci95']) if v else '-'
    out['validation_mean_sketch'] = pct(v['controls']['mean_sketch']['accuracy']) if v else '-'
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('workdirs', nargs='+')
    parser.add_argument('--json', default=None, help='also write every row here')
    args = parser.parse_args()
    rows = [row(w) for w in args.workdirs]
    print('| workdir | seed | λ1 / λ3 | validation | test PudNet | untrained | mean sketch | '
          'conditioning gain (points) |')
    print('|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['workdir']} | {r['seed']} | {r['metric_weight']:g} / {r['kl_weight']:g} | "
              f"{r['validation']} | {r['test']} | {r['untrained']} | {r['mean_sketch']} | "
              f"{r['conditioning_gain']} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)


if __name__ == '__main__':
    main()
