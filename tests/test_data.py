"""Sources, preprocessing, the episode sampler and its errors."""

import numpy as np
import pytest

import pudnet_jax  # noqa: F401
from pudnet_jax import data


def _pool(counts, shape=(8, 8, 1)):
    rng = np.random.default_rng(0)
    return {c: rng.integers(0, 256, (n,) + shape, dtype=np.uint8) for c, n in counts.items()}


def test_mnist5k_is_real_offline_mnist():
    pool = data.load_pool('mnist5k', 28, 1)
    assert sorted(pool) == list(range(10))
    assert all(v.shape == (500, 28, 28, 1) and v.dtype == np.uint8 for v in pool.values())
    # Real digits: mostly black background with bright strokes, classes differ on average.
    ones, zeros = pool[1].astype(float), pool[0].astype(float)
    assert 20 < zeros.mean() < 80 and zeros.max() == 255
    assert ones.mean() < zeros.mean()


def test_episodes_are_deterministic_disjoint_and_labelled():
    pool = _pool({c: 20 for c in range(6)})
    sampler = data.EpisodeSampler(pool, [0, 1, 2, 3, 4, 5], ways=3, shots=2, queries=4, seed=7)
    a, b = sampler.sample(5, 2), sampler.sample(5, 2)
    np.testing.assert_array_equal(a.support, b.support)
    assert not np.array_equal(a.support, sampler.sample(6, 2).support)
    assert a.support.shape == (2, 6, 8, 8, 1) and a.query.shape == (2, 12, 8, 8, 1)
    np.testing.assert_array_equal(a.support_labels[0], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(a.query_labels[1], np.repeat([0, 1, 2], 4))
    assert a.support.dtype == np.float32 and -1 <= a.support.min() and a.support.max() <= 1
    for e in range(2):
        assert len(set(a.classes[e])) == 3
        for k, cls in enumerate(a.classes[e]):
            raw = {img.tobytes() for img in pool[cls]}
            support_imgs = a.support[e][a.support_labels[e] == k]
            query_imgs = a.query[e][a.query_labels[e] == k]
            back = lambda x: np.round((x * data.NORMALIZE_STD + data.NORMALIZE_MEAN) * 255)
            s_bytes = {back(x).astype(np.uint8).tobytes() for x in support_imgs}
            q_bytes = {back(x).astype(np.uint8).tobytes() for x in query_imgs}
            assert s_bytes <= raw and q_bytes <= raw         # images come from that class
            assert not s_bytes & q_bytes                     # support and query disjoint


def test_class_with_too_few_images_is_named():
    pool = _pool({0: 20, 1: 4, 2: 20})
    with pytest.raises(ValueError, match=r'class 1 has 4.*') as e:
        data.EpisodeSampler(pool, [0, 1, 2], ways=2, shots=3, queries=2, seed=0)
    assert 'shots + queries = 3 + 2 = 5' in str(e.value)


def test_missing_class_and_too_many_ways():
    pool = _pool({0: 10, 1: 10})
    with pytest.raises(ValueError, match=r'classes \[7\] are not in the dataset'):
        data.EpisodeSampler(pool, [0, 7], ways=2, shots=1, queries=1, seed=0)
    with pytest.raises(ValueError, match='3-way episodes need at least 3 classes'):
        data.EpisodeSampler(pool, [0, 1], ways=3, shots=1, queries=1, seed=0)


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match=r"Unknown dataset 'mnist6k'.*mnist5k"):
        data.load_pool('mnist6k', 28, 1)


def test_resize_and_channel_conversion():
    rgb = np.zeros((2, 16, 16, 3), np.uint8)
    rgb[..., 0] = 255
    gray = data.to_size_and_channels(rgb, 8, 1)
    assert gray.shape == (2, 8, 8, 1) and gray.dtype == np.uint8
    np.testing.assert_array_equal(gray, np.full((2, 8, 8, 1), 76))   # 0.299 * 255
    back = data.to_size_and_channels(gray, 8, 3)
    assert back.shape == (2, 8, 8, 3) and np.all(back == 76)
    np.testing.assert_array_equal(data.to_size_and_channels(gray[..., 0], 8, 1), gray)


@pytest.mark.parametrize('shape,message', [((4, 8, 8), 'rank 4'), ((4, 8, 8, 3), '1 channel'),
                                           ((4, 9, 8, 1), 'size 8x8')])
def test_check_images_names_shape(shape, message):
    with pytest.raises(ValueError, match=message) as e:
        data.check_images(np.zeros(shape), (8, 8, 1), 'prediction set')
    assert 'prediction set' in str(e.value) and str(shape) in str(e.value)
    data.check_images(np.zeros((4, 8, 8, 1)), (8, 8, 1), 'fine')
