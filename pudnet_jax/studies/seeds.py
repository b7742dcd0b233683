"""Arms over training seeds: each arm's trained workdirs (one a seed) read back, every
accuracy beside its controls per seed, then the spread over seeds.

  python -m pudnet_jax.studies seeds S=runs/cl/S_s0,runs/cl/S_s1,runs/cl/S_s2 \\
      N=runs/cl/N_s0,runs/cl/N_s1,runs/cl/N_s2 --out docs/conflicting_labels

Per seed (from each workdir's `results.json`, the rows of `lodo.row`): PudNet (single
pass, and + refined sketch where there is one), the untrained network, the mean-sketch
network, the pretrained network (`eval.pretrained_control`), and the paired gains over
them with their 95 % CIs over the groups. Per arm, over its seeds: the mean of each gain,
its standard deviation, and the 95 % CI of the mean (Student's t with n − 1 degrees of
freedom: a seed is the unit, not a group), and how many seeds have the gain's CI over
groups above 0. Writes OUT.md, OUT.json and OUT.png (each seed's gains, arm by arm).
Trains nothing and selects nothing.

A member of an arm may also be `P.json:ARM:SEED`: that seed's row as an earlier output of
this study recorded it (a workdir that is gone), e.g. `styles=docs/animal_styles.json:
styles:0,runs/s5` joins seed 0 measured before to a new training.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from pudnet_jax.studies.lodo import row

# The paired gains read over seeds: (key here, its name in the tables, the `lodo.row` key
# with a refined network, without one). The refined network's where the workdir has one,
# else the single pass's.
GAINS = (('over_untrained', 'gain over untrained', 'refined_over_untrained',
          'gain_over_untrained'),
         ('over_mean_sketch', 'gain over mean sketch', 'refined_gain', 'conditioning_gain'),
         ('over_other_group', "gain over another group's sketch", 'refined_over_other_group',
          None),
         ('over_pretrained', 'gain over pretrained', 'refined_over_pretrained',
          'gain_over_pretrained'))


def seed_row(workdir: str) -> dict:
    workdir = os.path.normpath(workdir)
    r = row(os.path.dirname(workdir), os.path.basename(workdir))
    if r is None:
        raise SystemExit(f'{workdir}: no results.json (train or evaluate it first).')
    return {'workdir': workdir} | from_lodo_row(r)


def from_lodo_row(r: dict) -> dict:
    """A `lodo.row` as this study's row: PudNet (the refined network where there is one)
    beside its controls, and the paired gains of GAINS."""
    refined = 'refined' in r
    out = {'seed': r.get('seed'), 'groups': r['groups'],
           'method': 'refined' if refined else 'single pass',
           'pudnet': r['refined'] if refined else r['pudnet'],
           'single_pass': r['pudnet'], 'untrained': r['untrained'],
           'mean_sketch': r['mean_sketch'], 'pretrained': r.get('pretrained'),
           'validation': r.get('validation')}
    for name, _, with_refined, single in GAINS:
        key = with_refined if refined else single
        if key and key in r:
            out[name] = r[key]
            out[name + '_ci95'] = r[key + '_ci95']
    return out


def recorded_row(spec: str) -> dict:
    """The row of `P.json:ARM:SEED`, as this study wrote it."""
    path, arm, seed = spec.rsplit(':', 2)
    try:
        with open(path) as f:
            rows = json.load(f)['arms'][arm]['seeds']
    except (OSError, KeyError, ValueError) as e:
        raise SystemExit(f'{spec}: no arm {arm!r} in a seeds output at {path} ({e}).')
    found = [r for r in rows if str(r['seed']) == seed]
    if not found:
        raise SystemExit(f'{spec}: arm {arm!r} of {path} has no seed {seed} '
                         f'(it has {[r["seed"] for r in rows]}).')
    return dict(found[0])


def member_row(member: str) -> dict:
    """A workdir's row, or a recorded one (`P.json:ARM:SEED`)."""
    head = member.rsplit(':', 2)[0]
    return recorded_row(member) if head.endswith('.json') else seed_row(member)


def over_seeds(values) -> dict:
    """Mean, standard deviation and the 95 % CI of the mean (Student's t) of per-seed
    values."""
    from scipy import stats
    v = np.asarray(values, np.float64)
    n = len(v)
    sd = float(v.std(ddof=1)) if n > 1 else float('nan')
    half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float('nan')
    return {'n': n, 'mean': float(v.mean()), 'sd': sd,
            'ci95_low': float(v.mean() - half), 'ci95_high': float(v.mean() + half)}


