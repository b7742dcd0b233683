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

import json
import os
import shutil
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
from pudnet_jax.hypernet import PudNet, make_pudnet
from pudnet_jax.losses import pudnet_loss
from pudnet_jax.targets import TargetSpec, apply_with_dataset_stats, target_spec

CONFIG_FILE = 'config.json'
# Settings that may change between runs on one workdir without making its checkpoint
# a different experiment (e.g. train longer, evaluate differently).
RESUMABLE_CHANGES = ('train.num_train_steps', 'train.log_every', 'train.checkpoint_every',
                     'train.max_checkpoints', 'train.episode_batching', 'train.val_every',
                     'train.data_parallel', 'train.input', 'train.prefetch',
                     'train.val_groups', 'eval', 'predict', 'compare',
                     'data.data_dir', 'data.cache_dir', 'data.val_classes')
# Fields added after workdirs were first saved: a saved config without one of them was
# trained with this value (the code's behaviour before the field existed).
ADDED_FIELDS = {'model.encoder_norm': 'batch', 'model.set_pooling': 'mean',
                'model.residual': False, 'model.film': False, 'eval.refine_steps': 0,
                'train.data_parallel': 1, 'train.dtype': 'float32', 'train.input': 'host',
                'train.prefetch': 0}
CLASSES_FILE = 'classes.json'
# Where a checkpoint that cannot be restored is moved (never deleted) when training resumes
# from an older one, so that later saves of the same step do not collide with it.
CORRUPT_DIR = 'corrupt_checkpoints'


class TrainState(train_state.TrainState):
    batch_stats: Any


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
    loss: metrics.Average.from_output('loss')
    l1_metric: metrics.Average.from_output('l1_metric')
    l2_full_head: metrics.Average.from_output('l2_full_head')
    l3_consistency: metrics.Average.from_output('l3_consistency')
    accuracy: metrics.Average.from_output('accuracy')


def build_model(config) -> tuple[PudNet, TargetSpec]:
    image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
    spec = target_spec(config.target.name, image_shape, config.target.width,
                       config.train.get('dtype', 'float32'))
    return make_pudnet(config, spec), spec


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
    images = jnp.zeros((2,) + spec.image_shape, jnp.float32)
    variables = model.init(jax.random.PRNGKey(config.seed), images, train=False)
    return TrainState.create(apply_fn=model.apply, params=variables['params'],
                             batch_stats=variables.get('batch_stats', {}), tx=make_optimizer(config))


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


# ----------------------------------------------------------------------------- workdir

def _flatten(d: dict, prefix: str = '') -> dict:
    out = {}
    for k, v in d.items():
        key = f'{prefix}{k}'
        if isinstance(v, dict):
            out.update(_flatten(v, key + '.'))
        else:
            out[key] = v
    return out


def config_to_dict(config) -> dict:
    return json.loads(config.to_json_best_effort())


def check_config(config, workdir: str, has_checkpoint: bool) -> None:
    """Refuses to resume a checkpoint trained with different settings (naming the
    settings that differ). Writes nothing. Tuples and lists compare equal (config.json
    stores a tuple as a JSON list)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not (has_checkpoint and os.path.exists(path)):
        return
    with open(path) as f:
        saved = ADDED_FIELDS | _flatten(json.load(f))
    now = _flatten(config_to_dict(config))
    allowed = lambda k: any(k == a or k.startswith(a + '.') for a in RESUMABLE_CHANGES)
    differ = sorted(k for k in set(saved) | set(now)
                    if not allowed(k) and _plain(saved.get(k)) != _plain(now.get(k)))
    if differ:
        detail = '; '.join(f'{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}'
                           for k in differ[:8])
        raise UserError(
            f'Workdir {workdir!r} holds a checkpoint trained with a different config '
            f'({detail}). Use a new --workdir, or the config saved in {path}.')


def _plain(value):
    """JSON's view of a value: tuples as lists, recursively."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_config(config, workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, CONFIG_FILE), config_to_dict(config), sort_keys=True)


def check_or_save_config(config, workdir: str, has_checkpoint: bool) -> None:
    """`check_config`, then saves the config in the workdir."""
    check_config(config, workdir, has_checkpoint)
    save_config(config, workdir)


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f'No {CONFIG_FILE} in workdir {workdir!r}: train there first '
                                f'(--mode=train).')
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, 'checkpoints')),
        options=ocp.CheckpointManagerOptions(max_to_keep=config.train.max_checkpoints,
                                             create=True))


