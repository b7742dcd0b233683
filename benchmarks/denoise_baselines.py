"""Times the denoising baselines on the camera photograph (scikit-image), σ = 25.

  python -m benchmarks.denoise_baselines
  python -m benchmarks.denoise_baselines --target=unet_n2v_small --width=4 --epochs=1,5

Noise2Void from scratch (`N2VTrainer`) on one group of `--tiles` 32x32 camera tiles
(seeded choice): PSNR/SSIM and cumulative training seconds per milestone epoch, compile
seconds apart. Classical rows: seconds per image on those tiles and on the whole 512²
photo, with their PSNR (per-tile mean on tiles; the photo's own PSNR on the photo).
"""

import time

from pudnet_jax.process import prepare_process

prepare_process()   # as the command line: the CPU backend when there is no GPU

import numpy as np
from absl import app, flags

from pudnet_jax import metrics, noise
from pudnet_jax.targets import target_spec
from pudnet_jax.tasks.denoising import baselines

flags.DEFINE_string('target', 'unet_n2v', 'The UNet target.')
flags.DEFINE_integer('width', 16, 'Its width.')
flags.DEFINE_string('optimizer', 'gc', "'gc' or 'adam'.")
flags.DEFINE_float('lr', 1e-3, 'Learning rate.')
flags.DEFINE_integer('tiles', 32, 'Images in the group.')
flags.DEFINE_integer('batch_size', 8, 'Mini-batch size.')
flags.DEFINE_string('epochs', '1,5,10,20,50', 'Milestone epochs.')
flags.DEFINE_float('sigma', 25.0, 'Noise σ on the 255 scale.')
flags.DEFINE_bool('classical', True, 'Also time the classical rows.')
FLAGS = flags.FLAGS


def camera_tiles(size: int, count: int, seed: int = 0):
    from skimage import data
    photo = data.camera().astype(np.float32) / 255.0
    h, w = photo.shape[0] // size, photo.shape[1] // size
    tiles = photo[:h * size, :w * size].reshape(h, size, w, size).swapaxes(1, 2)
    tiles = tiles.reshape(-1, size, size)
    pick = np.random.default_rng(seed).choice(len(tiles), count, replace=False)
    return photo[None, ..., None], tiles[np.sort(pick)][..., None]


def main(_):
    photo, clean = camera_tiles(32, FLAGS.tiles)
    noisy = noise.add_gaussian_noise(clean, FLAGS.sigma, (0, 1))
    print(f'{FLAGS.tiles} camera tiles 32x32, σ = {FLAGS.sigma:g}: noisy PSNR '
          f'{np.mean(metrics.psnr(clean, noisy)):.2f} dB')
    spec = target_spec(FLAGS.target, (32, 32, 1), width=FLAGS.width)
    trainer = baselines.N2VTrainer(spec, FLAGS.optimizer, FLAGS.batch_size)
    t0 = time.perf_counter()
    c = trainer.curve(clean, noisy, FLAGS.lr, [int(e) for e in FLAGS.epochs.split(',')],
                      seed=0)
    print(f'N2V {FLAGS.optimizer} {FLAGS.target} width {FLAGS.width}, lr {FLAGS.lr:g}, batch '
          f'{FLAGS.batch_size}: compile {c["compile_seconds"]:.1f} s (denoiser '
          f'{c["eval_compile_seconds"]:.1f} s), wall {time.perf_counter() - t0:.1f} s')
    for e, s, p, q in zip(c['epochs'], c['seconds'], c['psnr'], c['ssim']):
        print(f'  epoch {e:4d}  {s:7.2f} s  PSNR {p:6.2f}  SSIM {q:.4f}')
    if not FLAGS.classical:
        return
    for name, (cl, ny) in {'32x32 tiles': (clean, noisy),
                           '512² photo': (photo, noise.add_gaussian_noise(photo, FLAGS.sigma,
                                                                         (0, 2)))}.items():
        rows = baselines.classical(ny, FLAGS.sigma / 255)
        for m, r in rows.items():
            if 'skipped' in r:
                print(f'  {name:12s} {m:8s} skipped: {r["skipped"]}')
                continue
            flag = ' (σ known)' if r['needs_sigma'] else ''
            print(f'  {name:12s} {m:8s} PSNR {np.mean(metrics.psnr(cl, r["output"])):6.2f}  '
                  f'{r["seconds_per_image"]:.3f} s/image{flag}')


if __name__ == '__main__':
    app.run(main)
