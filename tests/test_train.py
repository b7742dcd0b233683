"""Train → checkpoint → interrupt → resume → evaluate → predict, and the training errors."""

import json
import os

import jax
import numpy as np
import pytest

import pudnet_jax  # noqa: F401
from configs import test as test_config
from pudnet_jax import data as data_lib
from pudnet_jax import evaluate
from pudnet_jax import predict as predict_lib
from pudnet_jax import predictor
from pudnet_jax import train as train_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.hypernet import build_model
from pudnet_jax.tasks import classification


def _latest_params(workdir):
    return workdir_lib.restore_hypernet(workdir)[3]


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    config = test_config.get_config()
    whole, broken = str(tmp_path / 'whole'), str(tmp_path / 'broken')
    uninterrupted = train_lib.train_and_evaluate(config, whole)

    # "Killed" after step 3: the checkpoint of step 2 is the last one on disk.
    assert train_lib.train_and_evaluate(config, broken, stop_after_step=3) == {
        'stopped_at_step': 3}
    assert workdir_lib.checkpoint_manager(broken, config).all_steps() == [2]
    assert not os.path.exists(os.path.join(broken, 'results.json'))
    resumed = train_lib.train_and_evaluate(config, broken)
    assert resumed['resumed_from_step'] == 2 and resumed['steps_this_run'] == 4

    with open(os.path.join(broken, 'results.json')) as f:
        on_disk = json.load(f)
    assert on_disk['accuracy'] == resumed['accuracy'] == uninterrupted['accuracy']
    for key in ('accuracy', 'ci95', 'groups', 'ways', 'shots', 'target', 'predict_seconds',
                'compile_seconds'):
        assert key in on_disk
    assert 0.0 <= on_disk['accuracy'] <= 1.0 and on_disk['predict_seconds'] > 0
    jax.tree.map(np.testing.assert_array_equal, _latest_params(whole), _latest_params(broken))
    # The hypernetwork alone (restored without reading the optimizer state) is the
    # checkpointed train state's.
    model, spec = build_model(config)
    abstract = jax.eval_shape(lambda: train_lib.create_train_state(config, model, spec))
    step, full = workdir_lib.restore_newest_intact(
        workdir_lib.checkpoint_manager(whole, config), abstract, whole)
    assert step == workdir_lib.restore_hypernet_with_step(whole)[4]
    jax.tree.map(np.testing.assert_array_equal, _latest_params(whole),
                 {'params': full.params, 'batch_stats': full.batch_stats})
    # The validation curve too: the points before the kill kept, the later ones measured again.
    curve = lambda r: [(p['step'], p['accuracy']) for p in r['validation_curve']['points']]
    assert curve(resumed) == curve(uninterrupted) and len(curve(resumed)) == 3

    # Predict: saved variables load into the plain target, without the hypernetwork.
    summary = predict_lib.predict_and_save(broken)
    group = summary['groups'][0]
    target, variables, meta = predict_lib.load_variables(group['path'])
    assert set(variables) == {'params', 'batch_stats'}
    assert meta['target'] == 'convnet3' and meta['classes'] == group['classes']
    pool = data_lib.load_pool('mnist5k', 28, 1)
    images = data_lib.normalize(pool[meta['classes'][0]][:5])
    features = target.apply(variables, images, train=False)
    assert features.shape[0] == 5 and np.all(np.isfinite(features))
    # BatchNorm statistics come from the prediction set: not the initial zeros/ones.
    stats = jax.tree.leaves(variables['batch_stats'])
    assert all(np.any(s != 0) and np.any(s != 1) for s in stats)
    assert group['accuracy'] > 1 / 3 - 0.2 and group['predict_seconds'] > 0


