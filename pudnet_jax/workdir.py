"""The run directory (`--workdir`): its saved config and the check that a resumed run is
the same experiment, its Orbax checkpoints (the newest intact one restored, unreadable
ones moved aside, never deleted), and the trained hypernetwork restored without the
optimizer state. Training (`train`), prediction (`predict`), comparison (`compare`) and
the Python API (`api`) all reach a workdir through this module.
"""

import json
import os
import shutil

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from pudnet_jax.errors import UserError
from pudnet_jax.files import write_json
from pudnet_jax.hypernet import build_model

CONFIG_FILE = 'config.json'
# Settings that may change between runs on one workdir without making its checkpoint
# a different experiment (e.g. train longer, evaluate differently).
RESUMABLE_CHANGES = ('train.num_train_steps', 'train.log_every', 'train.checkpoint_every',
                     'train.max_checkpoints', 'train.episode_batching', 'train.val_every',
                     'train.data_parallel', 'train.input', 'train.prefetch',
                     'train.val_groups', 'eval', 'predict', 'compare',
                     'data.data_dir', 'data.cache_dir', 'data.val_classes',
                     'data.val_domain', 'data.val_domains')
# Fields added after workdirs were first saved: a saved config without one of them was
# trained with this value (the code's behaviour before the field existed).
ADDED_FIELDS = {'task': 'classification', 'model.encoder_norm': 'batch', 'model.set_pooling': 'mean',
                'model.residual': False, 'model.film': False, 'eval.refine_steps': 0,
                'train.data_parallel': 1, 'train.dtype': 'float32', 'train.input': 'host',
                'train.prefetch': 0, 'train.inner_steps': 0, 'train.inner_lr': 1.0,
                'train.inner_first_order': True, 'train.episode_augment': (),
                'train.ema_decay': 0.0, 'model.base_init': '', 'train.freeze_base': False,
                'eval.pretrained_control': False}
CLASSES_FILE = 'classes.json'
RESULTS_FILE = 'results.json'     # the evaluation's numbers, every one
VALIDATION_FILE = 'validation.json'   # --mode=evaluate --split=validation: no test group
# Where a checkpoint that cannot be restored is moved (never deleted) when training resumes
# from an older one, so that later saves of the same step do not collide with it.
CORRUPT_DIR = 'corrupt_checkpoints'



def flatten(d: dict, prefix: str = '') -> dict:
    """A nested dict as one level of dotted keys ('train.seed')."""
    out = {}
    for k, v in d.items():
        key = f'{prefix}{k}'
        if isinstance(v, dict):
            out.update(flatten(v, key + '.'))
        else:
            out[key] = v
    return out


def config_to_dict(config) -> dict:
    return json.loads(config.to_json_best_effort())


def config_differences(config, workdir: str, ignore=()) -> dict | None:
    """{setting: (saved value, value now)} for each dotted setting in which `config`
    differs from the one saved in `workdir`, leaving out the settings under `ignore`
    (prefixes); None when nothing is saved. A setting added to the code since the save
    (`ADDED_FIELDS`) counts as its default; tuples and lists compare equal (config.json
    stores a tuple as a JSON list)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        saved = ADDED_FIELDS | flatten(json.load(f))
    now = flatten(config_to_dict(config))
    skip = lambda k: any(k == a or k.startswith(a + '.') for a in ignore)
    return {k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now))
            if not skip(k) and _plain(saved.get(k)) != _plain(now.get(k))}


def check_config(config, workdir: str, has_checkpoint: bool) -> None:
    """Refuses to resume a checkpoint trained with different settings (naming the
    settings that differ, `config_differences` outside `RESUMABLE_CHANGES`). Writes
    nothing."""
    path = os.path.join(workdir, CONFIG_FILE)
    differ = has_checkpoint and config_differences(config, workdir, RESUMABLE_CHANGES)
    if differ:
        detail = '; '.join(f'{k}: checkpoint {a!r} vs now {b!r}'
                           for k, (a, b) in list(differ.items())[:8])
        raise UserError(
            f'Workdir {workdir!r} holds a checkpoint trained with a different config '
            f'({detail}). Use a new --workdir, or the config saved in {path}.')


# Settings that decide the hypernetwork's and the target's parameters: a checkpoint is
# only read with the ones it was trained with (a partial restore would otherwise leave a
# parameter unread, or read one the model no longer has, without a word).
ARCHITECTURE = ('task', 'model', 'target')


def check_architecture(config, workdir: str) -> None:
    """Refuses, in one line naming the settings, to restore `workdir`'s hypernetwork with
    a config whose model, target or task differ from the ones it was trained with."""
    differ = config_differences(config, workdir) or {}
    differ = {k: v for k, v in differ.items()
              if any(k == a or k.startswith(a + '.') for a in ARCHITECTURE)}
    if differ:
        detail = '; '.join(f'{k}: trained with {a!r}, --config gives {b!r}'
                           for k, (a, b) in list(differ.items())[:8])
        fix = ' '.join(f'--config.{k}={a!r}' for k, (a, _) in list(differ.items())[:3])
        raise UserError(f'Workdir {workdir!r} was trained with another model ({detail}): '
                        f'pass the trained settings ({fix}) or leave out --config.')


def _plain(value):
    """JSON's view of a value: tuples as lists, recursively."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_config(config, workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, CONFIG_FILE), config_to_dict(config), sort_keys=True)


