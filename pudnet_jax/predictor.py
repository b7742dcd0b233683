"""The one classification predictor: (hypernetwork variables, prediction images) → the
target's full variables {'params', 'batch_stats'}, for every protocol.

The network is generated from the images' sketch (the mean of the encoder's features over
all of them), with BatchNorm statistics from one pass over (a subsample of) the same
images. Every classification protocol asks `make_predictor` for it; its options keep each
protocol's numbers:
- intra-dataset groups (`evaluate`, `compare`, `--mode=predict`): float images already
  normalised, the sketch in one pass, the whole prediction one jitted function (compiled
  ahead of time by `evaluate.compiled_predict_and_scores`), statistics from an evenly
  strided subsample;
- an inter-dataset target, a user's folder (`inter_dataset`, `predict`) and the Python API
  (`api.Hypernetwork.predict`): uint8 images (float for the API) of any count, the sketch
  streamed in chunks, statistics from a seeded random subsample.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from pudnet_jax import data as data_lib
from pudnet_jax.hypernet import PudNet, streaming_sketch
from pudnet_jax.targets import TargetSpec, apply_with_dataset_stats


def bn_subsample(n: int, bn_images: int | None, seed: int | None = None) -> np.ndarray:
    """Sorted positions of the prediction images whose pass gives the BatchNorm
    statistics: all n, or `bn_images` of them when there are more, evenly strided (`seed`
    None: a class-major group keeps every class in proportion) or drawn by a generator
    seeded with `seed`. `python -m benchmarks.bn_subsample` measures the error."""
    if not bn_images or bn_images >= n:
        return np.arange(n)
    if seed is None:
        return np.unique(np.round(np.linspace(0, n - 1, bn_images)).astype(np.int64))
    return np.sort(np.random.default_rng(seed).choice(n, bn_images, replace=False))


@functools.lru_cache(maxsize=None)   # one compilation per hypernetwork and settings
def make_predictor(model: PudNet, spec: TargetSpec, bn_images: int | None = None,
                   seed: int | None = None, chunk_size: int | None = None,
                   uint8: bool = False):
    """`predict(hyper_vars, images, params=None, sketch=None)` → the target's variables
    for the prediction images (N, H, W, C), computed.

    `uint8`: uint8 images, normalised inside jit (else float images in [-1, 1]).
    `bn_images`, `seed`: the statistics' subsample (`bn_subsample`). `chunk_size` None:
    the sketch is the mean of one pass over all the images and the prediction is one
    jitted function (`predict.lower` compiles it for a shape); an int: the sketch is
    streamed in chunks of that many images (`hypernet.streaming_sketch`), any N, memory
    bounded by one chunk. `params` (a control's fixed parameters): only their statistics,
    from the same subsample; `sketch`: generate from it (e.g. a refined one) instead of
    the images' sketch, which is `predict.sketch(hyper_vars, images)`."""
    norm = data_lib.normalize if uint8 else (lambda x: x)
    encode = lambda hv, x: model.apply(hv, norm(x), train=False, method=PudNet.encode)
    generate = lambda hv, s: model.apply(hv, s, method=PudNet.generate)
    stats = lambda p, x: apply_with_dataset_stats(spec, p, norm(x))[2]
    if chunk_size is None:
        images_sketch = lambda hv, x: encode(hv, x).mean(axis=0)
    else:
        encode, generate, stats = jax.jit(encode), jax.jit(generate), jax.jit(stats)
        images_sketch = lambda hv, x: streaming_sketch(lambda c: encode(hv, c), x, chunk_size)

    def variables(hyper_vars, images, params=None, sketch=None):
        if params is None:
            s = images_sketch(hyper_vars, images) if sketch is None else sketch
            params = generate(hyper_vars, s)
        pick = bn_subsample(images.shape[0], bn_images, seed)
        return {'params': params, 'batch_stats': stats(params, images[pick])}
    if chunk_size is None:
        variables = jax.jit(variables)

    def predict(hyper_vars, images, params=None, sketch=None):
        data_lib.check_images(images, spec.image_shape, 'prediction images')
        return jax.block_until_ready(variables(hyper_vars, images, params, sketch))
    if chunk_size is None:
        predict.lower = variables.lower
    predict.sketch = images_sketch if chunk_size else jax.jit(images_sketch)
    return predict
