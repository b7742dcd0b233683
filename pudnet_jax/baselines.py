"""Baselines of the paper's tables, measured on the same groups as PudNet.

- Training the target on a group's prediction set with a linear head, from scratch
  (Adam, or Adam with Gradient Centralization) or from given weights (fine-tuning,
  Table VIII): `GroupTrainer`.
- Pretrained: the target trained with a full linear head on all training-pool classes.
- ProtoNet: the target trained episodically with the metric loss (L1) alone.
- Random-init target with prototypes: the control that shows what the hypernetwork adds.

Every network is evaluated the same way as a PudNet prediction: BatchNorm statistics from
the group's prediction set; prototype methods classify by cosine to class centroids,
trained heads by their argmax.
"""

import time
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from pudnet_jax import data as data_lib
from pudnet_jax.evaluate import labelled, make_classify_fn, make_stats_fn
from pudnet_jax.losses import class_centroids, cosine_logits
from pudnet_jax.targets import TargetSpec, apply_with_dataset_stats, random_init_params


def gradient_centralization() -> optax.GradientTransformation:
    """GC (Yong et al. 2020) for Flax layouts: subtract, per output unit, the gradient's
    mean over all other axes: (kh, kw, C_in) for a conv kernel (kh, kw, C_in, C_out),
    C_in for a Dense kernel. (`optax.centralize` assumes the output axis comes first.)"""
    def update(updates, state, params=None):
        del params
        centre = lambda g: g - g.mean(tuple(range(g.ndim - 1)), keepdims=True) if g.ndim > 1 else g
        return jax.tree.map(centre, updates), state
    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def make_optimizer(kind: str):
    """Adam or GC+Adam with the learning rate as state, so one compilation serves all."""
    adam = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    if kind == 'adam':
        return adam
    if kind == 'gc':
        return optax.chain(gradient_centralization(), adam)
    raise ValueError(f"Unknown optimizer {kind!r}; use 'adam' or 'gc'.")


def init_opt_state(tx, params, lr: float):
    """`tx.init` with the learning rate stored in the state set to `lr`.

    (Matched by its `hyperparams` dict: the state's class differs across Optax versions.)
    """
    is_hyper = lambda s: isinstance(getattr(s, 'hyperparams', None), dict)
    with_lr = lambda s: (s._replace(hyperparams={**s.hyperparams,
                                                 'learning_rate': jnp.asarray(lr, jnp.float32)})
                         if is_hyper(s) else s)
    return jax.tree.map(with_lr, tx.init(params), is_leaf=is_hyper)


class TargetWithHead(nn.Module):
    """The target network plus a linear classification head."""
    target: nn.Module
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.num_classes, name='head')(self.target(x, train=train))


def _with_head_variables(target_vars: dict, head_params: dict) -> dict:
    return {'params': {'target': target_vars['params'], 'head': head_params},
            'batch_stats': {'target': target_vars['batch_stats']}}


def _supervised_epoch(model: TargetWithHead, tx, batch_size: int):
    """One shuffled epoch of minibatch training: a Python loop over a jitted step.

    (Not a `lax.scan`: on XLA's CPU backend the same step ran ~7x slower inside a loop.)
    """
    @jax.jit
    def step(params, batch_stats, opt_state, images, labels):
        def loss_fn(p):
            logits, upd = model.apply({'params': p, 'batch_stats': batch_stats}, images,
                                      train=True, mutable=['batch_stats'])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
            return loss.mean(), upd['batch_stats']
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    def epoch(params, batch_stats, opt_state, images, labels, seed: int):
        n = images.shape[0]
        order = np.random.default_rng(seed).permutation(n)
        losses = []
        for i in range(n // batch_size):   # the last partial batch is dropped
            idx = order[i * batch_size:(i + 1) * batch_size]
            params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state,
                                                        images[idx], labels[idx])
            losses.append(loss)
        return params, batch_stats, opt_state, jnp.mean(jnp.stack(losses))
    return epoch


def head_stats_fn(spec: TargetSpec, num_classes: int):
    """(target + head params, images) → their BatchNorm statistics from those images."""
    stats_model = TargetWithHead(spec.stats_module, num_classes)

    @jax.jit
    def stats(params, images):
        zero = {'target': spec.zero_batch_stats()}
        _, upd = stats_model.apply({'params': params, 'batch_stats': zero}, images,
                                   train=True, mutable=['batch_stats'])
        return upd['batch_stats']
    return stats


