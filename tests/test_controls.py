"""Honest evaluation: the controls, the disjoint roles, prediction sets apart from the
labelled shots, and the ProtoNet baseline's ways."""

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from checks import untrained_numpy
from configs import test as test_config
from pudnet_jax import baselines, controls
from pudnet_jax import data as data_lib
from pudnet_jax import evaluate
from pudnet_jax import train as train_lib
from pudnet_jax.hypernet import PudNet
from pudnet_jax.targets import random_init_params
from pudnet_jax.hypernet import build_model


def _unique_pool(classes, per_class, size=8):
    """Every image different (its index written in its pixels), to check disjointness."""
    pool = {}
    for c in classes:
        idx = np.arange(per_class)
        img = np.zeros((per_class, size, size, 1), np.uint8)
        img[:, 0, 0, 0], img[:, 0, 1, 0], img[:, 0, 2, 0] = c, idx % 256, idx // 256
        pool[c] = img
    return pool


def _keys(images):
    return {im.tobytes() for im in np.asarray(images)}


def test_roles_are_disjoint_in_classes_and_images():
    pool = _unique_pool(range(10), 500)
    roles = data_lib.split_roles(pool, range(6), (), [6, 7, 8, 9], 0.3, seed=0)
    (val, val_classes), (test, test_classes) = roles.validation, roles.test
    assert val_classes == test_classes == [6, 7, 8, 9] and roles.train[1] == list(range(6))
    for c in test_classes:
        assert len(val[c]) == 150 and len(test[c]) == 350
        assert not _keys(val[c]) & _keys(test[c])
    # Groups drawn from either role never share an image.
    val_g = data_lib.EpisodeSampler(val, val_classes, 4, 10, 15, seed=1).sample(0, 50)
    test_g = data_lib.EpisodeSampler(test, test_classes, 4, 10, 15, seed=1).sample(0, 50)
    as_uint8 = lambda x: np.round((x * 0.5 + 0.5) * 255).astype(np.uint8)
    seen_val = _keys(as_uint8(val_g.support).reshape((-1, 8, 8, 1))) | _keys(
        as_uint8(val_g.query).reshape((-1, 8, 8, 1)))
    seen_test = _keys(as_uint8(test_g.support).reshape((-1, 8, 8, 1))) | _keys(
        as_uint8(test_g.query).reshape((-1, 8, 8, 1)))
    assert seen_val and seen_test and not seen_val & seen_test
    # With validation classes (the few-shot literature's 64/16/20), roles are classes.
    big = _unique_pool(range(20), 5)
    r = data_lib.split_roles(big, range(12), range(12, 16), range(16, 20), 0.3)
    assert r.validation[1] == [12, 13, 14, 15] and r.test[1] == [16, 17, 18, 19]
    assert set(r.validation[0]) == {12, 13, 14, 15} and len(r.test[0][16]) == 5
    with pytest.raises(ValueError, match=r'val_classes and config.data.test_classes must be '
                                         r'disjoint; both contain \[16\]'):
        data_lib.split_roles(big, range(12), range(12, 17), range(16, 20), 0.3)
    with pytest.raises(ValueError, match=r'train_classes and config.data.test_classes.*\[5\]'):
        data_lib.split_roles(big, range(6), (), range(5, 9), 0.3)


def test_presets_have_three_disjoint_roles():
    import importlib
    for name in ('default', 'fashion', 'cifar100', 'imagenet100', 'imagenet1k'):
        d = importlib.import_module(f'configs.{name}').get_config().data
        train, val, test = set(d.train_classes), set(d.val_classes), set(d.test_classes)
        assert not train & val and not train & test and not val & test, name
        if name in ('cifar100', 'imagenet100'):
            assert (len(train), len(val), len(test)) == (64, 16, 20)


def test_evaluation_groups_of_validation_and_test_never_share_an_image():
    config = test_config.get_config()
    pool = data_lib.load_pool('mnist5k', 28, 1)
    keys = lambda sampler: set().union(*(_keys(np.concatenate([g.support, g.query]))
                                         for g in (sampler.sample(i, 1)[0] for i in range(30))))
    val = keys(evaluate.group_sampler(config, pool, 'validation'))
    test = keys(evaluate.group_sampler(config, pool, 'test'))
    assert val and test and not val & test


def test_prediction_shots_apart_from_labelled_shots():
    config = test_config.get_config()
    config.eval.prediction_shots = 7
    pool = data_lib.load_pool('mnist5k', 28, 1)
    group = evaluate.group_sampler(config, pool).sample(0, 1)[0]
    ways, shots = config.eval.ways, config.eval.shots
    assert group.support.shape[0] == ways * 7 and group.query.shape[0] == ways * 4
    images, labels = evaluate.labelled(group, ways, shots)
    assert images.shape[0] == ways * shots
    np.testing.assert_array_equal(labels, np.repeat(np.arange(ways), shots))
    np.testing.assert_array_equal(images[shots:2 * shots], group.support[7:7 + shots])
    config.eval.prediction_shots = 2
    with pytest.raises(ValueError, match=r'prediction_shots \(2\) must be >= config.eval.shots'):
        evaluate.group_sampler(config, pool)


