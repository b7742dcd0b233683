"""Times one meta-training step of pudnet_jax against the same hypernetwork written in
plain PyTorch (`benchmarks/torch_pudnet.py`), in one process on one machine.

  taskset -c 1 python -m benchmarks.vs_pytorch                 # every preset
  python -m benchmarks.vs_pytorch --presets default --steps 20 --torch_compile default
  taskset -c 1 python -m benchmarks.vs_pytorch --presets denoise \
      --json docs/vs_pytorch_denoise.json --markdown docs/vs_pytorch_denoise.md
  python -m benchmarks.vs_pytorch --presets denoise --config.target.name=unet_n2v \
      --config.data.image_size=32

Needs PyTorch in the same environment as the package (benchmarks/requirements.txt; it is
not a dependency of pudnet_jax). For each preset (`configs/<name>.py`: `default` is
ConvNet-3 on 28×28×1, `cifar100` ResNet-18 on 32×32×3, `denoise` the denoising task's
Noise2Void UNet; the preset named after `--config`'s file, configs/denoise.py unless
given, is read from `--config` with its `--config.<field>=value` overrides), on random
uint8 images of the preset's size (the step time does not depend on the pixels; no
download). Every shape comes from the config and the target's spec (a UNet's depth from
its generated kernels). For `denoise` the Noise2Void mask is computed once per batch with
`noise.n2v_mask` from the batch's own mask keys, the same call the JAX step makes inside,
and handed to PyTorch as (mask, source pixel of every position), so both compute the
loss at the same masked pixels (PyTorch is not charged for drawing the mask, JAX is):

1. the JAX initial parameters are copied into the PyTorch model and both take the same two
   steps on the same batches; the losses of both steps (the second one after an Adam
   update) and the gradients of the first (Adam's first moment / (1 - b1)) are compared,
   and the benchmark exits non-zero unless the losses agree to --tolerance (relative);
   these steps are also the warm-up (JAX's compilation is timed on its own);
2. --steps further steps are timed alternately, JAX then PyTorch (and torch.compile when
   asked), each to completion (`jax.block_until_ready`; PyTorch synchronised),
   the median per framework reported.
PyTorch runs where JAX does (`--torch_device=auto`: CUDA when JAX is on a GPU).
Both frameworks get the CPU cores this process may run on (os.sched_getaffinity: XLA
sizes its thread pool from them; torch.set_num_threads is set to their count). Prints
JAX and PyTorch ms/step and the ratio PyTorch time / JAX time (how many times faster JAX
is), writes --json and --markdown.
"""

import importlib
import json
import os
import platform
import statistics
import sys
import time

from pudnet_jax.process import prepare_process

prepare_process()   # as the command line: the CPU backend when there is no GPU

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

try:
    import torch
except ImportError:   # pragma: no cover
    sys.exit('benchmarks/vs_pytorch.py needs PyTorch in this environment: '
             'pip install -r benchmarks/requirements.txt')

from benchmarks import torch_pudnet
from pudnet_jax import data as data_lib
from pudnet_jax import noise as noise_lib
from pudnet_jax import train as train_lib
from pudnet_jax.hypernet import build_model
from pudnet_jax.tasks import classification, denoising

flags.DEFINE_list('presets', ['default', 'cifar100', 'denoise'],
                  'Presets (configs/<name>.py) to time.')
config_flags.DEFINE_config_file(
    'config', 'configs/denoise.py', 'The config of the preset named after this file '
    '(configs/denoise.py: the denoise preset), with --config.<field>=value overrides; the '
    'other presets are read from configs/<name>.py unchanged.')
flags.DEFINE_integer('steps', None, 'Timed steps per framework (after the 2 checked warm-up '
                     'steps). Default: 20 for ConvNet-3, 3 for ResNet-18, 10 for a UNet.')
flags.DEFINE_list('torch_compile', ['default'], 'Presets for which torch.compile of the '
                  'loss (forward and backward; Adam stays eager) is timed too; "none": none.')
