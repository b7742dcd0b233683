"""Times the episode sampler alone on CIFAR-100-sized data with ResNet-18-sized episodes.

  python -m benchmarks.sampler_rate [--ways 5 --shots 10 --queries 15 --episodes 4]
100 classes × 600 random uint8 32×32×3 images in memory (the size of CIFAR-100); each
call draws `episodes` episodes (one optimizer step's batch) including the float32
normalisation. Prints episodes/s and batches/s (median of repeated timings); compare
with the train step's rate from benchmarks/step_rate.py.
"""

import time

from pudnet_jax.process import prepare_process

prepare_process()   # as the command line: the CPU backend when there is no GPU

import numpy as np
from absl import app, flags

from pudnet_jax import data as data_lib

flags.DEFINE_integer('classes', 100, 'Classes in the pool.')
flags.DEFINE_integer('per_class', 600, 'Images per class.')
flags.DEFINE_integer('image_size', 32, 'Image height and width.')
flags.DEFINE_integer('ways', 5, 'Classes per episode.')
flags.DEFINE_integer('shots', 10, 'Labelled images per class.')
flags.DEFINE_integer('queries', 15, 'Query images per class.')
flags.DEFINE_integer('episodes', 4, 'Episodes per optimizer step.')
flags.DEFINE_integer('batches', 200, 'Batches timed per repeat.')
flags.DEFINE_integer('repeats', 5, 'Repeats (the median is reported).')
FLAGS = flags.FLAGS


def main(_):
    rng = np.random.default_rng(0)
    s = FLAGS.image_size
    pool = {c: rng.integers(0, 256, (FLAGS.per_class, s, s, 3), dtype=np.uint8)
            for c in range(FLAGS.classes)}
    sampler = data_lib.EpisodeSampler(pool, list(range(FLAGS.classes)), FLAGS.ways,
                                      FLAGS.shots, FLAGS.queries, seed=0)
    sampler.sample(0, FLAGS.episodes)   # warm-up
    rates = []
    for r in range(FLAGS.repeats):
        t0 = time.perf_counter()
        for i in range(FLAGS.batches):
            sampler.sample(r * FLAGS.batches + i, FLAGS.episodes)
        rates.append(FLAGS.batches / (time.perf_counter() - t0))
    batches = float(np.median(rates))
    images = FLAGS.ways * (FLAGS.shots + FLAGS.queries)
    print(f'pool {FLAGS.classes} classes x {FLAGS.per_class} images {s}x{s}x3 uint8; '
          f'episodes {FLAGS.ways}-way {FLAGS.shots}+{FLAGS.queries} ({images} images), '
          f'{FLAGS.episodes} per batch')
    print(f'sampler alone: {batches * FLAGS.episodes:.1f} episodes/s '
          f'({batches:.1f} batches/s, {1000 / batches:.2f} ms per batch; median of '
          f'{FLAGS.repeats} x {FLAGS.batches} batches, rates {min(rates):.1f}-{max(rates):.1f} '
          f'batches/s)')


if __name__ == '__main__':
    app.run(main)