def head_accuracy_fn(spec: TargetSpec, num_classes: int, chunk_size: int = 500):
    """Accuracy of target+head: BatchNorm statistics from `stats_images` (the prediction
    set, or a fixed subsample of a large one), test images scored in chunks."""
    model = TargetWithHead(spec.module(), num_classes)
    stats = head_stats_fn(spec, num_classes)

    @jax.jit
    def correct(params, batch_stats, images, labels):
        logits = model.apply({'params': params, 'batch_stats': batch_stats}, images)
        return jnp.sum(jnp.argmax(logits, -1) == labels)

    def accuracy(params, stats_images, test, test_labels):
        batch_stats = stats(params, stats_images)
        hits = sum(int(correct(params, batch_stats, test[i:i + chunk_size],
                               test_labels[i:i + chunk_size]))
                   for i in range(0, len(test), chunk_size))
        return hits / len(test)
    return accuracy


class GroupTrainer:
    """Trains target + linear head on a labelled prediction set and records the test
    accuracy and the cumulative training seconds at each milestone epoch."""

    def __init__(self, spec: TargetSpec, ways: int, batch_size: int, optimizer: str):
        self.spec, self.ways, self.batch_size = spec, ways, batch_size
        self.model = TargetWithHead(spec.module(), ways)
        self.tx = make_optimizer(optimizer)
        self.epoch = _supervised_epoch(self.model, self.tx, batch_size)
        self.accuracy = head_accuracy_fn(spec, ways)

    def init(self, key, init_target_vars: dict | None = None):
        x = jnp.zeros((2,) + self.spec.image_shape)
        variables = self.model.init(key, x)
        if init_target_vars is not None:   # fine-tuning: given weights, fresh head
            variables = _with_head_variables(init_target_vars, variables['params']['head'])
        return variables

    def curve(self, group: data_lib.Episodes, lr: float, milestones: Sequence[int], seed: int,
              init_target_vars: dict | None = None) -> tuple[list[float], list[float]]:
        """On a group: trains on its whole (labelled) prediction set, tests on its test set."""
        return self.fit(group.support, group.support_labels, group.support, group.query,
                        group.query_labels, lr, milestones, seed, init_target_vars)

    def fit(self, images, labels, stats_images, test, test_labels, lr: float,
            milestones: Sequence[int], seed: int, init_target_vars: dict | None = None
            ) -> tuple[list[float], list[float]]:
        accs, seconds = [], []
        for e, params, _, elapsed in self._epochs(images, labels, lr, max(milestones), seed,
                                                  init_target_vars):
            if e in milestones:
                accs.append(float(self.accuracy(params, stats_images, test, test_labels)))
                seconds.append(elapsed)
        return accs, seconds

    def train(self, images, labels, lr: float, epochs: int, seed: int,
              init_target_vars: dict | None = None) -> dict:
        """The variables of target + head after `epochs` epochs (its BatchNorm statistics
        are the running averages of training)."""
        for _, params, stats, _ in self._epochs(images, labels, lr, epochs, seed,
                                                init_target_vars):
            pass
        return {'params': params, 'batch_stats': stats}

    def _epochs(self, images, labels, lr, epochs, seed, init_target_vars):
        """Yields (epoch, params, batch_stats, cumulative training seconds) per epoch."""
        if images.shape[0] < self.batch_size:
            raise ValueError(f'batch_size {self.batch_size} exceeds the prediction set '
                             f'({images.shape[0]} images).')
        variables = self.init(jax.random.PRNGKey(seed), init_target_vars)
        params, stats = variables['params'], variables['batch_stats']
        opt_state = init_opt_state(self.tx, params, lr)
        elapsed = 0.0
        for e in range(1, epochs + 1):
            t0 = time.perf_counter()
            params, stats, opt_state, _ = self.epoch(params, stats, opt_state, images, labels,
                                                     seed * 1000 + e)
            jax.block_until_ready(params)
            elapsed += time.perf_counter() - t0
            yield e, params, stats, elapsed


def prototype_stats(spec: TargetSpec, params, group: data_lib.Episodes):
    """BatchNorm statistics of a target with `params` on the group's prediction set."""
    return make_stats_fn(spec)(params, group.support)['batch_stats']


def fixed_stats_accuracy_fn(spec: TargetSpec, ways: int, shots: int) -> Callable:
    """Prototype accuracy of fixed target variables, BatchNorm statistics included;
    centroids from the group's `shots` labelled images per class."""
    classify = make_classify_fn(spec, ways)

    def accuracy(variables, group: data_lib.Episodes) -> float:
        pred = classify(variables, *labelled(group, ways, shots), group.query)
        return float(np.mean(np.asarray(pred) == group.query_labels))
    return accuracy


