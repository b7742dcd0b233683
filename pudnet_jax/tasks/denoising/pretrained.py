"""The Pretrained-N2V control (DENOISING.md §5.3): one UNet of the run's target, trained
with the task's Noise2Void loss on the training groups PudNet trained on (the same
sampler, steps, groups per step and learning rate), not generated. It is what the
hypernetwork must beat to have added anything: a single network fitted to the pool.

Trained once per workdir, at the first evaluation (`eval.pretrained_n2v`), and kept in
`<workdir>/pretrained_n2v/` (Orbax variables + network.json, written atomically), so
`--mode=evaluate` and `--mode=compare` reuse it."""

import os

from absl import logging

from pudnet_jax import predict as predict_lib

DIR = 'pretrained_n2v'


def path(workdir: str) -> str:
    return os.path.join(workdir, DIR)


def load(workdir: str):
    """The saved control's UNet params, or None when the workdir has none."""
    p = path(workdir)
    if not (os.path.isdir(p) or os.path.isdir(p + predict_lib.PREVIOUS_SUFFIX)):
        return None
    _, variables, _ = predict_lib.load_variables(p)
    return variables['params']


def ensure(config, spec, loaded, workdir: str):
    """The control's params: loaded from the workdir, else trained there and saved."""
    params = load(workdir)
    if params is not None:
        return params
    from pudnet_jax.tasks import denoising as task
    from pudnet_jax.tasks.denoising import baselines
    steps = int(config.train.num_train_steps)
    logging.info('Training the Pretrained-N2V control: the %s UNet itself with the '
                 'Noise2Void loss, %d steps on the training groups.', spec.name, steps)
    params, seconds = baselines.pretrain_n2v(config, spec, task.make_sampler(config, loaded),
                                             steps, int(config.seed))
    predict_lib.save_variables(path(workdir), {'params': params},
                               {'target': spec.name, 'width': int(config.target.width),
                                'image_shape': list(spec.image_shape),
                                'what': 'Pretrained-N2V control', 'steps': steps,
                                'episodes_per_step': int(config.train.episodes_per_step),
                                'train_seconds': float(seconds), 'seed': int(config.seed)})
    return params
