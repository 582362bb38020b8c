"""Digits that are not MNIST, for comparing models off MNIST (issue 16): glyphs of the machine's fonts
and strokes drawn as a person draws on the web page's pad.

Both sets go through ``mnist_frame``, which is the preparation the server applies to the page's pixels
(``serving.client.mnist_image.to_mnist``: ink box fitted into 20x20, anti-aliased, centre of mass at the
centre of 28x28), so a model sees them as it would see them from the page or ``digits predict``.
Everything is deterministic: the same call on the same machine gives the same bytes. The font set is the
fonts of ``FONT_NAMES`` found on the machine (Debian's DejaVu and Liberation, else matplotlib's bundled
copies in the venv), so its size can differ between machines; the stroke set's cannot.
"""
from __future__ import annotations

import functools
import math
import os
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from serving.client.mnist_image import to_mnist

Digits = Tuple[np.ndarray, np.ndarray]  # uint8 [N, 28, 28], int64 [N]

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation")
# Upright and bold faces of sans, serif and mono families with different digit shapes (open/closed 4,
# flagged 1, curly 2); the first directory holding a name wins. cm* and STIX come with matplotlib.
FONT_NAMES = (  # sorted; no mono faces: their dotted zeros are no handwritten digit
    "DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif.ttf",
    "LiberationSans-Bold.ttf", "LiberationSans-Italic.ttf", "LiberationSans-Regular.ttf",
    "LiberationSerif-Bold.ttf", "LiberationSerif-Regular.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf", "cmsy10.ttf",  # cmsy10 maps '0'..'9' to symbols: skipped
)
DIGIT_GLYPHS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# (rotation in degrees, counter-clockwise; width factor; extra stroke px at FONT_PX): upright first.
FONT_VARIANTS = ((0, 1.0, 0), (-10, 1.0, 0), (10, 1.0, 0), (0, 0.75, 0), (0, 1.0, 3), (-6, 1.25, 0))
FONT_PX = 96
PAD = 280            # the page's canvas is 280x280 ...
PAGE_STROKE = 20     # ... drawn with 20-px round-capped white lines on black (web/static/app.js)


def mnist_frame(gray: np.ndarray) -> np.ndarray:
    """A white-on-black (or black-on-white) gray image [H, W] in MNIST's form, uint8 [28, 28]: the server's
    own preparation of the page's pixels, rounded as ``digits data add`` stores imported digits."""
    return np.rint(np.clip(to_mnist(np.asarray(gray)), 0, 255)).astype(np.uint8)


# ---- fonts ------------------------------------------------------------------------------------------

