"""The sketch's inner loop, for any task (`config.train.inner_steps` = K > 0).

In meta-training each episode's sketch takes K steps `s − α ⊙ g / rms(g)` on a loss the
task computes from the episode's own inputs (classification: the leave-one-out metric loss
of the labelled images; denoising: the Noise2Void loss of the noisy group, no clean image)
before its network is generated; the episode's loss is then taken with the network of the
adapted sketch, so the encoder, the generators and α learn to make those K steps pay (as
LEO trains through its latent refinement; α per sketch dimension as Meta-SGD). At
prediction the same steps are taken (`eval.refine_optimizer='learned'`,
`eval.refine_steps`). α = exp(`log_inner_lr`) is a task parameter, initialised at
`train.inner_lr`. `train.inner_first_order`: the inner gradient is a constant to the outer
one (no second derivatives; α and everything before the sketch still learn).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PARAM = 'log_inner_lr'


def steps(config) -> int:
    """K, the inner steps of meta-training (0: no inner loop, the paper's model)."""
    return int(config.train.get('inner_steps', 0) or 0)


def init_params(config, sketch_size: int) -> dict:
    """{'log_inner_lr': log α per sketch dimension} with an inner loop, else {}."""
    if not steps(config):
        return {}
    return {PARAM: jnp.full((sketch_size,), jnp.log(jnp.float32(config.train.get('inner_lr', 1.0))))}


def update(task_params: dict, sketch, grad):
    """One step: s − α ⊙ g / rms(g). The gradient is divided by its root mean square, so
    the step's length is α's whatever the scale of the loss on a new domain (as Adam's
    first step, lr · sign(g))."""
    rms = jnp.sqrt(jnp.mean(jnp.square(grad)) + 1e-12)
    return sketch - jnp.exp(task_params[PARAM]) * grad / rms


def step(loss, hyper_params, task_params, sketch, ep, k, first_order: bool = True):
    """The k-th step: `update` with the gradient of `loss(hyper params, task params,
    sketch, episode, k)` at `sketch` (a constant to any outer gradient when
    `first_order`). Meta-training's adaptation and a task's prediction both take it."""
    g = jax.grad(lambda s: loss(hyper_params, task_params, s, ep, k))(sketch)
    if first_order:
        g = jax.lax.stop_gradient(g)
    return update(task_params, sketch, g)


def make_adaptation(config, loss):
    """`loss(hyper params, task params, sketch, episode, k)` → the scalar the k-th step
    descends. Returns (hyper params, task params, sketch, episode) → the sketch after K
    steps (`step`), or None when K = 0."""
    k_steps = steps(config)
    if not k_steps:
        return None
    first_order = bool(config.train.get('inner_first_order', True))

    def adapt(hyper_params, task_params, sketch, ep):
        for k in range(k_steps):
            sketch = step(loss, hyper_params, task_params, sketch, ep, k, first_order)
        return sketch
    return adapt
