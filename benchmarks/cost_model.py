"""What the compiled programs cost, and the time that implies on an H100 (roofline).

  python -m benchmarks.cost_model                       # every preset → docs/cost_model.{json,md}
  python -m benchmarks.cost_model --presets default,cifar100

For every preset in configs/ the predict function (one group: `eval.ways` × the
prediction images per class; sketch, generation and the BatchNorm-statistics pass) and the
train step (`episodes_per_step` episodes, batched with 'vmap', the GPU path) are lowered
from shapes alone (no data is read or downloaded) and compiled for this machine's backend;
XLA's `cost_analysis()` gives their FLOPs and bytes accessed and `memory_analysis()` their
memory (arguments + outputs − donated + temporaries). The roofline time on an H100 SXM is
max(FLOPs / peak, bytes / 3.35 TB/s) with peak 989 TFLOP/s (dense bf16 tensor cores) or
67 TFLOP/s (fp32 without tensor cores): a lower bound, which ignores kernel launches and
the part of a step too small to fill the chip; the bytes are those of the CPU compilation's
fusions (a GPU compilation fuses differently). The paper's budgets (100,000 CIFAR-100
groups, 20,000 ImageNet-1K groups) are projected from the train step's bound, on 8 GPUs
with a ring all-reduce of the gradients over NVLink (450 GB/s a direction).
"""

import json
import math
import os
import time

from pudnet_jax.process import prepare_process

prepare_process()

import jax
import jax.numpy as jnp
from absl import app, flags

from pudnet_jax import data as data_lib
from pudnet_jax import predictor as predictor_lib
from pudnet_jax import train as train_lib
from pudnet_jax.targets import apply_with_dataset_stats
from pudnet_jax.hypernet import build_model

flags.DEFINE_string('presets', None, 'Comma-separated preset names (default: all).')
flags.DEFINE_string('out', 'docs/cost_model', 'Output prefix: PREFIX.json and PREFIX.md.')
FLAGS = flags.FLAGS

H100 = {'bf16_flops': 989e12, 'fp32_flops': 67e12, 'hbm_bytes_per_s': 3.35e12,
        'nvlink_bytes_per_s': 450e9}

# name → (config file, its argument, overrides, what the paper reports for that setting).
# Paper times are on one RTX 3090 Ti (paper §IV-A); the paper gives no meta-training time.
PRESETS = {
    'default': ('default', None, {}, None),
    'ablation_no_ahru': ('ablation_no_ahru', None, {}, None),
    'ablation_metric_only': ('ablation_metric_only', None, {}, None),
    'ablation_no_kl': ('ablation_no_kl', None, {}, None),
    'fashion': ('fashion', None, {}, {'predict_seconds': 0.50, 'groups': 2_000}),
    'cifar100': ('cifar100', None, {}, {'predict_seconds': 0.49, 'groups': 100_000}),
    'cifar100_convnet3': ('cifar100', None, {'target.name': 'convnet3'},
                          {'predict_seconds': 0.03}),
    'cifar100_resnet34': ('cifar100', None, {'target.name': 'resnet34'},
                          {'predict_seconds': 0.59}),
    'imagenet100': ('imagenet100', None, {}, {'predict_seconds': 0.50, 'groups': 50_000}),
    'imagenet1k': ('imagenet1k', None, {}, {'predict_seconds': 3.89, 'groups': 20_000}),
    'inter_cifar100_cifar10': ('inter_dataset', 'cifar100,cifar10', {}, None),
    'mnist5k_to_animal_mnist': ('mnist5k_to_animal_mnist', None, {}, None),
    'multidomain': ('multidomain', 'animal', {}, None),
}
# Extra target rows time only the prediction (the paper's ConvNet-3 / ResNet-34 times).
PREDICT_ONLY = ('cifar100_convnet3', 'cifar100_resnet34')
BUDGETS = {'cifar100': 100_000, 'imagenet1k': 20_000}


def load_config(name):
    import importlib
    module, arg, overrides, _ = PRESETS[name]
    config = importlib.import_module(f'configs.{module}')
    config = config.get_config(arg) if arg else config.get_config()
    for field, value in overrides.items():
        group, key = field.split('.')
        config[group][key] = value
    config.train.episode_batching = 'vmap'
    return config


def prediction_images(config) -> int:
    e = config.eval
    if e.get('protocol', 'intra') == 'inter':
        return e.bn_images
    return e.ways * (e.get('prediction_shots') or e.shots)


