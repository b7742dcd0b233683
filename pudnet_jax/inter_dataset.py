"""The paper's inter-dataset protocol: predict a network for a whole other dataset.

The target dataset (`config.eval.dataset`) is cut into a prediction part and a test part:
its own TFDS splits (`eval.predict_split` / `eval.test_split`, e.g. CIFAR-10 train / test)
or, for sources without splits, a deterministic per-class fraction
(`eval.predict_fraction`, e.g. Animals-10 80 / 20; seed `eval.seed`). Then:
1. sketch: the streaming mean of T_φ over the WHOLE prediction part, in fixed-size
   chunks of `eval.chunk_size` images (`hypernet.streaming_sketch`): memory is bounded
   by one chunk whatever the dataset's size;
2. parameters: one pass of the AHRU and the generators on that sketch;
3. BatchNorm statistics: the exact batch statistics of a fixed-size random subsample of
   `eval.bn_images` prediction images (seeded; not the whole part: exact whole-dataset
   statistics would need one pass per layer), so memory is bounded by that subsample;
4. classification: N-way over ALL the target's classes, by cosine to class centroids of
   `eval.shots` labelled prediction images per class (the paper uses 10); the test
   part's features are computed once, in chunks; the labelled images are drawn
   `eval.draws` times and the accuracy is reported as mean ± 95% CI over those draws.
Steps 1-3 are "the time to predict", timed after a first (compiling) run; they are
`predictor.make_predictor` with this protocol's options (`protocol_predictor`).
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from pudnet_jax.files import write_json
from pudnet_jax import controls
from pudnet_jax import data as data_lib
from pudnet_jax import evaluate as evaluate_lib
from pudnet_jax import predictor as predictor_lib
from pudnet_jax import refine as refine_lib
from pudnet_jax import sources
from pudnet_jax.hypernet import PudNet
from pudnet_jax.losses import class_centroids, cosine_logits
from pudnet_jax.tasks import classification
from pudnet_jax.targets import TargetSpec

SPLIT_FILE = 'inter_split.json'


def is_inter_dataset(config) -> bool:
    protocol = config.eval.get('protocol', 'intra')
    if protocol not in ('intra', 'inter'):
        raise ValueError(f"config.eval.protocol must be 'intra' or 'inter', got {protocol!r}.")
    return protocol == 'inter'


def load_parts(e, image_size: int, channels: int, cache_dir=None):
    """(class names, prediction pool, test pool, split record) of the target dataset."""
    load = lambda split: sources.load(e.dataset, image_size, channels, e.get('data_dir'),
                                      split, cache_dir)
    if e.get('predict_split'):
        if not e.get('test_split'):
            raise ValueError('config.eval.predict_split is set but config.eval.test_split is '
                             'not: name both TFDS splits, or use config.eval.predict_fraction.')
        p, t = load(e.predict_split), load(e.test_split)
        names, predict, test = p.class_names, p.pool, t.pool
        record = {'method': 'splits', 'predict_split': e.predict_split,
                  'test_split': e.test_split}
    else:
        whole = load('all')
        names = whole.class_names
        predict, test = data_lib.split_pool(whole.pool, e.predict_fraction, e.seed)
        record = {'method': 'fraction', 'predict_fraction': e.predict_fraction, 'seed': e.seed,
                  'note': 'per class, the images (in cache order) permuted by a generator '
                          'seeded with (seed, class): the first round(fraction * n) of the '
                          'permutation predict, the rest test'}
    record.update(dataset=e.dataset, class_names=list(names),
                  predict_counts={names[c]: int(len(v)) for c, v in predict.items()},
                  test_counts={names[c]: int(len(v)) for c, v in test.items()})
    check_parts(e.dataset, names, predict, test, e.shots)
    return names, predict, test, record


def check_parts(dataset: str, names, predict, test, shots: int) -> None:
    if len(predict) < 2:
        raise ValueError(f'{dataset}: a single class ({[names[c] for c in predict]}); '
                         f'classification needs at least 2 classes.')
    short = [f'class {names[c]!r} has {len(predict[c])} prediction and '
             f'{len(test.get(c, ()))} test images'
             for c in predict if len(predict[c]) < shots or len(test.get(c, ())) < 1]
    short += [f'class {names[c]!r} has no prediction images' for c in test if c not in predict]
    if short:
        raise ValueError(f'{dataset}: every class needs at least {shots} prediction images '
                         f'(eval.shots, for its centroid) and 1 test image; ' + '; '.join(short))


def protocol_predictor(e, model: PudNet, spec: TargetSpec):
    """The protocol's `predictor.make_predictor`: uint8 images, the sketch streamed in
    chunks of `e.chunk_size`, BatchNorm statistics from `e.bn_images` random ones (seed
    `e.seed`)."""
    return predictor_lib.make_predictor(model, spec, e.bn_images, seed=e.seed,
                                        chunk_size=e.chunk_size, uint8=True)


@functools.lru_cache(maxsize=None)
def features_in_chunks(spec: TargetSpec, chunk_size: int, normalized: bool = False):
    """(variables, uint8 images, any count) → features, in fixed-size chunks (one
    compilation; `normalized`: float images already in [-1, 1])."""
    norm = (lambda x: x) if normalized else data_lib.normalize
    apply = jax.jit(lambda v, x: spec.module().apply(v, norm(x), train=False))

    def features(variables, images):
        out = []
        for start in range(0, len(images), chunk_size):
            chunk = images[start:start + chunk_size]
            valid = len(chunk)
            if valid < chunk_size:
                chunk = np.concatenate([chunk, np.zeros((chunk_size - valid,) + chunk.shape[1:],
                                                        chunk.dtype)])
            out.append(np.asarray(apply(variables, chunk))[:valid])
        return np.concatenate(out)
    return features


def flatten(pool) -> tuple[np.ndarray, np.ndarray, list[int]]:
    classes = sorted(pool)
    images = np.concatenate([pool[c] for c in classes])
    labels = np.concatenate([np.full(len(pool[c]), i, np.int32) for i, c in enumerate(classes)])
    return images, labels, classes


def predict_variables(e, model, spec, hyper_vars, predict_pool) -> tuple[dict, dict]:
    """The target's variables for the whole prediction pool, and the time it took (after
    a first run that compiles)."""
    images, _, _ = flatten(predict_pool)
    predict = protocol_predictor(e, model, spec)
    t0 = time.perf_counter()
    predict(hyper_vars, images)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    variables = predict(hyper_vars, images)
    seconds = time.perf_counter() - t0
    return variables, {'predict_seconds': seconds, 'compile_seconds': max(first - seconds, 0.0),
                       'first_predict_seconds': first, 'prediction_images': int(len(images)),
                       'bn_images': int(len(predictor_lib.bn_subsample(len(images), e.bn_images,
                                                                       e.seed))),
                       'chunk_size': e.chunk_size, 'backend': jax.default_backend()}


def draw_labelled(e, predict_pool, r: int) -> np.ndarray:
    """Draw `r`'s labelled images: `e.shots` prediction images of each class, class-major."""
    rng = np.random.default_rng([e.seed, 1000 + r])
    return np.concatenate([predict_pool[c][rng.choice(len(predict_pool[c]), e.shots,
                                                      replace=False)]
                           for c in sorted(predict_pool)])


