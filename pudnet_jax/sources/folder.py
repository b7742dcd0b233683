"""Folders of images, decoded with Pillow (no TensorFlow).

Labelled folders (`folder_layout`, one rule): the classes are the subfolders of the root
(sorted by name); the images of a class are the image files directly inside its folder.
Nested subfolders inside a class folder, hidden files and folders (names starting with
'.'), and class folders that are symlinks to the root, to one of its ancestors or to a
place inside the root (duplicates) are skipped, counted and named in a warning.

Unlabelled folders (`image_files`, `load_unlabelled`): the image files directly inside
the root, no class subfolders (e.g. the noisy images a denoiser is predicted for).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
from absl import logging

from pudnet_jax.sources.images import decode_image, preprocess, to_channels

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm',
                    '.pgm')


@dataclasses.dataclass
class FolderLayout:
    """What a folder of class subfolders holds under the rule of this module's docstring."""
    class_names: list[str]
    files: list[list[str]]           # per class: its image files, sorted
    ignored: list[str]               # non-image files directly inside class folders
    skipped: dict[str, list[str]]    # reason → paths skipped by the rule

    def skipped_count(self) -> int:
        return sum(len(v) for v in self.skipped.values())


SKIP_REASONS = {'nested': 'nested subfolder(s) inside class folders',
                'hidden': 'hidden file(s) or folder(s)',
                'symlink': 'class folder symlink(s) to the folder itself, an ancestor or a '
                           'place inside it (duplicates)'}


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def folder_layout(folder: str, what: str = 'folder') -> FolderLayout:
    """Classes and their image files; raises if the folder is missing or has < 2 classes."""
    if not folder or not os.path.isdir(folder):
        raise FileNotFoundError(f'{what}: {folder!r} is not a directory.')
    root = os.path.realpath(folder)
    skipped: dict[str, list[str]] = {k: [] for k in SKIP_REASONS}
    names = []
    for d in sorted(os.listdir(folder)):
        path = os.path.join(folder, d)
        if d.startswith('.'):
            skipped['hidden'].append(path)
            continue
        if not os.path.isdir(path):
            continue
        if os.path.islink(path):
            real = os.path.realpath(path)
            if _is_within(real, root) or _is_within(root, real):
                skipped['symlink'].append(path)
                continue
        names.append(d)
    if len(names) < 2:
        raise ValueError(f'{what}: {folder!r} has {len(names)} class subfolder(s) '
                         f'{names}; classification needs at least 2 (one subfolder per class).')
    files, ignored = [], []
    for name in names:
        d = os.path.join(folder, name)
        here = []
        for f in sorted(os.listdir(d)):
            path = os.path.join(d, f)
            if f.startswith('.'):
                skipped['hidden'].append(path)
            elif os.path.isdir(path):
                skipped['nested'].append(path)
            elif f.lower().endswith(IMAGE_EXTENSIONS):
                here.append(path)
            else:
                ignored.append(path)
        files.append(here)
    return FolderLayout(names, files, ignored, {k: v for k, v in skipped.items() if v})


def folder_classes(folder: str, what: str = 'folder') -> list[str]:
    return folder_layout(folder, what).class_names


def check_folder(folder: str, what: str = '--data') -> FolderLayout:
    """Fast checks of a user's folder before anything heavy is loaded: it exists, has at
    least 2 class subfolders, and each of them holds image files."""
    layout = folder_layout(folder, what)
    empty = [n for n, f in zip(layout.class_names, layout.files) if not f]
    if empty:
        raise ValueError(f'{what}: class folder(s) {empty} of {folder!r} hold no image files '
                         f'({", ".join(IMAGE_EXTENSIONS)}) directly inside them.')
    return layout


def _warn_skipped(folder: str, layout: FolderLayout) -> None:
    for reason, paths in layout.skipped.items():
        shown = ', '.join(paths[:3]) + (f', ... ({len(paths)} in all)' if len(paths) > 3 else '')
        logging.warning('%s: skipped %d %s: %s (only image files directly inside each class '
                        'folder are used).', folder, len(paths), SKIP_REASONS[reason], shown)


