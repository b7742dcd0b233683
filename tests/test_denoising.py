"""The denoising task end to end on scikit-image's photographs (tiny): trains through the
unchanged trainer with the Noise2Void loss, resumes, reports PSNR/SSIM beside the noisy
input and the controls (intra groups and whole photographs), and denoises a user's folder
of noisy images with `--mode=predict --data`."""

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


def _tiny(variant=''):
    config = denoise.get_config(variant)
    config.data.image_size = 16
    config.target.name = 'unet_n2v_small'
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
    assert a.noisy.shape == (2, 6, 16, 16, 1) and a.clean.min() >= 0 and a.clean.max() <= 1
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


def _noisy_folder(tmp_path):
    """Two noisy photographs (one RGB, converted to the run's gray) and their clean ones."""
    from PIL import Image
    from skimage import data
    noisy, clean = tmp_path / 'noisy', tmp_path / 'clean'
    noisy.mkdir(), clean.mkdir()
    rng = np.random.default_rng(0)
    for name, image in (('coins', data.coins()[:64, :80]), ('rocket', data.rocket()[:48, :60])):
        gray = np.asarray(Image.fromarray(image).convert('L'))
        Image.fromarray(gray).save(clean / f'{name}.png')
        x = np.clip(image / 255.0 + 25 / 255 * rng.standard_normal(image.shape), 0, 1)
        Image.fromarray(np.round(x * 255).astype(np.uint8)).save(noisy / f'{name}.jpg'
                                                                 if name == 'rocket' else
                                                                 noisy / f'{name}.png')
    return str(noisy), str(clean)


def test_denoising_trains_resumes_reports_and_predicts_a_folder(tmp_path, capsys):
    config = _tiny()
    workdir = str(tmp_path / 'run')
    # Killed after step 2 (its checkpoint kept, nothing evaluated), then resumed there
    # (bitwise resumption: tests/test_tasks.py).
    assert train_lib.train_and_evaluate(config, workdir, stop_after_step=2) == {
        'stopped_at_step': 2}
    results = train_lib.train_and_evaluate(config, workdir)
    assert results['train_steps'] == 4 and results['task'] == 'denoising'
    out = capsys.readouterr().out
    assert 'noisy input' in out and 'mean-sketch UNet' in out and 'Pretrained-N2V' in out
    controls = results['controls']
    for row in (results, results['noisy'], controls['untrained'], controls['mean_sketch'],
                controls['pretrained_n2v']):
        assert np.isfinite(row['psnr']) and 0 < row['ssim'] <= 1
    np.testing.assert_allclose(results['conditioning_gain_db'],
                               results['psnr'] - controls['mean_sketch']['psnr'], atol=1e-9)
    np.testing.assert_allclose(results['gain_over_pretrained_n2v_db'],
                               results['psnr'] - controls['pretrained_n2v']['psnr'], atol=1e-9)
    assert results['predict_seconds'] > 0 and results['denoise_seconds'] > 0
    # The noisy row is the noisy input's own PSNR: σ = 25 on [0, 1] data, clipped output.
    assert 18 < results['noisy']['psnr'] < 26
    assert results['psnr_noisy'] == results['noisy']['psnr']
    assert results['ssim_noisy'] == results['noisy']['ssim']
    # Whole held-out photographs (camera 512x512, chelsea 300x451: padded, cropped back).
    full = results['full_images']
    assert sorted(full) == ['camera', 'chelsea'] and full['chelsea']['shape'] == [300, 451, 1]
    assert 18 < full['camera']['noisy']['psnr'] < 23
    # The control was trained once and is reused by --mode=evaluate (same figures).
    from pudnet_jax.tasks.denoising import pretrained
    assert pretrained.load(workdir) is not None
    _, _, spec, _ = workdir_lib.restore_hypernet(workdir)
    assert spec.output == 'image'

    noisy, clean = _noisy_folder(tmp_path)
    report = denoising.predict_folder(workdir, noisy, None, clean_folder=clean)
    assert [r['file'] for r in report['images']] == ['coins.png', 'rocket.jpg']
    from PIL import Image
    out = np.asarray(Image.open(tmp_path / 'run' / 'predictions' / report['output'].split('/')[-1]
                                / 'denoised' / 'rocket.png'))
    assert out.shape == (48, 60)        # the image's own size, gray like the run
    for r in report['images']:
        assert np.isfinite(r['psnr']) and 15 < r['psnr_noisy'] < 25
    # The saved UNet (reloaded from disk) is the predicted one: the same output.
    from pudnet_jax import predict as predict_lib
    from pudnet_jax.tasks.denoising import evaluation
    from pudnet_jax.tasks.denoising import predict as denoise_predict
    from pudnet_jax import sources
    _, variables, meta = predict_lib.load_variables(report['network'])
    assert meta['target'] == 'unet_n2v_small' and meta['task'] == 'denoising'
    _, model, spec, hyper_vars = workdir_lib.restore_hypernet(workdir)
    images = sources.load_unlabelled(noisy, None, 1)
    tiles = denoise_predict.sketch_tiles(
        [(n, im / np.float32(255)) for n, im in zip(images.files, images.images)], 16, 1024)
    assert meta['sketch_tiles'] == len(tiles) == 4 * 5 + 3 * 3
    expected = evaluation.Predictor(model, hyper_vars, spec).params(tiles)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(variables['params'])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(UserError, match='needs --data'):
        cli.run('predict', workdir, None, None, True)
    # --mode=compare on the same workdir, tiny: the tables, the figures, the same gains.
    from pudnet_jax.tasks.denoising import comparison
    config = _tiny()
    c = config.compare
    c.groups, c.tune_groups, c.epochs, c.learning_rates = 2, 1, (1, 2), (1e-3,)
    c.batch_size, c.methods, c.classical = 4, ('gc', 'classical'), ('wavelet',)
    config.eval.groups = 3
    summary = comparison.run_compare(workdir, config)
    names = [r['method'] for r in summary['rows']]
    assert (summary['dataset'], summary['pool'], summary['protocol']) == (
        'skimage_photos_wide', 'skimage_photos_wide', 'intra')
    assert names[:5] == ['PudNet', 'noisy input', 'untrained UNet', 'mean-sketch UNet',
                         'Pretrained-N2V UNet']
    assert 'GC N2V scratch 2 epochs' in names and 'wavelet BayesShrink' in names
    by = {r['method']: r for r in summary['rows']}
    np.testing.assert_allclose(summary['conditioning_gain_db'],
                               by['PudNet']['psnr'] - by['mean-sketch UNet']['psnr'], atol=1e-9)
    for ext in ('md', 'csv', 'json', 'png'):
        assert (tmp_path / 'run' / f'compare.{ext}').stat().st_size > 0
    assert (tmp_path / 'run' / 'compare_examples.png').stat().st_size > 0
    assert sorted(summary['full_images']) == ['camera', 'chelsea']

    # The inter-dataset variants: the same workdir tested on scikit-image's textures, a
    # set outside the pool (groups of the set's tiles; no whole photographs).
    from pudnet_jax import config_check
    for variant in denoise.INTER:
        config_check.validate(denoise.get_config(variant))
    with pytest.raises(ValueError, match="known: 'four', 'digits', 'textures', 'microscopy'"):
        denoise.get_config('cells')
    config = _tiny('textures')
    config.eval.group_size, config.eval.groups = 6, 2
    before = open(f'{workdir}/results.json').read()
    cli.run('evaluate', workdir, config, None)
    assert open(f'{workdir}/results.json').read() == before     # the run's own, kept
    r = __import__('json').load(open(f'{workdir}/results_inter_skimage_textures.json'))
    assert (r['protocol'], r['dataset'], r['pool']) == ('inter', 'skimage_textures',
                                                       'skimage_photos_wide')
    assert r['groups'] == 2 and r['images_per_group'] == 6 and 'full_images' not in r
    assert 18 < r['psnr_noisy'] < 26 and 'pretrained_n2v' in r['controls']
    np.testing.assert_allclose(r['conditioning_gain_db'],
                               r['psnr'] - r['controls']['mean_sketch']['psnr'], atol=1e-9)

    other = tmp_path / 'other'
    other.mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(other / 'x.png')
    with pytest.raises(UserError, match="no image named like 'coins.png'"):
        cli.run('predict', workdir, None, noisy, True, str(other))


