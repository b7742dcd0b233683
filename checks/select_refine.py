"""Selects the sketch refinement's steps and learning rate on VALIDATION groups only.

  python -m checks.select_refine --workdir W [--grid 10:0.1,20:0.1,20:0.3] [--groups 50]

For each steps:lr setting: the validation accuracy of PudNet + refined sketch beside the
single forward pass and the controls, on the same validation groups; the best setting
(ties: fewer steps, then smaller lr) among these and the settings of an earlier run on
as many groups (kept in W/select_refine.json, which is rewritten). Test groups are never
touched.
"""

import json
import os

from absl import app, flags

from pudnet_jax import data as data_lib
from pudnet_jax import evaluate as evaluate_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.files import write_json

flags.DEFINE_string('workdir', None, 'A trained workdir.', required=True)
flags.DEFINE_string('grid', '10:0.1,20:0.1,10:0.3,20:0.3,10:1,20:1,10:3,20:3',
                    'steps:lr settings.')
flags.DEFINE_integer('groups', 50, 'Validation groups.')
FLAGS = flags.FLAGS


def main(_):
    config, model, spec, hyper = workdir_lib.restore_hypernet(FLAGS.workdir)
    pool = data_lib.load_pool(config.data.name, config.data.image_size, config.data.channels,
                              config.data.data_dir, cache_dir=config.data.get('cache_dir'))
    path = os.path.join(FLAGS.workdir, 'select_refine.json')
    rows = []
    if os.path.exists(path):     # earlier settings on the same groups are kept
        with open(path) as f:
            earlier = json.load(f)
        if earlier.get('groups') == FLAGS.groups:
            rows = earlier['rows']
    for item in FLAGS.grid.split(','):
        steps, lr = item.split(':')
        c = config.copy_and_resolve_references()
        c.eval.val_groups = FLAGS.groups
        c.eval.refine_steps, c.eval.refine_lr = int(steps), float(lr)
        r = evaluate_lib.evaluate(c, model, spec, hyper, pool, FLAGS.workdir,
                                  split='validation', quiet=True)
        f = r['refined']
        rows = [r for r in rows if (r['steps'], r['lr']) != (int(steps), float(lr))]
        rows.append({'steps': f['steps'], 'lr': f['lr'], 'accuracy': f['accuracy'],
                     'ci95': f['ci95'], 'seconds': f['seconds'],
                     'single_pass': r['accuracy'],
                     'mean_sketch': r['controls']['mean_sketch']['accuracy'],
                     'untrained': r['controls']['untrained']['accuracy']})
        print(f"steps {f['steps']:3d} lr {f['lr']:<5g} validation {100 * f['accuracy']:.2f} ± "
              f"{100 * f['ci95']:.2f} %  ({1000 * f['seconds']:.0f} ms)  single pass "
              f"{100 * r['accuracy']:.2f}, mean sketch "
              f"{100 * r['controls']['mean_sketch']['accuracy']:.2f}, untrained "
              f"{100 * r['controls']['untrained']['accuracy']:.2f}", flush=True)
    best = max(rows, key=lambda r: (round(r['accuracy'], 6), -r['steps'], -r['lr']))
    print(f"selected on validation: refine_steps={best['steps']} refine_lr={best['lr']:g}")
    write_json(path,
               {'split': 'validation', 'groups': FLAGS.groups, 'rows': rows, 'selected': best})


if __name__ == '__main__':
    app.run(main)
