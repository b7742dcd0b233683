"""Writes a trained workdir as a shipped hypernetwork folder and prints its registry entry.

    python -m pudnet_jax.pretrained export --workdir runs/default --name mnist-convnet3

The folder (pudnet_jax/pretrained/<name>/, or --folder) gets the variables without the
optimizer state, config.json, the run's results.json, the mean sketch of the controls and
check.json (PudNet and its controls on the first CHECK_GROUPS test groups); the entry to
add to REGISTRY in pudnet_jax/pretrained/__init__.py is printed, its numbers copied from
results.json.
"""

import argparse
import json
import os
import shutil
import sys

from pudnet_jax.process import prepare_process

CHECK_GROUPS = 10
CHECK_FILE = 'check.json'
# The numbers of results.json an entry records (its test accuracy beside its controls).
MEASURED_KEYS = ('accuracy', 'ci95', 'groups', 'ways', 'shots', 'test_shots', 'controls',
                 'conditioning_gain', 'conditioning_gain_ci95', 'gain_over_untrained',
                 'gain_over_untrained_ci95', 'validation', 'train_steps', 'train_seconds',
                 'refined')


def measured(results: dict) -> dict:
    return {k: results[k] for k in MEASURED_KEYS if k in results}


def folder_size(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder)
               for f in files)


def export(workdir: str, name: str, folder: str | None = None) -> dict:
    from pudnet_jax import api, controls, pretrained
    folder = folder or os.path.join(pretrained.HERE, name)
    with open(os.path.join(workdir, 'results.json')) as f:
        results = json.load(f)
    hyper = api.load(workdir)
    if os.path.exists(folder):
        shutil.rmtree(folder)
    hyper.save(folder)
    shutil.copy(os.path.join(workdir, 'results.json'), os.path.join(folder, 'results.json'))
    controls.mean_sketch(hyper.config, hyper.model, hyper.variables, hyper.pool(), folder)
    shipped = api.Hypernetwork(hyper.config, hyper.model, hyper.spec,
                               api.restore_variables(os.path.join(folder, api.VARIABLES_DIR),
                                                     hyper.config, hyper.model, hyper.spec),
                               folder)
    check = shipped.evaluate(CHECK_GROUPS, quiet=True)
    from pudnet_jax.files import write_json
    write_json(os.path.join(folder, CHECK_FILE),
               {'groups': CHECK_GROUPS, 'split': 'test', 'accuracy': check['accuracy'],
                'controls': check['controls'], 'conditioning_gain': check['conditioning_gain'],
                'gain_over_untrained': check['gain_over_untrained'],
                'backend': check['backend']})
    return {'folder': folder, 'bytes': folder_size(folder), 'measured': measured(results),
            'step': hyper.info['step'], 'check': check['accuracy']}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m pudnet_jax.pretrained',
                                     description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    ex = sub.add_parser('export', help='write a workdir as a shipped hypernetwork folder')
    ex.add_argument('--workdir', required=True)
    ex.add_argument('--name', required=True)
    ex.add_argument('--folder', default=None, help='default: pudnet_jax/pretrained/<name>')
    sub.add_parser('list', help='the shipped hypernetworks and their measured accuracy')
    args = parser.parse_args(argv)
    prepare_process()
    if args.command == 'list':
        from pudnet_jax import pretrained
        for entry in pretrained.REGISTRY.values():
            m = entry.measured
            print(f"{entry.name}: test {100 * m['accuracy']:.2f} ± {100 * m['ci95']:.2f} % on "
                  f"{m['groups']} groups (untrained control "
                  f"{100 * m['controls']['untrained']['accuracy']:.2f} %, mean-sketch control "
                  f"{100 * m['controls']['mean_sketch']['accuracy']:.2f} %); "
                  f"{entry.description}")
        return
    out = export(args.workdir, args.name, args.folder)
    print(f"wrote {out['folder']} ({out['bytes'] / 1e6:.2f} MB) from step {out['step']}; "
          f"check on {CHECK_GROUPS} test groups: {100 * out['check']:.2f} %")
    print('REGISTRY entry measured= (from results.json):')
    print(json.dumps(out['measured'], indent=4))


if __name__ == '__main__':
    sys.exit(main())