def _costs(compiled) -> dict:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    mem = compiled.memory_analysis()
    peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes
            - mem.alias_size_in_bytes + mem.temp_size_in_bytes)
    flops, nbytes = float(cost.get('flops', 0.0)), float(cost.get('bytes accessed', 0.0))
    return {'flops': flops, 'bytes': nbytes, 'peak_memory_bytes': int(peak),
            'temp_bytes': int(mem.temp_size_in_bytes),
            'h100_bf16_seconds': max(flops / H100['bf16_flops'], nbytes / H100['hbm_bytes_per_s']),
            'h100_fp32_seconds': max(flops / H100['fp32_flops'], nbytes / H100['hbm_bytes_per_s'])}


def measure(name: str) -> dict:
    config = load_config(name)
    model, spec = build_model(config)
    state = jax.eval_shape(lambda: train_lib.create_train_state(config, model, spec))
    hyper = {'params': state.params, 'batch_stats': state.batch_stats}
    n = prediction_images(config)
    images = jax.ShapeDtypeStruct((n,) + spec.image_shape, jnp.float32)
    row = {'preset': name, 'target': config.target.name, 'image_shape': list(spec.image_shape),
           'width': config.target.width, 'prediction_images': n,
           'hypernet_parameters': sum(math.prod(x.shape) for x in jax.tree.leaves(state.params)),
           'paper': PRESETS[name][3]}
    t0 = time.perf_counter()
    bn = config.eval.get('bn_images') if config.eval.get('protocol', 'intra') == 'intra' else None
    row['bn_images'] = int(min(n, bn or n))
    row['predict'] = _costs(predictor_lib.make_predictor(model, spec, bn)
                            .lower(hyper, images).compile())
    generated = jax.eval_shape(lambda h, x: model.apply(
        h, model.apply(h, x, train=False, method=model.encode).mean(0),
        method=model.generate), hyper, images)
    bn_pass = jax.jit(lambda p, x: apply_with_dataset_stats(spec, p, x)[2])
    bn_batch = jax.ShapeDtypeStruct((row['bn_images'],) + spec.image_shape, jnp.float32)
    row['predict_bn_pass'] = _costs(bn_pass.lower(generated, bn_batch).compile())
    if name not in PREDICT_ONLY:
        t = config.train
        e, s, q = t.episodes_per_step, t.ways * t.shots, t.ways * t.queries
        f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
        i32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)
        batch = data_lib.Episodes(f32(e, s, *spec.image_shape), i32(e, s),
                                  f32(e, q, *spec.image_shape), i32(e, q), i32(e, t.ways))
        step = train_lib.make_train_step(config, model, spec)
        row['train_step'] = _costs(step.lower(state, batch).compile())
        row['episodes_per_step'] = e
        row['images_per_episode'] = s + q
    row['compile_seconds'] = round(time.perf_counter() - t0, 1)
    return row


def budgets(rows: dict) -> list:
    out = []
    for name, groups in BUDGETS.items():
        row = rows.get(name)
        if not row or 'train_step' not in row:
            continue
        steps = groups / row['episodes_per_step']
        grad_bytes = 4 * row['hypernet_parameters']
        allreduce = 2 * 7 / 8 * grad_bytes / H100['nvlink_bytes_per_s']   # ring, 8 GPUs
        for precision in ('bf16', 'fp32'):
            t = row['train_step'][f'h100_{precision}_seconds']
            out.append({'preset': name, 'groups': groups, 'steps': steps,
                        'precision': precision, 'step_seconds_1gpu': t,
                        'hours_1gpu': steps * t / 3600,
                        'hours_8gpu': steps * (t / 8 + allreduce) / 3600,
                        'allreduce_seconds_per_step': allreduce})
    return out


def _fmt_s(s: float) -> str:
    if s >= 1:
        return f'{s:.2f} s'
    if s >= 1e-3:
        return f'{s * 1e3:.2f} ms'
    return f'{s * 1e6:.1f} µs'


