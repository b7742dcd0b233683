"""The paper's intra-dataset protocol: G groups from the held-out classes.

Each group is a prediction set (`shots` labelled images per class: sketch, BatchNorm
statistics and centroids) and a disjoint test set of the same classes (`test_shots` per
class). Reports accuracy mean and 95% CI (1.96·std/√G), the median time to predict one
group's parameters after compilation, and the compile time separately.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from pudnet_jax.files import write_json
from pudnet_jax import data as data_lib
from pudnet_jax.hypernet import PudNet
from pudnet_jax.losses import class_centroids, cosine_logits
from pudnet_jax.targets import TargetSpec, apply_with_dataset_stats

RESULTS_FILE = 'results.json'


def make_predict_fn(model: PudNet, spec: TargetSpec):
    """(hypernet variables, prediction images) → the target's full variables
    {'params', 'batch_stats'}: one forward pass of the hypernetwork, plus one pass of the
    predicted target over the images for its BatchNorm statistics."""
    def predict(hyper_vars, images):
        feats = model.apply(hyper_vars, images, train=False, method=PudNet.encode)
        params = model.apply(hyper_vars, feats.mean(axis=0), method=PudNet.generate)
        _, _, stats = apply_with_dataset_stats(spec, params, images)
        return {'params': params, 'batch_stats': stats}
    jitted = jax.jit(predict)

    def checked(hyper_vars, images):
        data_lib.check_images(images, spec.image_shape, 'prediction images')
        return jitted(hyper_vars, images)
    checked.lower = jitted.lower
    return checked


def make_scores_fn(spec: TargetSpec, ways: int):
    """Cosine similarity (eq. 7) of each test image's feature to each class centroid of
    the labelled images' features, shape (test, ways)."""
    target = spec.module()

    def scores(variables, support, support_labels, test):
        f_s = target.apply(variables, support, train=False)
        f_t = target.apply(variables, test, train=False)
        return cosine_logits(f_t, class_centroids(f_s, support_labels, ways), 1.0)
    return jax.jit(scores)


def make_classify_fn(spec: TargetSpec, ways: int):
    """Parameter-free classification with a predicted network: nearest centroid."""
    scores = make_scores_fn(spec, ways)
    return jax.jit(lambda *args: jnp.argmax(scores(*args), -1))


def group_sampler(config, pool) -> data_lib.EpisodeSampler:
    e = config.eval
    return data_lib.EpisodeSampler(pool, config.data.test_classes, e.ways, e.shots,
                                   e.test_shots, seed=e.seed, what='evaluation groups')


def group_accuracy(scores, labels, top_k: int = 0) -> tuple[float, float | None]:
    """Top-1 accuracy of (test, ways) scores against labels, and top-k accuracy (None
    unless 0 < top_k < ways; ties go to the lower class index)."""
    scores = np.asarray(scores)
    top1 = float(np.mean(scores.argmax(-1) == labels))
    if not 0 < top_k < scores.shape[-1]:
        return top1, None
    best = np.argsort(-scores, axis=-1, kind='stable')[:, :top_k]
    return top1, float(np.mean(np.any(best == labels[:, None], axis=1)))


def accuracy_summary(accuracies, top_ks, top_k: int) -> dict:
    """{'accuracy', 'ci95'} over groups, plus top-k keys when top-k was scored."""
    acc, ci = mean_ci95(accuracies)
    summary = {'accuracy': acc, 'ci95': ci}
    if top_ks:
        summary[f'top{top_k}_accuracy'], summary[f'top{top_k}_ci95'] = mean_ci95(top_ks)
    return summary


def mean_ci95(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(1.96 * values.std() / np.sqrt(len(values)))


def timed_compile(jitted, *args):
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def compiled_predict_and_scores(model: PudNet, spec: TargetSpec, hyper_vars, first, ways: int):
    """Compiled prediction and scoring executables for groups shaped like `first`, and the
    prediction's compile time (seconds)."""
    predict_c, compile_s = timed_compile(make_predict_fn(model, spec), hyper_vars, first.support)
    variables = predict_c(hyper_vars, first.support)
    scores_c, _ = timed_compile(make_scores_fn(spec, ways), variables, first.support,
                                first.support_labels, first.query)
    return predict_c, scores_c, compile_s


def predict_groups(predict_c, scores_c, hyper_vars, groups):
    """For each group: (the group, predicted target variables, scores of its test images against the
    class centroids, seconds to predict). The one PudNet evaluation loop, shared by
    `evaluate` and `--mode=compare`; the timing covers the forward pass only."""
    for group in groups:
        t0 = time.perf_counter()
        variables = jax.block_until_ready(predict_c(hyper_vars, group.support))
        seconds = time.perf_counter() - t0
        scores = np.asarray(scores_c(variables, group.support, group.support_labels,
                                     group.query))
        yield group, variables, scores, seconds


def evaluate(config, model: PudNet, spec: TargetSpec, hyper_vars, pool) -> dict:
    e = config.eval
    sampler = group_sampler(config, pool)
    top_k = e.get('top_k') or 0

    first = sampler.sample(0, 1)[0]
    predict_c, scores_c, compile_s = compiled_predict_and_scores(model, spec, hyper_vars,
                                                                 first, e.ways)
    groups = (first if g == 0 else sampler.sample(g, 1)[0] for g in range(e.groups))
    accuracies, top_ks, seconds = [], [], []
    for group, _, scores, s in predict_groups(predict_c, scores_c, hyper_vars, groups):
        seconds.append(s)
        top1, top = group_accuracy(scores, group.query_labels, top_k)
        accuracies.append(top1)
        if top is not None:
            top_ks.append(top)
    results = accuracy_summary(accuracies, top_ks, top_k)
    results.update({
        'groups': e.groups, 'ways': e.ways, 'shots': e.shots,
        'test_shots': e.test_shots, 'target': spec.name, 'dataset': config.data.name,
        'test_classes': list(config.data.test_classes),
        'predict_seconds': float(np.median(seconds)), 'compile_seconds': compile_s,
        'backend': jax.default_backend(),
    })
    print(format_results(results))
    return results


def format_results(r: dict) -> str:
    rows = [
        ('dataset / target', f"{r['dataset']} held-out classes {r['test_classes']} / {r['target']}"),
        ('protocol', f"{r['groups']} groups, {r['ways']}-way, {r['shots']} prediction + "
                     f"{r['test_shots']} test images per class"),
        ('accuracy', f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} % (95% CI)"),
    ] + top_k_rows(r) + [
        ('time to predict', f"{1000 * r['predict_seconds']:.1f} ms per group (median, "
                            f"{r['backend']}), compile {r['compile_seconds']:.2f} s"),
    ]
    return format_table(rows)


def top_k_rows(r: dict) -> list[tuple[str, str]]:
    """('top5 accuracy', 'xx.xx ± y.yy %') for each top-k accuracy in a results dict."""
    return [(k.replace('_', ' '), f"{100 * r[k]:.2f} ± {100 * r[k.replace('accuracy', 'ci95')]:.2f} %")
            for k in r if k.startswith('top') and k.endswith('_accuracy')]


def format_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return '\n'.join(f'{k:<{width}}  {v}' for k, v in rows)


def write_results(results: dict, workdir: str) -> str:
    return write_json(os.path.join(workdir, RESULTS_FILE), results)