def restore_newest_intact(mngr: ocp.CheckpointManager, target, workdir: str,
                          move_aside: bool = False):
    """(step, restored state) of the newest checkpoint that restores, or (None, None)
    when there is none.

    A checkpoint that fails to restore (a data file truncated or deleted, `_METADATA`
    missing) is named in a warning and the next older one is tried; nothing is deleted.
    With `move_aside` (training, which will save again), the unreadable newer ones are
    moved to `workdir/corrupt_checkpoints/` so that Orbax's latest step, its later saves
    of the same step numbers and its `max_to_keep` clean-up see only intact checkpoints.
    When no checkpoint restores, a UserError names each one and its error, and nothing is
    moved: this is more likely a code or config change than corruption of every step.
    """
    steps = sorted(mngr.all_steps(), reverse=True)
    failed = []
    for step in steps:
        try:
            state = mngr.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as e:   # noqa: BLE001 (any reader failure: try the previous one)
            reason = ' '.join(f'{type(e).__name__}: {e}'.split())[:300]
            failed.append((step, reason))
            logging.warning('Checkpoint %s cannot be restored (%s); trying an older one '
                            '(nothing is deleted).', os.path.join(mngr.directory, str(step)),
                            reason)
            continue
        if failed:
            if move_aside:
                _move_aside(mngr, [s for s, _ in failed], workdir)
            logging.warning('Using checkpoint step %d (%s), the newest intact one.', step,
                            os.path.join(mngr.directory, str(step)))
        return step, state
    if failed:
        detail = '; '.join(f'step {s}: {r[:160]}' for s, r in failed)
        raise UserError(f'No checkpoint in {mngr.directory} can be restored ({detail}). '
                        f'Nothing was changed; use a new --workdir to train from scratch.')
    return None, None


def _move_aside(mngr: ocp.CheckpointManager, steps, workdir: str) -> None:
    dest_root = os.path.join(workdir, CORRUPT_DIR)
    os.makedirs(dest_root, exist_ok=True)
    for step in steps:
        src = os.path.join(mngr.directory, str(step))
        dest, n = os.path.join(dest_root, f'step_{step}'), 1
        while os.path.exists(dest):
            dest, n = os.path.join(dest_root, f'step_{step}.{n}'), n + 1
        shutil.move(src, dest)
        logging.warning('Moved the unreadable checkpoint %s to %s (kept, not deleted).', src,
                        dest)
    mngr.reload()


def restore_hypernet(workdir: str, config=None):
    """(config, model, spec, hypernet variables) from a trained workdir's newest intact
    checkpoint."""
    return restore_hypernet_with_step(workdir, config)[:4]


def restore_hypernet_with_step(workdir: str, config=None):
    """`restore_hypernet` and the step of the checkpoint it restored."""
    config = config or load_workdir_config(workdir)
    model, spec = build_model(config)
    abstract = jax.eval_shape(lambda: create_train_state(config, model, spec))
    mngr = checkpoint_manager(workdir, config)
    step, state = restore_newest_intact(mngr, abstract, workdir)
    if step is None:
        raise FileNotFoundError(f'No checkpoint in {os.path.join(workdir, "checkpoints")}: '
                                f'train there first (--mode=train).')
    return config, model, spec, {'params': state.params, 'batch_stats': state.batch_stats}, step


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
    if is_inter_dataset(config):
        inter_dataset.load_parts(config.eval, *spec.image_shape[1:],
                                 cache_dir=config.data.get('cache_dir'))
    else:
        evaluate_lib.group_sampler(config, pool, 'test')
        evaluate_lib.group_sampler(config, pool, 'validation')

    mngr = checkpoint_manager(workdir, config)
    ckpt_dir = str(mngr.directory)
    check_config(config, workdir, has_checkpoint=bool(mngr.all_steps()))
    mesh = training_mesh(config)
    state = create_train_state(config, model, spec)
    if mesh is not None:    # restored onto the mesh too: the target's shardings
        state = mesh_lib.replicate(state, mesh)
    latest, restored = restore_newest_intact(mngr, state, workdir, move_aside=True)
    if latest is not None and latest > t.num_train_steps:
        raise UserError(
            f'config.train.num_train_steps={t.num_train_steps} is below the step of the '
            f'checkpoint in {ckpt_dir} ({latest}): pass --config.train.num_train_steps='
            f'{latest} (or more) to evaluate it or train on, or use a new --workdir.')
    _write_classes(config, loaded, workdir)
    save_config(config, workdir)
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


def is_inter_dataset(config) -> bool:
    protocol = config.eval.get('protocol', 'intra')
    if protocol not in ('intra', 'inter'):
        raise ValueError(f"config.eval.protocol must be 'intra' or 'inter', got {protocol!r}.")
    return protocol == 'inter'


def evaluate_any(config, model, spec, hyper_vars, pool, workdir) -> dict:
    """The configured protocol, with its controls: intra-dataset (held-out classes of the
    training data, `evaluate`: the test groups, plus the validation groups under
    'validation') or inter-dataset (another dataset entirely, `inter_dataset`)."""
    if is_inter_dataset(config):
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
    write_json(os.path.join(workdir, CLASSES_FILE), record)


def _format_seconds(s: float) -> str:
    s = int(round(s))
    return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'