def markdown(rows: dict, plan: list) -> str:
    lines = ['# Cost model: compiled FLOPs, bytes and memory, and the H100 roofline', '',
             'Written by `python -m benchmarks.cost_model` (see its docstring for the method). '
             'FLOPs, bytes and peak memory: XLA `cost_analysis()` / `memory_analysis()` of '
             f'the programs compiled for `{jax.default_backend()}` (JAX {jax.__version__}). '
             'H100 time = max(FLOPs / peak, bytes / 3.35 TB/s), peak 989 TFLOP/s (bf16) or '
             '67 TFLOP/s (fp32): a lower bound. Paper times: one RTX 3090 Ti.', '',
             '## Prediction (one group) and the train step', '',
             '| preset | target | images | predict GFLOP | of which BN pass | predict MB moved '
             '| peak MB | H100 bf16 / fp32 | paper | train step GFLOP | step MB moved '
             '| step peak MB | H100 bf16 / fp32 per step |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for name, r in rows.items():
        p, bn = r['predict'], r['predict_bn_pass']
        paper = r['paper'] or {}
        cells = [name, f"{r['target']} {'×'.join(map(str, r['image_shape']))}",
                 (f"{r['prediction_images']} (BN {r['bn_images']})"
                  if r.get('bn_images', r['prediction_images']) < r['prediction_images']
                  else str(r['prediction_images'])), f"{p['flops'] / 1e9:.2f}",
                 f"{100 * bn['flops'] / max(p['flops'], 1):.0f} %", f"{p['bytes'] / 1e6:.1f}",
                 f"{p['peak_memory_bytes'] / 1e6:.1f}",
                 f"{_fmt_s(p['h100_bf16_seconds'])} / {_fmt_s(p['h100_fp32_seconds'])}",
                 f"{paper['predict_seconds']} s" if 'predict_seconds' in paper else '–']
        if 'train_step' in r:
            s = r['train_step']
            cells += [f"{s['flops'] / 1e9:.1f}", f"{s['bytes'] / 1e6:.0f}",
                      f"{s['peak_memory_bytes'] / 1e6:.0f}",
                      f"{_fmt_s(s['h100_bf16_seconds'])} / {_fmt_s(s['h100_fp32_seconds'])}"]
        else:
            cells += ['–'] * 4
        lines.append('| ' + ' | '.join(cells) + ' |')
    if plan:
        lines += ['', "## The paper's meta-training budgets on H100s (roofline)", '',
                  '| preset | groups | steps | precision | step (1 GPU) | 1 H100 | 8 H100 '
                  '(+ gradient all-reduce per step) |', '|---|---|---|---|---|---|---|']
        for b in plan:
            lines.append(f"| {b['preset']} | {b['groups']:,} | {b['steps']:,.0f} | "
                         f"{b['precision']} | {_fmt_s(b['step_seconds_1gpu'])} | "
                         f"{b['hours_1gpu'] * 60:.1f} min | {b['hours_8gpu'] * 60:.2f} min "
                         f"(+{_fmt_s(b['allreduce_seconds_per_step'])}) |")
    return '\n'.join(lines) + '\n'


def main(_):
    names = FLAGS.presets.split(',') if FLAGS.presets else list(PRESETS)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise app.UsageError(f'--presets: unknown {unknown}; known: {list(PRESETS)}')
    path_json = FLAGS.out + '.json'
    rows = {}
    if FLAGS.presets and os.path.exists(path_json):     # a subset: keep the other rows
        with open(path_json) as f:
            rows = {r['preset']: r for r in json.load(f)['rows']}
    t0 = time.perf_counter()
    for i, name in enumerate(names, 1):
        print(f'[{i}/{len(names)}] {name}: compiling ...', flush=True)
        rows[name] = measure(name)
        r = rows[name]
        step = r.get('train_step')
        print(f"    predict {r['predict']['flops'] / 1e9:.2f} GFLOP, H100 bf16 "
              f"{_fmt_s(r['predict']['h100_bf16_seconds'])}"
              + (f"; train step {step['flops'] / 1e9:.1f} GFLOP, H100 bf16 "
                 f"{_fmt_s(step['h100_bf16_seconds'])}" if step else '')
              + f" ({r['compile_seconds']} s, {time.perf_counter() - t0:.0f} s so far)",
              flush=True)
    rows = {n: rows[n] for n in PRESETS if n in rows}
    plan = budgets(rows)
    os.makedirs(os.path.dirname(FLAGS.out) or '.', exist_ok=True)
    with open(path_json, 'w') as f:
        json.dump({'h100': H100, 'backend': jax.default_backend(), 'jax': jax.__version__,
                   'rows': list(rows.values()), 'budgets': plan}, f, indent=1)
    text = markdown(rows, plan)
    with open(FLAGS.out + '.md', 'w') as f:
        f.write(text)
    print(text)


if __name__ == '__main__':
    app.run(main)
