"""The hypernetwork against the paper's equations, shapes and invariants."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import pudnet_jax  # noqa: F401
from configs import test as test_config
from pudnet_jax import train as train_lib
from pudnet_jax.hypernet import AHRU, PudNet, dataset_sketch, streaming_sketch
from pudnet_jax.targets import make_target, target_spec
from pudnet_jax.hypernet import build_model


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_ahru_matches_numpy_equations():
    m, num_layers = 5, 4
    ahru = AHRU(num_layers)
    s = jax.random.normal(jax.random.PRNGKey(1), (m,))
    variables = ahru.init(jax.random.PRNGKey(0), s)
    out = np.asarray(ahru.apply(variables, s))

    w = {k: np.asarray(v['kernel'], np.float64)
         for k, v in variables['params']['cell'].items()}
    assert set(w) == {'W_r', 'W_z', 'W_h', 'W_o'}       # bias-free, one shared set
    d = a = np.asarray(s, np.float64)
    expected = []
    for _ in range(num_layers):
        da = np.concatenate([d, a])
        r = _sigmoid(da @ w['W_r'])
        z = _sigmoid(da @ w['W_z'])
        d_tilde = np.tanh(np.concatenate([r * d, a]) @ w['W_h'])
        d = (1 - z) * d + z * d_tilde
        a = _sigmoid(d @ w['W_o'])
        expected.append(a)
    np.testing.assert_allclose(out, np.stack(expected), rtol=1e-5, atol=1e-6)


def test_initial_residual_and_no_ahru_ablation():
    spec = target_spec('convnet3', (28, 28, 1), width=4)
    for use_ahru in (True, False):
        model = PudNet(spec, sketch_dim=6, sketch_features=(2, 2, 2),
                       eta=0.3, use_ahru=use_ahru)
        variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 1)))
        s = jax.random.normal(jax.random.PRNGKey(2), (6,))
        emb = model.apply(variables, s, method=PudNet.layer_embeddings)
        if use_ahru:
            a = AHRU(3).apply({'params': variables['params']['ahru']}, s)
            np.testing.assert_allclose(emb, 0.7 * a + 0.3 * s, rtol=1e-6)
        else:
            np.testing.assert_allclose(emb, np.broadcast_to(s, (3, 6)))


@pytest.mark.parametrize('name,shape', [('convnet3', (28, 28, 1)), ('resnet18', (32, 32, 3)),
                                        ('resnet34', (32, 32, 1))])
def test_generated_tree_is_target_params(name, shape):
    spec = target_spec(name, shape, width=8)
    model = PudNet(spec, sketch_dim=8, sketch_features=(4, 4, 4))
    images = jnp.zeros((2,) + shape)
    target = make_target(name, 8)
    expected = jax.eval_shape(lambda: target.init(jax.random.PRNGKey(0), images))['params']

    def generated_tree():
        v = model.init(jax.random.PRNGKey(0), images)
        return model.apply(v, jnp.zeros(8), method=PudNet.generate)
    got = jax.eval_shape(generated_tree)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    assert jax.tree.map(lambda x: x.shape, got) == jax.tree.map(lambda x: x.shape, expected)
    # Generated: every conv kernel; shared: the BatchNorm scale and bias.
    flat = traverse_util.flatten_dict(expected)
    assert {p for p, _ in spec.generated} == {p for p in flat if p[-1] == 'kernel'}
    assert {p[-1] for p, _ in spec.shared} == {'scale', 'bias'}


def test_layers_walked_in_forward_order():
    spec = target_spec('resnet18', (32, 32, 3), width=8)
    names = ['/'.join(p[:-1]) for p, _ in spec.generated]
    assert names[:4] == ['stem_conv', 'stage1_block0/conv1', 'stage1_block0/conv2',
                         'stage1_block1/conv1']
    assert names.index('stage2_block0/conv2') < names.index('stage2_block0/shortcut_conv')
    assert names.index('stage2_block0/shortcut_conv') < names.index('stage2_block1/conv1')
    assert len(names) == 20          # 17 3x3 convs + 3 shortcuts
    # Sorted keys would put stage4 before ..., and conv10 before conv2; forward order doesn't.
    assert names[-1] == 'stage4_block1/conv2'


def test_generated_network_runs_and_depends_on_sketch():
    spec = target_spec('convnet3', (28, 28, 1), width=4)
    model = PudNet(spec, sketch_dim=6, sketch_features=(2, 2, 2))
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 1)))
    p1 = model.apply(variables, jnp.ones(6), method=PudNet.generate)
    p2 = model.apply(variables, -jnp.ones(6), method=PudNet.generate)
    assert not np.allclose(p1['conv1']['kernel'], p2['conv1']['kernel'])
    x = jax.random.normal(jax.random.PRNGKey(3), (5, 28, 28, 1))
    feats, _ = make_target('convnet3', 4).apply(
        {'params': p1, 'batch_stats': spec.zero_batch_stats()}, x, train=True,
        mutable=['batch_stats'])
    assert feats.shape == (5, spec.feature_dim) and np.all(np.isfinite(feats))


def test_sketch_invariant_to_order_and_chunking():
    config = test_config.get_config()
    model, spec = build_model(config)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 1)))
    variables = {'params': variables['params'], 'batch_stats': jax.tree.map(
        lambda x: x + 0.3, variables['batch_stats'])}     # non-trivial running stats
    images = jax.random.normal(jax.random.PRNGKey(1), (23, 28, 28, 1))
    encode = jax.jit(lambda x: model.apply(variables, x, train=False, method=PudNet.encode))
    one_shot = dataset_sketch(encode(images))
    shuffled = dataset_sketch(encode(images[np.random.default_rng(0).permutation(23)]))
    np.testing.assert_allclose(shuffled, one_shot, rtol=1e-5, atol=1e-6)
    for chunk in (1, 5, 8, 23, 40):
        np.testing.assert_allclose(streaming_sketch(encode, images, chunk), one_shot,
                                   rtol=1e-5, atol=1e-6)


def test_class_balanced_sketch():
    feats = jnp.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = jnp.array([0, 0, 0, 1])
    np.testing.assert_allclose(dataset_sketch(feats), [0.75, 0.25])
    np.testing.assert_allclose(dataset_sketch(feats, labels, 3), [0.5, 0.5])


def test_gradients_reach_every_hypernetwork_parameter():
    config = test_config.get_config()
    config.loss.learn_temperature = True
    model, spec = build_model(config)
    state = train_lib.create_train_state(config, model, spec)
    from pudnet_jax import data as data_lib
    pool = data_lib.load_pool('mnist5k', 28, 1)
    batch = data_lib.EpisodeSampler(pool, config.data.train_classes, 3, 3, 2, seed=0).sample(0, 2)
    before = state.params
    step = train_lib.make_train_step(config, model, spec)
    after, metrics = step(jax.tree.map(jnp.array, state), batch)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, after.params)
    flat = traverse_util.flatten_dict(changed, sep='/')
    unchanged = [k for k, v in flat.items() if not v]
    assert not unchanged, f'parameters with no gradient: {unchanged}'
    assert np.isfinite(metrics.compute()['loss'])


def test_max_pool_2x2_matches_flax_max_pool():
    from pudnet_jax.targets import max_pool_2x2
    for shape in ((2, 28, 28, 3), (2, 7, 7, 4)):
        x = jax.random.normal(jax.random.PRNGKey(0), shape)
        reference = lambda a: nn.max_pool(a, (2, 2), strides=(2, 2))
        np.testing.assert_allclose(max_pool_2x2(x), reference(x))
        g = lambda f: jax.grad(lambda a: jnp.sum(f(a) ** 2))(x)
        np.testing.assert_allclose(g(max_pool_2x2), g(reference), rtol=1e-6)


class _UpDown(nn.Module):
    """A target with a transposed convolution (as a UNet's decoder has)."""
    width: int = 4
    local: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.width, (3, 3), (2, 2), use_bias=False, name='down')(x)
        x = nn.BatchNorm(use_running_average=not train, name='bn')(x)
        x = nn.ConvTranspose(self.width, (3, 3), (2, 2), use_bias=False, name='up')(x)
        if self.local:
            x = nn.ConvLocal(2, (3, 3), use_bias=False, name='local')(x)
        return jnp.mean(x, axis=(1, 2))


