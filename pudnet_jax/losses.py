"""PudNet's objective (paper §III-E): L = L1 + L2 + L3 (eq. 11), with optional weights
λ1·L1 + L2 + λ3·L3 (`config.loss.metric_weight`, `kl_weight`; the paper's are 1).

- L1, parameter-free classification (eq. 7-8): p(y=k|x) ∝ exp(τ·cos(f(x), u_k)) with
  u_k the mean feature of the labelled samples of class k.
- L2, the full-class auxiliary head (eq. 9): cross-entropy of Q_φ(f(x)) with the
  global label among all training classes.
- L3, consistency (eq. 10). Our reading of the zero-padding: the N-way metric
  *probabilities* are placed at the episode's global class indices and padded with
  zeros to the full class count (§III-E: "the probabilities ... are padded with zeros"),
  and L3 = KL(p_metric_padded ‖ p_full). Padded entries contribute 0·log 0 = 0, so
  L3 = Σ_k p_metric[k] (log p_metric[k] − log p_full[class_k]), which pushes the full
  head's mass onto the episode's classes in the metric's proportions. (Padding the
  *logits* with zeros, §IV-B's wording, would give every absent class a logit of 0,
  i.e. the mean of a cosine score, which carries no meaning.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def class_centroids(features, labels, num_classes: int):
    """u_k: the mean feature of the samples with label k, shape (num_classes, D)."""
    onehot = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)
    return (onehot.T @ features) / jnp.maximum(onehot.sum(0), 1.0)[:, None]


def cosine_logits(features, centroids, tau):
    """τ · cos(f(x), u_k), shape (Q, N)."""
    f = features / jnp.maximum(jnp.linalg.norm(features, axis=-1, keepdims=True), 1e-8)
    u = centroids / jnp.maximum(jnp.linalg.norm(centroids, axis=-1, keepdims=True), 1e-8)
    return tau * f @ u.T


def metric_loss(logits, labels):
    """L1 (eq. 8)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def full_head_loss(head_logits, global_labels):
    """L2 (eq. 9)."""
    return optax.softmax_cross_entropy_with_integer_labels(head_logits, global_labels).mean()


def consistency_loss(metric_logits, head_logits, episode_classes):
    """L3 (eq. 10): KL(p_metric zero-padded to all classes ‖ p_full), averaged over x.

    episode_classes: (N,) global index of each local class.
    """
    log_p_metric = jax.nn.log_softmax(metric_logits, axis=-1)            # (Q, N)
    log_p_full = jax.nn.log_softmax(head_logits, axis=-1)                # (Q, C)
    log_p_full_at_episode = jnp.take(log_p_full, episode_classes, axis=-1)  # (Q, N)
    kl = jnp.sum(jnp.exp(log_p_metric) * (log_p_metric - log_p_full_at_episode), axis=-1)
    return kl.mean()


def leave_one_out_loss(features, labels, ways: int, tau):
    """Cross-entropy of each sample against centroids that exclude it."""
    onehot = jax.nn.one_hot(labels, ways, dtype=features.dtype)          # (n, K)
    f = features / jnp.maximum(jnp.linalg.norm(features, axis=-1, keepdims=True), 1e-8)
    sums = onehot.T @ features                                            # (K, D)
    counts = onehot.sum(0)                                                # (K,)
    # Per sample: its own class's centroid (mean feature, as `class_centroids`) without
    # it; the other classes' as they are.
    own = (sums[labels] - features) / jnp.maximum(counts[labels] - 1.0, 1.0)[:, None]
    centroids = jnp.where(onehot[:, :, None] > 0, own[:, None, :],
                          (sums / jnp.maximum(counts, 1.0)[:, None])[None])       # (n, K, D)
    u = centroids / jnp.maximum(jnp.linalg.norm(centroids, axis=-1, keepdims=True), 1e-8)
    logits = tau * jnp.einsum('nd,nkd->nk', f, u)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def pudnet_loss(support_features, support_labels, query_features, query_labels,
                head_logits, episode_classes, tau, use_full_head: bool = True,
                use_kl: bool = True, metric_weight: float = 1.0, kl_weight: float = 1.0):
    """One episode's losses. Returns (total, dict of the unweighted parts, the weighted
    total and the metric accuracy).

    Ablations (Table VI): `use_full_head=False` is "metric loss only" (no L2, no L3);
    `use_kl=False` is "no KL" (L1 + L2). `metric_weight`/`kl_weight` scale L1/L3.
    """
    num_classes = episode_classes.shape[0]
    centroids = class_centroids(support_features, support_labels, num_classes)
    logits = cosine_logits(query_features, centroids, tau)
    l1 = metric_loss(logits, query_labels)
    zero = jnp.zeros((), l1.dtype)
    l2 = full_head_loss(head_logits, episode_classes[query_labels]) if use_full_head else zero
    l3 = (consistency_loss(logits, head_logits, episode_classes)
          if use_full_head and use_kl else zero)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == query_labels)
    total = metric_weight * l1 + l2 + kl_weight * l3
    return total, {'loss': total, 'l1_metric': l1, 'l2_full_head': l2,
                   'l3_consistency': l3, 'accuracy': accuracy}
