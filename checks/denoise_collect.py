"""Denoising workdirs side by side: per workdir, the intra test groups and each
inter-dataset results file beside the noisy input and the controls, and the whole test
photographs beside classical denoisers run on the same noisy photographs.

    python -m checks.denoise_collect runs/dn25 runs/dn50 runs/dn75 [--json out.json]
        [--classical wavelet,tv_jinv,nlm]

Every row comes from the workdir's own files (`results.json`,
`results_inter_<dataset>.json`); the classical denoisers are run here on the noisy
photographs of `evaluation.full_image_pairs` (the same seeded noise as the evaluation).
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np


def _gain(r: dict, key: str) -> str:
    v, ci = r.get(key), r.get(key + '_ci95')
    return '' if v is None else f'{v:+.2f} ± {ci:.2f}'


def group_row(workdir: str, r: dict) -> dict:
    c = r['controls']
    return {'workdir': workdir, 'run': os.path.basename(os.path.normpath(workdir)), 'sigma': r['sigma'], 'protocol': r['protocol'],
            'dataset': r['dataset'], 'groups': r['groups'],
            'images_per_group': r['images_per_group'], 'noisy': r['psnr_noisy'],
            'untrained': c['untrained']['psnr'], 'mean_sketch': c['mean_sketch']['psnr'],
            'pretrained_n2v': c.get('pretrained_n2v', {}).get('psnr'),
            'pudnet': r['psnr'], 'pudnet_ci95': r['psnr_ci95'],
            'conditioning_gain': _gain(r, 'conditioning_gain_db'),
            'over_pretrained_n2v': _gain(r, 'gain_over_pretrained_n2v_db')}


def classical_full_images(workdir: str, methods) -> dict:
    """{photograph: {method: PSNR}} on the workdir's noisy test photographs."""
    from pudnet_jax import workdir as workdir_lib
    from pudnet_jax.tasks.denoising import baselines, evaluation
    config = workdir_lib.load_config(workdir)
    out = {}
    for name, (clean, noisy) in evaluation.full_image_pairs(config).items():
        rows = baselines.classical(noisy[None], config.noise.sigma / 255.0, methods)
        out[name] = {m: evaluation.image_scores(clean, row['output'][0])[0]
                     for m, row in rows.items() if 'output' in row}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('workdirs', nargs='+')
    p.add_argument('--json')
    p.add_argument('--classical', default='wavelet,tv_jinv,nlm')
    args = p.parse_args(argv)
    methods = tuple(m for m in args.classical.split(',') if m)
    groups, full = [], []
    for w in args.workdirs:
        paths = [os.path.join(w, 'results.json')] + sorted(
            glob.glob(os.path.join(w, 'results_inter_*.json')))
        loaded = []
        for path in paths:
            with open(path) as f:
                loaded.append(json.load(f))
            groups.append(group_row(w, loaded[-1]))
        own = loaded[0]                  # results.json: the run's own, with full_images
        classical = classical_full_images(w, methods) if methods else {}
        for name, r in own.get('full_images', {}).items():
            full.append({'workdir': w, 'run': os.path.basename(os.path.normpath(w)), 'sigma': own['sigma'], 'photograph': name,
                         **{k: v['psnr'] for k, v in r.items() if isinstance(v, dict)},
                         **classical.get(name, {})})
    cols = ('run', 'sigma', 'protocol', 'dataset', 'groups', 'noisy', 'untrained', 'mean_sketch',
            'pretrained_n2v', 'pudnet', 'conditioning_gain', 'over_pretrained_n2v')
    print('| ' + ' | '.join(cols) + ' |')
    print('|' + '---|' * len(cols))
    for g in groups:
        cells = [f'{g[c]:.2f}' if isinstance(g[c], float) else str(g[c]) for c in cols]
        cells[cols.index('pudnet')] = f"**{g['pudnet']:.2f} ± {g['pudnet_ci95']:.2f}**"
        print('| ' + ' | '.join(cells) + ' |')
    if full:
        keys = [k for k in full[0] if k not in ('workdir',)]
        print('\n| ' + ' | '.join(keys) + ' |')
        print('|' + '---|' * len(keys))
        for f in full:
            print('| ' + ' | '.join(f'{f[k]:.2f}' if isinstance(f.get(k), (float, np.floating))
                                    else str(f.get(k, '')) for k in keys) + ' |')
    if args.json:
        from pudnet_jax.files import write_json
        write_json(args.json, {'groups': groups, 'full_images': full}, sort_keys=True)


if __name__ == '__main__':
    main()