def test_transposed_conv_kernels_are_generated_and_other_kernels_refused(monkeypatch):
    from pudnet_jax import targets as targets_lib
    monkeypatch.setitem(targets_lib.TARGETS, 'updown',
                        lambda width, momentum, dtype: _UpDown(width))
    spec = target_spec('updown', (8, 8, 1), width=4)
    assert [p for p, _ in spec.generated] == [('down', 'kernel'), ('up', 'kernel')]
    assert all(p[-1] != 'kernel' for p, _ in spec.shared)
    model = PudNet(spec, sketch_dim=6, sketch_features=(2, 2, 2))
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 1)))
    p1 = model.apply(variables, jnp.ones(6), method=PudNet.generate)
    p2 = model.apply(variables, -jnp.ones(6), method=PudNet.generate)
    assert p1['up']['kernel'].shape == (3, 3, 4, 4)
    assert not np.allclose(p1['up']['kernel'], p2['up']['kernel'])

    monkeypatch.setitem(targets_lib.TARGETS, 'updown_local',
                        lambda width, momentum, dtype: _UpDown(width, local=True))
    with pytest.raises(ValueError, match='local/kernel'):
        target_spec('updown_local', (8, 8, 1), width=4)


def test_random_init_is_flax_default_init_bitwise():
    """The jitted, cached initialisation of a target (controls, baselines) gives exactly
    the values of Flax's op-by-op `init` with the same key."""
    from pudnet_jax.targets import random_init_params, target_spec
    for name, shape in (('convnet3', (12, 12, 1)),):     # (op-by-op init is slow: one)
        spec = target_spec(name, shape, 4)
        eager = spec.module().init(jax.random.PRNGKey(3), jnp.zeros((2,) + shape))['params']
        for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(random_init_params(spec, 3))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert any(not np.array_equal(a, b) for a, b in                 # the seed counts
                   zip(jax.tree.leaves(random_init_params(spec, 4)), jax.tree.leaves(eager)))


