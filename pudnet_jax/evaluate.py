"""The paper's intra-dataset protocol: G groups from the held-out classes.

Each group is a prediction set (`prediction_shots` images per class: the sketch and the
BatchNorm statistics; the first `shots` of them, labelled, give the class centroids) and
a disjoint test set of the same classes (`test_shots` per class). Test groups and
validation groups (model selection) come from disjoint roles (`roles`). Reports accuracy
mean and 95% CI (1.96·std/√G) beside its controls on the same groups (`controls`), the
median time to predict one group's parameters after compilation, and the compile time.
"""

from __future__ import annotations

import functools
import json
import numbers
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from pudnet_jax.files import write_json
from pudnet_jax import controls
from pudnet_jax import data as data_lib
from pudnet_jax import predictor as predictor_lib
from pudnet_jax import refine as refine_lib
from pudnet_jax.controls import mean_ci95  # noqa: F401  (re-exported)
from pudnet_jax.hypernet import PudNet
from pudnet_jax.losses import class_centroids, cosine_logits
from pudnet_jax.tasks import classification
from pudnet_jax.targets import TargetSpec, apply_with_dataset_stats

VALIDATION_CURVE_FILE = 'validation_curve.json'
VALIDATION_SEED_OFFSET = 1_000_003   # validation groups' sampler seed: eval.seed + this


def make_scores_fn(spec: TargetSpec, ways: int):
    """Cosine similarity (eq. 7) of each test image's feature to each class centroid of
    the labelled images' features, shape (test, ways)."""
    target = spec.module()

    def scores(variables, labelled, labelled_labels, test):
        f_s = target.apply(variables, labelled, train=False)
        f_t = target.apply(variables, test, train=False)
        return cosine_logits(f_t, class_centroids(f_s, labelled_labels, ways), 1.0)
    return jax.jit(scores)


def make_classify_fn(spec: TargetSpec, ways: int):
    """Parameter-free classification with a predicted network: nearest centroid."""
    scores = make_scores_fn(spec, ways)
    return jax.jit(lambda *args: jnp.argmax(scores(*args), -1))


@functools.lru_cache(maxsize=None)
def make_stats_fn(spec: TargetSpec):
    """(target params, prediction images) → the full variables, BatchNorm statistics
    from those images: how a control's fixed parameters become a network for a group."""
    stats = jax.jit(lambda params, images: apply_with_dataset_stats(spec, params, images)[2])
    return lambda params, images: {'params': params, 'batch_stats': stats(params, images)}


def roles(config, pool) -> data_lib.Roles:
    """Training, validation and test pools of the intra-dataset protocol (disjoint)."""
    d, e = config.data, config.eval
    return data_lib.split_roles(pool, d.train_classes, d.get('val_classes') or (),
                                d.test_classes, e.get('val_fraction', 0.3),
                                e.get('split_seed', 0))


def prediction_shots(e) -> int:
    """Images per class a network is predicted from (sketch, BatchNorm statistics); the
    first `eval.shots` of them are the labelled images of the centroids."""
    p = e.get('prediction_shots') or e.shots
    if p < e.shots:
        raise ValueError(f'config.eval.prediction_shots ({p}) must be >= config.eval.shots '
                         f'({e.shots}): the labelled images are part of the prediction set.')
    return p


def group_sampler(config, pool, split: str = 'test',
                  domain: str | None = None) -> data_lib.EpisodeSampler:
    """Groups of the test role (`split='test'`) or of the validation role; with `domain`
    (a key of `config.data.domains`), only the groups of that domain's classes."""
    e = config.eval
    r = roles(config, pool)
    if split not in ('test', 'validation'):
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}.")
    part, classes = r.test if split == 'test' else r.validation
    seed = e.seed if split == 'test' else e.seed + VALIDATION_SEED_OFFSET
    domains = config.data.get('domains')
    if domain is not None:
        if not domains or domain not in domains:
            raise ValueError(f'{split} groups of domain {domain!r}: config.data.domains has '
                             f'no such domain ({sorted(domains or {})}).')
        members = set(map(int, domains[domain]))
        classes, domains = [c for c in classes if c in members], None
    what = f'{split} groups' + (f' of domain {domain!r}' if domain is not None else '')
    return data_lib.EpisodeSampler(part, classes, e.ways, prediction_shots(e), e.test_shots,
                                   seed=seed, what=what, domains=domains)


