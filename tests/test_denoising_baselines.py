"""The denoising baselines (tiny, offline): the classical rows, Noise2Void from scratch
and fine-tuned on one group, the learning-rate choice, and Pretrained-N2V."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pudnet_jax import metrics, noise
from pudnet_jax.targets import random_init_params, target_spec
from pudnet_jax.tasks import denoising
from pudnet_jax.tasks.denoising import baselines


def _smooth_group(n, size, channels=1, seed=0):
    """n smooth images on [0.15, 0.85] (a few low-frequency waves each)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
    images = []
    for _ in range(n):
        a, b, c = rng.uniform(0.5, 3.0, 3)
        img = [0.5 + 0.35 * np.sin(a * yy + c + k) * np.cos(b * xx - k) for k in range(channels)]
        images.append(np.stack(img, -1))
    return np.asarray(images, np.float32)


def _psnr(clean, out):
    return float(np.mean(metrics.psnr(clean, out)))


@pytest.fixture(scope='module')
def group():
    clean = _smooth_group(16, 16)
    return clean, noise.add_gaussian_noise(clean, 25, (0, 1))


@pytest.fixture(scope='module')
def spec():
    return target_spec('unet_n2v_small', (16, 16, 1), width=4)


@pytest.fixture(scope='module')
def adam(spec):
    return baselines.N2VTrainer(spec, 'adam', batch_size=8)


@pytest.fixture(scope='module')
def scratch(adam, group):
    clean, noisy = group
    return adam.curve(clean, noisy, 3e-3, (0, 2, 5, 10), seed=0)


def test_classical_rows_beat_the_noisy_input_and_say_which_need_sigma(monkeypatch):
    clean = _smooth_group(2, 32)
    noisy = noise.add_gaussian_noise(clean, 25, (1,))
    floor = _psnr(clean, noisy)
    methods = ('nlm', 'tv_jinv', 'wavelet') + (('bm3d',) if baselines.bm3d_available() is None
                                               else ())
    rows = baselines.classical(noisy, 25 / 255, methods)
    for m in methods:
        out = rows[m]['output']
        assert out.shape == noisy.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 1 and rows[m]['seconds_per_image'] > 0
        assert _psnr(clean, out) > floor + 3, m
        assert rows[m]['needs_sigma'] == baselines.NEEDS_SIGMA[m]
    assert baselines.NEEDS_SIGMA == {'nlm': True, 'tv_jinv': False, 'wavelet': False,
                                     'bm3d': True}
    # RGB goes through channel_axis (one tiny image).
    rgb = _smooth_group(1, 16, channels=3)
    rows = baselines.classical(noise.add_gaussian_noise(rgb, 25, (2,)), 25 / 255,
                               ('nlm', 'wavelet', 'tv_jinv'))
    assert all(rows[m]['output'].shape == rgb.shape for m in rows)
    # σ on the 255 scale is refused; BM3D without its package is skipped with a reason.
    with pytest.raises(ValueError, match='on the \\[0, 1\\] scale'):
        baselines.classical(noisy, 25.0)
    monkeypatch.setitem(sys.modules, 'bm3d', None)      # import bm3d -> ImportError
    rows = baselines.classical(noisy[:1], 25 / 255, ('wavelet', 'bm3d'))
    assert 'output' not in rows['bm3d'] and 'pip install bm3d' in rows['bm3d']['skipped']
    assert 'output' in rows['wavelet']


def test_n2v_from_scratch_climbs_above_the_noisy_input(scratch, group):
    clean, noisy = group
    c = scratch
    assert c['epochs'] == [0, 2, 5, 10] and c['steps'] == 20 and c['seconds'][0] == 0.0
    assert np.all(np.diff(c['seconds']) > 0) and c['compile_seconds'] > 0
    # Random init is far below the noisy input; 20 Adam steps of N2V end clearly above it,
    # climbing at every milestone, and the N2V loss falls.
    floor = _psnr(clean, noisy)
    assert c['psnr'][0] < floor - 3
    assert np.all(np.diff(c['psnr']) > 0), c['psnr']
    assert c['psnr'][-1] > floor + 1.5, (c['psnr'], floor)
    assert c['ssim'][-1] > c['ssim'][0] + 0.3
    assert c['loss'][-1] < c['loss'][1]