def _untrained_hyper(config):
    model, spec = build_model(config)
    state = train_lib.create_train_state(config, model, spec)
    return model, spec, {'params': state.params, 'batch_stats': state.batch_stats}


def test_untrained_hypernetwork_has_no_conditioning_gain(tmp_path):
    config = test_config.get_config()
    config.eval.groups, config.eval.prediction_shots = 30, 10
    model, spec, hyper = _untrained_hyper(config)
    pool = data_lib.load_pool('mnist5k', 28, 1)
    r = evaluate.evaluate(config, model, spec, hyper, pool, str(tmp_path))
    assert abs(r['conditioning_gain']) <= 0.02
    assert r['conditioning_gain'] - r['conditioning_gain_ci95'] <= 0 <= (
        r['conditioning_gain'] + r['conditioning_gain_ci95'])
    assert set(r['controls']) == {'untrained', 'mean_sketch'}
    assert r['controls']['untrained']['networks'] == config.eval.untrained_seeds
    assert os.path.exists(os.path.join(str(tmp_path), controls.MEAN_SKETCH_FILE))
    # The gain is paired: PudNet − mean sketch, group by group.
    assert r['conditioning_gain'] == pytest.approx(
        r['accuracy'] - r['controls']['mean_sketch']['accuracy'], abs=1e-9)


class SketchDecides(PudNet):
    """A hand-built hypernetwork: the untrained generators, except that the one sketch
    `reference` (the training pool's mean sketch) gets all-zero layer embeddings, which
    the untrained generators (zero biases) turn into all-zero kernels."""
    reference: Any = None

    def layer_embeddings(self, sketch):
        off = jnp.all(sketch == jnp.asarray(self.reference, sketch.dtype))
        return super().layer_embeddings(sketch) * jnp.where(off, 0.0, 1.0)


def test_a_hypernetwork_whose_kernels_follow_the_sketch_has_a_positive_gain(tmp_path):
    config = test_config.get_config()
    config.eval.groups = 20
    model, spec, hyper = _untrained_hyper(config)
    pool = data_lib.load_pool('mnist5k', 28, 1)
    reference = controls.mean_sketch(config, model, hyper, pool, str(tmp_path))
    decided = SketchDecides(**{f: getattr(model, f) for f in (
        'spec', 'sketch_dim', 'sketch_features', 'generator_p', 'generator_hidden', 'eta',
        'use_ahru')},
        reference=tuple(float(v) for v in reference))
    r = evaluate.evaluate(config, decided, spec, hyper, pool, str(tmp_path))
    zero = jax.jit(lambda h, s: decided.apply(h, s, method=PudNet.generate))(hyper, reference)
    assert all(not np.any(zero[f'conv{i}']['kernel']) for i in range(3))
    # The mean-sketch network is all zeros: every score ties, chance accuracy.
    assert r['controls']['mean_sketch']['accuracy'] == pytest.approx(1 / config.eval.ways)
    assert r['conditioning_gain'] - r['conditioning_gain_ci95'] > 0.1
    assert 'above the mean-sketch network' in controls.verdict(r)


def test_untrained_control_matches_an_independent_numpy_computation():
    config = test_config.get_config()
    _, spec = build_model(config)
    pool = data_lib.load_pool('mnist5k', 28, 1)
    sampler = evaluate.group_sampler(config, pool)
    e = config.eval
    scores = evaluate.make_scores_fn(spec, e.ways)
    for g in range(5):
        group = sampler.sample(g, 1)[0]
        params = random_init_params(spec, controls.UNTRAINED_SEED + g)
        kernels = [np.asarray(params[f'conv{i}']['kernel']) for i in range(3)]
        ours = evaluate.control_accuracies(spec, {'untrained': [params]}, scores, group,
                                           e.ways, e.shots)['untrained'][0]
        assert ours == untrained_numpy.group_accuracy(kernels, group, e.ways, e.shots)
        # Features agree to float tolerance on the same weights.
        variables = evaluate.make_stats_fn(spec)(params, group.support)
        flax_f = np.asarray(spec.module().apply(variables, group.query, train=False))
        np_f = untrained_numpy.convnet3_features(kernels, group.support, group.query)[1]
        np.testing.assert_allclose(flax_f, np_f, rtol=1e-3, atol=1e-4)
    # The NumPy initialiser has Flax's variance.
    import flax.linen as nn
    shape = (3, 3, 64, 64)
    k = untrained_numpy.truncated_lecun_normal(np.random.default_rng(0), shape)
    flax_k = np.asarray(nn.Conv(64, (3, 3)).kernel_init(jax.random.PRNGKey(0), shape))
    assert k.std() == pytest.approx(flax_k.std(), rel=0.02)
    assert np.abs(k).max() == pytest.approx(np.abs(flax_k).max(), rel=0.02)


