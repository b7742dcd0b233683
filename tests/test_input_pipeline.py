"""How episodes reach the train step (`config.train.input`, pudnet_jax/input_pipeline.py):
the device path (indices only, images gathered inside the jitted step) gives the host
path's episodes and the same training, the prefetching host feed gives the serial one's
batches in order, and 'auto' falls back to the host for a pool over the device budget."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from pudnet_jax import data as data_lib
from pudnet_jax import input_pipeline
from pudnet_jax import train as train_lib
from pudnet_jax.hypernet import build_model


def _pool(seed=0, classes=6, per_class=12, size=8):
    rng = np.random.default_rng(seed)
    # classes of different sizes, so that positions cross uneven class boundaries
    return {c: rng.integers(0, 256, (per_class + c, size, size, 1), dtype=np.uint8)
            for c in range(classes)}


@pytest.mark.parametrize('domains', [None, {'a': [0, 1, 2], 'b': [3, 4, 5]}])
def test_device_gather_is_bitwise_the_host_episodes(domains):
    sampler = data_lib.EpisodeSampler(_pool(), list(range(6)), 3, 2, 3, seed=4,
                                      domains=domains)
    gather = jax.jit(data_lib.gather_episodes)
    images = jnp.asarray(sampler.flat_images())
    table = jnp.asarray(data_lib.normalization_table())
    for index in range(3):
        host = sampler.sample(index, 5)
        device = gather(images, sampler.sample_indices(index, 5), table)
        for name in ('support', 'support_labels', 'query', 'query_labels', 'classes'):
            np.testing.assert_array_equal(np.asarray(getattr(device, name)),
                                          getattr(host, name), err_msg=name)
    # every image of an episode is from the class its label says, and support != query
    ix = sampler.sample_indices(0, 5)
    owner = np.searchsorted(np.cumsum([len(sampler.pool[c]) for c in sampler.classes]),
                            ix.support, side='right')
    np.testing.assert_array_equal(owner, np.take_along_axis(ix.classes, ix.support_labels, 1))
    for e in range(5):
        assert not set(ix.support[e]) & set(ix.query[e])


def _step_results(config, pool, inputs, steps=3):
    model, spec = build_model(config)
    state = train_lib.create_train_state(config, model, spec)
    sampler = data_lib.EpisodeSampler(pool, config.data.train_classes, config.train.ways,
                                      config.train.shots, config.train.queries, seed=0)
    config.train.input, config.train.prefetch = inputs, 2
    feed = input_pipeline.make_feed(config, sampler)
    assert feed.on_device == (inputs == 'device')
    step = train_lib.make_train_step(config, model, spec, on_device=feed.on_device)
    losses = []
    try:
        for s in range(1, steps + 1):
            state, metrics = step(state, *feed(s))
            losses.append(float(metrics.compute()['loss']))
    finally:
        feed.close()
    return losses, jax.device_get(state.params)


def test_training_on_device_episodes_equals_host_episodes():
    config = test_config.get_config()
    config.train.num_train_steps = 3
    pool = data_lib.load_pool(config.data.name, config.data.image_size, config.data.channels)
    host_losses, host_params = _step_results(config, pool, 'host')
    device_losses, device_params = _step_results(config, pool, 'device')
    assert len(set(host_losses)) == 3            # the steps do train
    np.testing.assert_allclose(device_losses, host_losses, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(device_params), jax.tree.leaves(host_params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('num_groups', [None, 4])
def test_prefetching_feeds_give_the_serial_batches_in_order(num_groups):
    config = test_config.get_config()
    t = config.train
    t.num_train_steps, t.num_groups = 7, num_groups
    sampler = data_lib.EpisodeSampler(_pool(), list(range(6)), 3, 2, 3, seed=1)
    feed = input_pipeline.host_feed(sampler, t, first=3, prefetch=3)
    try:
        for s in range(3, 8):
            (batch,) = feed(s)
            expected = input_pipeline.training_batch(sampler, s, t)
            np.testing.assert_array_equal(np.asarray(batch.support), expected.support)
            np.testing.assert_array_equal(np.asarray(batch.classes), expected.classes)
            assert len(feed.pending) <= 3
        assert not feed.pending                  # nothing drawn past the last step
    finally:
        feed.close()
    feed = input_pipeline.device_feed(sampler, t, first=2, prefetch=2)
    try:
        for s in range(2, 8):
            indices, images = feed(s)
            expected = input_pipeline.training_indices(sampler, s, t)
            np.testing.assert_array_equal(np.asarray(indices.support), expected.support)
            np.testing.assert_array_equal(np.asarray(images), sampler.flat_images())
    finally:
        feed.close()
    feed = input_pipeline.device_feed(sampler, t, first=1, prefetch=2)
    feed(1)
    with pytest.raises(RuntimeError, match='step 5 asked for, 2 prepared'):
        feed(5)
    feed.close()


def test_auto_puts_the_pool_on_the_device_only_when_it_fits(monkeypatch):
    sampler = data_lib.EpisodeSampler(_pool(), list(range(6)), 3, 2, 3, seed=1)
    size = input_pipeline.pool_bytes(sampler)
    assert size == sum(v.nbytes for v in sampler.pool.values())
    monkeypatch.setattr(input_pipeline, 'device_pool_budget', lambda: size)
    assert input_pipeline.resolve_input('auto', sampler) == 'device'
    monkeypatch.setattr(input_pipeline, 'device_pool_budget', lambda: size - 1)
    assert input_pipeline.resolve_input('auto', sampler) == 'host'
    assert input_pipeline.resolve_input('device', sampler) == 'device'
    with pytest.raises(ValueError, match="config.train.input must be one of"):
        input_pipeline.resolve_input('gpu', sampler)