def test_workdir_with_a_different_config_is_refused(tmp_path):
    config = test_config.get_config()
    workdir = str(tmp_path / 'run')
    train_lib.train_and_evaluate(config, workdir, stop_after_step=2)
    other = test_config.get_config()
    other.target.width = 16
    with pytest.raises(ValueError, match=r"different config \(target.width: checkpoint 8 vs now 16"):
        train_lib.train_and_evaluate(other, workdir)
    # Training longer on the same workdir is allowed.
    longer = test_config.get_config()
    longer.train.num_train_steps = 8
    longer.eval.groups = 1
    assert train_lib.train_and_evaluate(longer, workdir)['resumed_from_step'] == 2
    # Evaluating, predicting or comparing with another model than the trained one is
    # refused in one line naming the setting (a partial restore would read it silently).
    residual = test_config.get_config()
    residual.model.residual = True
    with pytest.raises(ValueError, match=r"model\.residual: trained with False, --config "
                                         r"gives True\): pass the trained settings "
                                         r"\(--config\.model\.residual=False\)") as e:
        workdir_lib.restore_hypernet(workdir, residual)
    assert len(str(e.value).splitlines()) == 1
    # Evaluation settings may differ; the saved model is restored with them.
    evaluation = test_config.get_config()
    evaluation.eval.groups = 3
    assert workdir_lib.restore_hypernet_with_step(workdir, evaluation)[4] == 8


def test_non_finite_loss_stops_before_saving(tmp_path, monkeypatch):
    config = test_config.get_config()
    # A NaN temperature is now refused by the config validation (test_reliability), so
    # the loss is made non-finite inside the training step instead.
    real_loss = classification.pudnet_loss
    monkeypatch.setattr(classification, 'pudnet_loss', lambda *a, **k: jax.tree.map(
        lambda x: x * float('nan'), real_loss(*a, **k)))
    workdir = str(tmp_path / 'nan')
    with pytest.raises(train_lib.NonFiniteLossError, match='Non-finite training loss by step 2'):
        train_lib.train_and_evaluate(config, workdir)
    assert workdir_lib.checkpoint_manager(workdir, config).all_steps() == []


def test_unknown_target_and_bad_prediction_images(tmp_path):
    config = test_config.get_config()
    config.target.name = 'resnet19'
    with pytest.raises(ValueError, match=r"Unknown target 'resnet19'.*resnet18"):
        build_model(config)
    config = test_config.get_config()
    model, spec = build_model(config)
    state = train_lib.create_train_state(config, model, spec)
    predict = predictor.make_predictor(model, spec)
    hyper = {'params': state.params, 'batch_stats': state.batch_stats}
    with pytest.raises(ValueError, match=r'prediction images: expected 1 channel.*\(4, 28, 28, 3\)'):
        predict(hyper, np.zeros((4, 28, 28, 3), np.float32))
    with pytest.raises(ValueError, match=r'rank 4.*\(28, 28, 1\)'):
        predict(hyper, np.zeros((28, 28, 1), np.float32))


def test_group_accuracy_top1_and_top_k():
    scores = np.array([[0.9, 0.1, 0.5],     # label 2: top-1 wrong, in top-2
                       [0.2, 0.8, 0.1],     # label 1: right
                       [0.3, 0.3, 0.9],     # label 0: ties 0/1, the lower index ranks first
                       [0.7, 0.2, 0.6]])    # label 1: outside top-2
    labels = np.array([2, 1, 0, 1])
    top1, top2 = evaluate.group_accuracy(scores, labels, top_k=2)
    assert top1 == 0.25 and top2 == 0.75
    assert evaluate.group_accuracy(scores, labels, top_k=3)[1] is None   # k >= ways: no top-k
    assert evaluate.group_accuracy(scores, labels)[1] is None
    summary = evaluate.accuracy_summary([0.5, 1.0], [1.0, 1.0], 2)
    assert summary['accuracy'] == 0.75 and summary['top2_accuracy'] == 1.0
    assert summary['top2_ci95'] == 0.0 and summary['ci95'] > 0
    assert 'top2_accuracy' not in evaluate.accuracy_summary([0.5], [], 2)


