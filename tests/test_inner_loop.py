"""The sketch's inner loop in meta-training (`config.train.inner_steps`, Meta-SGD on LEO's
latent code) and its twin at prediction time (`eval.refine_optimizer='learned'`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from pudnet_jax import config_check, data, inner_loop, refine
from pudnet_jax import evaluate as evaluate_lib
from pudnet_jax import tasks
from pudnet_jax import train as train_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.errors import UserError
from pudnet_jax.hypernet import PudNet, build_model
from pudnet_jax.tasks import classification


def inner_config(steps=1, lr=0.5, first_order=True):
    config = test_config.get_config()
    config.train.inner_steps, config.train.inner_lr = steps, lr
    config.train.inner_first_order = first_order
    return config


def setup(config):
    model, spec = build_model(config)
    variables = tasks.init_variables(config, model, spec, 0)
    hyper_params, task_params = tasks.split_params(classification, variables['params'])
    sampler = classification.make_sampler(config, classification.load(config))
    ep = sampler.sample(0, 1)[0]
    s0 = model.apply({'params': hyper_params, 'batch_stats': variables['batch_stats']},
                     ep.support, method=PudNet.encode).mean(0)
    return model, spec, variables, hyper_params, task_params, ep, s0


def test_step_size_is_a_task_parameter_only_with_an_inner_loop():
    off = test_config.get_config()
    model, spec = build_model(off)
    assert 'log_inner_lr' not in tasks.init_variables(off, model, spec, 0)['params']
    assert classification.make_sketch_adaptation(off, model, spec) is None
    config = inner_config(lr=0.5)
    log_lr = tasks.init_variables(config, model, spec, 0)['params']['log_inner_lr']
    assert log_lr.shape == (config.model.sketch_dim,)
    np.testing.assert_allclose(np.exp(log_lr), 0.5, rtol=1e-6)
    # The hypernetwork's own parameters are the same with or without it (same init).
    a = tasks.split_params(classification, tasks.init_variables(off, model, spec, 0)['params'])
    b = tasks.split_params(classification, tasks.init_variables(config, model, spec, 0)['params'])
    jax.tree.map(np.testing.assert_array_equal, a[0], b[0])


def test_inner_update_moves_each_dimension_by_its_step_size():
    task_params = {'log_inner_lr': jnp.log(jnp.array([0.5, 2.0, 1.0]))}
    g = jnp.array([3.0, -3.0, 0.0])
    s = inner_loop.update(task_params, jnp.zeros(3), g)
    rms = np.sqrt((9 + 9 + 0) / 3)
    np.testing.assert_allclose(s, [-0.5 * 3 / rms, 2.0 * 3 / rms, 0.0], rtol=1e-6)
    # Scale-free: the same step for a gradient 1000 times larger.
    np.testing.assert_allclose(inner_loop.update(task_params, jnp.zeros(3), 1e3 * g),
                               s, rtol=1e-5)


def test_training_adaptation_is_the_learned_refinement_at_prediction():
    """One inner step in meta-training and one 'learned' refinement step at prediction
    give the same sketch for the same episode's labelled images, and it lowers the
    leave-one-out loss."""
    config = inner_config(steps=1, lr=0.3)
    model, spec, variables, hyper_params, task_params, ep, s0 = setup(config)
    adapt = classification.make_sketch_adaptation(config, model, spec)
    s1 = adapt(hyper_params, task_params, s0, ep)
    assert not np.allclose(s1, s0)
    hyper_vars = {'params': variables['params'], 'batch_stats': variables['batch_stats']}
    index = np.arange(ep.support.shape[0])
    refine_fn = refine.make_refine_fn(model, spec, config.train.ways, 1, 0.1,
                                      classification.tau_setting(config), 'learned')
    np.testing.assert_allclose(refine_fn(hyper_vars, s0, ep.support, index, ep.support_labels),
                               s1, rtol=1e-4, atol=1e-6)
    # Its length: exp(log_inner_lr) times the gradient over its RMS.
    step = np.asarray(s1 - s0)
    assert np.sqrt(np.mean(step ** 2)) == pytest.approx(0.3, rel=1e-3)


@pytest.mark.parametrize('first_order', [True, False])
def test_step_size_and_encoder_learn_through_the_inner_loop(first_order):
    config = inner_config(steps=2, first_order=first_order)
    model, spec, variables, hyper_params, task_params, ep, s0 = setup(config)
    adapt = classification.make_sketch_adaptation(config, model, spec)
    episode_loss = classification.make_episode_loss(config, spec)

    def outer(task_params, s):
        s = adapt(hyper_params, task_params, s, ep)
        generated = model.apply({'params': hyper_params}, s, method=PudNet.generate)
        return episode_loss(task_params, generated, ep)[0]
    g_task, g_s = jax.grad(outer, argnums=(0, 1))(task_params, s0)
    assert float(jnp.abs(g_task['log_inner_lr']).sum()) > 0      # α learns
    assert float(jnp.abs(g_s).sum()) > 0                          # the sketch (encoder) too
    if first_order:
        # First order: the inner gradient is a constant, so ds1/ds0 is the identity and
        # the gradient at s0 is the outer one at the adapted sketch.
        s2 = adapt(hyper_params, task_params, s0, ep)
        at_s2 = jax.grad(lambda s: episode_loss(task_params, model.apply(
            {'params': hyper_params}, s, method=PudNet.generate), ep)[0])(s2)
        np.testing.assert_allclose(g_s, at_s2, rtol=1e-4, atol=1e-7)


def test_inner_loop_trains_resumes_and_reports_the_learned_refinement(tmp_path):
    config = inner_config(steps=1)
    config.train.num_train_steps, config.train.val_every = 4, 0
    config.eval.groups = config.eval.val_groups = 2
    config.eval.refine_steps, config.eval.refine_optimizer = 1, 'learned'
    w = str(tmp_path / 'w')
    assert train_lib.train_and_evaluate(config, w, stop_after_step=2) == {'stopped_at_step': 2}
    r = train_lib.train_and_evaluate(config, w)
    assert r['resumed_from_step'] == 2
    f = r['refined']
    assert f['optimizer'] == 'learned' and f['steps'] == 1 and 0.0 <= f['accuracy'] <= 1.0
    assert 'refined' in r['validation']
    # The other-group control: group 2 scored with group 1's refined sketch, paired.
    assert 0.0 <= f['other_group']['accuracy'] <= 1.0
    assert f['gain_over_other_group'] == pytest.approx(
        r['refined']['accuracy'] * 2 - f['other_group']['accuracy'] - _first_refined(w), abs=1e-9)
    assert "another group's" in evaluate_lib.format_results(r)
    assert '1 learned step on the sketch' in evaluate_lib.format_results(r)
    _, _, _, hyper = workdir_lib.restore_hypernet(w)
    trained = np.exp(np.asarray(hyper['params']['log_inner_lr']))
    assert not np.allclose(trained, config.train.inner_lr)        # α was trained
    # Meta-training with the loop is another model: not resumable without it.
    config.train.inner_steps = 0
    config.eval.refine_optimizer = 'adam'
    with pytest.raises(UserError, match='train.inner_steps'):
        workdir_lib.check_config(config, w, has_checkpoint=True)


def _first_refined(workdir):
    """Group 1's refined accuracy, recomputed (2 groups: own − other is group 2's)."""
    config, model, spec, hyper = workdir_lib.restore_hypernet(workdir)
    pool = data.load_pool(config.data.name, 28, 1)
    group = evaluate_lib.group_sampler(config, pool).sample(0, 1)[0]
    refined = evaluate_lib.Refined(config, model, spec, group)
    _, scores_c, _ = evaluate_lib.compiled_predict_and_scores(
        model, spec, hyper, group, config.eval.ways, config.eval.shots, None)
    refined.add(hyper, group, scores_c)
    return refined.accuracies[0]


def test_learned_refinement_on_the_inter_dataset_protocol(tmp_path):
    """MNIST-5k digits 0-5 → Animal-MNIST with the learned step (tiny settings)."""
    from configs.inter_dataset import set_inter
    config = inner_config(steps=1)
    config.train.num_train_steps, config.train.val_every = 2, 0
    config.data.test_classes = []
    set_inter(config, 'animal_mnist', predict_fraction=0.8, shots=3, draws=2)
    config.eval.chunk_size, config.eval.bn_images = 1000, 300
    config.eval.refine_steps, config.eval.refine_optimizer = 1, 'learned'
    r = train_lib.train_and_evaluate(config, str(tmp_path / 'w'))
    f = r['refined']
    assert r['protocol'] == 'inter' and f['optimizer'] == 'learned' and f['steps'] == 1
    assert 0.0 <= f['accuracy'] <= 1.0 and f['seconds'] > 0
    assert f['conditioning_gain'] == pytest.approx(
        f['accuracy'] - r['controls']['mean_sketch']['accuracy'], abs=1e-9)


@pytest.mark.parametrize('change, field', [
    ({'eval.refine_optimizer': 'learned'}, 'eval.refine_optimizer'),
    ({'eval.refine_optimizer': 'sgd'}, 'eval.refine_optimizer'),
    ({'train.inner_steps': -1}, 'train.inner_steps'),
    ({'train.inner_steps': 1, 'train.inner_lr': 0.0}, 'train.inner_lr'),
])
def test_bad_inner_loop_settings_are_refused_in_one_line(change, field):
    config = test_config.get_config()
    for k, v in change.items():
        section, name = k.split('.')
        config[section][name] = v
    with pytest.raises(ValueError, match=field.replace('.', r'\.')) as e:
        config_check.validate(config)
    assert len(str(e.value).strip().splitlines()) == 1


def _denoise_config(steps=1):
    import sys, os
    sys.path.insert(0, os.path.dirname(__file__))
    from test_denoising import _tiny
    config = _tiny()
    config.train.inner_steps, config.train.inner_lr = steps, 0.4
    if steps:
        config.eval.refine_steps, config.eval.refine_optimizer = steps, 'learned'
    return config


def test_denoising_inner_step_is_the_learned_step_at_prediction():
    """Denoising: α exists only with the loop; the training adaptation of a group equals
    the Predictor's learned step for the same group and mask key (the Noise2Void loss of
    the noisy group, no clean image); its length is α; and the inner step's mask is not
    the outer loss's."""
    from pudnet_jax.tasks import denoising
    from pudnet_jax.tasks.denoising import evaluation
    off = _denoise_config(steps=0)
    model, spec = build_model(off)
    assert denoising.init_params(off, spec, 0) == {}
    assert denoising.make_sketch_adaptation(off, model, spec) is None
    config = _denoise_config(steps=1)
    config_check.validate(config)
    variables = tasks.init_variables(config, model, spec, 0)
    hyper_params, task_params = tasks.split_params(denoising, variables['params'])
    assert list(task_params) == ['log_inner_lr']
    sampler = denoising.make_sampler(config, denoising.load(config))
    ep = jax.tree.map(lambda x: x[0], sampler.episodes(sampler.sample_indices(0, 1)))
    hyper_vars = {'params': variables['params'], 'batch_stats': variables['batch_stats']}
    predictor = evaluation.Predictor(model, hyper_vars, spec, config)
    s0 = predictor.sketch(ep.noisy)
    s1 = denoising.make_sketch_adaptation(config, model, spec)(hyper_params, task_params, s0, ep)
    key = jnp.asarray(ep.mask_keys)
    np.testing.assert_allclose(predictor.refined_sketch(ep.noisy, key), s1, rtol=1e-4, atol=1e-6)
    assert np.sqrt(np.mean(np.square(np.asarray(s1 - s0)))) == pytest.approx(0.4, rel=1e-3)
    # The clean images play no part: the same step with the clean images zeroed.
    blind = ep.replace(clean=np.zeros_like(ep.clean))
    np.testing.assert_array_equal(denoising.make_sketch_adaptation(config, model, spec)(
        hyper_params, task_params, s0, blind), s1)
    # Step k's mask: the group's key folded with k + 1, never the outer loss's key.
    x = denoising.normalize(ep.noisy)
    grad = lambda k: jax.grad(lambda s: denoising.sketch_loss(
        model, spec, hyper_params, s, x, k, 0.1, 2))(s0)
    g_inner, g_outer = grad(jax.random.fold_in(key, 1)), grad(key)
    np.testing.assert_allclose(s1, inner_loop.update(task_params, s0, g_inner), rtol=1e-4,
                               atol=1e-6)
    assert not np.allclose(g_inner, g_outer)
    # Another refinement optimizer than the learned step is refused for denoising.
    config.eval.refine_optimizer = 'adam'
    with pytest.raises(ValueError, match=r'eval\.refine_optimizer'):
        config_check.validate(config)