def folder_fingerprint(folder: str) -> str:
    layout = folder_layout(folder)
    h = hashlib.sha256()
    for path in (p for class_files in layout.files for p in class_files):
        st = os.stat(path)
        h.update(f'{os.path.relpath(path, folder)}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
    return h.hexdigest()[:16]



def read_image(path: str, image_size, channels: int):
    """One image file decoded (`decode_image`) and preprocessed (`preprocess`) to
    (S, S, channels) uint8 (image_size None: its own size, channels converted only), or
    None (named in a warning) when it cannot be read."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            img.load()
            array = decode_image(img)
    except Exception as e:   # noqa: BLE001 (any decoder failure: skip the file)
        logging.warning('Skipping unreadable image %s (%s: %s).', path, type(e).__name__, e)
        return None
    if image_size is None:
        return to_channels(array[None], channels, path)[0]
    return preprocess(array[None], image_size, channels, path)[0]


def decode(name: str, source, image_size, channels, data_dir, split, report=None):
    """Corrupt or unreadable image files are SKIPPED, each named in a warning and counted
    (in the cache's meta.json and the reports), not fatal: scraped datasets such as
    Animals-10 ship a few broken files and one of them should not stop a 26,000-image
    load. A class left with too few images is then named by the protocol that needs them.
    Files without an image extension are ignored and counted."""
    if split != 'all':
        raise ValueError(f'Dataset {name!r} is a folder of images and has no split {split!r}; '
                         f"use split='all' and a fraction (config.eval.predict_fraction).")
    layout = folder_layout(data_dir, f'Dataset {name!r}')
    names, files = layout.class_names, layout.files
    _warn_skipped(data_dir, layout)
    report = report if report is not None else {}
    report.update(ignored_files=len(layout.ignored), corrupt_files=[],
                  skipped_entries={k: len(v) for k, v in layout.skipped.items()},
                  blank_images={})

    def batches():
        for label, class_files in enumerate(files):
            images = []
            for path in class_files:
                image = read_image(path, image_size, channels)
                if image is None:
                    report['corrupt_files'].append(path)
                else:
                    images.append(image)
            if images:
                images = np.stack(images)
                flat = images.reshape(len(images), -1)
                blank = int(np.sum(flat.min(axis=1) == flat.max(axis=1)))
                if blank:
                    report['blank_images'][names[label]] = blank
                if blank == len(images):
                    logging.warning('%s: all %d images of class %r are blank (one colour) '
                                    'after conversion: check the files (e.g. content only in '
                                    'a transparency channel or an unusual bit depth).',
                                    data_dir, blank, names[label])
                yield images, np.full(len(images), label)
    return names, batches()


# ----------------------------------------------------------------------------- unlabelled

def image_files(folder: str, what: str = 'folder') -> list[str]:
    """The image files directly inside `folder`, sorted by name (hidden files, subfolders
    and non-image files left out): a folder of images with no class subfolders."""
    if not folder or not os.path.isdir(folder):
        raise FileNotFoundError(f'{what}: {folder!r} is not a directory.')
    entries = sorted(e for e in os.listdir(folder) if not e.startswith('.'))
    files = [os.path.join(folder, e) for e in entries
             if e.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, e))]
    if not files:
        subfolders = [e for e in entries if os.path.isdir(os.path.join(folder, e))]
        hint = (f'; it has subfolders ({", ".join(subfolders[:3])}'
                f'{", ..." if len(subfolders) > 3 else ""}): put the images themselves in '
                f'it' if subfolders else '')
        raise ValueError(f'{what}: {folder!r} holds no image files '
                         f'({", ".join(IMAGE_EXTENSIONS)}) directly inside it{hint}.')
    return files


@dataclasses.dataclass
class Unlabelled:
    """The images of an unlabelled folder, in file-name order."""
    images: np.ndarray | list        # (N, S, S, C) uint8; a list of (H, W, C) at own size
    files: list[str]                 # the file of each image, relative to the folder
    corrupt_files: list[str]         # unreadable files, skipped (each named in a warning)


def load_unlabelled(folder: str, image_size, channels: int,
                    what: str = '--data') -> Unlabelled:
    """Every readable image directly inside `folder`, decoded (`decode_image`) and
    preprocessed (`preprocess`) as every other source's (image_size None: each at its own
    size, a list); unreadable files are skipped and named, a folder with none readable is
    refused."""
    images, names, corrupt = [], [], []
    for path in image_files(folder, what):
        image = read_image(path, image_size, channels)
        if image is None:
            corrupt.append(os.path.relpath(path, folder))
        else:
            images.append(image)
            names.append(os.path.relpath(path, folder))
    if not images:
        raise ValueError(f'{what}: none of the {len(corrupt)} image file(s) in {folder!r} '
                         f'could be read ({", ".join(corrupt[:3])}).')
    return Unlabelled(images if image_size is None else np.stack(images), names, corrupt)