def score(e, spec, variables, predict_pool, test_pool, per_draw: bool = False):
    """N-way accuracy (all classes) on the test pool, centroids from `e.shots` labelled
    prediction images per class, mean ± 95% CI over `e.draws` draws of them (the same
    draws for every network). With `per_draw`, also the list of per-draw accuracies.
    `variables` may be a function of the draw (a network per draw: the refined sketch's)."""
    features = features_in_chunks(spec, e.chunk_size)
    classes = sorted(predict_pool)
    test_images, _, _ = flatten({c: test_pool[c] for c in classes})
    test_labels = np.concatenate([np.full(len(test_pool[c]), i) for i, c in enumerate(classes)])
    ways, top_k = len(classes), e.get('top_k') or 0
    f_test = None if callable(variables) else jnp.asarray(features(variables, test_images))
    accuracies, top_ks = [], []
    for r in range(e.draws):
        labelled = draw_labelled(e, predict_pool, r)
        f_l = jnp.asarray(features(variables if not callable(variables) else variables(r),
                                   labelled))
        f_t = f_test if f_test is not None else jnp.asarray(features(variables(r), test_images))
        logits = cosine_logits(f_t, class_centroids(f_l, np.repeat(np.arange(ways), e.shots),
                                                    ways), 1.0)
        top1, top = evaluate_lib.group_accuracy(logits, test_labels, top_k)
        accuracies.append(top1)
        if top is not None:
            top_ks.append(top)
    results = evaluate_lib.accuracy_summary(accuracies, top_ks, top_k)
    results.update({'groups': e.draws, 'ways': ways, 'shots': e.shots, 'test_shots': None,
                    'target': spec.name, 'protocol': 'inter', 'draws': e.draws,
                    'test_images': int(len(test_images))})
    return (results, accuracies) if per_draw else results


def score_with_controls(config, model, spec, hyper_vars, variables, predict_pool, test_pool,
                        pool=None, workdir=None, refiner=None, first_refined=None) -> dict:
    """`score` of PudNet's network and of the controls' (`controls`) on the same draws:
    the controls' BatchNorm statistics come from the same prediction subsample. With a
    refinement configured, also the refined row (`score_refined`; `refiner` and
    `first_refined` as there)."""
    e = config.eval
    results, accs = score(e, spec, variables, predict_pool, test_pool, per_draw=True)
    images, _, _ = flatten(predict_pool)
    predictor = protocol_predictor(e, model, spec)
    control_accs = {}
    for name, params_list in controls.control_params(config, model, spec, hyper_vars, pool,
                                                     workdir).items():
        per_net = [score(e, spec, predictor(hyper_vars, images, params), predict_pool,
                         test_pool, per_draw=True)[1] for params in params_list]
        control_accs[name] = [list(draw) for draw in zip(*per_net)]
    results.update(controls.summarize(accs, control_accs))
    if e.get('refine_steps'):
        results['refined'] = score_refined(config, model, spec, hyper_vars, predict_pool,
                                           test_pool, control_accs, refiner, first_refined)
    return results


