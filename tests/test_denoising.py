"""The denoising task end to end on the offline digits (tiny): trains through the
unchanged trainer with the Noise2Void loss and reports PSNR/SSIM beside
the noisy input and the controls."""

import jax
import numpy as np
import pytest

from configs import denoise
from pudnet_jax import cli
from pudnet_jax import train as train_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.errors import UserError
from pudnet_jax.hypernet import build_model
from pudnet_jax.tasks import denoising


def _tiny():
    config = denoise.get_config()
    config.target.width = 4
    config.model.sketch_dim = 8
    config.model.sketch_features = (4, 4, 4)
    t = config.train
    t.ways, t.shots, t.episodes_per_step = 2, 3, 2
    t.num_train_steps, t.log_every, t.checkpoint_every = 4, 2, 2
    e = config.eval
    e.ways, e.shots, e.groups, e.untrained_seeds, e.mean_sketch_images = 2, 3, 3, 1, 12
    return config


def test_groups_are_seeded_and_the_loss_reads_only_masked_pixels():
    config = _tiny()
    model, spec = build_model(config)
    sampler = denoising.make_sampler(config, denoising.load(config))
    a = sampler.episodes(sampler.sample_indices(3, 2))
    b = sampler.episodes(sampler.sample_indices(3, 2))
    np.testing.assert_array_equal(a.noisy, b.noisy)
    assert a.noisy.shape == (2, 6, 28, 28, 1) and a.clean.min() >= 0 and a.clean.max() <= 1
    assert abs(float(np.std(a.noisy - a.clean)) - 25 / 255) < 0.01
    # Per group: normalised to mean 0, std 1 per channel.
    x = np.asarray(denoising.sketch_images(a))
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(1, 2, 3)), 1, atol=1e-3)
    # The clean images never reach the loss (only the reported PSNR).
    state = train_lib.create_train_state(config, model, spec)
    assert 'full_head' not in state.params
    loss = jax.jit(denoising.make_episode_loss(config, spec))
    ep = jax.tree.map(lambda v: v[0], a)
    params = model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                         np.zeros(8, np.float32), method='generate')
    l1, parts1 = loss({}, params, ep)
    l2, parts2 = loss({}, params, ep.replace(clean=np.zeros_like(ep.clean)))
    assert float(l1) == float(l2) and float(parts1['psnr']) != float(parts2['psnr'])


def test_denoising_trains_and_reports_beside_its_controls(tmp_path, capsys):
    config = _tiny()
    workdir = str(tmp_path / 'run')      # (resumption of any task: tests/test_tasks.py)
    results = train_lib.train_and_evaluate(config, workdir)
    assert results['train_steps'] == 4 and results['task'] == 'denoising'
    out = capsys.readouterr().out
    assert 'noisy input' in out and 'mean-sketch UNet' in out
    for row in (results, results['noisy'], results['controls']['untrained'],
                results['controls']['mean_sketch']):
        assert np.isfinite(row['psnr']) and 0 < row['ssim'] <= 1
    np.testing.assert_allclose(results['conditioning_gain_db'],
                               results['psnr'] - results['controls']['mean_sketch']['psnr'],
                               atol=1e-9)
    # The noisy row is the noisy input's own PSNR: σ = 25 on [0, 1] data, clipped output.
    assert 18 < results['noisy']['psnr'] < 26
    _, _, spec, _ = workdir_lib.restore_hypernet(workdir)
    assert spec.output == 'image'
    with pytest.raises(UserError, match="--mode=predict is not available yet for "
                                        "config.task='denoising'"):
        cli.run('predict', workdir, None, None, True)