def prototype_accuracy_fn(spec: TargetSpec, ways: int, shots: int) -> Callable:
    """Prototype accuracy of fixed target params on a group (BN stats from its whole
    prediction set, centroids from its labelled images)."""
    with_stats = fixed_stats_accuracy_fn(spec, ways, shots)
    return lambda params, group: with_stats(make_stats_fn(spec)(params, group.support), group)


def time_to_reach(seconds, accuracies, target: float, chance: float):
    """Seconds at which a training curve first reaches `target`, interpolating linearly
    between milestones (the curve starts at (0 s, chance)); None if it never does."""
    points = [(0.0, chance)] + list(zip(seconds, accuracies))
    for (t0, a0), (t1, a1) in zip(points, points[1:]):
        if a1 >= target:
            if a0 >= target:
                return t0
            return t0 + (target - a0) / (a1 - a0) * (t1 - t0)
    return None


def train_pretrained(spec: TargetSpec, pool, train_classes: Sequence[int], val_groups,
                     epochs: int, batch_size: int, lr: float, seed: int, ways: int, shots: int):
    """Supervised training with a full linear head on all training classes; keeps the
    epoch whose target gives the best prototype accuracy on the validation groups.
    Returns (target variables with its running BatchNorm statistics, seconds, best epoch,
    validation accuracy)."""
    images = np.concatenate([data_lib.normalize(pool[c]) for c in train_classes])
    labels = np.concatenate([np.full(len(pool[c]), i, np.int32)
                             for i, c in enumerate(train_classes)])
    model = TargetWithHead(spec.module(), len(train_classes))
    tx = optax.adam(lr)
    key = jax.random.PRNGKey(seed)
    variables = model.init(key, jnp.zeros((2,) + spec.image_shape))
    params, stats = variables['params'], variables['batch_stats']
    opt_state = tx.init(params)
    epoch_fn = _supervised_epoch(model, tx, batch_size)
    proto = prototype_accuracy_fn(spec, ways, shots)
    best = (-1.0, None, 0)
    t0 = time.perf_counter()
    for e in range(1, epochs + 1):
        params, stats, opt_state, loss = epoch_fn(params, stats, opt_state, images, labels,
                                                  seed * 1000 + e)
        val = float(np.mean([proto(params['target'], g) for g in val_groups]))
        logging.info('Pretrained: epoch %d/%d, loss %.4f, validation prototype accuracy %.4f',
                     e, epochs, float(loss), val)
        if val > best[0]:
            best = (val, {'params': params['target'], 'batch_stats': stats['target']}, e)
    return best[1], time.perf_counter() - t0, best[2], best[0]


def train_protonet(spec: TargetSpec, sampler: data_lib.EpisodeSampler, val_groups,
                   steps: int, episodes_per_step: int, eval_every: int, lr: float,
                   tau: float, seed: int, eval_ways: int, eval_shots: int):
    """Episodic training of the target with the metric loss; early stopping on the
    validation groups (long runs overfit the few training classes). Training episodes
    have the sampler's `ways` (config.train.ways); validation groups `eval_ways`.
    Returns (target params, seconds, best step, validation accuracy)."""
    train_ways = sampler.ways
    params = random_init_params(spec, seed)
    tx = optax.adam(lr)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        def loss_fn(p):
            losses = []
            for e in range(batch.support.shape[0]):   # unrolled, as PudNet's CPU default
                f_s, f_q, _ = apply_with_dataset_stats(spec, p, batch.support[e], batch.query[e])
                u = class_centroids(f_s, batch.support_labels[e], train_ways)
                logits = cosine_logits(f_q, u, tau)
                losses.append(optax.softmax_cross_entropy_with_integer_labels(
                    logits, batch.query_labels[e]).mean())
            return jnp.mean(jnp.stack(losses))
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    proto = prototype_accuracy_fn(spec, eval_ways, eval_shots)
    best = (-1.0, params, 0)
    t0 = time.perf_counter()
    for s in range(1, steps + 1):
        params, opt_state, loss = step(params, opt_state, sampler.sample(s, episodes_per_step))
        if s % eval_every == 0 or s == steps:
            val = float(np.mean([proto(params, g) for g in val_groups]))
            logging.info('ProtoNet: step %d/%d, loss %.4f, validation accuracy %.4f',
                         s, steps, float(loss), val)
            if val > best[0]:
                best = (val, params, s)
    return best[1], time.perf_counter() - t0, best[2], best[0]