flags.DEFINE_float('tolerance', 1e-4, 'Largest relative difference of the two losses.')
flags.DEFINE_integer('per_class', 100, 'Random uint8 images per training class.')
flags.DEFINE_string('torch_device', 'auto', "PyTorch's device: 'auto' (CUDA when JAX runs on "
                    "a GPU and torch sees one, else the CPU), 'cpu', 'cuda'.")
flags.DEFINE_string('json', 'docs/vs_pytorch.json', 'Where to write the results.')
flags.DEFINE_string('markdown', 'docs/vs_pytorch.md', 'Where to write the Markdown table.')
FLAGS = flags.FLAGS

DEFAULT_STEPS = {'convnet3': 20, 'resnet18': 3, 'unet_n2v': 10, 'unet_n2v_3': 10,
                 'unet_n2v_small': 10}
TASK_TARGETS = {'classification': ('convnet3', 'resnet18'),
                'denoising': ('unet_n2v', 'unet_n2v_3', 'unet_n2v_small')}
CHECKED_STEPS = 2
EAGER = 'torch eager'


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def _supported(config) -> None:
    """The PyTorch mirror implements the presets' model (the paper's); refuse others."""
    m, loss, t = config.model, config.loss, config.train
    task = config.get('task', 'classification')
    targets = TASK_TARGETS.get(task, ())
    wanted = {'task in (classification, denoising)': (task in TASK_TARGETS, True),
              'model.encoder_norm': (m.get('encoder_norm', 'batch'), 'batch'),
              'model.set_pooling': (m.get('set_pooling', 'mean'), 'mean'),
              'model.residual': (m.get('residual', False), False),
              'model.film': (m.get('film', False), False),
              'model.use_ahru': (m.use_ahru, True),
              'train.dtype': (t.get('dtype', 'float32'), 'float32'),
              'train.data_parallel': (t.get('data_parallel', 1), 1),
              'train.warmup_steps': (t.warmup_steps, 0),
              'train.cosine_decay': (t.cosine_decay, False),
              f'target.name in {targets}': (config.target.name in targets, True)}
    if task == 'classification':
        wanted.update({'loss.learn_temperature': (loss.learn_temperature, False),
                       'loss.use_full_head': (loss.use_full_head, True),
                       'loss.use_kl': (loss.use_kl, True)})
    bad = {k: v for k, (v, w) in wanted.items() if v != w}
    if bad:
        raise app.UsageError(f'The PyTorch mirror does not implement {bad}.')


def _torch_device() -> str:
    """PyTorch on the GPU when JAX runs on one and torch sees CUDA, else on the CPU."""
    if FLAGS.torch_device != 'auto':
        return FLAGS.torch_device
    return 'cuda' if jax.default_backend() == 'gpu' and torch.cuda.is_available() else 'cpu'


def _is_denoising(config) -> bool:
    return config.get('task', 'classification') == 'denoising'


def _torch_model(config, spec, params, batch_stats):
    m = config.model
    denoise = _is_denoising(config)
    target_kwargs = None
    if denoise:
        target_kwargs = {'depth': torch_pudnet.unet_depth(['/'.join(p) for p, _ in
                                                           spec.generated])}
    model = torch_pudnet.TorchPudNet(
        config.target.name, spec.image_shape, config.target.width,
        None if denoise else len(config.data.train_classes), m.sketch_dim,
        tuple(m.sketch_features), m.generator_p, m.generator_hidden, m.eta,
        config.loss.temperature, target_kwargs)
    ours = [(name, shape) for name, shape in model.convs]
    theirs = [('/'.join(p), tuple(s)) for p, s in spec.generated]
    if ours != theirs:
        raise RuntimeError(f'The PyTorch target generates {ours}, the JAX one {theirs}.')
    ours = sorted(model.shared)
    theirs = sorted('__'.join(p) for p, _ in spec.shared)
    if ours != theirs:
        raise RuntimeError(f'The PyTorch target shares {ours}, the JAX one {theirs}.')
    torch_pudnet.load_flax_variables(model, params, batch_stats, spec.image_shape,
                                     config.target.name)
    model = model.to(_torch_device())
    t = config.train
    opt = torch.optim.Adam(model.parameters(), lr=t.learning_rate, betas=(t.b1, t.b2),
                           eps=1e-8)
    return model, opt


