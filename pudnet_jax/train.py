"""Meta-training of PudNet: `train_and_evaluate(config, workdir)`, for the task of
`config.task` (`pudnet_jax/tasks/`: its data, sampler, loss, metrics and evaluation).

Each optimizer step draws E episodes from the task's sampler and runs them inside
one `jit`-ted step. The sketch encoder sees all E episodes' sketch images as one batch
(its weights are shared); the per-episode part (AHRU, generators, the task's loss on the
target with its own generated weights) is batched by `config.train.episode_batching`:
- 'unroll': a Python loop inside the jit (fastest on CPU: XLA's CPU backend lowers a
  vmapped conv with per-episode weights to a slow grouped convolution);
- 'vmap': `jax.vmap` over episodes (fastest on GPU);
- 'map': `jax.lax.map` (smallest program and memory, slowest);
- 'auto': 'unroll' on CPU, 'vmap' elsewhere.
With `config.train.data_parallel` > 1 (or 0: all devices) the same step runs on a device
mesh, the episodes split along its `data` axis (`pudnet_jax/mesh.py`).
"""

import time
from typing import Any

import jax
import jax.numpy as jnp
import flax.traverse_util
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax.training import train_state

from pudnet_jax.errors import UserError
from pudnet_jax.files import workdir_lock
from pudnet_jax import input_pipeline, tasks
from pudnet_jax import mesh as mesh_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.hypernet import PudNet, build_model, is_base_leaf, with_base
from pudnet_jax.targets import TargetSpec


class TrainState(train_state.TrainState):
    batch_stats: Any


class AveragedTrainState(TrainState):
    """With `config.train.ema_decay` = d > 0: also `ema_params`, the exponential moving
    average of `params` over the steps (`ema ← d·ema + (1 − d)·params` after each update,
    starting from the initial parameters). It never feeds back into training; evaluation,
    the validation curve and every restore for prediction use it (`hyper_variables`,
    `workdir.restore_hypernet`)."""
    ema_params: Any


def ema_decay(config) -> float:
    """d of `config.train.ema_decay` (0: no average, the paper's training)."""
    return float(config.train.get('ema_decay', 0.0) or 0.0)


def hyper_variables(state: TrainState) -> dict:
    """The hypernetwork's variables to evaluate: the averaged parameters when the state
    keeps an average, else the trained ones."""
    params = state.ema_params if isinstance(state, AveragedTrainState) else state.params
    return {'params': params, 'batch_stats': state.batch_stats}


def make_optimizer(config) -> optax.GradientTransformation:
    t = config.train
    lr = t.learning_rate
    if t.cosine_decay or t.warmup_steps:
        lr = optax.warmup_cosine_decay_schedule(
            init_value=0.0 if t.warmup_steps else t.learning_rate, peak_value=t.learning_rate,
            warmup_steps=t.warmup_steps, decay_steps=t.num_train_steps,
            end_value=t.learning_rate * (0.0 if t.cosine_decay else 1.0))
    tx = optax.adam(lr, b1=t.b1, b2=t.b2)
    if t.get('freeze_base'):
        base = lambda params: flax.traverse_util.path_aware_map(
            lambda path, _: is_base_leaf(path), params)
        tx = optax.chain(tx, optax.masked(optax.set_to_zero(), base))
    return tx


def create_train_state(config, model: PudNet, spec: TargetSpec) -> TrainState:
    """The hypernetwork's and the task's parameters (`tasks.init_variables`) and Adam."""
    variables = tasks.init_variables(config, model, spec, config.seed)
    common = dict(apply_fn=model.apply, params=variables['params'],
                  batch_stats=variables['batch_stats'], tx=make_optimizer(config))
    if ema_decay(config):
        # its own buffers: the step donates the state, and a leaf shared with params
        # would be donated twice
        return AveragedTrainState.create(
            ema_params=jax.tree.map(jnp.copy, variables['params']), **common)
    return TrainState.create(**common)