def make_refiner(config, model, spec, hyper_vars, predict_pool):
    """r → (the network refined for draw r, seconds): the whole prediction part's sketch
    refined (`eval.refine_steps` steps, `refine.make_refine_fn`) on draw r's labelled
    images (`draw_labelled`; their own BatchNorm statistics during the refinement), then
    the network generated from it with BatchNorm statistics from the same prediction
    subsample as every other network."""
    e = config.eval
    ways = len(predict_pool)
    refine_fn = refine_lib.make_refine_fn(model, spec, ways, int(e.refine_steps),
                                          float(e.refine_lr),
                                          classification.tau_setting(config),
                                          e.get('refine_optimizer', 'adam'))
    images, _, _ = flatten(predict_pool)
    predictor = protocol_predictor(e, model, spec)
    sketch = predictor.sketch(hyper_vars, images)
    labels = np.repeat(np.arange(ways), e.shots)
    index = np.arange(ways * e.shots)

    def refined(r):
        labelled = jnp.asarray(data_lib.normalize(draw_labelled(e, predict_pool, r)))
        t0 = time.perf_counter()
        s = refine_fn(hyper_vars, sketch, labelled, index, labels)
        variables = predictor(hyper_vars, images, sketch=s)
        return variables, time.perf_counter() - t0
    return refined


def refine_settings(e) -> dict:
    return {'steps': int(e.refine_steps), 'lr': float(e.refine_lr),
            'optimizer': e.get('refine_optimizer', 'adam')}


def score_refined(config, model, spec, hyper_vars, predict_pool, test_pool,
                  control_accs, refiner=None, first_refined=None) -> dict:
    """PudNet + refined sketch on the same draws: per draw, the network `make_refiner`
    gives for it, scored with that draw's centroids. A caller that already has the
    refiner (compiled) and draw 0's (network, seconds), as `--mode=predict --data` which
    saves that network, passes them as `refiner` and `first_refined`: draw 0 is then not
    refined again."""
    refined = refiner or make_refiner(config, model, spec, hyper_vars, predict_pool)
    seconds, cache = [], {}
    if first_refined is not None:
        cache[0] = first_refined[0]
        seconds.append(first_refined[1])

    def variables(r):
        if r not in cache:
            cache.clear()
            cache[r], t = refined(r)
            seconds.append(t)
        return cache[r]
    _, accs = score(config.eval, spec, variables, predict_pool, test_pool, per_draw=True)
    out = dict(zip(('accuracy', 'ci95'), controls.mean_ci95(accs)))
    gains = controls.summarize(accs, control_accs)
    gains.pop('controls')
    return out | gains | refine_settings(config.eval) | {
        'seconds': evaluate_lib.median_after_first(seconds)}


def evaluate(config, model: PudNet, spec: TargetSpec, hyper_vars, workdir=None,
             pool=None) -> dict:
    """PudNet's network for the target dataset and its controls; `pool` (the training
    data, for the mean sketch) is loaded when not given and not cached in the workdir."""
    e = config.eval
    h, w, c = spec.image_shape
    names, predict_pool, test_pool, record = load_parts(e, h, c, config.data.get('cache_dir'))
    variables, timing = predict_variables(e, model, spec, hyper_vars, predict_pool)
    results = score_with_controls(config, model, spec, hyper_vars, variables, predict_pool,
                                  test_pool, pool, workdir)
    results.update(timing, dataset=e.dataset, train_dataset=config.data.name,
                   test_classes=list(names), split=record)
    if workdir:
        write_json(os.path.join(workdir, SPLIT_FILE), record)
    print(format_results(results))
    return results


def format_results(r: dict) -> str:
    rows = [
        ('train pool → target', f"{r.get('train_dataset')} → {r['dataset']} / {r['target']}"),
        ('protocol', f"inter-dataset, {r['ways']}-way over all classes, sketch over "
                     f"{r['prediction_images']} prediction images, BN statistics from "
                     f"{r['bn_images']}, centroids from {r['shots']} labelled images per "
                     f"class, {r['test_images']} test images, {r['draws']} draws"),
        ('PudNet accuracy', f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} % (95% CI)"),
    ] + evaluate_lib.top_k_rows(r)
    if 'controls' in r:
        rows += controls.table_rows(r, 'draws') + [('verdict', controls.verdict(r))]
    rows += evaluate_lib.refined_rows(r)
    rows.append(('time to predict', f"{r['predict_seconds']:.3f} s ({r['backend']}; first "
                                    f"call with compilation {r['first_predict_seconds']:.2f} s)"))
    return evaluate_lib.format_table(rows)
