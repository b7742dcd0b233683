"""Episode styles (`config.train.episode_augment`, pudnet_jax/augment.py): each transform
does what it says, one style per episode (its labelled and query images alike), drawn
from the step so a resumed run draws the same, and the training step uses them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from pudnet_jax import augment, config_check
from pudnet_jax import data as data_lib
from pudnet_jax import train as train_lib
from pudnet_jax.hypernet import build_model


def _square(n=2, size=8):
    return jnp.zeros((n, size, size, 1)).at[:, 3:5, 3:5, :].set(1.0)


def _draws(names, count=60, p=None):
    p = _square() if p is None else p
    return [np.asarray(augment.style(jax.random.PRNGKey(i), p, names)) for i in range(count)]


def test_thickness_erodes_leaves_or_dilates_with_a_3x3_window():
    sums = {float(d.sum()) for d in _draws(('thickness',))}
    # a 2x2 square: eroded away, left as 4 pixels, dilated to 4x4 (two images)
    assert sums == {0.0, 8.0, 32.0}


def test_blur_keeps_the_mass_inside_and_lowers_the_peak():
    draws = _draws(('blur',))
    for d in draws:
        np.testing.assert_allclose(d.sum(), 8.0, rtol=1e-5)   # a box blur away from borders
    peaks = [d.max() for d in draws]
    assert min(peaks) < 0.6 and max(peaks) > 0.9


def test_gamma_contrast_and_invert_change_levels_as_documented():
    ramp = jnp.linspace(0.0, 1.0, 64).reshape(1, 8, 8, 1)
    gammas = _draws(('gamma',), p=ramp)
    mid = [float(d[0, 3, 7, 0]) for d in gammas]               # the pixel at 31/63
    assert min(mid) < 0.4 < 0.6 < max(mid)
    for d in gammas:                                            # monotone, ends fixed
        assert d[0, 0, 0, 0] == 0.0 and d[0, -1, -1, 0] == pytest.approx(1.0)
        assert np.all(np.diff(d.ravel()) >= 0)
    contrast = _draws(('contrast',), p=ramp)
    for d in contrast:
        assert 0.0 <= d.min() <= 0.3 and 0.7 <= d.max() <= 1.0
    lows, highs = [d.min() for d in contrast], [d.max() for d in contrast]
    assert max(lows) > 0.2 and min(highs) < 0.8       # levels drawn, not left at 0 and 1
    inverted = [bool(d[0, 0, 0, 0] == 1.0) for d in _draws(('invert',), p=ramp)]
    assert 15 < sum(inverted) < 45


def _batch(episodes=6):
    rng = np.random.default_rng(0)
    pixels = lambda n: rng.integers(0, 2, (episodes, n, 8, 8, 1)).astype(np.float32)
    return data_lib.Episodes(support=jnp.asarray(augment.to_normalized(pixels(6))),
                             support_labels=jnp.zeros((episodes, 6), jnp.int32),
                             query=jnp.asarray(augment.to_normalized(pixels(9))),
                             query_labels=jnp.zeros((episodes, 9), jnp.int32),
                             classes=jnp.zeros((episodes, 3), jnp.int32))


def test_one_style_per_episode_for_its_support_and_query_drawn_from_the_step():
    config = test_config.get_config()
    config.train.episode_augment = ('invert',)
    styles = jax.jit(augment.make_episode_styles(config))
    batch = _batch()
    out = styles(3, batch)
    flipped = []
    for e in range(6):
        s_same = np.allclose(out.support[e], batch.support[e])
        q_same = np.allclose(out.query[e], batch.query[e])
        assert s_same == q_same                      # one style for the whole episode
        if not s_same:
            np.testing.assert_allclose(out.support[e], -batch.support[e], atol=1e-6)
        flipped.append(not s_same)
    assert 0 < sum(flipped) < 6                      # drawn per episode
    np.testing.assert_array_equal(styles(3, batch).support, out.support)   # from the step
    assert any(not np.array_equal(styles(s, batch).support, out.support) for s in (4, 5, 6))
    np.testing.assert_array_equal(out.support_labels, batch.support_labels)


def test_off_by_default_and_bad_names_refused_in_one_line():
    config = test_config.get_config()
    assert config.train.episode_augment == ()
    assert augment.make_episode_styles(config) is None
    config.train.episode_augment = ('thickness', 'sepia')
    with pytest.raises(ValueError) as e:
        config_check.validate(config)
    assert 'config.train.episode_augment' in str(e.value) and 'sepia' in str(e.value)
    assert len(str(e.value).strip().splitlines()) == 1
    # a task without episode styles refuses them
    import os, sys
    sys.path.insert(0, os.path.dirname(__file__))
    from test_denoising import _tiny
    config = _tiny()
    config.train.episode_augment = ('thickness',)
    with pytest.raises(ValueError, match=r'episode_augment.*no episode styles'):
        config_check.validate(config)


def test_the_train_step_trains_on_the_styled_episodes():
    config = test_config.get_config()
    config.train.episode_augment = ('thickness', 'blur', 'gamma', 'contrast', 'invert')
    pool = data_lib.load_pool(config.data.name, config.data.image_size, config.data.channels)
    sampler = data_lib.EpisodeSampler(pool, config.data.train_classes, config.train.ways,
                                      config.train.shots, config.train.queries, seed=0)
    batch = sampler.sample(1, config.train.episodes_per_step)
    model, spec = build_model(config)
    step = train_lib.make_train_step(config, model, spec)
    # A copy of one state for each call (the step donates it; a state made anew would
    # have a new optimizer object, a static field, and compile the step again). The
    # styles are drawn from the state's step: the same step, the same loss; another
    # step, other styles and another loss.
    base = train_lib.create_train_state(config, model, spec)
    state = lambda s: jax.tree.map(jnp.copy, base).replace(step=s)
    loss = lambda s: float(step(state(s), batch)[1].compute()['loss'])
    assert loss(0) == loss(0)
    assert loss(0) != loss(1)
