"""`--mode=predict --data=DIR` for a denoising workdir: one UNet for a folder of the user's
noisy images (no class subfolders), the denoised images written as PNGs beside it.

The images directly inside DIR are read at their own size (channels converted to the
run's: RGB → ITU-R 601 gray for a grayscale run). The folder is sketched as one group: all
its image_size tiles (at most `predict.max_sketch_tiles`, evenly spread), normalised by
their own statistics; the UNet generated from that sketch is saved (Orbax variables +
network.json: `predict.save_variables`), reloaded, and the reloaded UNet denoises each
whole image as a group of overlapping tiles (`evaluation.denoise_image`: normalised by the
group's mean and std, BatchNorm statistics of the group, each pixel from a tile's centre). With `--clean=DIR` (the same
file names, any image extension), PSNR and SSIM of each image and of the noisy input."""

import os
import time

import jax
import numpy as np

from pudnet_jax import predict as predict_lib
from pudnet_jax import workdir as workdir_lib
from pudnet_jax.errors import UserError
from pudnet_jax.files import write_json

REPORT_FILE = 'report.json'
DENOISED_DIR = 'denoised'


def check_folder(folder: str) -> None:
    from pudnet_jax import sources
    sources.image_files(folder, '--data')


def _clean_files(clean_folder: str, names: list[str]) -> dict[str, str]:
    from pudnet_jax import sources
    by_stem = {os.path.splitext(os.path.basename(p))[0]: p
               for p in sources.image_files(clean_folder, '--clean')}
    missing = [n for n in names if os.path.splitext(n)[0] not in by_stem]
    if missing:
        raise UserError(f'--clean={clean_folder!r} has no image named like {missing[0]!r} '
                        f'({len(missing)} of {len(names)} noisy images unmatched; the clean '
                        f'images must have the same file names, any extension).')
    return {n: by_stem[os.path.splitext(n)[0]] for n in names}


def sketch_tiles(images: list, size: int, limit: int) -> np.ndarray:
    """All size x size tiles of the images (float on [0, 1]), at most `limit` of them,
    evenly spread (deterministic)."""
    from pudnet_jax.sources import photos
    parts = []
    for name, image in images:
        if image.shape[0] < size or image.shape[1] < size:
            raise UserError(f'--data: {name} is {image.shape[0]}x{image.shape[1]}, smaller than '
                            f'the {size}x{size} tiles this hypernetwork sketches.')
        parts.append(photos.tiles(image, size))
    tiles = np.concatenate(parts)
    if len(tiles) > limit:
        tiles = tiles[np.linspace(0, len(tiles) - 1, limit).round().astype(int)]
    return tiles


def save_png(path: str, image01: np.ndarray) -> None:
    from PIL import Image
    array = np.round(np.clip(image01, 0.0, 1.0) * 255.0).astype(np.uint8)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


def predict_folder(workdir: str, folder: str, config=None, output_dir=None,
                   clean_folder=None, **unused) -> dict:
    from pudnet_jax import sources
    from pudnet_jax.tasks.denoising import evaluation
    config = config or workdir_lib.load_config(workdir)
    c, size = config.data.channels, config.data.image_size
    noisy = sources.load_unlabelled(folder, None, c)
    clean_files = _clean_files(clean_folder, noisy.files) if clean_folder else None
    images = [(n, im.astype(np.float32) / 255.0) for n, im in zip(noisy.files, noisy.images)]
    limit = int(config.predict.get('max_sketch_tiles', 1024))
    tiles = sketch_tiles(images, size, limit)

    config, model, spec, hyper_vars = workdir_lib.restore_hypernet(workdir, config)
    predictor = evaluation.Predictor(model, hyper_vars, spec, config)
    t = time.perf_counter()
    if predictor.refine_steps:      # trained with the inner loop: its learned steps too
        params = jax.block_until_ready(predictor.refined_params(
            tiles, evaluation.refine_key((int(config.eval.seed), 12))))
    else:
        params = jax.block_until_ready(predictor.params(tiles))
    predict_seconds = time.perf_counter() - t

    out = output_dir or os.path.join(workdir, config.predict.output,
                                     predict_lib.folder_output_name(folder))
    metadata = {'target': spec.name, 'width': int(config.target.width), 'task': 'denoising',
                'image_channels': int(c), 'sigma_trained': float(config.noise.sigma),
                'folder': os.path.abspath(folder), 'images': len(images),
                'sketch_tiles': int(len(tiles)), 'tile_size': int(size),
                'learned_steps': int(predictor.refine_steps),
                'usage': 'per image: S x S tiles at stride S/2 (image reflect-padded by S/4), '
                         'x -> (x - mean) / std over the tiles, UNet with BatchNorm statistics '
                         'of the tiles (train-mode BatchNorm), output * std + mean, each '
                         'tile\'s central S/2 x S/2 kept (pudnet_jax.tasks.denoising.'
                         'evaluation.denoise_image)'}
    network = os.path.join(out, 'network')
    predict_lib.save_variables(network, {'params': params}, metadata)
    _, variables, _ = predict_lib.load_variables(network)       # the file on disk
    reloaded = variables['params']

    os.makedirs(os.path.join(out, DENOISED_DIR), exist_ok=True)
    rows = []
    t = time.perf_counter()
    for name, image in images:
        den = predictor.image(reloaded, image)
        png = os.path.join(out, DENOISED_DIR, os.path.splitext(name)[0] + '.png')
        save_png(png, den)
        row = {'file': name, 'denoised': os.path.relpath(png, out), 'shape': list(image.shape)}
        if clean_files:
            clean = sources.folder.read_image(clean_files[name], None, c)
            if clean is None or clean.shape != image.shape:
                raise UserError(f'--clean: {clean_files[name]} is unreadable or not the size of '
                                f'{name} ({None if clean is None else clean.shape} vs '
                                f'{image.shape}).')
            clean = clean.astype(np.float32) / 255.0
            row['psnr'], row['ssim'] = evaluation.image_scores(clean, den)
            row['psnr_noisy'], row['ssim_noisy'] = evaluation.image_scores(clean, image)
        rows.append(row)
    report = {'folder': os.path.abspath(folder), 'output': os.path.abspath(out),
              'network': os.path.abspath(network), 'images': rows,
              'skipped_files': noisy.corrupt_files, 'predict_seconds': predict_seconds,
              'denoise_seconds_total': time.perf_counter() - t, 'sketch_tiles': int(len(tiles))}
    if clean_files:
        for k in ('psnr', 'ssim', 'psnr_noisy', 'ssim_noisy'):
            report[k] = float(np.mean([r[k] for r in rows]))
    write_json(os.path.join(out, REPORT_FILE), report)
    print(format_report(report))
    return report


def format_report(r: dict) -> str:
    lines = [f"Denoised {len(r['images'])} image(s) of {r['folder']} with one predicted UNet "
             f"(sketch of {r['sketch_tiles']} tiles, {1000 * r['predict_seconds']:.0f} ms incl. "
             f"compilation); PNGs in {os.path.join(r['output'], DENOISED_DIR)}, the UNet in "
             f"{r['network']}."]
    if 'psnr' in r:
        lines.append(f"vs --clean: PSNR {r['psnr']:.2f} dB (noisy {r['psnr_noisy']:.2f}), "
                     f"SSIM {r['ssim']:.3f} (noisy {r['ssim_noisy']:.3f}), mean over images")
    if r['skipped_files']:
        lines.append(f"skipped unreadable: {', '.join(r['skipped_files'])}")
    return '\n'.join(lines)