def initial_base(config, task, spec: TargetSpec, loaded, state: TrainState, mesh=None):
    """The state with residual generation's base set to the network of
    `config.model.base_init` ('pretrained': the task's `pretrained_target`), before step
    1 (a resumed run reads it from its checkpoint). With weight averaging, the average
    starts there too."""
    target, seconds = task.pretrained_target(config, spec, loaded)
    params = with_base(spec, state.params, target['params'])
    logging.info('Base of residual generation: the %s network (%.1f s).',
                 config.model.base_init, seconds)
    if mesh is not None:
        params = mesh_lib.replicate(params, mesh)
    if isinstance(state, AveragedTrainState):
        state = state.replace(ema_params=jax.tree.map(jnp.copy, params))
    return state.replace(params=params)


def resolve_batching(mode: str) -> str:
    if mode == 'auto':
        return 'unroll' if jax.default_backend() == 'cpu' else 'vmap'
    if mode not in ('unroll', 'vmap', 'map'):
        raise ValueError(f"config.train.episode_batching must be 'auto', 'unroll', 'vmap' or "
                         f"'map'; got {mode!r}.")
    return mode


def _over_episodes(fn, mode: str, mesh=None):
    """fn(sketch, episode) per episode (the episode a slice of the batch pytree).

    On a mesh of D devices the E episodes are regrouped as (D, E/D): a vmap over the
    device blocks (the axis split along `data`), `mode` within each block, so that every
    device runs its own E/D episodes (also with 'unroll', whose slices of a split axis
    would otherwise be computed on every device)."""
    if mesh is not None:
        return _over_device_blocks(_over_episodes(fn, mode), mesh)
    if mode == 'vmap':
        return jax.vmap(fn)
    if mode == 'map':
        return lambda *xs: jax.lax.map(lambda x: fn(*x), xs)

    def unrolled(*xs):
        count = jax.tree.leaves(xs)[0].shape[0]
        outs = [fn(*jax.tree.map(lambda x: x[e], xs)) for e in range(count)]
        return jax.tree.map(lambda *o: jnp.stack(o), *outs)
    return unrolled


def _over_device_blocks(per_block, mesh):
    devices = mesh.shape[mesh_lib.AXIS]
    split = mesh_lib.along_data(mesh)

    def blocked(*xs):
        blocks = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(
            x.reshape((devices, x.shape[0] // devices) + x.shape[1:]), split), xs)
        outs = jax.vmap(per_block)(*blocks)
        return jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:]), outs)
    return blocked