def mean_over_domains(parts: dict[str, dict]) -> dict:
    """One summary of the results of several domains (`evaluate` per domain), each domain
    weighing the same: a number is the unweighted mean of the domains' (a 95 % CI the CI
    of that mean of independent estimates, sqrt(sum of CI^2) / n), a value equal in every
    domain is kept, `groups` is the total; the domains' own results under 'domains'."""
    def merge(key: str, values: list):
        first = values[0]
        if isinstance(first, dict):
            keys = [k for k in first if all(isinstance(v, dict) and k in v for v in values)]
            return {k: merge(k, [v[k] for v in values]) for k in keys}
        if all(v == first for v in values):
            return first
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            return list(values)
        if key.endswith('ci95'):
            return float(np.sqrt(np.sum(np.square(values)))) / len(values)
        return float(np.mean(values))

    out = merge('', list(parts.values()))
    out['groups'] = int(sum(int(p['groups']) for p in parts.values()))
    out['domains'] = dict(parts)
    return out


def labelled(group: data_lib.Episodes, ways: int, shots: int):
    """The labelled images of a group (the first `shots` of each class of its prediction
    set, which is class-major) and their labels: what the centroids are built from."""
    per_class = group.support.shape[0] // ways
    idx = (np.arange(ways)[:, None] * per_class + np.arange(shots)).ravel()
    return group.support[idx], group.support_labels[idx]


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


def timed_compile(jitted, *args):
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


_COMPILED: dict = {}     # (model, spec, ways, shots, shapes) -> compiled executables


def _shapes(tree) -> tuple:
    return tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(tree))


def compiled_predict_and_scores(model: PudNet, spec: TargetSpec, hyper_vars, first,
                                ways: int, shots: int, bn_images: int | None = None):
    """Compiled prediction and scoring executables for groups shaped like `first`, and the
    prediction's compile time (seconds, measured when they were first compiled).

    Compiled once per hypernetwork, target and group shape in a process: the validation
    curve during training, the validation groups and the test groups of `evaluate` and
    `--mode=compare` share one compilation."""
    key = (model, spec, ways, shots, bn_images, _shapes(hyper_vars), _shapes(first))
    if key not in _COMPILED:
        predict_c, compile_s = timed_compile(predictor_lib.make_predictor(model, spec, bn_images),
                                             hyper_vars, first.support)
        variables = predict_c(hyper_vars, first.support)
        scores_c, _ = timed_compile(make_scores_fn(spec, ways), variables,
                                    *labelled(first, ways, shots), first.query)
        if len(_COMPILED) >= 16:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = (predict_c, scores_c, compile_s)
    return _COMPILED[key]


def predict_groups(predict_c, scores_c, hyper_vars, groups, ways: int, shots: int):
    """For each group: (the group, predicted target variables, scores of its test images
    against the class centroids, seconds to predict). The one PudNet evaluation loop,
    shared by `evaluate` and `--mode=compare`; the timing covers the forward pass only."""
    for group in groups:
        t0 = time.perf_counter()
        variables = jax.block_until_ready(predict_c(hyper_vars, group.support))
        seconds = time.perf_counter() - t0
        scores = np.asarray(scores_c(variables, *labelled(group, ways, shots), group.query))
        yield group, variables, scores, seconds


def control_accuracies(spec: TargetSpec, params_by_control: dict, scores_fn, group, ways: int,
                       shots: int) -> dict:
    """{control: [accuracy of each of its networks]} on one group, each network given
    BatchNorm statistics from the group's prediction set and scored like PudNet's."""
    with_stats = make_stats_fn(spec)
    images, labels = labelled(group, ways, shots)
    return {name: [group_accuracy(scores_fn(with_stats(p, group.support), images, labels,
                                            group.query), group.query_labels)[0]
                   for p in params_list]
            for name, params_list in params_by_control.items()}


def median_after_first(seconds) -> float:
    """The median of per-group seconds without the first group's, which includes
    compilation (all of them when there is one)."""
    return float(np.median(seconds[1:] or seconds))


