"""Meta-training of PudNet: `train_and_evaluate(config, workdir)`.

Each optimizer step draws E episodes from the training classes and runs them inside
one `jit`-ted step. The sketch encoder sees all E support sets as one batch (its weights
are shared); the per-episode part (AHRU, generators, the target with its own generated
weights, the losses) is batched by `config.train.episode_batching`:
- 'unroll': a Python loop inside the jit (fastest on CPU: XLA's CPU backend lowers a
  vmapped conv with per-episode weights to a slow grouped convolution);
- 'vmap': `jax.vmap` over episodes (fastest on GPU);
- 'map': `jax.lax.map` (smallest program and memory, slowest);
- 'auto': 'unroll' on CPU, 'vmap' elsewhere.
With `config.train.data_parallel` > 1 (or 0: all devices) the same step runs on a device
mesh, the episodes split along its `data` axis (`pudnet_jax/mesh.py`).
"""

import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from clu import metrics
from flax.training import train_state

from pudnet_jax.errors import UserError
from pudnet_jax.files import workdir_lock, write_json
from pudnet_jax import data as data_lib
from pudnet_jax import evaluate as evaluate_lib
from pudnet_jax import input_pipeline, inter_dataset, sources
from pudnet_jax import mesh as mesh_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.hypernet import PudNet, build_model, init_variables
from pudnet_jax.losses import pudnet_loss
from pudnet_jax.targets import TargetSpec, apply_with_dataset_stats


class TrainState(train_state.TrainState):
    batch_stats: Any


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
    loss: metrics.Average.from_output('loss')
    l1_metric: metrics.Average.from_output('l1_metric')
    l2_full_head: metrics.Average.from_output('l2_full_head')
    l3_consistency: metrics.Average.from_output('l3_consistency')
    accuracy: metrics.Average.from_output('accuracy')


def make_optimizer(config) -> optax.GradientTransformation:
    t = config.train
    lr = t.learning_rate
    if t.cosine_decay or t.warmup_steps:
        lr = optax.warmup_cosine_decay_schedule(
            init_value=0.0 if t.warmup_steps else t.learning_rate, peak_value=t.learning_rate,
            warmup_steps=t.warmup_steps, decay_steps=t.num_train_steps,
            end_value=t.learning_rate * (0.0 if t.cosine_decay else 1.0))
    return optax.adam(lr, b1=t.b1, b2=t.b2)


def create_train_state(config, model: PudNet, spec: TargetSpec) -> TrainState:
    variables = init_variables(model, spec, config.seed)
    return TrainState.create(apply_fn=model.apply, params=variables['params'],
                             batch_stats=variables['batch_stats'], tx=make_optimizer(config))


def resolve_batching(mode: str) -> str:
    if mode == 'auto':
        return 'unroll' if jax.default_backend() == 'cpu' else 'vmap'
    if mode not in ('unroll', 'vmap', 'map'):
        raise ValueError(f"config.train.episode_batching must be 'auto', 'unroll', 'vmap' or "
                         f"'map'; got {mode!r}.")
    return mode


def _over_episodes(fn, mode: str, mesh=None):
    """fn(sketch, support, support_labels, query, query_labels, classes) per episode.

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
        outs = [fn(*(x[e] for x in xs)) for e in range(xs[0].shape[0])]
        return jax.tree.map(lambda *o: jnp.stack(o), *outs)
    return unrolled


def _over_device_blocks(per_block, mesh):
    devices = mesh.shape[mesh_lib.AXIS]
    split = mesh_lib.along_data(mesh)

    def blocked(*xs):
        blocks = [jax.lax.with_sharding_constraint(
            x.reshape((devices, x.shape[0] // devices) + x.shape[1:]), split) for x in xs]
        outs = jax.vmap(per_block)(*blocks)
        return jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:]), outs)
    return blocked


def loss_weights(loss_cfg) -> tuple[float, float]:
    """(λ1, λ3) of L = λ1·L1 + L2 + λ3·L3, checked; the paper's eq. 11 has both at 1."""
    weights = {k: float(loss_cfg.get(k, 1.0)) for k in ('metric_weight', 'kl_weight')}
    for k, w in weights.items():
        if not (w >= 0.0 and np.isfinite(w)):
            raise ValueError(f'config.loss.{k} must be a finite number >= 0, got {w}.')
    if not loss_cfg.use_full_head and weights['metric_weight'] == 0.0:
        raise ValueError('config.loss.use_full_head=False leaves only L1, but '
                         'config.loss.metric_weight is 0: nothing would be trained.')
    return weights['metric_weight'], weights['kl_weight']


