"""The controls printed beside every PudNet accuracy, on the same groups and protocol.

- `untrained`: the target at random initialisation (the mean over `eval.untrained_seeds`
  initialisations), BatchNorm statistics from the prediction set, the same classifier.
  What the hypernetwork adds over no training at all.
- `mean_sketch`: the network the hypernetwork generates from the mean sketch of its
  training pool (the class-balanced mean of T_φ over the training classes' images), with
  BatchNorm statistics from the prediction set: the one dataset-independent network it
  would give everybody.
- `conditioning_gain` = PudNet − mean_sketch, paired over the same groups (or draws), with
  its 95% CI: how much the predicted parameters follow the data. `gain_over_untrained`
  likewise against the untrained control.

A protocol asks `control_params` for the parameters of each control once, scores each
network exactly as it scores PudNet's, and hands the per-group accuracies to `summarize`.
"""

from __future__ import annotations

import hashlib
import os

import jax
import numpy as np
from absl import logging

from pudnet_jax import data as data_lib
from pudnet_jax.hypernet import PudNet, streaming_sketch
from pudnet_jax.targets import TargetSpec, random_init_params

UNTRAINED_SEED = 10_000           # PRNG keys UNTRAINED_SEED + k of the untrained control
MEAN_SKETCH_FILE = 'mean_sketch.npz'
NAMES = ('untrained', 'mean_sketch')


def mean_ci95(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(1.96 * values.std() / np.sqrt(len(values)))


def _fingerprint(hyper_vars, classes, per_class: int) -> str:
    h = hashlib.sha1(repr((sorted(map(int, classes)), per_class)).encode())
    for leaf in jax.tree.leaves(hyper_vars):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def training_mean_sketch(model: PudNet, hyper_vars, pool: data_lib.Pool, classes,
                         per_class: int = 500, chunk_size: int = 500) -> np.ndarray:
    """Class-balanced mean of T_φ over (up to `per_class` images of) each training class:
    the expected sketch of a training episode, whose classes are drawn uniformly."""
    encode = jax.jit(lambda hv, x: model.apply(hv, data_lib.normalize(x), train=False,
                                               method=PudNet.encode))
    means = []
    for c in classes:
        images = pool[c]
        if len(images) > per_class:
            pick = np.random.default_rng([0, int(c)]).choice(len(images), per_class, replace=False)
            images = images[np.sort(pick)]
        means.append(np.asarray(streaming_sketch(lambda x: encode(hyper_vars, x), images,
                                                 min(chunk_size, len(images)))))
    return np.mean(means, axis=0)


def mean_sketch(config, model: PudNet, hyper_vars, pool=None, workdir=None) -> np.ndarray:
    """The training pool's mean sketch for these hypernetwork variables, cached in the
    workdir (keyed by a fingerprint of the variables), computed from `pool` (or the
    training data, loaded) when not cached."""
    classes = list(config.data.train_classes)
    per_class = int(config.eval.get('mean_sketch_images', 500))
    key = _fingerprint(hyper_vars, classes, per_class)
    path = os.path.join(workdir, MEAN_SKETCH_FILE) if workdir else None
    if path and os.path.exists(path):
        with np.load(path) as cached:
            if str(cached['fingerprint']) == key:
                return cached['sketch']
    if pool is None:
        pool = data_lib.load_pool(config.data.name, config.data.image_size, config.data.channels,
                                  config.data.data_dir, cache_dir=config.data.get('cache_dir'))
    sketch = training_mean_sketch(model, hyper_vars, pool, classes, per_class)
    if path:
        tmp = path + '.tmp.npz'
        try:
            np.savez(tmp, sketch=sketch, fingerprint=np.asarray(key))
            os.replace(tmp, path)
        except OSError as e:     # a read-only place (a shipped hypernetwork): not cached
            logging.warning('The mean sketch is not cached (%s).', e)
    return sketch


def control_params(config, model: PudNet, spec: TargetSpec, hyper_vars, pool=None,
                   workdir=None) -> dict[str, list]:
    """{'untrained': [params per init seed], 'mean_sketch': [params]}."""
    seeds = int(config.eval.get('untrained_seeds', 3))
    sketch = mean_sketch(config, model, hyper_vars, pool, workdir)
    generated = jax.jit(lambda hv, s: model.apply(hv, s, method=PudNet.generate))(
        hyper_vars, sketch)
    return {'untrained': [random_init_params(spec, UNTRAINED_SEED + k) for k in range(seeds)],
            'mean_sketch': [generated]}


def summarize(pudnet_accs, control_accs: dict) -> dict:
    """The controls' JSON block. `control_accs[name]` holds, per group (or draw), the
    list of accuracies of that control's networks (averaged per group: the untrained
    control's init seeds)."""
    pudnet = np.asarray(pudnet_accs, np.float64)
    out = {'controls': {}}
    for name in NAMES:
        per_group = np.asarray([np.mean(a) for a in control_accs[name]], np.float64)
        acc, ci = mean_ci95(per_group)
        out['controls'][name] = {'accuracy': acc, 'ci95': ci, 'networks': len(control_accs[name][0])}
        gain, gain_ci = mean_ci95(pudnet - per_group)
        key = 'conditioning_gain' if name == 'mean_sketch' else 'gain_over_untrained'
        out[key], out[key + '_ci95'] = gain, gain_ci
    return out


def table_rows(r: dict, unit: str = 'groups') -> list[tuple[str, str]]:
    """Printed rows for a results dict with the block of `summarize`."""
    c = r['controls']
    n = r.get('groups')
    pts = lambda k: f"{100 * r[k]:+.2f} ± {100 * r[k + '_ci95']:.2f} points"
    return [
        ('untrained control', f"{100 * c['untrained']['accuracy']:.2f} ± "
                              f"{100 * c['untrained']['ci95']:.2f} % (random init, mean of "
                              f"{c['untrained']['networks']} seeds; BN statistics from the "
                              f"prediction set)"),
        ('mean-sketch control', f"{100 * c['mean_sketch']['accuracy']:.2f} ± "
                                f"{100 * c['mean_sketch']['ci95']:.2f} % (generated from the "
                                f"training pool's mean sketch)"),
        ('conditioning gain', f"{pts('conditioning_gain')} (PudNet − mean sketch, paired over "
                              f"{n} {unit})"),
        ('gain over untrained', f"{pts('gain_over_untrained')} (PudNet − untrained, paired)"),
    ]


def verdict(r: dict) -> str:
    """One line: did prediction beat its controls (95% CIs of the paired gains)?"""
    def says(key, what):
        g, ci = r[key], r[key + '_ci95']
        if g - ci > 0:
            return f'above {what}'
        if g + ci < 0:
            return f'BELOW {what}'
        return f'not distinguishable from {what}'
    return (f"PudNet is {says('gain_over_untrained', 'the untrained network')} and "
            f"{says('conditioning_gain', 'the mean-sketch network')} (95% CI of the paired "
            f"differences)")