class Refined:
    """PudNet + refined sketch (`eval.refine_steps` > 0, `refine.py`) on the same groups:
    its accuracies and seconds, summarised beside the same controls. With `milestones`
    (step counts), also the network after each of them: `curve[k]` = (accuracies,
    seconds) per group, as the training curves of the baselines.

    A control of its own, `other`: each group (after the first) scored with the network
    of the *previous* group's refined sketch (other classes of the same domain), with
    this group's BatchNorm statistics and centroids. Own − other, paired, says whether the
    refined network follows this group's data or only what every group of the domain
    shares."""

    def __init__(self, config, model, spec, first, milestones=()):
        e = config.eval
        self.steps, self.lr = int(e.get('refine_steps') or 0), float(e.get('refine_lr') or 0.0)
        self.optimizer = e.get('refine_optimizer', 'adam')
        self.ways, self.shots = e.ways, e.shots
        self.milestones = tuple(sorted(set(milestones) | {self.steps})) if self.steps else ()
        self.curve = {k: ([], []) for k in self.milestones}
        self.other, self.previous = [], None
        if self.steps:
            self.predict = refine_lib.make_refined_predict_fn(
                model, spec, e.ways, max(self.milestones), self.lr,
                classification.tau_setting(config), self.optimizer)
            self.index = refine_lib.labelled_index(e.ways, first.support.shape[0] // e.ways,
                                                   e.shots)

    def add(self, hyper_vars, group, scores_fn):
        if not self.steps:
            return
        labels = group.support_labels[self.index]
        for k, variables, seconds, sketch in self.predict(hyper_vars, group.support,
                                                          self.index, labels, self.milestones):
            scores = scores_fn(variables, group.support[self.index], labels, group.query)
            accuracy = group_accuracy(scores, group.query_labels)[0]
            self.curve[k][0].append(accuracy)
            self.curve[k][1].append(seconds)
            if k != self.steps:
                continue
            if self.previous is not None:
                other = self.predict.finish(hyper_vars, self.previous, group.support)
                scores = scores_fn(other, group.support[self.index], labels, group.query)
                self.other.append(group_accuracy(scores, group.query_labels)[0])
            self.previous = sketch

    @property
    def accuracies(self) -> list:
        """Per group, the accuracy after eval.refine_steps steps."""
        return self.curve[self.steps][0] if self.steps else []

    def median_seconds(self, k=None) -> float:
        """The median seconds of a k-step prediction (default: eval.refine_steps) over the
        groups after the first, whose time includes compilation."""
        return median_after_first(self.curve[self.steps if k is None else k][1])

    def summary(self, control_accs) -> dict:
        out = dict(zip(('accuracy', 'ci95'), mean_ci95(self.accuracies)))
        gains = controls.summarize(self.accuracies, control_accs)
        gains.pop('controls')
        # The first group's time includes compilation: the median skips it.
        if self.other:
            own = np.asarray(self.accuracies[1:]) - np.asarray(self.other)
            gains['other_group'] = dict(zip(('accuracy', 'ci95'), mean_ci95(self.other)))
            gains['gain_over_other_group'], gains['gain_over_other_group_ci95'] = mean_ci95(own)
        return out | gains | {'steps': self.steps, 'lr': self.lr, 'optimizer': self.optimizer,
                              'seconds': self.median_seconds()}


def evaluate(config, model: PudNet, spec: TargetSpec, hyper_vars, pool, workdir=None,
             split: str = 'test', quiet: bool = False, domain: str | None = None) -> dict:
    """PudNet and its controls on the groups of one role: `eval.groups` test groups, or
    `eval.val_groups` validation groups (model selection); with `domain`, the groups of
    that domain's classes only."""
    e = config.eval
    sampler = group_sampler(config, pool, split, domain)
    num_groups = e.groups if split == 'test' else e.get('val_groups', 100)
    top_k = e.get('top_k') or 0

    first = sampler.sample(0, 1)[0]
    predict_c, scores_c, compile_s = compiled_predict_and_scores(
        model, spec, hyper_vars, first, e.ways, e.shots, e.get('bn_images'))
    params = controls.control_params(config, model, spec, hyper_vars, pool, workdir)
    groups = (first if g == 0 else sampler.sample(g, 1)[0] for g in range(num_groups))
    accuracies, top_ks, seconds = [], [], []
    control_accs = {name: [] for name in params}
    refined = Refined(config, model, spec, first)
    for group, _, scores, s in predict_groups(predict_c, scores_c, hyper_vars, groups,
                                              e.ways, e.shots):
        seconds.append(s)
        top1, top = group_accuracy(scores, group.query_labels, top_k)
        accuracies.append(top1)
        if top is not None:
            top_ks.append(top)
        for name, accs in control_accuracies(spec, params, scores_c, group, e.ways,
                                             e.shots).items():
            control_accs[name].append(accs)
        refined.add(hyper_vars, group, scores_c)
    results = accuracy_summary(accuracies, top_ks, top_k)
    results.update(controls.summarize(accuracies, control_accs))
    if refined.steps:
        results['refined'] = refined.summary(control_accs)
    results.update({
        'split': split, 'groups': num_groups, 'ways': e.ways, 'shots': e.shots,
        'prediction_shots': prediction_shots(e), 'test_shots': e.test_shots,
        'target': spec.name, 'dataset': config.data.name,
        'test_classes': list(sampler.classes), 'roles': roles(config, pool).how,
        'predict_seconds': float(np.median(seconds)), 'compile_seconds': compile_s,
        'backend': jax.default_backend(),
    })
    if model.residual:      # the prediction setting these networks were generated with
        results['delta_scale'] = float(model.delta_scale)
    if not quiet:
        print(format_results(results))
    return results


