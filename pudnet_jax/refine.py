"""Sketch refinement at prediction time (`eval.refine_steps` > 0): a few gradient steps on
the sketch alone, never on the target's parameters, under the metric loss of the
labelled prediction images (as LEO refines its latent code; Rusu et al., ICLR 2019).

The loss is leave-one-out: each labelled image is classified by cosine to the centroids
of the *other* labelled images of its class (and all of the other classes), through the
network generated from the current sketch with BatchNorm statistics from the prediction
set. So an image never votes for itself, and what the sketch learns is what separates
the classes of this dataset. `eval.refine_steps` steps on the sketch: Adam of
`eval.refine_lr` (`eval.refine_optimizer='adam'`), or the step meta-training learned
(`'learned'`, `inner_loop.update`, with `train.inner_steps` > 0). The network then depends on the labelled data by
construction: it is reported as its own row ("PudNet + refined sketch"), with its
seconds, beside the single forward pass and the same controls.
"""

from __future__ import annotations

import functools
import time

import jax
import numpy as np
import optax

from pudnet_jax import inner_loop, predictor
from pudnet_jax.hypernet import PudNet
from pudnet_jax.tasks import classification
from pudnet_jax.targets import TargetSpec


OPTIMIZERS = ('adam', 'learned')


@functools.lru_cache(maxsize=None)
def make_refine_fn(model: PudNet, spec: TargetSpec, ways: int, steps: int, lr: float,
                   tau_setting: tuple[float, bool], optimizer: str = 'adam'):
    """(hyper vars, start sketch, prediction images, labelled index, labels) → the refined
    sketch after `steps` steps on `classification.sketch_loss`. `labelled index` picks the labelled images out of
    the prediction images, whose features come from the BatchNorm-statistics pass itself
    (exactly the features the saved network gives them). `tau_setting`:
    `tasks.classification.tau_setting(config)`. One jitted step, looped in Python:
    XLA:CPU runs convolutions inside a `while` loop ~20x slower. `optimizer`: 'adam'
    (Adam of `lr`) or 'learned' (the inner loop meta-training ran,
    `config.train.inner_steps`: `inner_loop.update` with the trained per-dimension
    step size; `lr` unused)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f'eval.refine_optimizer must be one of {OPTIMIZERS}; got {optimizer!r}.')
    opt = optax.adam(lr) if optimizer == 'adam' else optax.identity()

    def loss(hyper_vars, s, images, index, labels):
        tau = classification.tau(hyper_vars['params'], tau_setting)
        return classification.sketch_loss(model, spec, hyper_vars['params'], s, images,
                                          labels, ways, tau, index)

    @jax.jit
    def step(hyper_vars, s, opt_state, images, index, labels):
        g = jax.grad(loss, argnums=1)(hyper_vars, s, images, index, labels)
        if optimizer == 'learned':
            return inner_loop.update(hyper_vars['params'], s, g), opt_state
        updates, opt_state = opt.update(g, opt_state, s)
        return optax.apply_updates(s, updates), opt_state

    def refine(hyper_vars, sketch, images, index, labels, milestones=None):
        """The refined sketch; with `milestones` (step counts ≤ `steps`), the list of
        (k, sketch after k steps, seconds of those k steps) instead."""
        s, opt_state = sketch, opt.init(sketch)
        path, t0 = [], time.perf_counter()
        for k in range(1, steps + 1):
            s, opt_state = step(hyper_vars, s, opt_state, images, index, labels)
            if milestones is not None and k in milestones:
                jax.block_until_ready(s)
                path.append((k, s, time.perf_counter() - t0))
        return s if milestones is None else path
    return refine


def labelled_index(ways: int, per_class: int, shots: int):
    """Indices of the labelled images (the first `shots` of each class) in a class-major
    prediction set of `per_class` images a class."""
    return (np.arange(ways)[:, None] * per_class + np.arange(shots)).ravel()


@functools.lru_cache(maxsize=None)
def make_refined_predict_fn(model: PudNet, spec: TargetSpec, ways: int, steps: int, lr: float,
                            tau_setting: tuple[float, bool], optimizer: str = 'adam'):
    """(hyper vars, prediction images, labelled index, labels, milestones) → [(k, the
    target's variables generated from the sketch after k steps (BatchNorm statistics from
    the prediction images), the seconds a k-step prediction takes, that sketch)] for each k of
    `milestones` (≤ `steps`): the encoding, the k steps and the generation, each timed, so
    the generations of earlier milestones do not count in a later one's seconds."""
    refine = make_refine_fn(model, spec, ways, steps, lr, tau_setting, optimizer)
    one = predictor.make_predictor(model, spec)       # the intra protocol's predictor
    encode = one.sketch
    finish = lambda hv, s, x: one(hv, x, sketch=s)

    def predict(hyper_vars, images, index, labels, milestones=(steps,)):
        t0 = time.perf_counter()
        s0 = jax.block_until_ready(encode(hyper_vars, images))
        t_encode = time.perf_counter() - t0
        out = []
        for k, s, t_steps in refine(hyper_vars, s0, images, index, labels, milestones):
            t1 = time.perf_counter()
            variables = jax.block_until_ready(finish(hyper_vars, s, images))
            out.append((k, variables, t_encode + t_steps + time.perf_counter() - t1, s))
        return out
    predict.finish = finish      # (hyper vars, sketch, images) -> the target's variables
    return predict