def summarize(arms: dict[str, list[dict]]) -> dict:
    out = {}
    for arm, rows in arms.items():
        summary = {k: over_seeds([r[k] for r in rows])
                   for k in ('pudnet', 'single_pass', 'untrained', 'mean_sketch')}
        if all(r['pretrained'] is not None for r in rows):
            summary['pretrained'] = over_seeds([r['pretrained'] for r in rows])
        for key, *_ in GAINS:
            if all(key in r for r in rows):
                summary[key] = over_seeds([r[key] for r in rows])
                summary[key]['seeds_ci_above_0'] = sum(
                    r[key] - r[key + '_ci95'] > 0 for r in rows)
        out[arm] = {'seeds': rows, 'summary': summary}
    return out


def markdown(result: dict) -> str:
    pct = lambda v: f'{100 * v:.2f}'
    pts = lambda g, ci: f'{100 * g:+.2f} ± {100 * ci:.2f}'
    head = ['arm', 'seed', 'PudNet', 'untrained', 'mean sketch', 'pretrained']
    head += [name for _, name, *_ in GAINS]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for arm, block in result.items():
        for r in block['seeds']:
            cells = [arm, str(r['seed']), pct(r['pudnet']), pct(r['untrained']),
                     pct(r['mean_sketch']), pct(r['pretrained']) if r['pretrained'] is not None else '']
            cells += [pts(r[k], r[k + '_ci95']) if k in r else '' for k, *_ in GAINS]
            lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', 'Over seeds: mean (sd) [95 % CI of the mean, t]; seeds whose CI over groups '
              'is above 0.', '']
    head = ['arm', 'seeds', 'PudNet', 'pretrained'] + [name for _, name, *_ in GAINS]
    lines += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for arm, block in result.items():
        s = block['summary']
        def acc(k):
            if k not in s:
                return ''
            return pct(s[k]['mean']) + (f" ({pct(s[k]['sd'])})" if s[k]['n'] > 1 else '')
        cells = [arm, str(s['pudnet']['n']), acc('pudnet'), acc('pretrained')]
        for k, *_ in GAINS:
            if k not in s:
                cells.append('')
                continue
            g = s[k]
            spread = (f" ({100 * g['sd']:.2f}) [{100 * g['ci95_low']:+.2f}, "
                      f"{100 * g['ci95_high']:+.2f}]" if g['n'] > 1 else '')
            cells.append(f"{100 * g['mean']:+.2f}{spread}; {g['seeds_ci_above_0']}/{g['n']}")
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    keys = [(k, name) for k, name, *_ in GAINS
            if any(k in b['summary'] for b in result.values())]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2), sharey=True,
                             squeeze=False)
    for ax, (k, name) in zip(axes[0], keys):
        for i, (arm, block) in enumerate(result.items()):
            rows = [r for r in block['seeds'] if k in r]
            if not rows:
                continue
            x = i + np.linspace(-0.15, 0.15, len(rows))
            ax.errorbar(x, [100 * r[k] for r in rows], [100 * r[k + '_ci95'] for r in rows],
                        fmt='o', ms=4, capsize=2)
            ax.plot([i - 0.25, i + 0.25], [100 * block['summary'][k]['mean']] * 2, 'k-')
        ax.axhline(0, color='grey', lw=0.8)
        ax.set_xticks(range(len(result)), list(result))
        ax.set_title(name, fontsize=9)
    axes[0][0].set_ylabel('points (per seed, 95 % CI over groups)')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='python -m pudnet_jax.studies seeds',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('arms', nargs='+', metavar='ARM=W1,W2,...',
                        help='an arm and its workdirs, one a training seed')
    parser.add_argument('--out', default=os.path.join('docs', 'seeds'),
                        help='OUT.md, OUT.json and OUT.png')
    args = parser.parse_args(argv)
    arms = {}
    for a in args.arms:
        name, sep, dirs = a.partition('=')
        if not sep or not name or not dirs:
            parser.error(f'expected ARM=W1,W2,...; got {a!r}')
        if name in arms:
            parser.error(f'arm {name!r} given twice')
        arms[name] = [d for d in dirs.split(',') if d]
    args.arms = arms
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    result = summarize({arm: [member_row(w) for w in dirs]
                        for arm, dirs in args.arms.items()})
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + '.json', 'w') as f:
        json.dump({'arms': result}, f, indent=1)
    text = markdown(result)
    with open(args.out + '.md', 'w') as f:
        f.write(text)
    plot(result, args.out + '.png')
    print(text)
    print(f'Wrote {args.out}.md, .json, .png')


if __name__ == '__main__':
    main()