def test_denoising_with_the_inner_loop_trains_and_reports_the_learned_step(tmp_path):
    config = _denoise_config(steps=1)
    config.eval.full_images, config.eval.pretrained_n2v = False, False
    config.eval.val_groups = 2
    r = train_lib.train_and_evaluate(config, str(tmp_path / 'w'))
    f = r['refined']
    assert f['steps'] == 1 and np.isfinite(f['psnr']) and f['predict_seconds'] > 0
    assert f['gain_over_single_pass_db'] == pytest.approx(f['psnr'] - r['psnr'], abs=1e-9)
    assert f['gain_over_mean_sketch_refined_db'] == pytest.approx(
        f['psnr'] - r['controls']['mean_sketch_refined']['psnr'], abs=1e-9)
    assert r['validation']['classes'] == [4, 5] and 'refined' in r['validation']
    _, model, spec, hyper = workdir_lib.restore_hypernet(str(tmp_path / 'w'))
    assert not np.allclose(np.exp(np.asarray(hyper['params']['log_inner_lr'])), 0.4)
    # A folder of noisy images gets the UNet after the learned step (the single pass of
    # a model trained with the loop is not what it was trained to be good at).
    from test_denoising import _noisy_folder
    from pudnet_jax import predict as predict_lib
    from pudnet_jax import sources
    from pudnet_jax.tasks import denoising
    from pudnet_jax.tasks.denoising import evaluation
    from pudnet_jax.tasks.denoising import predict as denoise_predict
    noisy, _ = _noisy_folder(tmp_path)
    report = denoising.predict_folder(str(tmp_path / 'w'), noisy, None)
    _, saved, meta = predict_lib.load_variables(report['network'])
    assert meta['learned_steps'] == 1
    images = sources.load_unlabelled(noisy, None, 1)
    tiles = denoise_predict.sketch_tiles(
        [(n, im / np.float32(255)) for n, im in zip(images.files, images.images)], 16, 1024)
    predictor = evaluation.Predictor(model, hyper, spec, config)
    expected = predictor.refined_params(tiles, evaluation.refine_key((config.eval.seed, 12)))
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(saved['params'])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_a_users_folder_gets_the_refined_network_saved(tmp_path, monkeypatch):
    """--mode=predict --data with a learned step configured: the network written to disk
    is the refined one (the whole prediction part's sketch stepped on the first draw's
    labelled images), its metadata says so, and its reloaded accuracy is reported. Draw 0
    is refined twice (compilation, then timed), not again for the refined row."""
    import sys, os
    sys.path.insert(0, os.path.dirname(__file__))
    from test_sources import write_folder
    from pudnet_jax import inter_dataset
    from pudnet_jax import predict as predict_lib
    config = inner_config(steps=1)
    config.train.num_train_steps, config.train.val_every = 2, 0
    config.eval.groups = config.eval.val_groups = 2
    config.eval.refine_steps, config.eval.refine_optimizer = 1, 'learned'
    config.eval.draws = 3
    w = str(tmp_path / 'w')
    train_lib.train_and_evaluate(config, w)
    folder = write_folder(tmp_path / 'imgs', per_class=8)
    draws, make_refiner = [], inter_dataset.make_refiner

    def counting(*args):
        refined = make_refiner(*args)
        return lambda r: (draws.append(r), refined(r))[1]
    monkeypatch.setattr(inter_dataset, 'make_refiner', counting)
    report = predict_lib.predict_folder(w, folder, baselines=False)
    monkeypatch.undo()
    assert sorted(draws) == [0, 0, 1, 2]
    _, saved, meta = predict_lib.load_variables(report['path'])
    assert meta['refined'] == {'steps': 1, 'lr': config.eval.refine_lr, 'optimizer': 'learned',
                               'draw': 0, 'labelled_per_class': config.eval.shots}
    config, model, spec, hyper = workdir_lib.restore_hypernet(w)
    e = predict_lib.folder_settings(config)
    from pudnet_jax import sources
    pool = sources.load('folder', 28, 1, folder).pool
    predict_pool, test_pool = data.split_pool(pool, e.predict_fraction, e.seed)
    refiner = inter_dataset.make_refiner(predict_lib._with_eval(config, e), model, spec,
                                         hyper, predict_pool)
    expected, _ = refiner(0)
    # the refined row: each draw's own refined network, draw 0's the saved one
    assert report['refined']['accuracy'] == pytest.approx(inter_dataset.score(
        e, spec, lambda r: refiner(r)[0], predict_pool, test_pool)['accuracy'])
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(saved)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    single, _ = inter_dataset.predict_variables(e, model, spec, hyper, predict_pool)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(single['params']),
                                                     jax.tree.leaves(saved['params'])))
    sv = report['saved_network']
    assert sv['accuracy'] == pytest.approx(
        inter_dataset.score(e, spec, saved, predict_pool, test_pool)['accuracy'])
    assert 'saved network' in predict_lib.format_folder_report(report)
    assert 'PudNet + refined sketch is' in report['verdict']
