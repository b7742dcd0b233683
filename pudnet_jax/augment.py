"""Episode styles: a random image transform per training episode (`config.train.episode_augment`).

Every image of an episode (its labelled and its query images) gets the same transform,
drawn afresh for each episode, so each episode comes from a "new domain" of the pool
(domain randomisation): one fixed network serves the styles less well than a network
that follows the episode's data, and the meta-training task distribution is wider than
the pool's domains. Transforms, applied in this order to pixels in [0, 1] (the names are
what the config lists):

  thickness   erode, leave, or dilate with a 3×3 window (one of the three, equally likely)
  blur        mix with the 3×3 box-blurred image, weight uniform in [0, 1]
  gamma       p ** γ, log γ uniform in [−log 2, log 2]
  contrast    background level uniform in [0, 0.3], foreground in [0.7, 1]
  invert      1 − p with probability 1/2

The key of step s is `fold_in(PRNGKey(seed), s)` split over the step's episodes, so a
resumed run draws the same styles (bitwise resumption holds). Validation and test
images are never transformed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pudnet_jax import data as data_lib

TRANSFORMS = ('thickness', 'blur', 'gamma', 'contrast', 'invert')
SEED_OFFSET = 9_000_011     # the styles' key is independent of the sampler's and init's


def check(names) -> tuple[str, ...]:
    """The configured transform names, checked (one line naming the bad one)."""
    names = tuple(names or ())
    bad = [n for n in names if n not in TRANSFORMS]
    if bad:
        raise ValueError(f'config.train.episode_augment: unknown transform {bad[0]!r}; '
                         f'choose from {TRANSFORMS}.')
    return names


def _window(p, op, init):
    return jax.lax.reduce_window(p, init, op, (1, 3, 3, 1), (1, 1, 1, 1), 'SAME')


def style(key, p, names: tuple[str, ...]):
    """One episode's images `p` (n, H, W, C) in [0, 1], under one random draw of the
    transforms `names` (in `TRANSFORMS` order whatever the order given)."""
    k = dict(zip(TRANSFORMS, jax.random.split(key, len(TRANSFORMS))))
    if 'thickness' in names:
        which = jax.random.randint(k['thickness'], (), -1, 2)
        dilated = _window(p, jax.lax.max, -jnp.inf)
        eroded = _window(p, jax.lax.min, jnp.inf)
        p = jnp.where(which > 0, dilated, jnp.where(which < 0, eroded, p))
    if 'blur' in names:
        w = jax.random.uniform(k['blur'])
        box = _window(p, jax.lax.add, 0.0) / _window(jnp.ones_like(p), jax.lax.add, 0.0)
        p = (1.0 - w) * p + w * box
    if 'gamma' in names:
        gamma = jnp.exp(jax.random.uniform(k['gamma'], minval=-jnp.log(2.0),
                                           maxval=jnp.log(2.0)))
        p = jnp.clip(p, 0.0, 1.0) ** gamma
    if 'contrast' in names:
        ka, kb = jax.random.split(k['contrast'])
        lo = jax.random.uniform(ka, maxval=0.3)
        hi = jax.random.uniform(kb, minval=0.7, maxval=1.0)
        p = lo + (hi - lo) * p
    if 'invert' in names:
        p = jnp.where(jax.random.bernoulli(k['invert']), 1.0 - p, p)
    return p


def to_pixels(x):
    return x * data_lib.NORMALIZE_STD + data_lib.NORMALIZE_MEAN


def to_normalized(p):
    return (p - data_lib.NORMALIZE_MEAN) / data_lib.NORMALIZE_STD


def make_episode_styles(config):
    """None when `config.train.episode_augment` is empty; else (step, Episodes) →
    Episodes with each episode's support and query images under one random style."""
    names = check(config.train.get('episode_augment', ()))
    if not names:
        return None
    base = jax.random.PRNGKey(config.seed + SEED_OFFSET)

    def apply(step, batch: data_lib.Episodes) -> data_lib.Episodes:
        num_episodes, n_support = batch.support.shape[:2]
        keys = jax.random.split(jax.random.fold_in(base, step), num_episodes)

        def one(key, support, query):
            both = to_pixels(jnp.concatenate([support, query]))
            both = to_normalized(style(key, both, names))
            return both[:n_support], both[n_support:]
        support, query = jax.vmap(one)(keys, batch.support, batch.query)
        return batch.replace(support=support, query=query)
    return apply