def _shrink_denoise(config):
    """A paper preset at test size: 16x16, the depth-2 UNet, one step, one group."""
    config.data.image_size = 16
    config.target.name, config.target.width = 'unet_n2v_small', 4
    config.model.sketch_dim, config.model.sketch_features = 8, (4, 4, 4)
    t = config.train
    t.ways, t.shots, t.num_train_steps, t.log_every, t.checkpoint_every = 2, 2, 1, 1, 1
    e = config.eval
    e.ways, e.shots, e.groups, e.untrained_seeds, e.mean_sketch_images = 2, 2, 1, 1, 4
    if e.get('protocol') == 'inter':
        e.group_size, e.per_class = 4, 2
    return config


def test_paper_denoising_presets_under_mock_data(tmp_path):
    """ImageNet-1K (intra) trains and evaluates; the inter-dataset configs evaluate that
    workdir on TFDS targets; every preset is a valid config."""
    tfds = pytest.importorskip('tensorflow_datasets')
    from configs import denoise_imagenet1k, denoise_inter
    from pudnet_jax import config_check
    for sigma in ('25', '50', '75'):
        config = denoise_imagenet1k.get_config(sigma)
        config_check.validate(config)
        assert config.noise.sigma == float(sigma) and config.target.name == 'unet_n2v'
    for target in denoise_inter.TARGETS:
        config_check.validate(denoise_inter.get_config(f'{target},50'))
    with pytest.raises(ValueError, match='σ in'):
        denoise_imagenet1k.get_config('30')
    workdir = str(tmp_path / 'in1k')
    with tfds.testing.mock_data(num_examples=8000):
        config = _shrink_denoise(denoise_imagenet1k.get_config('50'))
        config.data.cache_dir = str(tmp_path / 'cache')
        results = train_lib.train_and_evaluate(config, workdir)
        assert results['dataset'] == 'imagenet2012' and results['sigma'] == 50.0
        assert results['protocol'] == 'intra' and np.isfinite(results['psnr'])
        for target in ('cifar10', 'dtd'):
            config = _shrink_denoise(denoise_inter.get_config(f'{target},50'))
            config.data.cache_dir = str(tmp_path / 'cache')
            cli.run('evaluate', workdir, config, None)
            r = __import__('json').load(open(f'{workdir}/results_inter_{target}.json'))
            assert r['protocol'] == 'inter' and r['dataset'] == target
            assert r['pool'] == 'imagenet2012' and r['images_per_group'] == 4
            assert 0 < r['noisy']['ssim'] <= 1 and np.isfinite(r['psnr'])
        own = __import__('json').load(open(f'{workdir}/results.json'))
        assert (own['protocol'], own['dataset']) == ('intra', 'imagenet2012')   # kept
