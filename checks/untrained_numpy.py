"""An independent computation of the untrained control, in NumPy alone.

The untrained control is the target at random initialisation, BatchNorm statistics from
the group's prediction set, classified by cosine to the centroids of the labelled
images. This module recomputes it without JAX or Flax: its own truncated-normal LeCun
initialisation (Flax's default for `nn.Conv`), its own 3×3 SAME convolution, batch
statistics, ReLU, 2×2 max-pool and nearest-centroid rule, on the same groups as the
program (drawn by the program's sampler, which is the protocol, not the network).

    python -m checks.untrained_numpy --workdir runs/default [--groups 200] [--seeds 3]

prints the NumPy figure beside `results.json`'s `controls.untrained`; they must agree
within the 95% CI. `tests/test_controls.py` also checks `convnet3_features` against Flax on
identical weights.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

BN_EPSILON = 1e-5


def truncated_lecun_normal(rng: np.random.Generator, shape) -> np.ndarray:
    """Flax's `lecun_normal`: variance 1/fan_in, normal truncated to ±2 std (the std is
    corrected so the truncated variance is 1/fan_in)."""
    fan_in = int(np.prod(shape[:-1]))
    std = np.sqrt(1.0 / fan_in) / 0.87962566103423978
    out = rng.standard_normal(int(np.prod(shape)))
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return (out * std).reshape(shape).astype(np.float32)


def convnet3_init(rng: np.random.Generator, channels: int, width: int) -> list[np.ndarray]:
    shapes = [(3, 3, channels, width), (3, 3, width, width), (3, 3, width, width)]
    return [truncated_lecun_normal(rng, s) for s in shapes]


def conv3x3_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """(N, H, W, C) * (3, 3, C, O), stride 1, zero padding 1 (SAME)."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    # windows: (N, H, W, C, 3, 3) → contract (3, 3, C) with the kernel.
    return np.einsum('nhwcij,ijco->nhwo', windows, kernel, optimize=True)


def convnet3_features(kernels, prediction: np.ndarray, *others: np.ndarray):
    """Features of `prediction` and of each array in `others`: three blocks of conv →
    BatchNorm (statistics of the prediction images, scale 1, bias 0) → ReLU → 2×2 max-pool,
    flattened. Every array is normalised with the prediction images' statistics."""
    xs = [prediction.astype(np.float32)] + [o.astype(np.float32) for o in others]
    for kernel in kernels:
        xs = [conv3x3_same(x, kernel) for x in xs]
        mean = xs[0].mean(axis=(0, 1, 2))
        var = (xs[0] ** 2).mean(axis=(0, 1, 2)) - mean ** 2
        xs = [np.maximum((x - mean) / np.sqrt(var + BN_EPSILON), 0.0) for x in xs]
        xs = [x[:, :x.shape[1] // 2 * 2, :x.shape[2] // 2 * 2] for x in xs]
        xs = [x.reshape(x.shape[0], x.shape[1] // 2, 2, x.shape[2] // 2, 2, x.shape[3])
              .max(axis=(2, 4)) for x in xs]
    return [x.reshape(x.shape[0], -1) for x in xs]


def nearest_centroid_accuracy(f_labelled, labelled_labels, f_test, test_labels, ways) -> float:
    centroids = np.stack([f_labelled[labelled_labels == k].mean(0) for k in range(ways)])
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
    pred = np.argmax(unit(f_test) @ unit(centroids).T, axis=-1)
    return float(np.mean(pred == test_labels))


def group_accuracy(kernels, group, ways: int, shots: int) -> float:
    """The untrained control's accuracy on one group of the intra protocol."""
    support = np.asarray(group.support)
    per_class = support.shape[0] // ways
    idx = (np.arange(ways)[:, None] * per_class + np.arange(shots)).ravel()
    _, f_l, f_t = convnet3_features(kernels, support, support[idx], np.asarray(group.query))
    return nearest_centroid_accuracy(f_l, np.asarray(group.support_labels)[idx], f_t,
                                     np.asarray(group.query_labels), ways)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workdir', required=True)
    parser.add_argument('--groups', type=int, default=None, help='default: eval.groups')
    parser.add_argument('--seeds', type=int, default=3)
    args = parser.parse_args()

    from pudnet_jax.process import prepare_process
    prepare_process()
    from pudnet_jax import data as data_lib
    from pudnet_jax import evaluate
    from pudnet_jax import workdir as workdir_lib
    config = workdir_lib.load_config(args.workdir)
    if config.target.name != 'convnet3':
        raise SystemExit(f'this check implements ConvNet-3 only; the workdir trains '
                         f'{config.target.name}.')
    pool = data_lib.load_pool(config.data.name, config.data.image_size, config.data.channels,
                              config.data.data_dir, cache_dir=config.data.get('cache_dir'))
    sampler = evaluate.group_sampler(config, pool, 'test')
    e = config.eval
    groups = args.groups or e.groups
    nets = [convnet3_init(np.random.default_rng(seed), config.data.channels,
                          config.target.width) for seed in range(args.seeds)]
    accs = [np.mean([group_accuracy(k, sampler.sample(g, 1)[0], e.ways, e.shots) for k in nets])
            for g in range(groups)]
    mean, ci = evaluate.mean_ci95(accs)
    out = {'numpy_untrained': {'accuracy': mean, 'ci95': ci, 'groups': groups,
                               'seeds': args.seeds}}
    path = os.path.join(args.workdir, workdir_lib.RESULTS_FILE)
    line = f'NumPy untrained control: {100 * mean:.2f} ± {100 * ci:.2f} % ({groups} groups, ' \
           f'{args.seeds} init seeds)'
    if os.path.exists(path):
        with open(path) as f:
            program = json.load(f)['controls']['untrained']
        out['program_untrained'] = program
        agree = abs(program['accuracy'] - mean) <= program['ci95'] + ci
        out['agree_within_ci'] = bool(agree)
        line += (f"; the program's: {100 * program['accuracy']:.2f} ± "
                 f"{100 * program['ci95']:.2f} %: {'agree' if agree else 'DISAGREE'} within "
                 f"the 95% CIs")
    print(line)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
