"""Times the jitted train step for each episode-batching mode.

  python -m benchmarks.step_rate --config configs/default.py --modes unroll,vmap,map
  python -m benchmarks.step_rate --config configs/cifar100.py --synthetic --modes unroll --steps 3
Prints compile seconds and steps/s (median of timed steps after one warm-up step).
"""

import time

from pudnet_jax.process import prepare_process

prepare_process()   # as the command line: the CPU backend when there is no GPU

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from pudnet_jax import data as data_lib
from pudnet_jax import train as train_lib
from pudnet_jax.hypernet import build_model

config_flags.DEFINE_config_file('config', 'configs/default.py', 'Config to time.')
flags.DEFINE_string('modes', 'unroll,vmap', 'Comma-separated episode_batching modes.')
flags.DEFINE_integer('steps', 10, 'Timed steps per mode.')
flags.DEFINE_bool('synthetic', False, 'Random uint8 images of the config\'s size instead of '
                  'its dataset (600 per class; the step rate does not depend on the pixels).')
FLAGS = flags.FLAGS


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
    batches = [sampler.sample(i, t.episodes_per_step) for i in range(FLAGS.steps + 1)]
    t0 = time.perf_counter()
    for i in range(FLAGS.steps):
        sampler.sample(i, t.episodes_per_step)
    sample_rate = FLAGS.steps / (time.perf_counter() - t0)
    print(f'backend={jax.default_backend()} target={config.target.name} '
          f'episodes/step={t.episodes_per_step} images/episode='
          f'{t.ways * (t.shots + t.queries)}; sampler alone: {sample_rate:.1f} batches/s')
    for mode in FLAGS.modes.split(','):
        with config.unlocked():
            config.train.episode_batching = mode
        model, spec = build_model(config)
        state = train_lib.create_train_state(config, model, spec)
        step = train_lib.make_train_step(config, model, spec)
        t0 = time.perf_counter()
        compiled = step.lower(state, batches[0]).compile()
        compile_s = time.perf_counter() - t0
        state, m = compiled(state, batches[0])
        jax.block_until_ready(m)
        times = []
        for b in batches[1:]:
            t0 = time.perf_counter()
            state, m = compiled(state, b)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t0)
        med = float(np.median(times))
        print(f'{mode:>7}: compile {compile_s:6.1f} s, step {med * 1000:8.1f} ms median '
              f'({1 / med:.2f} steps/s, {t.episodes_per_step / med:.1f} episodes/s)')


if __name__ == '__main__':
    app.run(main)