def _grad_agreement(model, opt, jax_mu, config, spec):
    """Relative L2 difference of the first step's gradients, overall and the worst leaf,
    from both optimizers' first moments (after one step, m = (1 - b1) g in both)."""
    theirs = torch_pudnet.torch_state_from_flax(model, jax_mu, None, spec.image_shape,
                                                config.target.name)
    num = den = 0.0
    worst, worst_name = 0.0, None
    for name, p in model.named_parameters():
        ours = opt.state[p]['exp_avg'].double().cpu()
        ref = theirs[name].double()
        d2, r2 = float(((ours - ref) ** 2).sum()), float((ref ** 2).sum())
        num, den = num + d2, den + r2
        leaf = (d2 / max(r2, 1e-60)) ** 0.5
        if leaf > worst:
            worst, worst_name = leaf, name
    return (num / den) ** 0.5, worst, worst_name


def _pool(config) -> dict:
    s, c = config.data.image_size, config.data.channels
    rng = np.random.default_rng(0)
    return {k: rng.integers(0, 256, (FLAGS.per_class, s, s, c), dtype=np.uint8)
            for k in config.data.train_classes}


def _classification_batches(config, count: int):
    """[(JAX batch, PyTorch batch)]: the same `Episodes` for both."""
    t = config.train
    sampler = data_lib.EpisodeSampler(_pool(config), config.data.train_classes, t.ways,
                                      t.shots, t.queries, seed=0,
                                      domains=config.data.get('domains'))
    return [(b, b) for b in (sampler.sample(i, t.episodes_per_step) for i in range(count))]


def n2v_mask_fn(config, group_shape):
    """keys (E, 2) → (masked index image, mask), both (E, n, H, W, C): `noise.n2v_mask`
    with the task's settings per group on an image whose values are the group's NHWC flat
    indices, so that the masked image says which pixel was copied where (the mask's
    positions and offsets depend on the key alone, not on the pixels)."""
    fraction, radius = float(config.noise.mask_fraction), int(config.noise.mask_radius)
    index = jnp.arange(int(np.prod(group_shape)), dtype=jnp.float32).reshape(group_shape)
    return jax.jit(jax.vmap(lambda k: noise_lib.n2v_mask(k, index, fraction, radius)))


def _denoising_batches(config, count: int):
    """[(JAX `NoisyGroups`, PyTorch (noisy, mask, source))]: the mask of each group from its
    own mask key (what the JAX step draws inside), checked against the JAX step's masking."""
    t = config.train
    sampler = denoising.GroupSampler(config, _pool(config))
    if torch_pudnet.GROUP_STD_EPS != denoising.EPS:
        raise RuntimeError(f'torch_pudnet.GROUP_STD_EPS {torch_pudnet.GROUP_STD_EPS} != '
                           f'denoising.EPS {denoising.EPS}.')
    batches, mask_fn = [], None
    for i in range(count):
        b = sampler.episodes(sampler.sample_indices(i, t.episodes_per_step))
        if mask_fn is None:
            mask_fn = n2v_mask_fn(config, b.noisy.shape[1:])
        masked_index, mask = jax.device_get(mask_fn(jnp.asarray(b.mask_keys)))
        source = torch_pudnet.n2v_source_nchw(masked_index)
        if i == 0:   # the same masked input as the JAX step's (noise.n2v_mask of x itself)
            fraction, radius = float(config.noise.mask_fraction), int(config.noise.mask_radius)
            x = np.asarray(denoising.normalize(b.noisy))
            masked, jmask = noise_lib.n2v_mask(jnp.asarray(b.mask_keys[0]), x[0], fraction,
                                               radius)
            flat = x[0].transpose(0, 3, 1, 2).reshape(-1)[source[0]].reshape(
                x[0].transpose(0, 3, 1, 2).shape).transpose(0, 2, 3, 1)
            if not (np.array_equal(np.asarray(masked), flat)
                    and np.array_equal(np.asarray(jmask), mask[0])):
                raise RuntimeError('The mask handed to PyTorch is not the JAX step\'s.')
        batches.append((b, (b.noisy, mask, source)))
    return batches


