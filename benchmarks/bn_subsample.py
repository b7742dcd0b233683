"""How many prediction images the predicted network's BatchNorm statistics need.

  python -m benchmarks.bn_subsample [--images 2000 --sizes 100,250,500,1000 --nets 3]

A predicted network's BatchNorm statistics come from one training-mode pass of the target
over the prediction images: on the presets with large prediction sets (ImageNet-1K's
200-way groups: 2,000 images; the inter-dataset protocol) that pass is almost all of the
prediction's FLOPs (`docs/cost_model.md`). This measures, for ConvNet-3 and ResNet-18 at
28×28×1 on `--images` MNIST-5k images (10 classes, class-major as a prediction group),
over `--nets` random initialisations, the statistics from an evenly strided subsample of
n images against those of all of them, per BatchNorm layer and channel:
  mean error = |μ_n − μ| / σ,   variance error = |σ²_n / σ² − 1|,
reported as the mean over channels (worst layer) and the 99th percentile over channels
(worst layer), with the pass's seconds on this machine. The subsample a preset uses
(`eval.bn_images`) is the smallest n whose mean errors are below 1 %. `--json` writes it all.
"""

import json
import os
import time

from pudnet_jax.process import prepare_process

prepare_process()

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import traverse_util

from pudnet_jax import data as data_lib
from pudnet_jax import predictor as predictor_lib
from pudnet_jax.targets import apply_with_dataset_stats, random_init_params, target_spec

flags.DEFINE_integer('images', 2000, 'Prediction images (the full set).')
flags.DEFINE_string('sizes', '100,250,500,1000', 'Subsample sizes n.')
flags.DEFINE_integer('nets', 3, 'Random initialisations per target.')
flags.DEFINE_string('targets', 'convnet3,resnet18', 'Targets (28x28x1).')
flags.DEFINE_string('json', None, 'Write the numbers to this JSON file.')
FLAGS = flags.FLAGS


def _errors(full: dict, sub: dict) -> dict:
    flat_f, flat_s = traverse_util.flatten_dict(full), traverse_util.flatten_dict(sub)
    layers = sorted({k[:-1] for k in flat_f})
    mean_err, var_err = [], []
    for layer in layers:
        mu, var = np.asarray(flat_f[layer + ('mean',)]), np.asarray(flat_f[layer + ('var',)])
        mu_n, var_n = np.asarray(flat_s[layer + ('mean',)]), np.asarray(flat_s[layer + ('var',)])
        ok = var > 1e-12                      # channels that are not constant
        mean_err.append(np.abs(mu_n - mu)[ok] / np.sqrt(var[ok]))
        var_err.append(np.abs(var_n[ok] / var[ok] - 1))
    worst = lambda errs, f: float(max(f(e) for e in errs))
    return {'mean_error_channel_mean': worst(mean_err, np.mean),
            'mean_error_channel_p99': worst(mean_err, lambda e: np.percentile(e, 99)),
            'var_error_channel_mean': worst(var_err, np.mean),
            'var_error_channel_p99': worst(var_err, lambda e: np.percentile(e, 99)),
            'layers': len(layers)}


def main(_):
    pool = data_lib.load_pool('mnist5k', 28, 1)
    per_class = FLAGS.images // len(pool)
    images = data_lib.normalize(np.concatenate([pool[c][:per_class] for c in sorted(pool)]))
    n_all = len(images)
    sizes = [int(s) for s in FLAGS.sizes.split(',')] + [n_all]
    out = {'images': n_all, 'nets': FLAGS.nets, 'rows': []}
    for name in FLAGS.targets.split(','):
        spec = target_spec(name, (28, 28, 1))
        stats = jax.jit(lambda p, x: apply_with_dataset_stats(spec, p, x)[2])
        full = {}
        for n in sizes:
            pick = predictor_lib.bn_subsample(n_all, n)
            x = jnp.asarray(images[pick])
            per_net, seconds = [], []
            for seed in range(FLAGS.nets):
                params = random_init_params(spec, seed)
                jax.block_until_ready(stats(params, x))       # compile / warm
                t0 = time.perf_counter()
                s = jax.block_until_ready(stats(params, x))
                seconds.append(time.perf_counter() - t0)
                if n == n_all:
                    full[seed] = s
                per_net.append(s)
            out['rows'].append({'target': name, 'n': n, 'seconds': float(np.median(seconds)),
                                '_stats': per_net})
        for row in out['rows']:
            if row['target'] == name and '_stats' in row:
                errs = [_errors(full[seed], s) for seed, s in enumerate(row.pop('_stats'))]
                row.update({k: float(np.max([e[k] for e in errs])) for k in errs[0]})
    print(f'BatchNorm statistics from n of {n_all} MNIST-5k prediction images (evenly strided), '
          f'worst layer and worst of {FLAGS.nets} random inits; errors in % '
          f'(mean: |Δμ|/σ, var: |σ²_n/σ² − 1|)')
    print(f'{"target":<10}{"n":>6}{"mean err (ch. mean / p99)":>28}{"var err (ch. mean / p99)":>28}'
          f'{"pass s":>10}')
    for r in out['rows']:
        print(f"{r['target']:<10}{r['n']:>6}{100 * r['mean_error_channel_mean']:>14.2f} / "
              f"{100 * r['mean_error_channel_p99']:<11.2f}{100 * r['var_error_channel_mean']:>14.2f}"
              f" / {100 * r['var_error_channel_p99']:<11.2f}{r['seconds']:>10.3f}")
    if FLAGS.json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
        with open(FLAGS.json, 'w') as f:
            json.dump(out, f, indent=1)


if __name__ == '__main__':
    app.run(main)
