"""Each loss against a direct NumPy computation of the paper's formula."""

import numpy as np
import jax.numpy as jnp

import pudnet_jax  # noqa: F401
from pudnet_jax import losses


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


RNG = np.random.default_rng(0)
SUPPORT = RNG.normal(size=(6, 4))            # 3 classes × 2 shots
SUPPORT_LABELS = np.array([0, 0, 1, 1, 2, 2])
QUERY = RNG.normal(size=(5, 4))
QUERY_LABELS = np.array([0, 1, 2, 2, 1])
CLASSES = np.array([4, 0, 2])                 # global ids of the local classes (C = 5)
HEAD = RNG.normal(size=(5, 5))
TAU = 7.0


def _metric_logits():
    u = np.stack([SUPPORT[SUPPORT_LABELS == k].mean(0) for k in range(3)])
    cos = (QUERY @ u.T) / np.linalg.norm(QUERY, axis=1)[:, None] / np.linalg.norm(u, axis=1)
    return TAU * cos


def test_centroids_and_cosine_logits():
    u = losses.class_centroids(jnp.array(SUPPORT), jnp.array(SUPPORT_LABELS), 3)
    np.testing.assert_allclose(u[1], SUPPORT[2:4].mean(0), rtol=1e-6)
    logits = losses.cosine_logits(jnp.array(QUERY), u, TAU)
    np.testing.assert_allclose(logits, _metric_logits(), rtol=1e-5)


def test_l1_metric_loss():
    expected = -_log_softmax(_metric_logits())[np.arange(5), QUERY_LABELS].mean()
    got = losses.metric_loss(jnp.array(_metric_logits()), jnp.array(QUERY_LABELS))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_l2_full_head_loss_uses_global_labels():
    global_labels = CLASSES[QUERY_LABELS]
    expected = -_log_softmax(HEAD)[np.arange(5), global_labels].mean()
    np.testing.assert_allclose(losses.full_head_loss(jnp.array(HEAD), jnp.array(global_labels)),
                               expected, rtol=1e-5)


def test_l3_kl_of_zero_padded_metric_probabilities():
    p_metric = np.exp(_log_softmax(_metric_logits()))            # (5, 3)
    padded = np.zeros((5, 5))
    padded[:, CLASSES] = p_metric                                # zero-padded to C = 5
    p_full = np.exp(_log_softmax(HEAD))
    nz = padded > 0
    expected = np.mean([np.sum(padded[i][nz[i]] * np.log(padded[i][nz[i]] / p_full[i][nz[i]]))
                        for i in range(5)])
    got = losses.consistency_loss(jnp.array(_metric_logits()), jnp.array(HEAD), jnp.array(CLASSES))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got > 0
    # Zero when the head agrees with the metric on the episode's classes and puts no mass
    # elsewhere.
    agreeing = np.full((5, 5), -1e4)
    agreeing[:, CLASSES] = _log_softmax(_metric_logits())
    np.testing.assert_allclose(losses.consistency_loss(jnp.array(_metric_logits()),
                                                       jnp.array(agreeing), jnp.array(CLASSES)),
                               0.0, atol=1e-5)


def test_total_and_ablation_switches():
    args = (jnp.array(SUPPORT), jnp.array(SUPPORT_LABELS), jnp.array(QUERY),
            jnp.array(QUERY_LABELS), jnp.array(HEAD), jnp.array(CLASSES), TAU)
    total, parts = losses.pudnet_loss(*args)
    np.testing.assert_allclose(total, parts['l1_metric'] + parts['l2_full_head']
                               + parts['l3_consistency'], rtol=1e-6)
    no_kl, p = losses.pudnet_loss(*args, use_kl=False)
    np.testing.assert_allclose(no_kl, parts['l1_metric'] + parts['l2_full_head'], rtol=1e-6)
    assert p['l3_consistency'] == 0
    metric_only, _ = losses.pudnet_loss(*args, use_full_head=False)
    np.testing.assert_allclose(metric_only, parts['l1_metric'], rtol=1e-6)
    expected_acc = np.mean(_metric_logits().argmax(-1) == QUERY_LABELS)
    np.testing.assert_allclose(parts['accuracy'], expected_acc)


def test_loss_weights_scale_l1_and_l3_only():
    args = (jnp.array(SUPPORT), jnp.array(SUPPORT_LABELS), jnp.array(QUERY),
            jnp.array(QUERY_LABELS), jnp.array(HEAD), jnp.array(CLASSES), TAU)
    _, parts = losses.pudnet_loss(*args)
    weighted, p = losses.pudnet_loss(*args, metric_weight=0.25, kl_weight=3.0)
    np.testing.assert_allclose(weighted, 0.25 * parts['l1_metric'] + parts['l2_full_head']
                               + 3.0 * parts['l3_consistency'], rtol=1e-6)
    np.testing.assert_allclose(p['loss'], weighted, rtol=1e-6)
    for key in ('l1_metric', 'l2_full_head', 'l3_consistency'):   # parts stay unweighted
        np.testing.assert_allclose(p[key], parts[key], rtol=1e-6)
