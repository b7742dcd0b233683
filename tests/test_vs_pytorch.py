"""The PyTorch mirror of the denoising step (benchmarks/torch_pudnet.py) at a tiny size:
the same loss and gradients as the JAX train step from the same parameters and mask.
Skipped without PyTorch (a benchmark-only requirement, benchmarks/requirements.txt)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from benchmarks import torch_pudnet  # noqa: E402
from configs import denoise  # noqa: E402
from pudnet_jax import noise  # noqa: E402
from pudnet_jax import train as train_lib  # noqa: E402
from pudnet_jax.hypernet import build_model  # noqa: E402
from pudnet_jax.tasks import denoising  # noqa: E402


def _tiny_config():
    config = denoise.get_config()
    config.data.image_size = 8
    config.target.width = 4
    config.model.sketch_dim = 16
    config.train.ways, config.train.shots, config.train.episodes_per_step = 2, 3, 2
    config.model.residual = False      # the mirror is the authors' generator
    return config


def test_denoise_step_matches_jax():
    config = _tiny_config()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pool = {k: rng.integers(0, 256, (6, 8, 8, 1), dtype=np.uint8)
            for k in config.data.train_classes}
    sampler = denoising.GroupSampler(config, pool)
    batch = sampler.episodes(sampler.sample_indices(0, config.train.episodes_per_step))
    group_shape = batch.noisy.shape[1:]
    index = jnp.arange(int(np.prod(group_shape)), dtype=jnp.float32).reshape(group_shape)
    fraction, radius = config.noise.mask_fraction, config.noise.mask_radius
    masked_index, mask = jax.vmap(lambda k: noise.n2v_mask(k, index, fraction, radius))(
        jnp.asarray(batch.mask_keys))
    source = torch_pudnet.n2v_source_nchw(np.asarray(masked_index))
    # The mask depends on the key alone: the source map reproduces the JAX masking.
    x = np.asarray(denoising.normalize(batch.noisy))[1]
    masked, _ = noise.n2v_mask(jnp.asarray(batch.mask_keys[1]), x, fraction, radius)
    nchw = x.transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(
        nchw.reshape(-1)[source[1]].reshape(nchw.shape).transpose(0, 2, 3, 1), masked)

    model, spec = build_model(config)
    state = train_lib.create_train_state(config, model, spec)
    params = jax.tree.map(np.array, state.params)
    stats = jax.tree.map(np.array, state.batch_stats)
    m = config.model
    names = ['/'.join(p) for p, _ in spec.generated]
    tmodel = torch_pudnet.TorchPudNet(
        config.target.name, spec.image_shape, config.target.width, None, m.sketch_dim,
        tuple(m.sketch_features), m.generator_p, m.generator_hidden, m.eta, 1.0,
        {'depth': torch_pudnet.unet_depth(names)})
    assert [n for n, _ in tmodel.convs] == names
    assert sorted(tmodel.shared) == sorted('__'.join(p) for p, _ in spec.shared)
    torch_pudnet.load_flax_variables(tmodel, params, stats, spec.image_shape,
                                     config.target.name)
    opt = torch.optim.Adam(tmodel.parameters(), lr=config.train.learning_rate)
    step = torch_pudnet.make_denoise_train_step(tmodel, opt)
    torch_loss = float(step((batch.noisy, np.asarray(mask), source)))

    state, metrics = train_lib.make_train_step(config, model, spec)(state, batch)
    assert torch_loss == pytest.approx(float(metrics.compute()['loss']), rel=1e-5)
    mu = jax.tree.map(np.asarray, state.opt_state[0].mu)
    theirs = torch_pudnet.torch_state_from_flax(tmodel, mu, None, spec.image_shape,
                                                config.target.name)
    for name, p in tmodel.named_parameters():
        np.testing.assert_allclose(opt.state[p]['exp_avg'].numpy(), theirs[name].numpy(),
                                   rtol=1e-3, atol=1e-7, err_msg=name)
