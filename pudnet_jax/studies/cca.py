"""The paper's Fig. 1 study, scaled to the CPU: is there a correlation between datasets and
the parameters trained on them, and did the hypernetwork capture it?

  python -m pudnet_jax.studies cca --workdir W [--workdir W2 ...] [--groups 200] [--out docs/cca]

1. `--groups` small datasets (groups), each 5 classes × 20 images of ONE domain of the
   workdir's training pool (the domain drawn uniformly, as training episodes are);
2. on each, a ConvNet-3 (the workdir's target) trained to convergence from ONE shared
   initialisation (Adam 1e-3, full batch, `--train_steps` steps, cross-entropy of a
   linear head); the paper's representation of the data: the average-pooled images
   (each image 2×2 mean-pooled to 14×14, averaged over the group);
3. CCA between the data representation and the trained kernels, each reduced by PCA to
   `--dims` dimensions. Canonical correlations are fitted on half of the groups and
   *measured on the other half* (in-sample correlations of 200 samples in 20 dimensions
   are high by chance), beside a null: the same with the groups' pairing shuffled;
4. the same between PudNet's sketches and its predicted kernels for the same groups
   (every workdir given: e.g. the paper's model and a conditioning variant), and for
   PudNet + refined sketch when the workdir's `eval.refine_steps` > 0.
Writes OUT.json and OUT.png.
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pudnet_jax import data as data_lib
from pudnet_jax import refine as refine_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.files import write_json
from pudnet_jax.hypernet import PudNet
from pudnet_jax.tasks import classification

WAYS, SHOTS = 5, 20


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='python -m pudnet_jax.studies cca',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--workdir', action='append', required=True,
                        help='trained workdir (repeatable); the first gives the pool')
    parser.add_argument('--groups', type=int, default=200, help='groups (datasets)')
    # 50 full-batch steps leave a median cross-entropy of 0.0009 on the held-out-Animal
    # workdir's groups (converged); 150 took three times as long for 0.0003.
    parser.add_argument('--train_steps', type=int, default=50,
                        help='Adam steps per group (full batch)')
    parser.add_argument('--dims', type=int, default=10,
                        help='PCA dimensions of each side before CCA')
    parser.add_argument('--seed', type=int, default=0,
                        help='groups, shared initialisation and shuffles')
    parser.add_argument('--out', default='docs/cca', help='output prefix (.json, .png)')
    args = parser.parse_args(argv)
    if args.groups < 4 * args.dims:
        parser.error(f'--groups {args.groups}: at least 4 × --dims ({4 * args.dims}) groups, '
                     'half of them to fit the CCA and half to measure it')
    return args


def pca(x: np.ndarray, dims: int, fit: np.ndarray) -> np.ndarray:
    """x projected on the first `dims` principal axes of the rows `fit` of x, whitened."""
    mu = x[fit].mean(0)
    u, s, vt = np.linalg.svd(x[fit] - mu, full_matrices=False)
    return (x - mu) @ vt[:dims].T / (s[:dims] / np.sqrt(len(fit)))


def cca(x: np.ndarray, y: np.ndarray, fit: np.ndarray, test: np.ndarray, reg: float = 1e-3):
    """Canonical directions fitted on rows `fit`, correlations measured on rows `test`
    (and in-sample on `fit`), in decreasing order of the fitted correlation."""
    def whiten(a):
        a = a - a[fit].mean(0)
        c = a[fit].T @ a[fit] / len(fit) + reg * np.eye(a.shape[1])
        w = np.linalg.inv(np.linalg.cholesky(c)).T
        return a @ w, w
    xw, _ = whiten(x)
    yw, _ = whiten(y)
    u, s, vt = np.linalg.svd(xw[fit].T @ yw[fit] / len(fit))
    a, b = xw @ u, yw @ vt.T
    corr = lambda rows: np.array([np.corrcoef(a[rows, k], b[rows, k])[0, 1]
                                  for k in range(min(x.shape[1], y.shape[1]))])
    return corr(fit), corr(test)


def flat_kernels(params, spec) -> np.ndarray:
    leaves = []
    for path, _ in spec.generated:
        node = params
        for k in path:
            node = node[k]
        leaves.append(np.asarray(node).ravel())
    return np.concatenate(leaves)


def sample_groups(config, pool, n: int, seed: int):
    sampler = data_lib.EpisodeSampler(pool, config.data.train_classes, WAYS, SHOTS, 0,
                                      seed=seed, what='CCA groups',
                                      domains=config.data.get('domains'))
    return [sampler.sample(i, 1)[0] for i in range(n)]


@functools.lru_cache(maxsize=None)
def _train_step(spec):
    """One full-batch Adam step of the target and a linear head (compiled once)."""
    target = spec.module()
    opt = optax.adam(1e-3)

    def loss(p, stats, images, labels):
        feats, mutated = target.apply({'params': p['net'], 'batch_stats': stats}, images,
                                      train=True, mutable=['batch_stats'])
        logits = feats @ p['head']
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), mutated

    @jax.jit
    def step(p, s, stats, images, labels):
        (l, mutated), g = jax.value_and_grad(loss, has_aux=True)(p, stats, images, labels)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, mutated['batch_stats'], l
    return opt, step


def train_group(spec, init_params, images, labels, steps: int):
    """A ConvNet-3 trained on one group from the shared initialisation: its params and
    final loss."""
    opt, step = _train_step(spec)
    p = {'net': init_params, 'head': jnp.zeros((spec.feature_dim, WAYS))}
    s, stats = opt.init(p), spec.zero_batch_stats()
    for _ in range(steps):
        p, s, stats, l = step(p, s, stats, images, labels)
    return p['net'], float(l)


def data_representation(images: np.ndarray) -> np.ndarray:
    """The paper's representation: average pooling of the inputs (2×2, then the group mean)."""
    n, h, w, c = images.shape
    pooled = images.reshape(n, h // 2, 2, w // 2, 2, c).mean((2, 4))
    return pooled.mean(0).ravel()


def analyse(x, y, dims, seed):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    fit, test = order[: len(x) // 2], order[len(x) // 2:]
    px, py = pca(x, dims, fit), pca(y, dims, fit)
    in_fit, held = cca(px, py, fit, test)
    shuffled = py[rng.permutation(len(py))]
    null_fit, null_held = cca(px, shuffled, fit, test)
    return {'fit': in_fit.tolist(), 'held_out': held.tolist(),
            'null_fit': null_fit.tolist(), 'null_held_out': null_held.tolist()}


def main(argv=None) -> None:
    FLAGS = parse_args(argv)
    from pudnet_jax.process import prepare_process
    prepare_process()
    t0 = time.time()
    config, model, spec, hyper = workdir_lib.restore_hypernet(FLAGS.workdir[0])
    pool = data_lib.load_pool(config.data.name, config.data.image_size, config.data.channels,
                              config.data.data_dir, cache_dir=config.data.get('cache_dir'))
    groups = sample_groups(config, pool, FLAGS.groups, FLAGS.seed)
    init = spec.module().init(jax.random.PRNGKey(FLAGS.seed),
                              jnp.zeros((2,) + spec.image_shape))['params']
    reps, trained, losses = [], [], []
    for i, g in enumerate(groups):
        params, loss = train_group(spec, init, jnp.asarray(g.support), g.support_labels,
                                   FLAGS.train_steps)
        trained.append(flat_kernels(params, spec))
        reps.append(data_representation(g.support))
        losses.append(loss)
        if (i + 1) % 25 == 0:
            print(f'trained {i + 1}/{len(groups)} groups (final loss median '
                  f'{np.median(losses):.4f}), {time.time() - t0:.0f} s', flush=True)
    results = {'groups': len(groups), 'ways': WAYS, 'shots': SHOTS, 'dims': FLAGS.dims,
               'train_steps': FLAGS.train_steps, 'final_loss_median': float(np.median(losses)),
               'analyses': {}}
    results['analyses']['data ↔ trained kernels'] = analyse(
        np.stack(reps), np.stack(trained), FLAGS.dims, FLAGS.seed)
    for wd in FLAGS.workdir:
        cfg, model, spec_w, hyper = workdir_lib.restore_hypernet(wd)
        encode = jax.jit(lambda hv, x: model.apply(hv, x, method=PudNet.encode).mean(0))
        generate = jax.jit(lambda hv, s: model.apply(hv, s, method=PudNet.generate))
        sketches = [np.asarray(encode(hyper, g.support)) for g in groups]
        predicted = [flat_kernels(generate(hyper, s), spec_w) for s in sketches]
        name = os.path.basename(os.path.normpath(wd))
        results['analyses'][f'{name}: sketch ↔ predicted kernels'] = analyse(
            np.stack(sketches), np.stack(predicted), FLAGS.dims, FLAGS.seed)
        results['analyses'][f'{name}: data ↔ predicted kernels'] = analyse(
            np.stack(reps), np.stack(predicted), FLAGS.dims, FLAGS.seed)
        steps = int(cfg.eval.get('refine_steps') or 0)
        if steps:
            fn = refine_lib.make_refine_fn(model, spec_w, WAYS, steps, float(cfg.eval.refine_lr),
                                           classification.tau_setting(cfg))
            index = np.arange(WAYS * SHOTS)
            refined = [fn(hyper, jnp.asarray(s), g.support, index, g.support_labels)
                       for s, g in zip(sketches, groups)]
            kernels = [flat_kernels(generate(hyper, s), spec_w) for s in refined]
            results['analyses'][f'{name}: data ↔ kernels of the refined sketch'] = analyse(
                np.stack(reps), np.stack(kernels), FLAGS.dims, FLAGS.seed)
    results['seconds'] = round(time.time() - t0, 1)
    for k, v in results['analyses'].items():
        print(f"{k:55s} first canonical correlation: held-out {v['held_out'][0]:.3f} "
              f"(shuffled pairing {v['null_held_out'][0]:.3f}); fitted {v['fit'][0]:.3f}")
    os.makedirs(os.path.dirname(FLAGS.out) or '.', exist_ok=True)
    write_json(FLAGS.out + '.json', results)
    plot(results, FLAGS.out + '.png')
    print(f'wrote {FLAGS.out}.json and {FLAGS.out}.png ({results["seconds"]} s)')


def plot(results, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    analyses = results['analyses']
    fig, ax = plt.subplots(figsize=(8, 4.5))
    k = np.arange(1, results['dims'] + 1)
    for i, (name, v) in enumerate(analyses.items()):
        line, = ax.plot(k, v['held_out'], marker='o', label=name)
        ax.plot(k, v['null_held_out'], ls=':', color=line.get_color(), alpha=0.7)
    ax.axhline(0, color='gray', lw=0.5)
    ax.set_xlabel('canonical component')
    ax.set_ylabel('correlation on held-out groups')
    ax.set_title(f"CCA over {results['groups']} groups (PCA {results['dims']} each side; "
                 f"dotted: pairing shuffled)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    main()