def test_gc_and_adam_take_different_steps(spec, adam, group):
    clean, noisy = group
    gc = baselines.N2VTrainer(spec, 'gc', batch_size=8)
    a = adam.curve(clean, noisy, 1e-3, (0, 1), seed=3)
    g = gc.curve(clean, noisy, 1e-3, (0, 1), seed=3)
    assert a['psnr'][0] == g['psnr'][0]    # the same start (and the same batches and masks)
    moved = jax.tree.leaves(jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))),
                                         a['params'], g['params']))
    assert max(moved) > 1e-5
    # Per conv kernel: GC centralises the gradient before Adam, so the first updates differ.
    k0 = random_init_params(spec, 3)['enc0_conv0']['kernel']
    da = np.asarray(a['params']['enc0_conv0']['kernel'] - k0)
    dg = np.asarray(g['params']['enc0_conv0']['kernel'] - k0)
    assert not np.allclose(da, dg)
    with pytest.raises(ValueError, match="Unknown optimizer"):
        baselines.N2VTrainer(spec, 'sgd')


def test_fine_tuning_starts_from_the_given_params(adam, scratch, group):
    clean, noisy = group
    given = scratch['params']
    c = adam.curve(clean, noisy, 1e-3, (0, 1), seed=5, init_params=given)
    expected = baselines.score(clean, denoising.denoise_fn(adam.spec)(given, noisy))
    assert c['psnr'][0] == pytest.approx(expected[0], abs=1e-9)
    assert c['psnr'][0] == pytest.approx(scratch['psnr'][-1], abs=1e-6)
    assert c['ssim'][0] == pytest.approx(expected[1], abs=1e-6)
    assert c['compile_seconds'] == 0.0     # the same group shape: compiled once
    # …and a random start of the same seed does not begin there.
    fresh = adam.curve(clean, noisy, 1e-3, (0,), seed=5)
    assert fresh['psnr'][0] < c['psnr'][0] - 3


def test_learning_rate_choice_reads_the_validation_groups(adam):
    clean = _smooth_group(16, 16, seed=4)     # the group shape compiled already
    val = [(clean, noise.add_gaussian_noise(clean, 25, (4,)))]
    lr, table = baselines.choose_learning_rate(adam, val, epochs=3, seed=0)
    assert set(table) == {3e-4, 1e-3, 3e-3} and lr == max(table, key=table.get)
    assert len(set(table.values())) == 3


def test_pretrained_n2v_lowers_the_loss_and_is_deterministic():
    from tests.test_denoising import _tiny
    config = _tiny()
    config.train.learning_rate = 3e-3
    config.data.image_size = 16            # the other tests' UNet shapes (compiled once)
    loaded = denoising.load(config)
    sampler = denoising.make_sampler(config, loaded)
    spec = target_spec(config.target.name, (16, 16, 1), width=config.target.width)
    params, seconds = baselines.pretrain_n2v(config, spec, sampler, steps=10, seed=0)
    again, _ = baselines.pretrain_n2v(config, spec, sampler, steps=10, seed=0)
    assert seconds > 0
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # The N2V loss on fresh training groups (steps PudNet would take later) falls.
    loss = jax.jit(denoising.make_episode_loss(config, spec))
    held = sampler.episodes(sampler.sample_indices(1000, 3))

    def mean_loss(p):
        return np.mean([float(loss({}, p, jax.tree.map(lambda v: v[e], held))[0])
                        for e in range(3)])
    before, after = mean_loss(random_init_params(spec, 0)), mean_loss(params)
    assert after < 0.8 * before, (before, after)
    # The layout apply_with_dataset_stats takes (the task's denoiser runs on it).
    out = denoising.denoise_fn(spec)(params, jnp.asarray(held.noisy[0]))
    assert out.shape == held.noisy[0].shape and np.all(np.isfinite(np.asarray(out)))