def make_train_step(config, model: PudNet, spec: TargetSpec, mesh=None, on_device=False):
    """The jitted step `(state, batch) -> (state, metrics)`. With a `mesh`
    (`mesh.make_mesh`): the same step with the episodes split along its `data` axis and
    everything else replicated (the state must be replicated, `mesh.replicate`, and the
    batch split, `mesh.shard_episodes`). With `on_device`: `(state, indices, images)`,
    the episodes gathered inside the step from the uint8 pool `images` on the device
    (`input_pipeline.device_feed`; replicated on a mesh, the indices split)."""
    loss_cfg = config.loss
    metric_weight, kl_weight = loss_weights(loss_cfg)
    mode = resolve_batching(config.train.episode_batching)

    def train_step(state: TrainState, batch: data_lib.Episodes):
        num_episodes, shots_total = batch.support.shape[:2]

        def loss_fn(params):
            feats, updates = model.apply(
                {'params': params, 'batch_stats': state.batch_stats},
                batch.support.reshape((-1,) + batch.support.shape[2:]), train=True,
                method=PudNet.encode, mutable=['batch_stats'])
            sketches = feats.reshape(num_episodes, shots_total, -1).mean(axis=1)

            def episode(sketch, support, support_labels, query, query_labels, classes):
                generated = model.apply({'params': params}, sketch, method=PudNet.generate)
                f_s, f_q, _ = apply_with_dataset_stats(spec, generated, support, query)
                head_logits = model.apply({'params': params}, f_q, method=PudNet.full_head)
                tau = model.apply({'params': params}, method=PudNet.tau)
                return pudnet_loss(f_s, support_labels, f_q, query_labels, head_logits,
                                   classes, tau, use_full_head=loss_cfg.use_full_head,
                                   use_kl=loss_cfg.use_kl, metric_weight=metric_weight,
                                   kl_weight=kl_weight)

            losses, parts = _over_episodes(episode, mode, mesh)(
                sketches, batch.support, batch.support_labels, batch.query,
                batch.query_labels, batch.classes)
            return losses.mean(), (jax.tree.map(jnp.mean, parts), updates.get('batch_stats', {}))

        (_, (parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        return state, TrainMetrics.single_from_model_output(**parts)

    shardings = {}
    if mesh is not None:
        shardings = dict(in_shardings=(mesh_lib.replicated(mesh), mesh_lib.along_data(mesh)),
                         out_shardings=mesh_lib.replicated(mesh))
    if not on_device:
        return jax.jit(train_step, donate_argnums=0, **shardings)
    table = data_lib.normalization_table()

    def step_from_indices(state, indices, images):
        return train_step(state, data_lib.gather_episodes(images, indices, jnp.asarray(table)))
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
    model, spec = build_model(config)
    loaded = sources.load(config.data.name, config.data.image_size, config.data.channels,
                          config.data.data_dir, cache_dir=config.data.get('cache_dir'))
    pool = loaded.pool
    sampler = data_lib.EpisodeSampler(pool, config.data.train_classes, t.ways, t.shots,
                                      t.queries, seed=config.seed, what='training episodes',
                                      domains=config.data.get('domains'))
    # Fail on bad evaluation settings (and decode the target dataset) now, not after training.
    if inter_dataset.is_inter_dataset(config):
        inter_dataset.load_parts(config.eval, *spec.image_shape[1:],
                                 cache_dir=config.data.get('cache_dir'))
    else:
        evaluate_lib.group_sampler(config, pool, 'test')
        evaluate_lib.group_sampler(config, pool, 'validation')

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
    _write_classes(config, loaded, workdir)
    workdir_lib.save_config(config, workdir)
    if latest is not None:
        state = restored
        logging.info('Resumed from checkpoint at step %d in %s.', latest, ckpt_dir)
    start = int(state.step)

    curve = evaluate_lib.validation_curve(config, model, spec, pool, workdir, start)
    feed = input_pipeline.make_feed(config, sampler, mesh, first=start + 1)
    train_step = make_train_step(config, model, spec, mesh, on_device=feed.on_device)
    writer = None
    if jax.process_index() == 0:
        from pudnet_jax.summaries import ScalarWriter
        writer = ScalarWriter(workdir)
        if start == 0:
            writer.write_text(0, 'config', '```\n' + config.to_json_best_effort(indent=2)
                              + '\n```')
    logging.info('Training %s (%d generated kernels, %d shared leaves) on %s, '
                 'steps %d..%d, %d episodes/step, batching=%s, backend=%s, %s, %s.',
                 spec.name, len(spec.generated), len(spec.shared), config.data.name, start,
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
                point = curve.measure(step, {'params': state.params,
                                             'batch_stats': state.batch_stats})
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
                    logging.info('step %d/%d  loss %.4f  episode acc %.3f%s  %.2f steps/s  '
                                 'ETA %s', step, t.num_train_steps, computed['loss'],
                                 computed['accuracy'], validation, rate,
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

        hyper_vars = {'params': state.params, 'batch_stats': state.batch_stats}
        results = evaluate_any(config, model, spec, hyper_vars, pool, workdir)
        results.update(train_seconds=round(train_seconds, 2), train_steps=t.num_train_steps,
                       steps_this_run=steps_done, resumed_from_step=start,
                       steps_per_second=round(steps_done / train_seconds, 3) if steps_done else None)
        if curve:
            results['validation_curve'] = curve.summary()
        if writer:
            scalars = {'eval/accuracy': results['accuracy'], 'eval/ci95': results['ci95'],
                       'eval/untrained': results['controls']['untrained']['accuracy'],
                       'eval/mean_sketch': results['controls']['mean_sketch']['accuracy'],
                       'eval/conditioning_gain': results['conditioning_gain']}
            if 'validation' in results:
                scalars['validation/accuracy'] = results['validation']['accuracy']
            writer.write_scalars(t.num_train_steps, scalars)
        evaluate_lib.write_results(results, workdir)
        return results
    finally:
        feed.close()
        if writer:
            writer.close()


def evaluate_any(config, model, spec, hyper_vars, pool, workdir) -> dict:
    """The configured protocol, with its controls: intra-dataset (held-out classes of the
    training data, `evaluate`: the test groups, plus the validation groups under
    'validation') or inter-dataset (another dataset entirely, `inter_dataset`)."""
    if inter_dataset.is_inter_dataset(config):
        return inter_dataset.evaluate(config, model, spec, hyper_vars, workdir, pool)
    validation = evaluate_lib.evaluate(config, model, spec, hyper_vars, pool, workdir,
                                       split='validation', quiet=True)
    print(f"validation (model selection; {validation['groups']} groups from "
          f"{validation['roles']}): PudNet {100 * validation['accuracy']:.2f} ± "
          f"{100 * validation['ci95']:.2f} %, untrained "
          f"{100 * validation['controls']['untrained']['accuracy']:.2f} %, mean sketch "
          f"{100 * validation['controls']['mean_sketch']['accuracy']:.2f} %")
    results = evaluate_lib.evaluate(config, model, spec, hyper_vars, pool, workdir)
    keep = ('accuracy', 'ci95', 'groups', 'controls', 'conditioning_gain',
            'conditioning_gain_ci95', 'gain_over_untrained', 'gain_over_untrained_ci95',
            'refined')
    results['validation'] = {k: validation[k] for k in keep if k in validation}
    return results


def _write_classes(config, loaded, workdir: str) -> None:
    """Records which classes (by label and name) train and which are held out."""
    names = loaded.class_names
    name = lambda c: names[c] if 0 <= c < len(names) else None
    record = {'dataset': config.data.name,
              'train_classes': {int(c): name(c) for c in config.data.train_classes},
              'val_classes': {int(c): name(c) for c in config.data.get('val_classes') or ()},
              'test_classes': {int(c): name(c) for c in config.data.test_classes},
              'images_per_class': {int(c): int(len(v)) for c, v in loaded.pool.items()}}
    write_json(os.path.join(workdir, workdir_lib.CLASSES_FILE), record)


def _format_seconds(s: float) -> str:
    s = int(round(s))
    return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'