def test_batchnorm_statistics_from_a_strided_subsample_and_the_sketch_from_all():
    np.testing.assert_array_equal(predictor.bn_subsample(10, None), np.arange(10))
    np.testing.assert_array_equal(predictor.bn_subsample(10, 10), np.arange(10))
    np.testing.assert_array_equal(predictor.bn_subsample(10, 4), [0, 3, 6, 9])
    assert len(predictor.bn_subsample(2000, 1000)) == 1000
    seeded = predictor.bn_subsample(10, 4, seed=1)        # the inter-dataset protocol's
    np.testing.assert_array_equal(seeded, np.sort(np.random.default_rng(1).choice(10, 4, False)))
    np.testing.assert_array_equal(predictor.bn_subsample(10, 12, seed=1), np.arange(10))
    config = test_config.get_config()
    model, spec = build_model(config)
    state = train_lib.create_train_state(config, model, spec)
    hyper = {'params': state.params, 'batch_stats': state.batch_stats}
    images = data_lib.normalize(np.concatenate(
        [v[:6] for v in data_lib.load_pool('mnist5k', 28, 1).values()][:4]))   # 24 images
    full = predictor.make_predictor(model, spec)(hyper, images)
    sub = predictor.make_predictor(model, spec, bn_images=8)(hyper, images)
    pick = predictor.bn_subsample(24, 8)
    # the generated parameters come from the sketch of all 24 images ...
    jax.tree.map(np.testing.assert_array_equal, sub['params'], full['params'])
    # ... the statistics from the 8 strided ones, exactly as a pass over them alone
    expected = evaluate.make_stats_fn(spec)(full['params'], images[pick])['batch_stats']
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 sub['batch_stats'], expected)
    differs = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(sub['batch_stats']),
                                                     jax.tree.leaves(full['batch_stats']))]
    assert any(differs)


def test_weight_average_is_the_running_mean_evaluated_restored_and_resumed(tmp_path):
    """train.ema_decay = d: after each step ema ← d·ema + (1 − d)·params, from the initial
    parameters; the trained parameters are those of the run without it (the average never
    feeds back); restore_hypernet reads the average; a killed run resumes to the same one."""
    config = test_config.get_config()
    config.train.ema_decay = 0.5
    config.train.num_train_steps = 4
    model, spec = build_model(config)
    pool = data_lib.load_pool('mnist5k', 28, 1)
    sampler = data_lib.EpisodeSampler(pool, config.data.train_classes, config.train.ways,
                                      config.train.shots, config.train.queries, seed=0)
    batches = [sampler.episodes(sampler.sample_indices(s, config.train.episodes_per_step))
               for s in (1, 2)]
    state = train_lib.create_train_state(config, model, spec)
    assert isinstance(state, train_lib.AveragedTrainState)
    params = [jax.device_get(state.params)]
    step = train_lib.make_train_step(config, model, spec)
    for batch in batches:
        state, _ = step(state, batch)
        params.append(jax.device_get(state.params))
    expected = jax.tree.map(lambda p0, p1, p2: 0.5 * (0.5 * p0 + 0.5 * p1) + 0.5 * p2, *params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 jax.device_get(state.ema_params), expected)
    assert train_lib.hyper_variables(state)['params'] is state.ema_params

    plain = test_config.get_config()
    plain_state = train_lib.create_train_state(plain, model, spec)
    assert not isinstance(plain_state, train_lib.AveragedTrainState)
    plain_step = train_lib.make_train_step(plain, model, spec)
    for batch in batches:
        plain_state, _ = plain_step(plain_state, batch)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(plain_state.params), params[-1])

    # Kill and resume (training only: stopping after the last step skips the evaluation,
    # which reads hyper_variables, checked above).
    config.train.val_every = 0
    whole, broken = str(tmp_path / 'whole'), str(tmp_path / 'broken')
    train_lib.train_and_evaluate(config, whole, stop_after_step=4)
    train_lib.train_and_evaluate(config, broken, stop_after_step=3)
    train_lib.train_and_evaluate(config, broken, stop_after_step=4)
    abstract = jax.eval_shape(lambda: train_lib.create_train_state(config, model, spec))
    _, full = workdir_lib.restore_newest_intact(
        workdir_lib.checkpoint_manager(whole, config), abstract, whole)
    restored = _latest_params(whole)
    jax.tree.map(np.testing.assert_array_equal, restored['params'], full.ema_params)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(full.ema_params),
                                                        jax.tree.leaves(full.params)))
    jax.tree.map(np.testing.assert_array_equal, restored, _latest_params(broken))
    # What the workdir was trained with decides, not a --config given now without it.
    jax.tree.map(np.testing.assert_array_equal, restored,
                 workdir_lib.restore_hypernet(whole, test_config.get_config())[3])