def _font_dirs() -> List[str]:
    import matplotlib  # only for the folder of its bundled fonts

    return [*FONT_DIRS, os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")]


def _glyph(font: ImageFont.FreeTypeFont, char: str, extra_stroke: int = 0) -> np.ndarray:
    image = Image.new("L", (FONT_PX * 2, FONT_PX * 2), 0)
    ImageDraw.Draw(image).text((FONT_PX, FONT_PX), char, fill=255, font=font, anchor="mm",
                               stroke_width=extra_stroke, stroke_fill=255)
    return np.asarray(image)


def _has_digits(path: str) -> bool:
    """Every digit is in the font's character map, as the digit's glyph, and renders ink (symbol fonts map
    '0'..'9' to other shapes, cmsy10's '1' is infinity, or to nothing; a missing glyph renders a box)."""
    from fontTools.ttLib import TTFont

    try:
        with TTFont(path, lazy=True) as font:
            cmap = font.getBestCmap() or {}
        loaded = ImageFont.truetype(path, FONT_PX)
    except Exception:  # noqa: BLE001 - an unreadable font is simply not used
        return False
    if [cmap.get(ord(c)) for c in "0123456789"] != list(DIGIT_GLYPHS):
        return False
    return all(_glyph(loaded, c).max() > 127 for c in "0123456789")


@functools.lru_cache(maxsize=None)
def font_paths() -> Tuple[str, ...]:
    """The fonts ``font_digits`` uses, in FONT_NAMES' (sorted) order: each name's first copy that has digits."""
    found = []
    for name in FONT_NAMES:
        for directory in _font_dirs():
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                if _has_digits(path):
                    found.append(path)
                break
    if not found:
        raise FileNotFoundError(f"none of {FONT_NAMES} found in {_font_dirs()}: install fonts-dejavu-core or matplotlib")
    return tuple(found)


def _font_image(font, digit: int, angle: float, width: float, extra_stroke: int) -> np.ndarray:
    image = Image.fromarray(_glyph(font, str(digit), extra_stroke))
    if width != 1.0:
        image = image.resize((round(image.width * width), image.height), Image.BICUBIC)
    if angle:
        image = image.rotate(angle, Image.BICUBIC, expand=True)
    return np.asarray(image)


def font_digits(per_font_variants: int = 3) -> Digits:
    """Digits 0..9 of every font of ``font_paths()``, each in the first ``per_font_variants`` of
    FONT_VARIANTS (upright; rotated -10 and +10 degrees; narrow; heavier; wide and tilted), as
    (uint8 [N, 28, 28], int64 [N]), N = fonts x 10 x variants, ordered font, variant, digit."""
    if not 1 <= per_font_variants <= len(FONT_VARIANTS):
        raise ValueError(f"per_font_variants={per_font_variants}: choose 1..{len(FONT_VARIANTS)}")
    images, labels = [], []
    for path in font_paths():
        font = ImageFont.truetype(path, FONT_PX)
        for angle, width, extra in FONT_VARIANTS[:per_font_variants]:
            for digit in range(10):
                images.append(mnist_frame(_font_image(font, digit, angle, width, extra)))
                labels.append(digit)
    return np.stack(images), np.asarray(labels, np.int64)


# ---- strokes ------------------------------------------------------------------------------------------

def _arc(cx, cy, rx, ry, start, end, steps=40) -> np.ndarray:
    """Points of an elliptic arc, angles in degrees with y pointing down (90 = bottom)."""
    t = np.radians(np.linspace(start, end, steps))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _line(*points, steps=12) -> np.ndarray:
    points = np.asarray(points, float)
    parts = [np.linspace(a, b, steps, endpoint=False) for a, b in zip(points[:-1], points[1:])]
    return np.concatenate(parts + [points[-1:]])


def _bezier(p0, p1, p2, p3, steps=30) -> np.ndarray:
    t = np.linspace(0, 1, steps)[:, None]
    p0, p1, p2, p3 = (np.asarray(p, float) for p in (p0, p1, p2, p3))
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3


def _strokes(digit: int, rng: np.random.Generator) -> List[np.ndarray]:
    """One person's ``digit`` as strokes of points in a box about 0.6 wide and 1 tall (y down), its
    control points jittered by ``rng``."""
    j = lambda v, s=0.03: v + rng.normal(0, s)  # noqa: E731 - a jittered number
    if digit == 0:
        start = j(-100, 15)
        return [_arc(j(0.5), j(0.5), j(0.3), j(0.48, 0.02), start, start - j(370, 10), 60)]
    if digit == 1:
        top, bottom = (j(0.5), j(0.0, 0.02)), (j(0.5), j(1.0, 0.02))
        if rng.random() < 0.4:  # a flag
            return [_line((top[0] - j(0.2), top[1] + j(0.18)), top, bottom)]
        return [_line(top, bottom)]
    if digit == 2:
        cx, cy, rx, ry = j(0.5), j(0.28), j(0.3), j(0.26)
        head = _arc(cx, cy, rx, ry, j(-165, 10), j(25, 10))  # over the top
        foot = (j(0.13), j(1.0, 0.02))
        return [np.concatenate([head, _line(head[-1], foot, (j(0.88), j(0.98, 0.02)))])]
    if digit == 3:
        mid = (j(0.45), j(0.5))
        top = _arc(j(0.48), j(0.27), j(0.3), j(0.25), j(-150, 10), 90)
        low = _arc(j(0.47), j(0.74), j(0.33), j(0.26), -90, j(150, 10))
        return [np.concatenate([top[:-1], [mid], low[1:]])]
    if digit == 4:
        x, bar = j(0.66), j(0.64)
        if rng.random() < 0.5:  # open: down-left then across, and the upright apart
            return [_line((j(0.2), j(0.0)), (j(0.1), bar), (j(0.92), bar)), _line((x, j(0.1)), (x + j(0, 0.02), j(1.0)))]
        return [_line((x + j(0, 0.02), j(1.0)), (x, j(0.0)), (j(0.05), bar), (j(0.92), bar))]
    if digit == 5:
        cx, cy, rx, ry = j(0.47), j(0.68), j(0.32), j(0.3)
        belly = _arc(cx, cy, rx, ry, -130, j(150, 10))
        corner = belly[0] + (j(-0.03), j(-0.03))
        return [_line((j(0.82), j(0.0)), (j(0.25), j(0.02)), corner), belly]
    if digit == 6:
        cx, cy, rx, ry = j(0.5), j(0.7), j(0.3), j(0.28)
        loop = _arc(cx, cy, rx, ry, 180, j(-175, 10), 50)
        stem = _bezier((j(0.75), j(0.0)), (j(0.4), j(0.1)), (j(0.2), j(0.4)), loop[0])
        return [np.concatenate([stem, loop[1:]])]
    if digit == 7:
        corner, foot = (j(0.9), j(0.0, 0.02)), (j(0.4, 0.06), j(1.0, 0.02))
        strokes = [_line((j(0.1), j(0.03, 0.02)), corner, foot)]
        if rng.random() < 0.15:  # a crossbar
            strokes.append(_line((j(0.4), j(0.52)), (j(0.85), j(0.5))))
        return strokes
    if digit == 8:
        t = np.linspace(0, 2 * np.pi + j(0.25, 0.1), 90)
        upper, lower, waist = j(0.24), j(0.3), j(0.45)
        y = 0.5 - 0.5 * np.cos(t)
        y = np.where(y < 0.5, y * 2 * waist, waist + (y - 0.5) * 2 * (1 - waist))
        width = np.where((t % (2 * np.pi) < np.pi / 2) | (t % (2 * np.pi) > 1.5 * np.pi), upper, lower)
        return [np.stack([j(0.5) + width * np.sin(2 * t), y], axis=1)]
    if digit == 9:
        cx, cy, rx, ry = j(0.45), j(0.27), j(0.28), j(0.25)
        loop = _arc(cx, cy, rx, ry, 0, j(-370, 10), 50)
        stem = _bezier(loop[-1], (cx + rx, cy + ry), (j(0.7), j(0.7)), (j(0.62, 0.05), j(1.0, 0.02)))
        return [np.concatenate([loop, stem[1:]])]
    raise ValueError(f"digit {digit}: expected 0..9")


def _draw(strokes: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The strokes placed on the page's 280x280 pad (size, slant, proportions and position jittered) and
    drawn as the browser draws them, anti-aliased: the uint8 pixels the page sends."""
    slant, aspect = rng.uniform(-0.1, 0.35), rng.uniform(0.8, 1.2)  # most people lean right
    height = rng.uniform(130, 240)  # the page's fixed 20-px line is thicker on a small digit
    stroke = PAGE_STROKE * rng.uniform(0.85, 1.15)  # finger vs mouse vs pen
    points = [np.stack([(s[:, 0] - 0.5) * aspect + slant * (0.5 - s[:, 1]), s[:, 1] - 0.5], axis=1) * height
              for s in strokes]
    allp = np.concatenate(points)
    low, high = allp.min(axis=0) - stroke, allp.max(axis=0) + stroke
    room = np.maximum(PAD - (high - low), 0)
    offset = -low + rng.uniform(0, 1, 2) * room
    scale = 4  # supersampled, then shrunk: the anti-aliasing of the browser's canvas
    image = Image.new("L", (PAD * scale, PAD * scale), 0)
    draw = ImageDraw.Draw(image)
    radius = stroke * scale / 2
    for s in points:
        xy = [tuple(p) for p in (s + offset) * scale]
        draw.line(xy, fill=255, width=round(stroke * scale))
        for x, y in xy:  # round caps and joins
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return np.asarray(image.resize((PAD, PAD), Image.BOX))


def stroke_digits(count_per_digit: int = 30, seed: int = 0) -> Digits:
    """``count_per_digit`` drawings of each digit 0..9, as (uint8 [N, 28, 28], int64 [N]) ordered
    0..9, 0..9, ...; each drawing's shape, size, slant and line width come from ``seed``."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(count_per_digit):
        for digit in range(10):
            images.append(mnist_frame(_draw(_strokes(digit, rng), rng)))
            labels.append(digit)
    return np.stack(images), np.asarray(labels, np.int64)


def save_grid(path: str, images: np.ndarray, columns: int = 20, zoom: int = 3) -> None:
    """A PNG of ``images`` [N, 28, 28] side by side, for looking at them."""
    rows = math.ceil(len(images) / columns)
    grid = np.zeros((rows * 29, columns * 29), np.uint8) + 60
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * 29:r * 29 + 28, c * 29:c * 29 + 28] = image
    Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST).save(path)