def run_preset(name: str, config) -> dict:
    config = config.copy_and_resolve_references()     # the caller's config is not edited
    if _is_denoising(config) and config.model.get('residual', False):
        # The offline denoising default generates residual kernels (a learned base plus
        # the generated delta); the PyTorch mirror is the authors' generator: time that.
        print(f'{name}: model.residual=False (the authors\' generator, which the PyTorch '
              f'mirror implements; the offline default is residual)', flush=True)
        config.model.residual = False
    _supported(config)
    t = config.train
    target = config.target.name
    denoise = _is_denoising(config)
    steps = FLAGS.steps or DEFAULT_STEPS[target]
    s, c = config.data.image_size, config.data.channels
    if denoise:
        images_per_episode = t.ways * t.shots
        what = f'groups of {t.ways} x {t.shots} noisy images (sigma {config.noise.sigma:g})'
        batches = _denoising_batches(config, CHECKED_STEPS + steps)
    else:
        images_per_episode = t.ways * (t.shots + t.queries)
        what = f'{t.ways}-way {t.shots}+{t.queries}'
        batches = _classification_batches(config, CHECKED_STEPS + steps)
    mode = train_lib.resolve_batching(t.episode_batching)

    model, spec = build_model(config)
    depth = ''
    if denoise:
        depth = f' depth {torch_pudnet.unet_depth(["/".join(p) for p, _ in spec.generated])}'
    print(f'\n== {name}: {target}{depth} width {config.target.width}, {s}x{s}x{c}, '
          f'{t.episodes_per_step} episodes/step of {what} '
          f'({t.episodes_per_step * images_per_episode} images), JAX episode '
          f'batching {mode!r}, {steps} timed steps', flush=True)
    state = train_lib.create_train_state(config, model, spec)
    copy = lambda tree: jax.tree.map(lambda x: np.array(x), tree)   # the step donates state
    params0, stats0 = copy(state.params), copy(state.batch_stats)
    n_params = sum(x.size for x in jax.tree.leaves(params0))

    def make_torch_step(compiled: bool):
        tm, topt = _torch_model(config, spec, params0, stats0)
        if denoise:
            fn = torch.compile(tm.denoise_loss) if compiled else None
            return tm, topt, torch_pudnet.make_denoise_train_step(tm, topt, loss_fn=fn)
        metric_weight, kl_weight = classification.loss_weights(config.loss)
        fn = torch.compile(tm.loss) if compiled else None
        return tm, topt, torch_pudnet.make_train_step(tm, topt, metric_weight, kl_weight,
                                                      loss_fn=fn)

    tmodel, topt, torch_step = make_torch_step(False)
    compiled_variants = {}
    if name in FLAGS.torch_compile:
        compiled_variants['torch.compile'] = make_torch_step(True)[2]

    t0 = time.perf_counter()
    jax_step = train_lib.make_train_step(config, model, spec).lower(state,
                                                                    batches[0][0]).compile()
    jax_compile_s = time.perf_counter() - t0

    # 1. The same two steps in both, from the same parameters.
    losses = {'jax': [], EAGER: []}
    first_step_s = {}
    grads = None
    for i in range(CHECKED_STEPS):
        t0 = time.perf_counter()
        state, metrics = jax_step(state, batches[i][0])
        losses['jax'].append(float(metrics.compute()['loss']))
        first_step_s.setdefault('jax', time.perf_counter() - t0)
        t0 = time.perf_counter()
        losses[EAGER].append(float(torch_step(batches[i][1])))
        first_step_s.setdefault(EAGER, time.perf_counter() - t0)
        if i == 0:
            mu = jax.tree.map(np.asarray, state.opt_state[0].mu)
            grads = _grad_agreement(tmodel, topt, mu, config, spec)
        for label, step in compiled_variants.items():
            t0 = time.perf_counter()
            losses.setdefault(label, []).append(float(step(batches[i][1])))
            first_step_s.setdefault(label, time.perf_counter() - t0)
    rel = {label: [_rel(v, j) for v, j in zip(vals, losses['jax'])]
           for label, vals in losses.items() if label != 'jax'}
    for i in range(CHECKED_STEPS):
        print(f'  loss at step {i}: JAX {losses["jax"][i]:.7f}, ' + ', '.join(
            f'{label} {losses[label][i]:.7f} (rel. diff {rel[label][i]:.1e})'
            for label in rel), flush=True)
    print(f'  gradients of step 0 (PyTorch vs JAX): relative L2 difference {grads[0]:.1e} '
          f'overall, worst leaf {grads[1]:.1e} ({grads[2]})', flush=True)
    agree = all(r <= FLAGS.tolerance for rs in rel.values() for r in rs)

    # 2. Timed steps, alternating.
    # Wall time, and the process's CPU time (all threads): on a machine shared with other
    # jobs the latter leaves out the time the process waited for the core.
    times = {label: [] for label in ['jax', EAGER] + list(compiled_variants)}
    cpu_times = {label: [] for label in times}
    torch_steps = {EAGER: torch_step, **compiled_variants}

    def timed(label, fn):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        times[label].append(time.perf_counter() - t0)
        cpu_times[label].append(time.process_time() - c0)

    for jb, tb in batches[CHECKED_STEPS:]:
        def jax_once():
            nonlocal state
            state, metrics = jax_step(state, jb)
            jax.block_until_ready((state, metrics))
        timed('jax', jax_once)
        for label, step in torch_steps.items():
            timed(label, lambda: step(tb))
    med = {label: statistics.median(v) for label, v in times.items()}
    cpu_med = {label: statistics.median(v) for label, v in cpu_times.items()}
    for label in torch_steps:
        print(f'  {label:>13}: {med[label] * 1e3:9.1f} ms/step (CPU {cpu_med[label] * 1e3:.1f})'
              f'   JAX: {med["jax"] * 1e3:9.1f} ms/step (CPU {cpu_med["jax"] * 1e3:.1f})   '
              f'ratio {label}/JAX = {med[label] / med["jax"]:.2f} '
              f'(CPU time: {cpu_med[label] / cpu_med["jax"]:.2f})', flush=True)
    return {'preset': name, 'task': config.get('task', 'classification'), 'target': target,
            'width': config.target.width, 'generated_kernels': len(spec.generated),
            'image_shape': list(spec.image_shape), 'episodes_per_step': t.episodes_per_step,
            'images_per_episode': images_per_episode,
            'hypernetwork_parameters': int(n_params), 'jax_episode_batching': mode,
            'timed_steps': steps, 'jax_compile_s': jax_compile_s,
            'first_step_s': first_step_s, 'losses': losses, 'loss_rel_diff': rel,
            'losses_agree': agree,
            'grad_rel_diff': {'overall': grads[0], 'worst_leaf': grads[1],
                              'worst_leaf_name': grads[2]},
            'step_s': times, 'step_cpu_s': cpu_times,
            'median_ms': {k: v * 1e3 for k, v in med.items()},
            'median_cpu_ms': {k: v * 1e3 for k, v in cpu_med.items()},
            'ratio_vs_jax': {k: med[k] / med['jax'] for k in torch_steps},
            'cpu_ratio_vs_jax': {k: cpu_med[k] / cpu_med['jax'] for k in torch_steps}}


