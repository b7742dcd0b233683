"""Tasks: what a generated network is for, chosen by `config.task` (as big_vision's
trainers pick their task module). `train.py` knows no task; a task module supplies:

    load(config) -> data                 the training data (opaque to the trainer)
    make_sampler(config, data)           episodes for the training steps
                                         (`input_pipeline.make_feed` draws from it)
    check(config, data, spec)            fail on bad evaluation settings before training
    sketch_images(batch)                 (E, n, H, W, C): the images each episode's sketch
                                         is the mean feature of
    pretrained_target(config, spec, data)   optional: (target variables, seconds), the
                                         network `model.base_init='pretrained'` starts
                                         residual generation's base from
    init_params(config, spec, seed)      the task's own trainable parameters (e.g. the
                                         classification head), a dict kept beside the
                                         hypernetwork's in the train state's `params`
    make_episode_loss(config, spec)      (task params, generated target params, episode)
                                         -> (loss, metrics dict), per episode
    make_sketch_adaptation(config, model, spec)   optional: None, or (hyper params, task
                                         params, sketch, episode) -> the sketch the
                                         episode's network is generated from
    Metrics                              a clu `metrics.Collection` of those metrics
    PROGRESS                             (metric, label) on the progress line
    validation_curve(config, model, spec, data, workdir, start_step) -> curve or None
    evaluate(config, model, spec, hyper_vars, data, workdir) -> results dict (with controls)
                                         (optionally a `split` argument: 'validation'
                                         scores the validation groups alone, for
                                         `--mode=evaluate --split=validation`)
    summary_scalars(results) -> {tag: value}   the evaluation's TensorBoard scalars
    record(config, data, workdir)        what the run trains and is tested on, in the workdir
    TARGET_OUTPUT                        'features' or 'image': the targets it can train
                                         (`TargetSpec.output`; checked by `config_check`)
    MODES                                the `--mode`s it supports (train, evaluate, ...)
    check_folder(folder)                 --data: refuse a folder of the wrong layout early
    predict_folder(workdir, folder, config, baselines, clean_folder)   --mode=predict --data
    predict_and_save(workdir)            --mode=predict without --data
    compare(workdir, config)             --mode=compare: PudNet against baselines
    COMPARE_METHODS                      the baselines `config.compare.methods` may name

Adding a task is adding a module (or a package: `denoising/`) here and its name to
`TASKS`.
"""

from __future__ import annotations

import importlib

TASKS = {'classification': 'pudnet_jax.tasks.classification',
         'denoising': 'pudnet_jax.tasks.denoising'}
DEFAULT = 'classification'


def get(name: str):
    """The task module called `name`."""
    if name not in TASKS:
        raise ValueError(f'config.task must be one of {sorted(TASKS)}; got {name!r}.')
    return importlib.import_module(TASKS[name])


def of(config):
    """The task module of a config (configs saved before `config.task` existed:
    classification)."""
    return get(config.get('task', DEFAULT))


def split_params(task, params: dict) -> tuple[dict, dict]:
    """(the hypernetwork's params, the task's params) out of a train state's `params`,
    which holds both side by side (the task's under the names `task.PARAM_NAMES`)."""
    names = set(task.PARAM_NAMES)
    return ({k: v for k, v in params.items() if k not in names},
            {k: v for k, v in params.items() if k in names})


def init_variables(config, model, spec, seed: int) -> dict:
    """The train state's initial {'params', 'batch_stats'}: the hypernetwork's
    (`hypernet.init_variables`) and, beside its params, the task's."""
    from pudnet_jax.hypernet import init_variables as init_hypernet
    task = of(config)
    variables = init_hypernet(model, spec, seed)
    extra = task.init_params(config, spec, seed)
    clash = set(extra) & set(variables['params'])
    if clash:
        raise ValueError(f'Task {config.get("task", DEFAULT)!r} parameters {sorted(clash)} '
                         f'collide with the hypernetwork\'s.')
    return {'params': {**variables['params'], **extra}, 'batch_stats': variables['batch_stats']}