def test_weight_average_decay_out_of_range_is_one_line():
    from pudnet_jax import config_check
    from pudnet_jax.errors import UserError
    config = test_config.get_config()
    config.train.ema_decay = 1.0
    with pytest.raises(UserError, match=r'config.train.ema_decay=1.0: must be a number in '
                                        r'\[0, 1\)'):
        config_check.validate(config)


def test_pretrained_base_starts_generation_at_the_pretrained_network_and_can_stay_frozen():
    """model.base_init='pretrained': the base kernels and shared leaves become the
    Pretrained baseline's network (the one --mode=compare trains), the generated deltas
    are untouched, so the generated network is that network plus the same deltas;
    train.freeze_base keeps exactly those leaves through a training step, and only them."""
    import flax.traverse_util
    from pudnet_jax import compare, tasks
    from pudnet_jax.hypernet import PudNet, is_base_leaf, layer_groups
    config = test_config.get_config()
    config.model.residual = True
    config.model.base_init = 'pretrained'
    model, spec = build_model(config)
    task = tasks.of(config)
    loaded = task.load(config)
    fresh = train_lib.create_train_state(config, model, spec)
    fresh_params = jax.device_get(fresh.params)
    state = train_lib.initial_base(config, task, spec, loaded, fresh)
    target = flax.traverse_util.flatten_dict(
        jax.device_get(compare.train_pretrained(config, spec, loaded.pool)[0]['params']))

    sketch = np.random.default_rng(0).normal(size=config.model.sketch_dim).astype(np.float32)
    generate = lambda params: flax.traverse_util.flatten_dict(jax.device_get(model.apply(
        {'params': params, 'batch_stats': fresh.batch_stats}, sketch, method=PudNet.generate)))
    before, after = generate(fresh_params), generate(state.params)
    for shape, ids in layer_groups(spec):
        key = 'generators_' + 'x'.join(map(str, shape))
        for i, t in enumerate(ids):
            path = spec.generated[t][0]
            delta = before[path] - fresh_params[key]['base_kernel'][i]
            assert np.abs(delta).max() > 0
            np.testing.assert_allclose(after[path], target[path] + delta, rtol=1e-5, atol=1e-6)
    for path, _ in spec.shared:
        np.testing.assert_array_equal(after[path], target[path])
        assert not np.array_equal(before[path], target[path])

    sampler = task.make_sampler(config, loaded)
    batch = sampler.episodes(sampler.sample_indices(1, config.train.episodes_per_step))
    start = jax.device_get(state.params)
    flat_start = flax.traverse_util.flatten_dict(start)
    for freeze in (False, True):
        config.train.freeze_base = freeze
        s = train_lib.create_train_state(config, model, spec).replace(
            params=jax.tree.map(np.copy, start))
        s, _ = train_lib.make_train_step(config, model, spec)(s, batch)
        flags = [(is_base_leaf(path), not np.array_equal(v, flat_start[path])) for path, v in
                 flax.traverse_util.flatten_dict(jax.device_get(s.params)).items()]
        assert any(m for base, m in flags if not base)          # the rest trains
        assert all(not m for base, m in flags if base) == freeze, freeze


def test_base_switches_need_residual_generation_and_a_task_that_has_a_pretrained_network():
    from pudnet_jax import config_check
    from pudnet_jax.errors import UserError
    config = test_config.get_config()
    config.model.base_init = 'pretrained'
    config.train.freeze_base = True
    with pytest.raises(UserError, match=r"config.model.base_init='pretrained': needs residual "
                                        r"generation .*config.train.freeze_base=True: needs"):
        config_check.validate(config)
    config.model.residual = True
    config_check.validate(config)
    config.model.base_init = 'imagenet'
    with pytest.raises(UserError, match=r"config.model.base_init='imagenet': must be one of"):
        config_check.validate(config)
