"""Baselines, ablation configs and --mode=compare."""

import csv
import importlib
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import test as test_config
from pudnet_jax import baselines, compare
from pudnet_jax import data as data_lib
from pudnet_jax import train as train_lib
from pudnet_jax.hypernet import build_model
from pudnet_jax.tasks import classification


def test_gradient_centralization_flax_layout():
    g = {'conv': jax.random.normal(jax.random.PRNGKey(0), (3, 3, 4, 5)),
         'dense': jax.random.normal(jax.random.PRNGKey(1), (6, 2)),
         'bias': jnp.arange(5.0)}
    out, _ = baselines.gradient_centralization().update(g, optax.EmptyState())
    conv = np.asarray(g['conv'])
    for o in range(5):          # per output channel: mean over (kh, kw, C_in) removed
        np.testing.assert_allclose(out['conv'][..., o], conv[..., o] - conv[..., o].mean(),
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out['conv']).mean(axis=(0, 1, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(out['dense'], g['dense'] - g['dense'].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(out['bias'], g['bias'])      # vectors untouched
    # optax.centralize averages over all axes but the first (PyTorch's output axis).
    wrong, _ = optax.centralize().update(g, optax.EmptyState())
    assert not np.allclose(wrong['conv'], out['conv'])


def test_time_to_reach_interpolates_along_the_curve():
    secs, accs = [1.0, 2.0, 4.0], [0.5, 0.7, 0.9]
    assert compare.time_to_reach(secs, accs, 0.8, chance=0.25) == pytest.approx(3.0)
    assert compare.time_to_reach(secs, accs, 0.5, chance=0.25) == pytest.approx(1.0)
    assert compare.time_to_reach(secs, accs, 0.3, chance=0.25) == pytest.approx(0.2)
    assert compare.time_to_reach(secs, accs, 0.95, chance=0.25) is None


def test_group_trainer_learns_and_fine_tuning_starts_from_given_weights():
    config = test_config.get_config()
    _, spec = build_model(config)
    pool = data_lib.load_pool('mnist5k', 28, 1)
    group = data_lib.EpisodeSampler(pool, [6, 7], 2, 8, 10, seed=0).sample(0, 1)[0]
    trainer = baselines.GroupTrainer(spec, 2, 4, 'gc')
    accs, secs = trainer.curve(group, 3e-3, [1, 15], seed=0)
    assert secs[0] < secs[1] and accs[1] >= 0.8
    # The learning rate really is applied: the same run at another rate ends elsewhere.
    params = lambda lr: trainer.init(jax.random.PRNGKey(0))['params']
    opt_state = lambda lr: baselines.init_opt_state(trainer.tx, params(lr), lr)
    lr_of = lambda st: [float(s.hyperparams['learning_rate']) for s in jax.tree.leaves(
        st, is_leaf=lambda s: hasattr(s, 'hyperparams')) if hasattr(s, 'hyperparams')]
    assert lr_of(opt_state(1e-4)) == [pytest.approx(1e-4)]
    epoch = lambda lr: trainer.epoch(params(lr), trainer.init(jax.random.PRNGKey(0))['batch_stats'],
                                     opt_state(lr), group.support, group.support_labels, 0)[0]
    slow, fast = epoch(1e-5), epoch(1e-2)
    moved = lambda p: float(sum(jnp.abs(a - b).sum() for a, b in zip(
        jax.tree.leaves(p), jax.tree.leaves(params(0)))))
    assert moved(fast) > 10 * moved(slow)
    given = {'params': baselines.random_init_params(spec, 3),
             'batch_stats': spec.zero_batch_stats()}
    variables = trainer.init(jax.random.PRNGKey(0), given)
    jax.tree.map(np.testing.assert_array_equal, variables['params']['target'], given['params'])


@pytest.mark.parametrize('name,zero_parts', [('ablation_metric_only', ('l2_full_head', 'l3_consistency')),
                                             ('ablation_no_kl', ('l3_consistency',)),
                                             ('ablation_no_ahru', ())])
def test_ablation_configs(name, zero_parts):
    config = test_config.shrink(importlib.import_module(f'configs.{name}').get_config())
    model, spec = build_model(config)
    assert model.use_ahru == (name != 'ablation_no_ahru')
    state = train_lib.create_train_state(config, model, spec)
    pool = data_lib.load_pool('mnist5k', 28, 1)
    t = config.train
    batch = data_lib.EpisodeSampler(pool, config.data.train_classes, t.ways, t.shots, t.queries,
                                    seed=0).sample(0, 1)
    _, metrics = train_lib.make_train_step(config, model, spec)(state, batch)
    parts = metrics.compute()
    for key in ('l2_full_head', 'l3_consistency'):
        assert (parts[key] == 0) == (key in zero_parts), (key, parts[key])
    if name == 'ablation_no_ahru':
        assert 'ahru' not in state.params


def test_loss_weights_are_checked():
    config = test_config.get_config()
    assert classification.loss_weights(config.loss) == (config.loss.metric_weight,
                                                   config.loss.kl_weight)
    config.loss.kl_weight = -1.0
    with pytest.raises(ValueError, match='config.loss.kl_weight'):
        classification.loss_weights(config.loss)
    # The train step optimises exactly λ1·L1 + L2 + λ3·L3 (its logged 'loss').
    config = test_config.get_config()
    config.loss.metric_weight, config.loss.kl_weight = 0.25, 2.0
    model, spec = build_model(config)
    t = config.train
    batch = data_lib.EpisodeSampler(data_lib.load_pool('mnist5k', 28, 1), config.data.train_classes,
                                    t.ways, t.shots, t.queries, seed=0).sample(0, 2)
    _, metrics = train_lib.make_train_step(config, model, spec)(
        train_lib.create_train_state(config, model, spec), batch)
    parts = metrics.compute()
    assert parts['l1_metric'] > 0 and parts['l3_consistency'] > 0
    np.testing.assert_allclose(parts['loss'], 0.25 * parts['l1_metric'] + parts['l2_full_head']
                               + 2.0 * parts['l3_consistency'], rtol=1e-5)
    metric_only = importlib.import_module('configs.ablation_metric_only').get_config()
    assert classification.loss_weights(metric_only.loss)[0] > 0
    metric_only.loss.metric_weight = 0.0
    with pytest.raises(ValueError, match='nothing would be trained'):
        classification.loss_weights(metric_only.loss)


def test_compare_mode_writes_tables_plot_and_json(trained_workdir):
    summary = compare.run_compare(trained_workdir, test_config.get_config())
    methods = [r['method'] for r in summary['rows']]
    for expected in ('PudNet', 'Untrained + prototypes', 'Mean-sketch network', 'Pretrained',
                     'ProtoNet',
                     'Adam scratch 1 epoch', 'GC scratch 2 epochs', 'Fine-tune PudNet 1 epoch',
                     'Fine-tune Pretrained 1 epoch'):
        assert expected in methods
    for name in ('compare.md', 'compare.csv', 'compare.png', 'compare.json'):
        assert os.path.getsize(os.path.join(trained_workdir, name)) > 0
    with open(os.path.join(trained_workdir, 'compare.csv')) as f:
        assert len(list(csv.DictReader(f))) == len(summary['rows'])
    with open(os.path.join(trained_workdir, 'compare.json')) as f:
        on_disk = json.load(f)
    assert on_disk['speedup']['pudnet_seconds'] > 0 and 'text' in on_disk['speedup']
    for key in ('conditioning_gain', 'conditioning_gain_ci95', 'controls', 'roles', 'verdict'):
        assert key in on_disk
    with open(os.path.join(trained_workdir, 'compare.md')) as f:
        md = f.read()
    assert 'Speedup at equal accuracy' in md and '| PudNet |' in md
    with open(os.path.join(trained_workdir, 'compare.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert all(0 <= r['accuracy'] <= 1 for r in summary['rows'])


def test_refined_sketch_against_a_training_curve_at_equal_wall_time():
    class Curve:                     # what compare reads of evaluate.Refined
        milestones = (1, 4)
        curve = {1: ([0.5, 0.6, 0.7], [9.0, 1.0, 1.0]),     # the first time: compilation
                 4: ([0.7, 0.8, 0.9], [9.0, 3.0, 5.0])}
    per_group = [([0.4, 0.8], [0.5, 2.0]), ([0.6, 0.6], [0.5, 2.0]), ([0.2, 0.5], [2.0, 4.0])]
    out = compare.equal_time(Curve, per_group, chance=0.2)
    # At 1.0 s (the median of the later groups): 0.4 + (0.5 / 1.5) * 0.4, 0.6, 0.2 + 0.5 * 0.0.
    base = np.array([0.4 + 0.4 / 3, 0.6, 0.2])
    assert out[0]['steps'] == 1 and out[0]['seconds'] == 1.0
    np.testing.assert_allclose(out[0]['baseline'], base.mean())
    np.testing.assert_allclose(out[0]['difference'], np.mean(np.array([0.5, 0.6, 0.7]) - base))
    assert not out[0]['beyond_curve']
    # At 4.0 s: past the first two groups' last epoch (flat there), the third's last point.
    np.testing.assert_allclose(out[1]['baseline'], np.mean([0.8, 0.6, 0.5]))
    assert out[1]['seconds'] == 4.0 and out[1]['beyond_curve']


def test_compare_scores_the_refinement_after_each_milestone(trained_workdir, tmp_path):
    config = test_config.get_config()
    config.eval.refine_steps, config.eval.refine_lr = 2, 0.3
    config.compare.refine_milestones = (1,)
    config.compare.methods = ('adam',)
    config.compare.epochs = (1, 2)
    workdir = str(tmp_path / 'w')
    shutil.copytree(trained_workdir, workdir, ignore=shutil.ignore_patterns('.lock'))
    summary = compare.run_compare(workdir, config)
    rows = {r['method']: r for r in summary['rows']}
    one, two = rows['PudNet + refined sketch, 1 step'], rows['PudNet + refined sketch']
    assert (one['epochs'], two['epochs']) == (1, 2)
    assert summary['refined']['accuracy'] == two['accuracy']
    assert summary['refined_curve']['steps'] == [1, 2]
    assert summary['refined_curve']['accuracy'] == [one['accuracy'], two['accuracy']]
    pts = summary['refined_at_equal_time']['Adam scratch']
    assert [p['steps'] for p in pts] == [1, 2]
    for p, r in zip(pts, (one, two)):
        assert p['refined'] == pytest.approx(r['accuracy'])
        assert p['difference'] == pytest.approx(p['refined'] - p['baseline'])
    with open(os.path.join(workdir, 'compare.md')) as f:
        assert '**At equal wall time** (Adam scratch' in f.read()