def test_protonet_builds_centroids_with_the_training_episodes_ways(monkeypatch):
    config = test_config.get_config()
    _, spec = build_model(config)
    pool = data_lib.load_pool('mnist5k', 28, 1)
    train_sampler = data_lib.EpisodeSampler(pool, config.data.train_classes, 2, 3, 2, seed=0)
    config.eval.ways = 4   # validation groups wider than the training episodes (imagenet1k: 200 vs 5)
    val = [evaluate.group_sampler(config, pool, 'validation').sample(0, 1)[0]]
    seen = []
    real = baselines.class_centroids

    def recording(features, labels, num_classes):
        seen.append(num_classes)
        return real(features, labels, num_classes)
    monkeypatch.setattr(baselines, 'class_centroids', recording)
    params, _, _, acc = baselines.train_protonet(spec, train_sampler, val, 2, 2, 1, 1e-3, 10.0,
                                                 0, config.eval.ways, config.eval.shots)
    assert seen and set(seen) == {2}
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params)) and 0 <= acc <= 1


def test_results_json_has_the_controls_and_validation(trained_workdir):
    with open(os.path.join(trained_workdir, 'results.json')) as f:
        r = json.load(f)
    for key in ('controls', 'conditioning_gain', 'conditioning_gain_ci95', 'validation',
                'prediction_shots', 'roles'):
        assert key in r
    for name in ('untrained', 'mean_sketch'):
        assert set(r['controls'][name]) >= {'accuracy', 'ci95'}
        assert 0 <= r['controls'][name]['accuracy'] <= 1
    assert r['validation']['groups'] == test_config.get_config().eval.val_groups
    assert 'conditioning_gain' in r['validation']


def test_the_pretrained_control_is_compares_network_scored_like_pudnets(trained_workdir,
                                                                        tmp_path, monkeypatch):
    """eval.pretrained_control: the Pretrained baseline's network as a third control. Its
    accuracy equals the baselines' own prototype scoring of `compare.train_pretrained`'s
    network on the same groups; it is cached in the workdir (a second evaluation trains
    nothing) and its paired gain is PudNet − pretrained."""
    import shutil
    from pudnet_jax import compare
    from pudnet_jax import workdir as workdir_lib
    workdir = str(tmp_path / 'w')
    shutil.copytree(trained_workdir, workdir)
    config, model, spec, hyper = workdir_lib.restore_hypernet(workdir)
    config.eval.pretrained_control = True
    pool = data_lib.load_pool(config.data.name, 28, 1)
    r = evaluate.evaluate(config, model, spec, hyper, pool, workdir, quiet=True)
    assert os.path.exists(os.path.join(workdir, controls.PRETRAINED_FILE))
    target = compare.train_pretrained(config, spec, pool)[0]
    proto = baselines.prototype_accuracy_fn(spec, config.eval.ways, config.eval.shots)
    sampler = evaluate.group_sampler(config, pool, 'test')
    expected = np.mean([proto(target['params'], sampler.sample(g, 1)[0])
                        for g in range(config.eval.groups)])
    assert abs(r['controls']['pretrained']['accuracy'] - expected) < 1e-6
    assert abs(r['gain_over_pretrained']
               - (r['accuracy'] - r['controls']['pretrained']['accuracy'])) < 1e-9
    assert 'gain over pretrained' in evaluate.format_results(r)
    # The task's results keep its paired gain in their validation block too.
    from pudnet_jax.tasks import classification
    v = classification.evaluate(config, model, spec, hyper, classification.load(config),
                                workdir)['validation']
    assert abs(v['gain_over_pretrained']
               - (v['accuracy'] - v['controls']['pretrained']['accuracy'])) < 1e-9
    assert 'the pretrained network and' in controls.verdict(r)

    def no_training(*a, **k):
        raise AssertionError('the cached pretrained control was trained again')
    monkeypatch.setattr(compare, 'train_pretrained', no_training)
    again = evaluate.evaluate(config, model, spec, hyper, pool, workdir, quiet=True)
    assert again['controls']['pretrained'] == r['controls']['pretrained']
    # Off (the default): no such control.
    config.eval.pretrained_control = False
    off = evaluate.evaluate(config, model, spec, hyper, pool, workdir, quiet=True)
    assert 'pretrained' not in off['controls'] and 'gain_over_pretrained' not in off
    # The intra-dataset protocol only (not yet the inter-dataset one).
    config.eval.pretrained_control, config.eval.protocol = True, 'inter'
    assert 'pretrained' not in controls.control_params(config, model, spec, hyper, pool,
                                                       workdir)


def test_the_pretrained_control_is_refused_outside_classification():
    from configs import denoise
    from pudnet_jax import config_check
    from pudnet_jax.errors import UserError
    config = denoise.get_config()
    config.eval.pretrained_control = True
    with pytest.raises(UserError, match='eval.pretrained_control'):
        config_check.validate(config)