def write_results(results: dict, workdir: str, name: str = RESULTS_FILE) -> str:
    return write_json(os.path.join(workdir, name), results)


def evaluated(config) -> tuple[str, str]:
    """(protocol, dataset) an evaluation with this config scores."""
    e = config.get('eval', {})
    if e.get('protocol', 'intra') == 'inter':
        return 'inter', str(e.get('dataset'))
    return 'intra', str(config.data.name)


def results_file_for(config, workdir: str) -> str:
    """Where `--mode=evaluate` writes: `results.json` when it scores what the training
    run's own evaluation scored (the same protocol and dataset), else
    `results_<protocol>_<dataset>.json` beside it, so that evaluating a workdir on
    another dataset never overwrites the run's results."""
    try:
        own = evaluated(load_config(workdir))
    except FileNotFoundError:
        return RESULTS_FILE
    protocol, dataset = evaluated(config)
    return RESULTS_FILE if (protocol, dataset) == own else f'results_{protocol}_{dataset}.json'


def load_config(workdir: str) -> ml_collections.ConfigDict:
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
                          move_aside: bool = False, partial: bool = False):
    """(step, restored state) of the newest checkpoint that restores, or (None, None)
    when there is none.

    `target` is the abstract tree to restore (`jax.ShapeDtypeStruct` leaves): the whole
    train state, or with `partial` a subtree of it (the hypernetwork's variables without
    the optimizer state, which is then not read).

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
            if partial:   # a partial restore would not notice a checkpoint without metadata
                ocp.PyTreeCheckpointHandler().metadata(
                    epath.Path(mngr.directory) / str(step) / 'default')
            state = mngr.restore(step, args=_restore_args(target, partial))
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


def _restore_args(target, partial: bool):
    if not partial:
        return ocp.args.StandardRestore(target)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          target)
    return ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(target))


def restore_hypernet(workdir: str, config=None):
    """(config, model, spec, hypernet variables) from a trained workdir's newest intact
    checkpoint."""
    return restore_hypernet_with_step(workdir, config)[:4]


def restore_hypernet_with_step(workdir: str, config=None):
    """`restore_hypernet` and the step of the checkpoint it restored. Only the
    hypernetwork's variables ({'params', 'batch_stats'}; the params with the task's
    beside them) are read, not the optimizer state; when the workdir was trained with
    `train.ema_decay` (its saved config), the averaged parameters (`ema_params`) are read
    as the params, whatever a `config` given now says."""
    # Whether the checkpoint keeps an average is what the workdir was trained with, not
    # what a --config given now says (a partial restore of a leaf it lacks would fail).
    if config is None:
        config = trained = load_config(workdir)
    else:
        check_architecture(config, workdir)
        trained = (load_config(workdir) if os.path.exists(os.path.join(workdir, CONFIG_FILE))
                   else config)
    model, spec = build_model(config)
    from pudnet_jax import tasks
    from pudnet_jax.train import ema_decay
    abstract = jax.eval_shape(lambda: tasks.init_variables(config, model, spec, seed=0))
    mngr = checkpoint_manager(workdir, config)
    averaged = bool(ema_decay(trained))
    if averaged:
        abstract = {'ema_params': abstract['params'], 'batch_stats': abstract['batch_stats']}
    step, variables = restore_newest_intact(mngr, abstract, workdir, partial=True)
    if step is None:
        raise FileNotFoundError(f'No checkpoint in {os.path.join(workdir, "checkpoints")}: '
                                f'train there first (--mode=train).')
    if averaged:
        variables = {'params': variables['ema_params'], 'batch_stats': variables['batch_stats']}
    return config, model, spec, variables, step