class ValidationCurve:
    """PudNet's accuracy on the first `groups` validation groups, measured during training.

    The groups come from the validation role (`group_sampler(..., 'validation')`: the same
    groups as the first ones of `results.json`'s validation), never from the test groups.
    With several validation domains (`data.val_domains`), the first groups of each domain
    (`groups` split evenly, rounded up), each domain weighing the same in the accuracy, as
    in `results.json`.
    A measurement reads the hypernetwork's variables and changes nothing (training is the
    same with or without it); it reuses one compilation (`compiled_predict_and_scores`)
    and holds its groups in memory. The points are kept in `workdir/validation_curve.json`;
    a run resumed from step s keeps the points up to s (later ones are measured again, on
    identical parameters).
    """

    def __init__(self, config, model: PudNet, spec: TargetSpec, pool, workdir: str,
                 every: int, groups: int, start_step: int = 0):
        e = config.eval
        domains = list(config.data.get('val_domains') or ()) or [None]
        per_domain = -(-groups // len(domains))
        self.model, self.spec, self.ways, self.shots = model, spec, e.ways, e.shots
        self.bn_images = e.get('bn_images')
        self.every, self.num_groups = every, groups
        self.groups, self.domain_of = [], []
        for i, d in enumerate(domains):
            sampler = group_sampler(config, pool, 'validation', d)
            self.groups += [sampler.sample(g, 1)[0] for g in range(per_domain)]
            self.domain_of += [i] * per_domain
        self.domain_of = np.asarray(self.domain_of)
        self.roles = roles(config, pool).how
        self.path = os.path.join(workdir, VALIDATION_CURVE_FILE)
        self.points = [p for p in self._saved().get('points', []) if p['step'] <= start_step]

    def _saved(self) -> dict:
        if not os.path.exists(self.path):
            return {}
        with open(self.path) as f:
            saved = json.load(f)
        same = saved.get('every') == self.every and saved.get('groups') == self.num_groups
        return saved if same else {}

    def due(self, step: int, is_last: bool) -> bool:
        return step % self.every == 0 or is_last

    def measure(self, step: int, hyper_vars) -> dict:
        """Measures, records and returns {'step', 'accuracy', 'ci95', 'seconds'}."""
        t0 = time.perf_counter()
        predict_c, scores_c, _ = compiled_predict_and_scores(
            self.model, self.spec, hyper_vars, self.groups[0], self.ways, self.shots,
            self.bn_images)
        accuracies = np.asarray([
            group_accuracy(scores, g.query_labels)[0] for g, _, scores, _ in
            predict_groups(predict_c, scores_c, hyper_vars, self.groups, self.ways,
                           self.shots)])
        parts = {}
        for i in range(int(self.domain_of.max()) + 1):
            mine = accuracies[self.domain_of == i]
            a, c = mean_ci95(mine)
            parts[i] = {'accuracy': a, 'ci95': c, 'groups': len(mine)}
        merged = mean_over_domains(parts)
        acc, ci = merged['accuracy'], merged['ci95']
        point = {'step': int(step), 'accuracy': acc, 'ci95': ci,
                 'seconds': time.perf_counter() - t0}
        self.points = [p for p in self.points if p['step'] < step] + [point]
        write_json(self.path, self.summary())
        return point

    def best(self) -> dict:
        """The point with the highest accuracy (the earliest of equals)."""
        return max(self.points, key=lambda p: (p['accuracy'], -p['step']))

    def summary(self) -> dict:
        best = self.best() if self.points else None
        return {'every': self.every, 'groups': self.num_groups, 'split': 'validation',
                'roles': self.roles, 'points': self.points,
                'best_step': best and best['step'], 'best_accuracy': best and best['accuracy'],
                'seconds': sum(p['seconds'] for p in self.points)}


def validation_curve(config, model, spec, pool, workdir: str, start_step: int = 0):
    """The `ValidationCurve` of a training run (`config.train.val_every` steps,
    `config.train.val_groups` groups), or None when it is off (val_every 0) or the config
    has no validation role (an inter-dataset config without validation classes)."""
    t = config.train
    every, groups = int(t.get('val_every', 0) or 0), int(t.get('val_groups', 0) or 0)
    if every <= 0 or groups <= 0:
        return None
    if config.eval.get('protocol', 'intra') == 'inter' and not config.data.get('val_classes'):
        logging.info('No validation curve: an inter-dataset config without '
                     'config.data.val_classes has no validation groups.')
        return None
    return ValidationCurve(config, model, spec, pool, workdir, every, groups, start_step)


def format_results(r: dict) -> str:
    what = 'test' if r.get('split', 'test') == 'test' else 'validation (model selection)'
    rows = [
        ('dataset / target', f"{r['dataset']} held-out classes {r['test_classes']} / {r['target']}"),
        ('protocol', f"{what}: {r['groups']} groups, {r['ways']}-way; per class "
                     f"{_prediction_set_text(r)}, {r['test_shots']} test images"),
        ('PudNet accuracy', f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} % (95% CI)"),
    ] + top_k_rows(r) + controls.table_rows(r) + [
        ('verdict', controls.verdict(r)),
    ] + refined_rows(r) + [
        ('time to predict', f"{1000 * r['predict_seconds']:.1f} ms per group (median, "
                            f"{r['backend']}), compile {r['compile_seconds']:.2f} s"),
    ]
    return format_table(rows)


def refined_rows(r: dict) -> list[tuple[str, str]]:
    """Rows of the 'PudNet + refined sketch' result, when there is one."""
    f = r.get('refined')
    if not f:
        return []
    pts = lambda k: f"{100 * f[k]:+.2f} ± {100 * f[k + '_ci95']:.2f}"
    how = (f"{f['steps']} learned step{'s' * (f['steps'] > 1)}"
           if f.get('optimizer') == 'learned' else f"{f['steps']} Adam steps of {f['lr']:g}")
    rows = [('PudNet + refined sketch',
             f"{100 * f['accuracy']:.2f} ± {100 * f['ci95']:.2f} % ({how} on the sketch, "
             f"leave-one-out metric loss of the labelled images; "
             f"{1000 * f['seconds']:.0f} ms per network)"),
            ('  its gains', f"over the mean sketch {pts('conditioning_gain')} points, over "
                            f"untrained {pts('gain_over_untrained')} points"
                            + (f", over pretrained {pts('gain_over_pretrained')} points"
                               if 'gain_over_pretrained' in f else '') + ' (paired)')]
    if 'other_group' in f:
        rows.append(('  another group\'s', f"{100 * f['other_group']['accuracy']:.2f} % with the "
                     f"previous group's refined sketch; own − other "
                     f"{pts('gain_over_other_group')} points (paired)"))
    return rows + [('  verdict', controls.verdict(f).replace('PudNet is',
                                                             'PudNet + refined sketch is'))]


def _prediction_set_text(r: dict) -> str:
    p, shots = r.get('prediction_shots', r['shots']), r['shots']
    if p == shots:
        return f'{p} labelled prediction images (sketch, BN statistics, centroids)'
    return (f'{p} prediction images (sketch, BN statistics), the first {shots} of them '
            f'labelled (centroids)')


def top_k_rows(r: dict) -> list[tuple[str, str]]:
    """('top5 accuracy', 'xx.xx ± y.yy %') for each top-k accuracy in a results dict."""
    return [(k.replace('_', ' '), f"{100 * r[k]:.2f} ± {100 * r[k.replace('accuracy', 'ci95')]:.2f} %")
            for k in r if k.startswith('top') and k.endswith('_accuracy')]


def format_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return '\n'.join(f'{k:<{width}}  {v}' for k, v in rows)

