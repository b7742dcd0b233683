"""The task seam (`config.task`, `pudnet_jax/tasks/`): the trainer knows no task.

A task written here, outside the package, with no classes and no labels (it asks the
generated network's features of an unlabelled set to match a learned vector), trains,
checkpoints, resumes and evaluates through the unchanged `train.train_and_evaluate`:
adding a task is adding a module and its name.
"""

import json
import os
import textwrap

import jax
import numpy as np
import pytest

from configs import test as test_config
from pudnet_jax import config_check, tasks
from pudnet_jax import train as train_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.errors import UserError
from pudnet_jax.hypernet import build_model, init_variables

TOY_TASK = '''
import flax, flax.linen as nn, jax, jax.numpy as jnp, numpy as np
from clu import metrics
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.files import write_json
from pudnet_jax.targets import apply_with_dataset_stats

PARAM_NAMES = ('feature_goal',)
TARGET_OUTPUT = 'features'
MODES = ('train', 'evaluate')
PROGRESS = ('spread', 'spread')
SEEN = {}


@flax.struct.dataclass
class Sets:
    images: jnp.ndarray                # (E, n, H, W, C), no labels


class Sampler:
    def __init__(self, images, n, seed):
        self.images, self.n, self.seed = images, n, seed

    def sample_indices(self, step, count):
        rng = np.random.default_rng([self.seed, step])
        return np.stack([rng.choice(len(self.images), self.n, replace=False)
                         for _ in range(count)])

    def episodes(self, indices):
        return Sets(self.images[indices])


def load(config):
    rng = np.random.default_rng(0)
    s = config.data.image_size
    return {'train': rng.normal(size=(40, s, s, 1)).astype(np.float32),
            'test': rng.normal(size=(12, s, s, 1)).astype(np.float32)}


def make_sampler(config, data):
    return Sampler(data['train'], 6, config.seed)


def check(config, data, spec):
    SEEN['checked'] = True


def sketch_images(batch):
    return batch.images


def init_params(config, spec, seed):
    return {'feature_goal': jnp.ones((spec.feature_dim,), jnp.float32)}


@flax.struct.dataclass
class Metrics(metrics.Collection):
    loss: metrics.Average.from_output('loss')
    spread: metrics.Average.from_output('spread')


def _loss(spec, goal, generated, images):
    feats, _, _ = apply_with_dataset_stats(spec, generated, images)
    loss = jnp.mean(jnp.square(feats - goal))
    return loss, {'loss': loss, 'spread': jnp.std(feats)}


def make_episode_loss(config, spec):
    def episode_loss(task_params, generated, ep):
        return _loss(spec, task_params['feature_goal'], generated, ep.images)
    return episode_loss


def validation_curve(config, model, spec, data, workdir, start_step):
    return None


def evaluate(config, model, spec, hyper_vars, data, workdir):
    x = jnp.asarray(data['test'])
    sketch = model.apply(hyper_vars, x, method='encode').mean(0)
    generated = model.apply(hyper_vars, sketch, method='generate')
    loss, _ = _loss(spec, hyper_vars['params']['feature_goal'], generated, x)
    return {'test_loss': float(loss)}


def summary_scalars(results):
    return {'eval/test_loss': results['test_loss']}


def record(config, data, workdir):
    write_json(workdir + '/toy.json', {'train_sets': len(data['train'])})
'''


@pytest.fixture
def toy_task(tmp_path, monkeypatch):
    (tmp_path / 'toy_task.py').write_text(textwrap.dedent(TOY_TASK))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(tasks.TASKS, 'toy', 'toy_task')
    return tasks.get('toy')


def _toy_config():
    config = test_config.get_config()
    config.task = 'toy'
    config.train.input = 'host'
    config.train.episodes_per_step = 2
    config.train.num_train_steps = 4
    return config


def test_a_task_outside_the_package_trains_resumes_and_evaluates(toy_task, tmp_path):
    config = _toy_config()
    model, spec = build_model(config)
    state = train_lib.create_train_state(config, model, spec)
    assert 'feature_goal' in state.params and 'full_head' not in state.params
    step = train_lib.make_train_step(config, model, spec)
    data = toy_task.load(config)
    sampler = toy_task.make_sampler(config, data)
    batch = sampler.episodes(sampler.sample_indices(1, 2))
    losses = []
    start = jax.tree.map(np.asarray, state.params['generators_3x3x8x8'])   # the step donates
    for _ in range(5):
        state, m = step(state, batch)
        losses.append(float(m.compute()['loss']))
    assert losses[-1] < losses[0]
    # The task's own parameter and the hypernetwork's both learned.
    assert not np.allclose(state.params['feature_goal'], 1.0)
    moved = jax.tree.map(lambda a, b: bool(np.any(a != np.asarray(b))),
                         start, state.params['generators_3x3x8x8'])
    assert any(jax.tree.leaves(moved))

    workdir = str(tmp_path / 'run')
    assert train_lib.train_and_evaluate(config, workdir, stop_after_step=2) == {
        'stopped_at_step': 2}
    results = train_lib.train_and_evaluate(config, workdir)
    assert results['resumed_from_step'] == 2 and np.isfinite(results['test_loss'])
    assert toy_task.SEEN['checked']
    with open(os.path.join(workdir, 'toy.json')) as f:
        assert json.load(f) == {'train_sets': 40}
    # The restored hypernetwork holds the task's parameter beside its own.
    _, _, _, hyper = workdir_lib.restore_hypernet(workdir)
    assert hyper['params']['feature_goal'].shape == (spec.feature_dim,)


def test_classification_owns_its_head_and_temperature():
    config = test_config.get_config()
    config.loss.learn_temperature = True
    model, spec = build_model(config)
    own = init_variables(model, spec, 0)['params']
    assert not set(own) & {'full_head', 'log_tau'}
    with_task = tasks.init_variables(config, model, spec, 0)['params']
    assert set(with_task) - set(own) == {'full_head', 'log_tau'}
    assert with_task['full_head']['kernel'].shape == (spec.feature_dim,
                                                      len(config.data.train_classes))
    from pudnet_jax.tasks import classification
    tau = classification.tau(with_task, classification.tau_setting(config))
    np.testing.assert_allclose(tau, config.loss.temperature, rtol=1e-6)


def test_an_unknown_task_is_refused_naming_the_choices():
    config = test_config.get_config()
    config.task = 'segmentation'
    with pytest.raises(UserError, match=r"config.task='segmentation'.*classification"):
        config_check.validate(config)
    with pytest.raises(ValueError, match='config.task must be one of'):
        tasks.get('segmentation')