def test_delta_scale_interpolates_between_the_base_network_and_the_generated_one():
    """delta_scale = λ: each generated kernel is base + λ · delta, from the same
    parameters (λ 0: the base network, whatever the sketch). It is a prediction setting
    (config.eval.delta_scale): the model built for prediction has it, the training step
    generates the full delta, so training is the same whatever it is."""
    from configs import test as test_config
    from pudnet_jax import data as data_lib
    from pudnet_jax import train as train_lib
    from pudnet_jax.hypernet import build_model
    spec = target_spec('convnet3', (28, 28, 1), width=4)
    models = {lam: PudNet(spec, sketch_dim=6, sketch_features=(2, 2, 2), residual=True,
                          delta_scale=lam) for lam in (1.0, 0.5, 0.0)}
    variables = models[1.0].init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 1)))
    sketches = jax.random.normal(jax.random.PRNGKey(2), (2, 6))
    gen = {lam: [m.apply(variables, s, method=PudNet.generate) for s in sketches]
           for lam, m in models.items()}
    assert not np.allclose(gen[1.0][0]['conv1']['kernel'], gen[1.0][1]['conv1']['kernel'])
    for i in range(2):
        for name in ('conv0', 'conv1', 'conv2'):
            full, half, base = (gen[lam][i][name]['kernel'] for lam in (1.0, 0.5, 0.0))
            np.testing.assert_allclose(half, base + 0.5 * (full - base), rtol=1e-5, atol=1e-7)
            np.testing.assert_array_equal(base, gen[0.0][0][name]['kernel'])

    states = []
    for lam in (1.0, 0.5):
        config = test_config.get_config()
        config.model.residual = True
        config.eval.delta_scale = lam
        model, spec = build_model(config)
        assert model.delta_scale == lam
        pool = data_lib.load_pool('mnist5k', 28, 1)
        sampler = data_lib.EpisodeSampler(pool, config.data.train_classes, config.train.ways,
                                          config.train.shots, config.train.queries, seed=0)
        batch = sampler.episodes(sampler.sample_indices(1, config.train.episodes_per_step))
        state = train_lib.create_train_state(config, model, spec)
        state, _ = train_lib.make_train_step(config, model, spec)(state, batch)
        states.append(jax.device_get(state.params))
    jax.tree.map(np.testing.assert_array_equal, *states)
    # results.json says which λ its networks were generated with
    from pudnet_jax import evaluate
    results = evaluate.evaluate(config, model, spec, {'params': state.params,
                                                      'batch_stats': state.batch_stats},
                                pool, None, quiet=True)
    assert results['delta_scale'] == 0.5
