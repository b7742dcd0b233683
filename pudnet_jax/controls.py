"""The controls printed beside every PudNet accuracy, on the same groups and protocol.

- `untrained`: the target at random initialisation (the mean over `eval.untrained_seeds`
  initialisations), BatchNorm statistics from the prediction set, the same classifier.
  What the hypernetwork adds over no training at all.
- `mean_sketch`: the network the hypernetwork generates from the mean sketch of its
  training pool (the class-balanced mean of T_φ over the training classes' images), with
  BatchNorm statistics from the prediction set: the one dataset-independent network it
  would give everybody.
- `pretrained` (with `config.eval.pretrained_control`): the Pretrained baseline's network
  (`compare.train_pretrained`: the target with a linear head over every training class,
  the epoch chosen on validation groups), its head dropped, BatchNorm statistics from the
  prediction set, the same classifier: what plain supervised transfer gives without a
  hypernetwork. Trained once and cached in the workdir (`PRETRAINED_FILE`). Intra-dataset
  protocol only (`results.json`, `--mode=compare`, the studies), not yet the
  inter-dataset protocol or `--data` reports.
- `conditioning_gain` = PudNet − mean_sketch, paired over the same groups (or draws), with
  its 95% CI: how much the predicted parameters follow the data. `gain_over_untrained`
  and `gain_over_pretrained` likewise against those controls.

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
PRETRAINED_FILE = 'pretrained_control.npz'
NAMES = ('untrained', 'mean_sketch')          # always measured
OPTIONAL = ('pretrained',)                    # measured when configured
_PRETRAINED: dict = {}     # the pretrained control of a run without a workdir
GAIN_KEYS = {'untrained': 'gain_over_untrained', 'mean_sketch': 'conditioning_gain',
             'pretrained': 'gain_over_pretrained'}


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
        _cache_write(path, key, 'The mean sketch', sketch=sketch)
    return sketch


def _cache_write(path: str, key: str, what: str, **arrays) -> None:
    """`arrays` and their fingerprint `key` written to `path` at once (a temporary file
    renamed); a read-only place (a shipped hypernetwork) only logs that `what` is not
    cached."""
    tmp = path + '.tmp.npz'
    try:
        np.savez(tmp, fingerprint=np.asarray(key), **arrays)
        os.replace(tmp, path)
    except OSError as e:
        logging.warning('%s is not cached (%s).', what, e)


def _load_tree(path: str, like, key: str):
    """The tree saved at `path` with the structure of `like`, or None (absent, another
    fingerprint, other shapes)."""
    if not os.path.exists(path):
        return None
    with np.load(path) as cached:
        leaves, treedef = jax.tree.flatten(like)
        if (str(cached['fingerprint']) != key
                or any(f'leaf_{i}' not in cached or cached[f'leaf_{i}'].shape != np.shape(x)
                       for i, x in enumerate(leaves))):
            return None
        return jax.tree.unflatten(treedef, [cached[f'leaf_{i}'] for i in range(len(leaves))])


def pretrained_params(config, spec: TargetSpec, pool=None, workdir=None) -> dict:
    """The `pretrained` control's target params: `compare.train_pretrained`'s network (the
    same as `--mode=compare`'s Pretrained row and `model.base_init='pretrained'`), cached
    in the workdir keyed by everything it is trained from."""
    c, e = config.compare, config.eval
    like = random_init_params(spec, 0)
    key = hashlib.sha1(repr((
        spec.name, [tuple(np.shape(x)) for x in jax.tree.leaves(like)], config.data.name,
        sorted(map(int, config.data.train_classes)), int(config.seed), c.pretrain_epochs,
        c.pretrain_batch_size, float(c.pretrain_learning_rate), e.ways, e.shots,
        int(c.get('val_groups', 0) or 0))).encode()).hexdigest()
    path = os.path.join(workdir, PRETRAINED_FILE) if workdir else None
    cached = _load_tree(path, like, key) if path else _PRETRAINED.get(key)
    if cached is not None:
        return cached
    if pool is None:
        pool = data_lib.load_pool(config.data.name, config.data.image_size, config.data.channels,
                                  config.data.data_dir, cache_dir=config.data.get('cache_dir'))
    from pudnet_jax import compare
    target, seconds, epoch, _ = compare.train_pretrained(config, spec, pool)
    logging.info('Pretrained control: trained in %.1f s (epoch %d selected on validation '
                 'groups).', seconds, epoch)
    params = jax.device_get(target['params'])
    if path:
        _cache_write(path, key, 'The pretrained control', **{
            f'leaf_{i}': np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))})
    else:       # no workdir: kept for this process (the validation and test groups share it)
        _PRETRAINED.clear()
        _PRETRAINED[key] = params
    return params


def untrained_params(config, spec: TargetSpec) -> list:
    """The untrained control's networks: the target at random initialisation, one per
    `eval.untrained_seeds` (PRNG keys UNTRAINED_SEED + k)."""
    seeds = int(config.eval.get('untrained_seeds', 3))
    return [random_init_params(spec, UNTRAINED_SEED + k) for k in range(seeds)]


def control_params(config, model: PudNet, spec: TargetSpec, hyper_vars, pool=None,
                   workdir=None) -> dict[str, list]:
    """{'untrained': [params per init seed], 'mean_sketch': [params]}, and with
    `config.eval.pretrained_control` 'pretrained': [params]."""
    sketch = mean_sketch(config, model, hyper_vars, pool, workdir)
    generated = jax.jit(lambda hv, s: model.apply(hv, s, method=PudNet.generate))(
        hyper_vars, sketch)
    out = {'untrained': untrained_params(config, spec), 'mean_sketch': [generated]}
    # The intra-dataset protocol only: the inter-dataset protocol and a user's folder
    # (whose evaluation settings are the folder protocol's) do not carry it yet.
    if config.eval.get('pretrained_control') and config.eval.get('protocol', 'intra') == 'intra':
        out['pretrained'] = [pretrained_params(config, spec, pool, workdir)]
    return out


def summarize(pudnet_accs, control_accs: dict) -> dict:
    """The controls' JSON block. `control_accs[name]` holds, per group (or draw), the
    list of accuracies of that control's networks (averaged per group: the untrained
    control's init seeds)."""
    pudnet = np.asarray(pudnet_accs, np.float64)
    out = {'controls': {}}
    for name in NAMES + tuple(n for n in OPTIONAL if n in control_accs):
        per_group = np.asarray([np.mean(a) for a in control_accs[name]], np.float64)
        acc, ci = mean_ci95(per_group)
        out['controls'][name] = {'accuracy': acc, 'ci95': ci, 'networks': len(control_accs[name][0])}
        gain, gain_ci = mean_ci95(pudnet - per_group)
        key = GAIN_KEYS[name]
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
    ] + ([
        ('pretrained control', f"{100 * c['pretrained']['accuracy']:.2f} ± "
                               f"{100 * c['pretrained']['ci95']:.2f} % (the target trained on "
                               f"every training class, no hypernetwork; BN statistics from "
                               f"the prediction set)"),
        ('gain over pretrained', f"{pts('gain_over_pretrained')} (PudNet − pretrained, paired)"),
    ] if 'pretrained' in c else [])


def verdict(r: dict) -> str:
    """One line: did prediction beat its controls (95% CIs of the paired gains)?"""
    def says(key, what):
        g, ci = r[key], r[key + '_ci95']
        if g - ci > 0:
            return f'above {what}'
        if g + ci < 0:
            return f'BELOW {what}'
        return f'not distinguishable from {what}'
    pretrained = (f", {says('gain_over_pretrained', 'the pretrained network')}"
                  if 'gain_over_pretrained' in r else '')
    return (f"PudNet is {says('gain_over_untrained', 'the untrained network')}{pretrained} "
            f"and {says('conditioning_gain', 'the mean-sketch network')} (95% CI of the "
            f"paired differences)")