def _markdown(result: dict) -> str:
    m = result['machine']
    lines = [f"One meta-training step, JAX vs PyTorch (`python -m benchmarks.vs_pytorch`), "
             f"{m['threads']} thread(s) each on CPU core(s) {m['cores']} ({m['cpu']}), "
             f"load average {m['loadavg_start'][0]:.2f} at the start; jax {m['jax']}, "
             f"torch {m['torch']}. Medians of wall time per step (in brackets: the process's "
             f"CPU time, which leaves out waiting for a shared core). Ratio: PyTorch time / "
             f"JAX time (> 1: JAX is faster).", '',
             '| preset | target | step | JAX ms/step | PyTorch ms/step | ratio | '
             'loss JAX / PyTorch (rel. diff) |', '|---|---|---|---|---|---|---|']
    for r in result['presets']:
        step = (f"{r['episodes_per_step']} × {r['images_per_episode']} images, "
                f"{r['image_shape'][0]}×{r['image_shape'][1]}×{r['image_shape'][2]}")
        jax_ms = f"{r['median_ms']['jax']:.0f} ({r['median_cpu_ms']['jax']:.0f})"
        for label in r['ratio_vs_jax']:
            lines.append(
                f"| {r['preset']} | {r['target']} | {step} | {jax_ms} | "
                f"{r['median_ms'][label]:.0f} ({r['median_cpu_ms'][label]:.0f}) {label} | "
                f"**{r['ratio_vs_jax'][label]:.2f}** ({r['cpu_ratio_vs_jax'][label]:.2f}) | "
                f"{r['losses']['jax'][0]:.6f} / {r['losses'][label][0]:.6f} "
                f"({r['loss_rel_diff'][label][0]:.1e}) |")
    return '\n'.join(lines) + '\n'


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def main(argv):
    del argv
    if (jax.default_backend() == 'cpu') != (_torch_device() == 'cpu'):
        print(f'Note: JAX runs on {jax.default_backend()}, PyTorch on {_torch_device()}: '
              f'not a like-for-like comparison.')
    cores = sorted(os.sched_getaffinity(0))
    torch.set_num_threads(len(cores))
    machine = {'cpu': _cpu_name(), 'cores': cores, 'threads': torch.get_num_threads(),
               'loadavg_start': list(os.getloadavg()), 'jax': jax.__version__,
               'jax_backend': jax.default_backend(), 'torch': torch.__version__,
               'torch_device': _torch_device(),
               'python': platform.python_version()}
    print(f'CPU cores {cores} ({machine["cpu"]}): XLA and torch.set_num_threads('
          f'{machine["threads"]}); jax {jax.__version__} ({jax.default_backend()}), torch '
          f'{torch.__version__}; load average {machine["loadavg_start"][0]:.2f}', flush=True)
    own = os.path.splitext(os.path.basename(
        config_flags.get_config_filename(FLAGS['config']).split(':')[0]))[0]
    presets = [run_preset(name, FLAGS.config if name == own else
                          importlib.import_module(f'configs.{name}').get_config())
               for name in FLAGS.presets]
    machine['loadavg_end'] = list(os.getloadavg())
    result = {'machine': machine, 'presets': presets}
    for path, text in ((FLAGS.json, json.dumps(result, indent=1) + '\n'),
                       (FLAGS.markdown, _markdown(result))):
        if path:
            os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
            with open(path, 'w') as f:
                f.write(text)
    print('\n' + _markdown(result))
    failed = [r['preset'] for r in presets if not r['losses_agree']]
    if failed:
        print(f'FAILED: the PyTorch and JAX losses differ by more than {FLAGS.tolerance:g} '
              f'(relative) for {failed}: the two are not the same hypernetwork.')
        sys.exit(1)


if __name__ == '__main__':
    app.run(main)
