"""The episode input against the train step, for both paths of `config.train.input`.

  python -m benchmarks.input_pipeline                       # the default (ConvNet-3, MNIST)
  python -m benchmarks.input_pipeline --config configs/cifar100.py --synthetic --steps 4

Measures on this machine, median over `--steps` steps:
- step: the jitted train step alone (its inputs already on the device);
- host sampler: drawing one step's episodes on the host (gather + normalise, float32) and
  putting them on the device: what the step waits for with `input='host'` and no prefetch;
- device input: drawing one step's indices on the host and putting them on the device
  (the images are gathered inside the step): what the step waits for with 'device';
- the training loop's seconds per step for each input, prefetch 0 and 2 (the default: the
  input of the next steps prepared in a background thread during the step).
It prints each input's time as a fraction of the step, and, from `docs/cost_model.json`
(`python -m benchmarks.cost_model`), the same fraction against the preset's H100 roofline
step: whether the input would dominate a GPU step. `--json` writes the numbers.
"""

import json
import os
import time

from pudnet_jax.process import prepare_process

prepare_process()   # as the command line: the CPU backend when there is no GPU

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from pudnet_jax import data as data_lib
from pudnet_jax import input_pipeline
from pudnet_jax import train as train_lib
from pudnet_jax.hypernet import build_model

config_flags.DEFINE_config_file('config', 'configs/default.py', 'Config to time.')
flags.DEFINE_integer('steps', 10, 'Timed steps (after one warm-up step).')
flags.DEFINE_bool('synthetic', False, 'Random uint8 images of the config\'s size instead of '
                  'its dataset (600 per class; the times do not depend on the pixels).')
flags.DEFINE_string('json', None, 'Also write the numbers to this JSON file.')
flags.DEFINE_string('cost_model', 'docs/cost_model.json', 'The cost model\'s JSON (the H100 '
                    'roofline step), if present.')
FLAGS = flags.FLAGS


def _median_seconds(fn, repeats):
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(i))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _roofline_step(preset: str):
    if not os.path.exists(FLAGS.cost_model):
        return None
    with open(FLAGS.cost_model) as f:
        rows = {r['preset']: r for r in json.load(f)['rows']}
    step = (rows.get(preset) or {}).get('train_step')
    return step and step['h100_bf16_seconds']


def main(_):
    config = FLAGS.config
    t = config.train
    if FLAGS.synthetic:
        s, c = config.data.image_size, config.data.channels
        rng = np.random.default_rng(0)
        pool = {k: rng.integers(0, 256, (600, s, s, c), dtype=np.uint8)
                for k in config.data.train_classes}
    else:
        pool = data_lib.load_pool(config.data.name, config.data.image_size,
                                  config.data.channels, config.data.data_dir,
                                  cache_dir=config.data.get('cache_dir'))
    sampler = data_lib.EpisodeSampler(pool, config.data.train_classes, t.ways, t.shots,
                                      t.queries, seed=0, domains=config.data.get('domains'))
    model, spec = build_model(config)
    n = FLAGS.steps
    with config.unlocked():
        t.num_train_steps = 2 * n + 2

    # The step alone, on device-resident episodes (the device path's step, gather included).
    state = train_lib.create_train_state(config, model, spec)
    device_feed = input_pipeline.device_feed(sampler, t)
    step_d = train_lib.make_train_step(config, model, spec, on_device=True)
    inputs = [device_feed(s) for s in range(1, n + 2)]
    jax.block_until_ready(inputs)
    state, m = step_d(state, *inputs[0])
    jax.block_until_ready(m)

    def one_step(i):
        nonlocal state
        state, metrics = step_d(state, *inputs[i + 1])
        return metrics
    step_s = _median_seconds(one_step, n)
    host_s = _median_seconds(
        lambda i: jax.device_put(input_pipeline.training_batch(sampler, i + 1, t)), n)
    index_s = _median_seconds(lambda i: device_feed(i + 1)[0], n)

    # The training loop's seconds per step with each feed.
    loops = {}
    step_h = train_lib.make_train_step(config, model, spec)
    for name, make, step in (
            ('host, no prefetch', lambda: input_pipeline.host_feed(sampler, t), step_h),
            ('host, prefetch 2', lambda: input_pipeline.host_feed(sampler, t, prefetch=2), step_h),
            ('device, no prefetch', lambda: input_pipeline.device_feed(sampler, t), step_d),
            ('device, prefetch 2', lambda: input_pipeline.device_feed(sampler, t, prefetch=2),
             step_d)):
        state = train_lib.create_train_state(config, model, spec)
        feed = make()
        try:
            state, m = step(state, *feed(1))      # compile and warm up
            jax.block_until_ready(m)
            t0 = time.perf_counter()
            for s in range(2, n + 2):
                state, m = step(state, *feed(s))
            jax.block_until_ready(m)
            loops[name] = (time.perf_counter() - t0) / n
        finally:
            feed.close()

    preset = os.path.splitext(os.path.basename(
        config_flags.get_config_filename(FLAGS['config']).split(':')[0]))[0]
    roofline = _roofline_step(preset)
    images = t.ways * (t.shots + t.queries)
    print(f'{preset}: {spec.name} {spec.image_shape}, {t.episodes_per_step} episodes x '
          f'{images} images per step, pool {input_pipeline.pool_bytes(sampler) / 1e6:.1f} MB '
          f'uint8; backend {jax.default_backend()}, median of {n} steps')
    print(f'  train step alone                 {step_s * 1e3:9.2f} ms')
    rows = (('host sampler (gather, normalise, put)', host_s),
            ('device input (indices, put)', index_s))
    for what, sec in rows:
        line = f'  {what:<37}{sec * 1e3:9.3f} ms = {100 * sec / step_s:6.2f} % of the step'
        if roofline:
            line += f', {sec / roofline:7.2f}x the H100 roofline step ({roofline * 1e3:.2f} ms)'
        print(line)
    for name, sec in loops.items():
        print(f'  loop, {name:<31}{sec * 1e3:9.2f} ms per step')
    if FLAGS.json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
        with open(FLAGS.json, 'w') as f:
            json.dump({'preset': preset, 'target': spec.name, 'backend': jax.default_backend(),
                       'jax': jax.__version__, 'episodes_per_step': t.episodes_per_step,
                       'images_per_episode': images, 'steps': n,
                       'step_seconds': step_s, 'host_sampler_seconds': host_s,
                       'device_input_seconds': index_s, 'h100_roofline_step_seconds': roofline,
                       'loop_seconds_per_step': loops}, f, indent=1)


if __name__ == '__main__':
    app.run(main)
