"""Leave-one-domain-out sweep of the multi-domain config: one row per held-out domain.

  python -m studies.lodo --root runs/lodo [--domains animal,mnist] [--parallel 2]
      [--set model.residual=True ...] [--out docs/lodo]

For each domain: `main.py --config configs/multidomain.py:<domain>` trains in
ROOT/<domain> (a finished workdir, one with results.json, is not retrained; an
interrupted one resumes), then the row: PudNet's single forward pass, the untrained and
mean-sketch controls, the conditioning gain and the gain over untrained (paired 95% CIs)
and PudNet + refined sketch when the config refines. `--parallel N` runs N trainings at
once, each pinned to its own CPU core when the machine has that many. Writes OUT.json and
OUT.md (wins and losses alike: nothing is dropped); rows OUT.json already holds for other
domains, or for domains whose workdir is gone, made with the same --set, are kept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

from pudnet_jax import multidomain
from pudnet_jax.files import write_json

flags.DEFINE_string('root', 'runs/lodo', 'One workdir per domain under this folder.')
flags.DEFINE_list('domains', list(multidomain.DOMAINS), 'Held-out domains.')
flags.DEFINE_integer('parallel', 1, 'Trainings at once.')
flags.DEFINE_multi_string('set', [], 'Config overrides, e.g. model.residual=True.')
flags.DEFINE_string('out', 'docs/lodo', 'Output prefix (.json, .md).')
FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(domain: str, workdir: str) -> list[str]:
    return ([sys.executable, os.path.join(REPO, 'main.py'),
             f'--config={os.path.join(REPO, "configs", "multidomain.py")}:{domain}',
             f'--workdir={workdir}'] + [f'--config.{s}' for s in FLAGS.set])


def run_all(domains) -> None:
    pending = [d for d in domains
               if not os.path.exists(os.path.join(FLAGS.root, d, 'results.json'))]
    running: list[tuple[str, subprocess.Popen, object]] = []
    cores = os.cpu_count() or 1
    free = list(range(cores))
    t0 = time.time()
    while pending or running:
        while pending and len(running) < FLAGS.parallel:
            d = pending.pop(0)
            workdir = os.path.join(FLAGS.root, d)
            os.makedirs(workdir, exist_ok=True)
            log = open(os.path.join(workdir, 'lodo.log'), 'a')
            cmd = command(d, workdir)
            core = free.pop(0) if FLAGS.parallel > 1 and len(free) > 0 else None
            if core is not None and sys.platform.startswith('linux'):
                cmd = ['taskset', '-c', str(core)] + cmd
            print(f'[{time.time() - t0:6.0f} s] training held-out {d} ({" ".join(cmd)})',
                  flush=True)
            running.append((d, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT),
                            core))
        time.sleep(2)
        for item in list(running):
            d, proc, core = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if core is not None:
                free.append(core)
            status = 'done' if proc.returncode == 0 else f'FAILED (exit {proc.returncode})'
            print(f'[{time.time() - t0:6.0f} s] held-out {d}: {status}; log in '
                  f'{os.path.join(FLAGS.root, d, "lodo.log")}', flush=True)


def row(domain: str) -> dict | None:
    path = os.path.join(FLAGS.root, domain, 'results.json')
    if not os.path.exists(path):
        return None
    with open(path) as f:
        r = json.load(f)
    with open(os.path.join(FLAGS.root, domain, 'config.json')) as f:
        cfg = json.load(f)
    out = {'domain': domain, 'validation_domain': cfg['data'].get('val_domain'),
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
           'train_seconds': r.get('train_seconds')}
    f = r.get('refined')
    if f:
        out.update(refined=f['accuracy'], refined_ci95=f['ci95'],
                   refined_gain=f['conditioning_gain'], refined_gain_ci95=f['conditioning_gain_ci95'],
                   refined_over_untrained=f['gain_over_untrained'],
                   refined_over_untrained_ci95=f['gain_over_untrained_ci95'],
                   refined_seconds=f['seconds'])
    return out


def markdown(rows) -> str:
    pct = lambda v: f'{100 * v:.2f}'
    pts = lambda g, ci: f'{100 * g:+.2f} ± {100 * ci:.2f}'
    refined = any('refined' in r for r in rows)
    head = ('| held-out domain | validation domain | PudNet | untrained | mean sketch | '
            'conditioning gain | gain over untrained |')
    sep = '|---|---|---|---|---|---|---|'
    if refined:
        head += ' PudNet + refined sketch | its gain over mean sketch | its gain over untrained |'
        sep += '---|---|---|'
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
        lines.append(line)
    return '\n'.join(lines) + '\n'


def earlier_rows() -> dict:
    """The rows OUT.json already holds, made with the same overrides: a domain whose
    workdir is gone (another machine, a cleaned runs/) keeps its measured row."""
    path = FLAGS.out + '.json'
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        saved = json.load(f)
    if saved.get('overrides', []) != list(FLAGS.set):
        return {}
    return {r['domain']: r for r in saved.get('rows', [])}


def main(_):
    run_all(FLAGS.domains)
    earlier = earlier_rows()
    order = list(multidomain.DOMAINS)
    wanted = sorted(set(FLAGS.domains) | set(earlier), key=order.index)
    rows = [r for r in (row(d) if d in FLAGS.domains else None for d in wanted)]
    rows = [r if r is not None else earlier.get(d) for d, r in zip(wanted, rows)]
    rows = [r for r in rows if r is not None]
    missing = [d for d in FLAGS.domains if d not in {r['domain'] for r in rows}]
    os.makedirs(os.path.dirname(FLAGS.out) or '.', exist_ok=True)
    write_json(FLAGS.out + '.json', {'rows': rows, 'missing': missing, 'overrides': FLAGS.set})
    text = markdown(rows)
    with open(FLAGS.out + '.md', 'w') as f:
        f.write(text)
    print(text)
    if missing:
        print(f'no results for {missing} (see their lodo.log)')


if __name__ == '__main__':
    app.run(main)
