"""The denoising task's parts (issue 11): the authors' UNet as a generated target, noise
and Noise2Void masking, and PSNR/SSIM checked against scikit-image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import metrics as skm

from pudnet_jax import metrics, noise
from pudnet_jax.hypernet import PudNet
from pudnet_jax.targets import apply_with_dataset_stats, target_spec


def test_unet_kernels_are_all_generated_in_forward_order_and_it_maps_images_to_images():
    spec = target_spec('unet_n2v_small', (16, 16, 3), width=4)
    names = ['/'.join(p[:-1]) for p, _ in spec.generated]
    assert len(names) == 4 * 2 + 2 and spec.output == 'image'
    assert names == ['enc0_conv0', 'enc0_conv1', 'enc1_conv0', 'enc1_conv1', 'mid_conv0',
                     'mid_conv1', 'dec1_conv0', 'dec1_conv1', 'dec0_conv0', 'out_conv']
    shapes = dict(zip(names, (s for _, s in spec.generated)))
    # The authors' channel pattern at width 4: the bottleneck doubles then halves, each
    # decoder level reads [skip, upsampled] (twice its width); the output is linear, 3 channels.
    assert shapes['enc0_conv0'] == (3, 3, 3, 4) and shapes['mid_conv0'] == (3, 3, 8, 16)
    assert shapes['mid_conv1'] == (3, 3, 16, 8) and shapes['dec1_conv0'] == (3, 3, 16, 8)
    assert shapes['dec0_conv0'] == (3, 3, 8, 4) and shapes['out_conv'] == (3, 3, 4, 3)
    shared = {'/'.join(p) for p, _ in spec.shared}
    assert 'out_conv/bias' in shared and not any(p.endswith('kernel') for p in shared)
    assert target_spec('unet_n2v', (32, 32, 1), width=2).output == 'image'
    with pytest.raises(ValueError, match='multiples of 16'):
        target_spec('unet_n2v', (24, 24, 1), width=2)

    model = PudNet(spec, sketch_dim=6, sketch_features=(2, 2, 2))
    x = jax.random.uniform(jax.random.PRNGKey(1), (5, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    p1 = model.apply(variables, jnp.ones(6), method=PudNet.generate)
    p2 = model.apply(variables, -jnp.ones(6), method=PudNet.generate)
    assert not np.allclose(p1['dec0_conv0']['kernel'], p2['dec0_conv0']['kernel'])
    out, _, stats = apply_with_dataset_stats(spec, p1, x)
    assert out.shape == x.shape and np.all(np.isfinite(out))
    assert 'dec0_conv0_bn' in stats and 'out_conv' not in stats


def test_n2v_mask_replaces_the_asked_fraction_from_the_same_channel_within_the_radius():
    n, h, w, c, r = 3, 12, 10, 2, 2
    # Every element's value encodes its own (image, y, x, channel).
    idx = np.arange(n * h * w * c, dtype=np.float32).reshape(n, h, w, c)
    masked, mask = jax.jit(lambda k, x: noise.n2v_mask(k, x, 0.1, r))(jax.random.PRNGKey(0), idx)
    masked, mask = np.asarray(masked), np.asarray(mask)
    assert np.all(mask.sum(axis=(1, 2)) == round(0.1 * h * w))       # per image and channel
    np.testing.assert_array_equal(masked[mask == 0], idx[mask == 0])
    for i, y, x, ch in zip(*np.nonzero(mask)):
        src = np.unravel_index(int(masked[i, y, x, ch]), idx.shape)
        assert src[0] == i and src[3] == ch                     # same image, same channel
        # The source is a reflected offset within [-r, r]^2 other than (0, 0).
        dy = [d for d in range(-r, r + 1) if _reflect(y + d, h) == src[1]]
        dx = [d for d in range(-r, r + 1) if _reflect(x + d, w) == src[2]]
        assert dy and dx and any((a, b) != (0, 0) for a in dy for b in dx)
    again, _ = noise.n2v_mask(jax.random.PRNGKey(0), idx, 0.1, r)
    np.testing.assert_array_equal(again, masked)


def _reflect(i, n):
    i = abs(i)
    return 2 * (n - 1) - i if i > n - 1 else i


def test_gaussian_noise_is_seeded_unclipped_and_on_the_255_scale():
    clean = np.full((4, 32, 32, 1), 0.98, np.float32)
    a = noise.add_gaussian_noise(clean, 25, (0, 3))
    np.testing.assert_array_equal(a, noise.add_gaussian_noise(clean, 25, (0, 3)))
    assert not np.array_equal(a, noise.add_gaussian_noise(clean, 25, (0, 4)))
    assert a.dtype == np.float32 and a.max() > 1.0                      # not clipped
    assert abs(float(np.std(a - clean)) - 25 / 255) < 0.005


@pytest.mark.parametrize('channels', [1, 3])
def test_psnr_and_ssim_equal_scikit_image(channels):
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.1, 0.9, (3, 20, 24, channels)).astype(np.float32)
    clean[1] = np.linspace(0, 1, 24, dtype=np.float32)[None, :, None]   # a smooth image
    out = clean + rng.normal(0, 0.1, clean.shape).astype(np.float32)    # beyond [0, 1] too
    got_psnr = metrics.psnr(clean, out)
    got_psnr_jax = np.asarray(jax.jit(metrics.psnr_jax)(clean, out))
    got_ssim = np.asarray(jax.jit(metrics.ssim_jax)(clean, out))
    for i in range(len(clean)):
        o = np.clip(out[i], 0, 1).astype(np.float64)
        c = clean[i].astype(np.float64)
        ref_psnr = skm.peak_signal_noise_ratio(c, o, data_range=1.0)
        ref_ssim = skm.structural_similarity(
            c[..., 0] if channels == 1 else c, o[..., 0] if channels == 1 else o,
            data_range=1.0, channel_axis=None if channels == 1 else -1)
        assert abs(got_psnr[i] - ref_psnr) < 1e-9
        assert abs(got_psnr_jax[i] - ref_psnr) < 1e-4
        assert abs(got_ssim[i] - ref_ssim) < 1e-4
    assert metrics.psnr(clean, clean)[0] == np.inf
    np.testing.assert_allclose(metrics.ssim_jax(clean, clean), 1.0, atol=1e-6)


def test_a_classification_config_with_the_unet_is_refused():
    from configs import test as test_config
    from pudnet_jax import config_check
    from pudnet_jax.errors import UserError
    config = test_config.get_config()
    config.target.name = 'unet_n2v'
    with pytest.raises(UserError, match=r"config.target.name='unet_n2v': is an image-to-image"):
        config_check.validate(config)


def test_a_denoising_config_with_a_feature_extractor_is_refused():
    from configs import denoise
    from pudnet_jax import config_check
    from pudnet_jax.errors import UserError
    config = denoise.get_config()
    config.target.name = 'convnet3'
    with pytest.raises(UserError, match=r"config.target.name='convnet3': is a feature "
                                        r"extractor; denoising needs one of \['unet_n2v', "
                                        r"'unet_n2v_3', 'unet_n2v_small'\]"):
        config_check.validate(config)


def test_photographs_source_is_offline_tiles_of_the_bundled_photographs():
    from skimage import data
    from pudnet_jax import sources
    from pudnet_jax.sources import photos
    a = sources.load('skimage_photos', 32, 1, cache=False)
    b = sources.load('skimage_photos', 32, 1, cache=False)
    assert a.class_names == list(photos.SETS['skimage_photos'])
    for k in a.pool:
        np.testing.assert_array_equal(a.pool[k], b.pool[k])          # deterministic
    camera = data.camera()                                            # 512 x 512: 16 x 16 tiles
    cam = a.pool[a.class_names.index('camera')]
    assert cam.shape == (256, 32, 32, 1) and cam.dtype == np.uint8
    np.testing.assert_array_equal(cam[17, ..., 0], camera[32:64, 32:64])   # row 1, column 1
    chelsea = sources.load('skimage_photos', 32, 1, cache=False).pool[7]
    assert len(chelsea) == (300 // 32) * (451 // 32)                  # the borders dropped
    assert sources.load('skimage_textures', 16, 3, cache=False).pool[0].shape[-1] == 3
    full = photos.full_images('skimage_photos', 1, (6,))
    np.testing.assert_array_equal(full['camera'][..., 0], camera)
    # The default's wider set: the same eight first (same indices), then five more.
    wide = sources.load('skimage_photos_wide', 32, 1, cache=False)
    assert wide.class_names[:8] == a.class_names and len(wide.class_names) == 13
    for k in range(8):
        np.testing.assert_array_equal(wide.pool[k], a.pool[k])
    text = wide.pool[wide.class_names.index('text')]
    assert len(text) == (172 // 32) * (448 // 32)
    np.testing.assert_array_equal(text[0, ..., 0], data.text()[:32, :32])


def test_a_whole_image_is_denoised_tile_by_tile_and_equivariant_to_gain_and_offset():
    """Overlapping tiles cover every pixel once, the output has the image's size, and
    (per-group normalisation) denoise(a·y + b) = a·denoise(y) + b."""
    from pudnet_jax.targets import random_init_params
    from pudnet_jax.tasks.denoising import evaluation
    spec = target_spec('unet_n2v_small', (16, 16, 1), width=4)

    class _Stub:            # a Predictor without a hypernetwork: only the UNet is used
        pass
    pred = _Stub()
    pred.spec = spec
    pred.stats_and_apply = evaluation.Predictor.stats_and_apply.__get__(pred)
    params = random_init_params(spec, 0)
    y = np.random.default_rng(0).random((37, 45, 1)).astype(np.float32)
    out = evaluation.denoise_image(pred, params, y)
    assert out.shape == y.shape and np.isfinite(out).all()
    out2 = evaluation.denoise_image(pred, params, 2.0 * y + 0.25)
    np.testing.assert_allclose(out2, 2.0 * out + 0.25, atol=1e-4)
    # The tiles are put back in place: a change at one spot (off the diagonal, so a
    # transposed or shifted assembly would move it) changes the output most near it.
    z = y.copy()
    z[8:10, 30:32] += 1.0
    diff = np.abs(evaluation.denoise_image(pred, params, z) - out)[..., 0]
    row, col = np.unravel_index(np.argmax(diff), diff.shape)
    assert 6 <= row <= 11 and 28 <= col <= 33