def make_train_step(config, model: PudNet, spec: TargetSpec, mesh=None, on_device=False):
    """The jitted step `(state, batch) -> (state, metrics)`. With a `mesh`
    (`mesh.make_mesh`): the same step with the episodes split along its `data` axis and
    everything else replicated (the state must be replicated, `mesh.replicate`, and the
    batch split, `mesh.shard_episodes`). With `on_device`: `(state, indices, images)`,
    the episodes gathered inside the step from the uint8 pool `images` on the device
    (`input_pipeline.device_feed`; replicated on a mesh, the indices split)."""
    task = tasks.of(config)
    # Training generates the full delta; eval.delta_scale is a prediction setting.
    model = model.clone(delta_scale=1.0)
    episode_loss = task.make_episode_loss(config, spec)
    # Optional: a task's inner loop on each episode's sketch before generation
    # (config.train.inner_steps > 0; `inner_loop`).
    adapt = getattr(task, 'make_sketch_adaptation', lambda *_: None)(config, model, spec)
    # Optional: a random style per training episode (config.train.episode_augment;
    # `augment`), drawn from the step number so that resumption stays exact.
    styles = getattr(task, 'make_episode_styles', lambda *_: None)(config)
    mode = resolve_batching(config.train.episode_batching)
    decay = ema_decay(config)

    def train_step(state: TrainState, batch):
        if styles is not None:
            batch = styles(state.step, batch)
        images = task.sketch_images(batch)
        num_episodes, per_episode = images.shape[:2]

        def loss_fn(params):
            hyper_params, task_params = tasks.split_params(task, params)
            feats, updates = model.apply(
                {'params': hyper_params, 'batch_stats': state.batch_stats},
                images.reshape((-1,) + images.shape[2:]), train=True,
                method=PudNet.encode, mutable=['batch_stats'])
            sketches = feats.reshape(num_episodes, per_episode, -1).mean(axis=1)

            def episode(sketch, ep):
                if adapt is not None:
                    sketch = adapt(hyper_params, task_params, sketch, ep)
                generated = model.apply({'params': hyper_params}, sketch,
                                        method=PudNet.generate)
                return episode_loss(task_params, generated, ep)

            losses, parts = _over_episodes(episode, mode, mesh)(sketches, batch)
            return losses.mean(), (jax.tree.map(jnp.mean, parts), updates.get('batch_stats', {}))

        (_, (parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        if decay:
            state = state.replace(ema_params=jax.tree.map(
                lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, state.params))
        return state, task.Metrics.single_from_model_output(**parts)

    shardings = {}
    if mesh is not None:
        shardings = dict(in_shardings=(mesh_lib.replicated(mesh), mesh_lib.along_data(mesh)),
                         out_shardings=mesh_lib.replicated(mesh))
    if not on_device:
        return jax.jit(train_step, donate_argnums=0, **shardings)
    def step_from_indices(state, indices, images):
        return train_step(state, task.gather_episodes(images, indices))
    if mesh is not None:
        shardings['in_shardings'] += (mesh_lib.replicated(mesh),)
    return jax.jit(step_from_indices, donate_argnums=0, **shardings)


def training_mesh(config):
    """The mesh of `config.train.data_parallel` (checked), or None for one device."""
    devices = mesh_lib.data_parallel_devices(config)
    return mesh_lib.make_mesh(devices) if devices > 1 else None


# ----------------------------------------------------------------------------- loop

class NonFiniteLossError(FloatingPointError):
    pass


def _check_finite(step: int, computed: dict, last_checkpoint, ckpt_dir: str, config) -> None:
    if not all(np.isfinite(v) for v in computed.values()):
        parts = ', '.join(f'{k}={v:.4g}' for k, v in computed.items())
        where = (f'the last good checkpoint is step {last_checkpoint} in {ckpt_dir}'
                 if last_checkpoint is not None else 'no checkpoint was saved yet')
        raise NonFiniteLossError(
            f'Non-finite training loss by step {step} ({parts}); nothing was saved after it '
            f'and {where}. Try a lower config.train.learning_rate '
            f'(now {config.train.learning_rate}).')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_after_step: int | None = None) -> dict:
    """Trains (resuming from the workdir's newest intact checkpoint) then evaluates.

    Holds the workdir's lock (`files.workdir_lock`) throughout. `stop_after_step`
    simulates an interruption (used by tests): training stops right after that step as if
    killed, and nothing is evaluated.
    """
    from pudnet_jax import config_check
    config_check.validate(config)
    with workdir_lock(workdir):
        return _train_and_evaluate(config, workdir, stop_after_step)


def _train_and_evaluate(config, workdir: str, stop_after_step: int | None) -> dict:
    t = config.train
    task = tasks.of(config)
    model, spec = build_model(config)
    loaded = task.load(config)
    sampler = task.make_sampler(config, loaded)
    task.check(config, loaded, spec)    # bad evaluation settings fail now, not after training

    mngr = workdir_lib.checkpoint_manager(workdir, config)
    ckpt_dir = str(mngr.directory)
    workdir_lib.check_config(config, workdir, has_checkpoint=bool(mngr.all_steps()))
    mesh = training_mesh(config)
    state = create_train_state(config, model, spec)
    if mesh is not None:    # restored onto the mesh too: the target's shardings
        state = mesh_lib.replicate(state, mesh)
    latest, restored = workdir_lib.restore_newest_intact(mngr, state, workdir, move_aside=True)
    if latest is not None and latest > t.num_train_steps:
        raise UserError(
            f'config.train.num_train_steps={t.num_train_steps} is below the step of the '
            f'checkpoint in {ckpt_dir} ({latest}): pass --config.train.num_train_steps='
            f'{latest} (or more) to evaluate it or train on, or use a new --workdir.')
    task.record(config, loaded, workdir)
    workdir_lib.save_config(config, workdir)
    if latest is not None:
        state = restored
        logging.info('Resumed from checkpoint at step %d in %s.', latest, ckpt_dir)
    elif config.model.get('base_init'):
        state = initial_base(config, task, spec, loaded, state, mesh)
    start = int(state.step)

    curve = task.validation_curve(config, model, spec, loaded, workdir, start)
    feed = input_pipeline.make_feed(config, sampler, mesh, first=start + 1)
    train_step = make_train_step(config, model, spec, mesh, on_device=feed.on_device)
    writer = None
    if jax.process_index() == 0:
        from pudnet_jax.summaries import ScalarWriter
        writer = ScalarWriter(workdir)
        if start == 0:
            writer.write_text(0, 'config', '```\n' + config.to_json_best_effort(indent=2)
                              + '\n```')
    logging.info('Training %s (%d generated kernels, %d shared leaves) for %s on %s, '
                 'steps %d..%d, %d episodes/step, batching=%s, backend=%s, %s, %s.',
                 spec.name, len(spec.generated), len(spec.shared),
                 config.get('task', tasks.DEFAULT), config.data.name, start,
                 t.num_train_steps, t.episodes_per_step, resolve_batching(t.episode_batching),
                 jax.default_backend(),
                 'one device' if mesh is None else
                 f'data-parallel over {mesh.size} devices ({jax.process_count()} process(es))',
                 feed.description)

    train_metrics = None
    last_checkpoint = latest
    t0 = time.time()
    try:
        for step in range(start + 1, t.num_train_steps + 1):
            state, step_metrics = train_step(state, *feed(step))
            train_metrics = (step_metrics if train_metrics is None
                             else train_metrics.merge(step_metrics))
            is_last = step == t.num_train_steps
            validation = ''
            if curve and curve.due(step, is_last):
                point = curve.measure(step, hyper_variables(state))
                best = curve.best()
                validation = (f"  validation {point['accuracy']:.3f} (best "
                              f"{best['accuracy']:.3f} at step {best['step']})")
                if writer:
                    writer.write_scalars(step, {'train/validation_accuracy': point['accuracy'],
                                                'train/best_validation_accuracy':
                                                    best['accuracy']})
            if step % t.log_every == 0 or is_last or step % t.checkpoint_every == 0:
                computed = {k: float(v) for k, v in train_metrics.compute().items()}
                _check_finite(step, computed, last_checkpoint, ckpt_dir, config)
                if step % t.log_every == 0 or is_last:
                    elapsed = time.time() - t0
                    rate = (step - start) / max(elapsed, 1e-9)
                    if writer:
                        writer.write_scalars(step, {f'train/{k}': v for k, v in computed.items()}
                                             | {'train/steps_per_second': rate})
                    metric, label = task.PROGRESS
                    logging.info('step %d/%d  loss %.4f  %s %.3f%s  %.2f steps/s  '
                                 'ETA %s', step, t.num_train_steps, computed['loss'], label,
                                 computed[metric], validation, rate,
                                 _format_seconds((t.num_train_steps - step) / max(rate, 1e-9)))
                    train_metrics = None
                    validation = ''
                if step % t.checkpoint_every == 0 or is_last:
                    mngr.save(step, args=ocp.args.StandardSave(state))
                    last_checkpoint = step
            if validation:     # measured between log points: its own line
                logging.info('step %d/%d%s', step, t.num_train_steps, validation)
            if stop_after_step is not None and step >= stop_after_step:
                mngr.wait_until_finished()
                return {'stopped_at_step': step}
        mngr.wait_until_finished()
        train_seconds = time.time() - t0
        steps_done = t.num_train_steps - start

        hyper_vars = hyper_variables(state)
        results = task.evaluate(config, model, spec, hyper_vars, loaded, workdir)
        results.update(train_seconds=round(train_seconds, 2), train_steps=t.num_train_steps,
                       steps_this_run=steps_done, resumed_from_step=start,
                       steps_per_second=round(steps_done / train_seconds, 3) if steps_done else None)
        if curve:
            results['validation_curve'] = curve.summary()
        if writer:
            writer.write_scalars(t.num_train_steps, task.summary_scalars(results))
        workdir_lib.write_results(results, workdir)
        return results
    finally:
        feed.close()
        if writer:
            writer.close()


def _format_seconds(s: float) -> str:
    s = int(round(s))
    return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'
