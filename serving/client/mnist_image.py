"""Photos, drawings and arrays brought to MNIST's form: 28×28, white digit on black, pixels 0..255.

MNIST was made (LeCun et al.) by fitting each digit's bounding box into 20×20 with anti-aliasing,
keeping the aspect ratio, and placing it in a 28×28 field so that its centre of mass is at the
centre. A model trained on MNIST only knows that form, so every input is rebuilt the same way:

1. grayscale (transparent drawings composited onto a background that contrasts with their ink);
2. background = median of the border, polarity = whichever side of it the extreme pixels are on
   (dark ink on light paper is inverted); the border's spread is the noise floor, subtracted;
3. bounding box of the ink above a light threshold, over the connected parts that matter, so a
   speck of dust does not stretch it;
4. strokes too thin for 20 px (a pen on a big photo) are thickened to MNIST's width, then the box
   is resized into 20×20 (LANCZOS: anti-aliased) and stretched so the brightest pixel is 255;
5. pasted into 28×28 with the centre of mass rounded to pixel (14, 14), which is where real MNIST
   digits have theirs (measured on the test set: 13.5..14.5 on both axes).

Images with no ink standing out are blank when neighbouring pixels are alike (paper) and noise when
they are not (BlankImageError, NoiseImageError); ink in many scattered specks is noise too. Inputs the
model will likely misread are prepared anyway, with warnings (``to_mnist_checked``, ``load_checked``):
a digit under 12 source pixels (MNIST's are 20), or several marks side by side where one digit is read.

Step 4's thickening is ours, not MNIST's: without it a ballpoint digit on a photo shrinks to faint
0.2-px lines the model has never seen. An image already in MNIST form comes through almost unchanged:
on 10,000 MNIST test digits, 98.8% differ by at most 3 of 255 per pixel; the rest are 1-px moves where
a centre of mass sits on a rounding tie, or digits that MNIST itself cut at the field's edge.
"""
from __future__ import annotations

import io
import math
import os
from typing import List, NamedTuple, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from serving.client.ink_parts import components, part_boxes, pool, roughness, side_by_side

__all__ = ["BlankImageError", "ImageError", "NoiseImageError", "Prepared", "load_bytes", "load_checked",
           "load_images", "load_labelled", "to_mnist", "to_mnist_checked"]

SIZE, BOX, CENTRE = 28, 20, 14.0
MAX_SIDE = 1024        # larger photos are shrunk first: far more pixels than a digit needs
MIN_CONTRAST = 24.0    # ink this close to the background (of 255) is no digit
INK_THRESHOLD = 0.15   # share of the peak ink that counts for the bounding box
KEEP_PART = 0.05       # connected parts lighter than this share of the heaviest are specks
COARSE_SIDE = 128      # connected parts are found on a max-pooled map this size
WORK_SIDE = 160        # strokes are measured and thickened on the digit at this size
THIN_STROKE = 0.75     # stroke width at the 20-px scale below which strokes are thickened (MNIST: 1st pct 1.05)
MNIST_STROKE = 1.5     # ... to about MNIST's 20th percentile (2·area/perimeter of the half-ink mask)
NOISE_SIGMA = 12.0     # pixel-to-pixel spread (of 255) above which an inkless image is noise, not paper
NOISE_PARTS = 8        # at least this many kept parts ...
NOISE_SPAN = 0.5       # ... none wider than this share of the ink box's shorter side: scattered specks
MARK_SHARE = 0.2       # side-by-side groups of ink at least this share of the heaviest are separate marks
TINY_SIDE = 12         # an ink box under this many source pixels (MNIST's: 20) has lost a digit's detail


class ImageError(ValueError):
    """An input that cannot become a digit; the message names the file and what to do."""


class BlankImageError(ImageError):
    """No ink at all: apps ask the user to draw rather than report a broken file."""


class NoiseImageError(ImageError):
    """Pixels vary everywhere but no mark stands out: not blank, yet there is no digit to read."""


class Prepared(NamedTuple):
    """One image of a file as ``digits predict`` needs it: the MNIST-form pixels, or why there are none."""
    name: str
    image: Optional[np.ndarray]  # float32 [28, 28]; None when ``error`` says why not
    error: Optional[ImageError]
    warnings: Tuple[str, ...]    # plain words about inputs the model will likely misread


def to_mnist(image: Union[Image.Image, np.ndarray], name: str = "the image") -> np.ndarray:
    """One image (PIL, or an array [H, W] in 0..1 or 0..255) as float32 [28, 28] in 0..255."""
    return to_mnist_checked(image, name)[0]


def to_mnist_checked(image: Union[Image.Image, np.ndarray], name: str = "the image") -> Tuple[np.ndarray, List[str]]:
    """Like ``to_mnist``, with warnings (naming ``name``) when the model will likely misread the result:
    a digit far smaller than MNIST's, or several separate marks where one digit is read."""
    if isinstance(image, Image.Image):
        source_side = max(image.size)
        gray = _pil_gray(image)
    else:
        gray = _array_gray(np.asarray(image), name)
        source_side = max(np.shape(image))
    ink = _ink(gray, name)
    (top, bottom, left, right), marks = _bounding_box(ink, name)
    longest = max(bottom - top, right - left)
    # The box sets the scale; the crop keeps the faint edge (anti-aliasing) one output pixel around it.
    margin = math.ceil(longest / BOX)
    patch = ink[max(0, top - margin):bottom + margin, max(0, left - margin):right + margin]
    fitted = _fit(patch, longest)
    if not fitted.any():
        raise BlankImageError(f"no digit found in {name}: the image is blank")
    warnings = []
    source_longest = longest * source_side / max(gray.shape)  # in the pixels the user sees
    if source_longest < TINY_SIDE:
        if source_side < SIZE:
            height, width = (image.size[::-1] if isinstance(image, Image.Image) else np.shape(image))
            warnings.append(f"{name} is only {width}x{height} pixels, far smaller than MNIST's 28x28: a digit "
                            f"enlarged that much is often misread; use a larger image")
        else:
            warnings.append(f"the digit in {name} is only {round(source_longest)} pixels tall or wide, far smaller "
                            f"than MNIST's 20: it is often misread; crop closer to it or use a sharper image")
    if marks > 1:
        warnings.append(f"{name} holds {marks} separate marks: one digit per image is read; "
                        f"crop each digit into its own image")
    return _centre(fitted), warnings


def load_images(path: str) -> np.ndarray:
    """The images of one file (an image, or a .npy [H, W] / [N, H, W]) as float32 [N, 28, 28]."""
    return load_labelled(path)[1]


def load_labelled(path: str) -> Tuple[List[str], np.ndarray]:
    """Like ``load_images``, with a name per image: ``path``, or ``path[i]`` for a .npy batch."""
    path = os.fspath(path)
    if _is_npy(path):
        array = _read_npy(path)
        if array.ndim == 2:
            return [path], to_mnist(array, path)[None]
        names = [f"{path}[{i}]" for i in range(len(array))]
        return names, np.stack([to_mnist(a, n) for a, n in zip(array, names)])
    return [path], to_mnist(_read_image(path), path)[None]


def load_checked(path: str) -> List[Prepared]:
    """Every image of one file, each prepared or with the error that stopped it, never raising
    ImageError: one bad image (or file) need not stop the others."""
    path = os.fspath(path)
    try:
        if not _is_npy(path):
            return [_checked(_read_image(path), path)]
        array = _read_npy(path)
    except ImageError as e:
        return [Prepared(path, None, e, ())]
    if array.ndim == 2:
        return [_checked(array, path)]
    return [_checked(a, f"{path}[{i}]") for i, a in enumerate(array)]


def _checked(image, name: str) -> Prepared:
    try:
        out, warnings = to_mnist_checked(image, name)
    except ImageError as e:
        return Prepared(name, None, e, ())
    return Prepared(name, out, None, tuple(warnings))


def load_bytes(data: bytes, name: str = "the image") -> np.ndarray:
    """The contents of one image file (PNG, JPEG, ... or a .npy [H, W]) as float32 [28, 28]: uploads
    are prepared exactly as files given to ``digits predict``."""
    if not data:
        raise ImageError(f"{name} is empty: send the contents of an image file")
    if data[:6] == b"\x93NUMPY":
        array = _read_npy(io.BytesIO(data), name)
        if array.ndim != 2:
            raise ImageError(f"{name} holds {len(array)} images: send one image [H, W]")
        return to_mnist(array, name)
    return to_mnist(_read_image(io.BytesIO(data), name), name)


# ---- reading ------------------------------------------------------------------------------------

def _is_npy(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except FileNotFoundError:
        raise ImageError(f"cannot read {path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"cannot read {path}: it is a directory; pass image files or .npy arrays") from None
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror or e}") from None
    if path.lower().endswith(".npy") and magic != b"\x93NUMPY":
        raise ImageError(f"{path} is not a .npy file (no NumPy header): save arrays with numpy.save")
    return magic == b"\x93NUMPY"


def _read_npy(source, name: str = "") -> np.ndarray:
    path = name or source  # a file object is named by the caller
    try:
        array = np.load(source, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ImageError(f"{path} holds Python objects, not numbers: save a numeric array "
                             f"[28, 28] or [N, 28, 28] with numpy.save") from None
        raise ImageError(f"cannot read {path} as a .npy array ({e}): save it with numpy.save") from None
    except (OSError, EOFError) as e:
        raise ImageError(f"cannot read {path} as a .npy array ({e}): is the file complete?") from None
    if array.ndim not in (2, 3) or 0 in array.shape:
        raise ImageError(f"{path} holds an array of shape {list(array.shape)}: expected one image "
                         f"[H, W] such as [28, 28], or a batch [N, H, W]")
    return _pixels(array, path)


def _read_image(source, name: str = "") -> Image.Image:
    path = name or source  # a file object is named by the caller
    try:
        image = Image.open(source)
        image.draft("L", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced size, much faster
        image.load()
    except Image.UnidentifiedImageError:
        raise ImageError(f"{path} is neither an image Pillow can read nor a .npy array: pass a PNG, JPEG, "
                         f"BMP, GIF, TIFF or WebP image, or an array saved with numpy.save") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{path} has too many pixels to be a digit: crop or shrink it first") from None
    except OSError as e:
        raise ImageError(f"cannot decode {path} ({e}): is the file complete?") from None
    return image


def _pixels(array: np.ndarray, name: str) -> np.ndarray:
    """Numbers in 0..1 (scaled up) or 0..255, as float32; anything else is an error."""
    if array.dtype == bool:
        return array.astype(np.float32) * 255
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ImageError(f"{name} holds values of type {array.dtype}: expected pixel numbers in 0..255 or 0..1")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ImageError(f"{name} holds NaN or infinite values: expected pixels in 0..255 or 0..1")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise ImageError(f"{name} holds values from {low:g} to {high:g}: expected pixels in 0..255 or 0..1")
    return array * 255 if high <= 1 else array


def _pil_gray(image: Image.Image) -> np.ndarray:
    try:
        image = ImageOps.exif_transpose(image)  # phone photos are stored sideways with a rotate tag
    except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation
        pass
    if image.mode.startswith("I;16"):
        gray = np.asarray(image, dtype=np.float32) / 257
    elif image.mode in ("I", "F"):
        gray = np.asarray(image, dtype=np.float32)
        high = float(gray.max()) if gray.size else 0.0
        gray = gray * (255 / high) if high > 255 else np.clip(gray, 0, 255)
    else:
        if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
            image = _flatten(image.convert("RGBA"))
        gray = np.asarray(image.convert("L"), dtype=np.float32)
    return _shrink(gray)


def _flatten(rgba: Image.Image) -> Image.Image:
    """Composited onto white, or onto black when the visible strokes are light (white on clear)."""
    pixels = np.asarray(rgba, dtype=np.float32)
    alpha = pixels[..., 3] / 255
    luma = pixels[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    light = alpha.sum() > 0 and float((luma * alpha).sum() / alpha.sum()) > 127.5
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light else (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba)


def _array_gray(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim != 2 or 0 in array.shape:
        raise ImageError(f"{name} has shape {list(array.shape)}: expected one image [H, W] such as [28, 28]")
    return _shrink(_pixels(array, name))


def _shrink(gray: np.ndarray) -> np.ndarray:
    height, width = gray.shape
    scale = MAX_SIDE / max(height, width)
    if scale >= 1:
        return gray
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(gray, "F").resize(size, Image.BOX), dtype=np.float32)


# ---- finding the digit --------------------------------------------------------------------------

def _ink(gray: np.ndarray, name: str) -> np.ndarray:
    """How far each pixel is from the background towards the ink side, less the noise floor."""
    height, width = gray.shape
    frame = max(1, min(height, width) // 20)
    border = np.concatenate([gray[:frame].ravel(), gray[-frame:].ravel(),
                             gray[:, :frame].ravel(), gray[:, -frame:].ravel()])
    background = float(np.median(border))
    # The extreme pixels say which side the ink is on; tiny digits may be under 1% of a photo.
    low, high = np.percentile(gray, [0.1, 99.9])
    ink = background - gray if background - low > high - background else gray - background
    noise = 3 * 1.4826 * float(np.median(np.abs(border - background)))  # ~3 sigma of paper/sensor noise
    ink = np.clip(ink - noise, 0, None)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        # Nothing stands out of the variation: paper if neighbouring pixels are alike, noise if they are not.
        if roughness(gray) >= NOISE_SIGMA:
            raise NoiseImageError(f"no single digit found in {name}: the image looks like noise")
        raise BlankImageError(f"no digit found in {name}: the image is blank")
    return ink * (255 / peak)


def _bounding_box(ink: np.ndarray, name: str) -> Tuple[Tuple[int, int, int, int], int]:
    """(top, bottom, left, right) of the ink, over the connected parts heavier than a speck, and how many
    separate marks (side-by-side groups of such parts) they make; scattered specks alone are noise."""
    mask = ink > INK_THRESHOLD * 255
    factor = max(1, math.ceil(max(ink.shape) / COARSE_SIDE))
    coarse_mask = pool(mask, factor, np.max)  # max-pooling keeps hairlines connected
    mass = pool(ink, factor, np.sum)
    labels = components(coarse_mask)
    parts, inverse = np.unique(labels[coarse_mask], return_inverse=True)
    weights = np.bincount(inverse, weights=mass[coarse_mask])
    heavy = weights >= KEEP_PART * weights.max()
    kept = np.isin(labels, parts[heavy]) & coarse_mask
    rows, cols = np.nonzero(kept.any(axis=1))[0], np.nonzero(kept.any(axis=0))[0]
    boxes = part_boxes(labels, parts[heavy])
    extents = np.maximum(boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]) + 1
    shorter = min(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    if len(boxes) >= NOISE_PARTS and extents.max() < NOISE_SPAN * shorter:  # scattered specks, no strokes
        raise NoiseImageError(f"no single digit found in {name}: the image looks like noise")
    marks = side_by_side(boxes, weights[heavy], MARK_SHARE)
    # The coarse box, one coarse pixel wider, is refined on the full-size mask.
    top, bottom = max(0, (rows[0] - 1) * factor), (rows[-1] + 2) * factor
    left, right = max(0, (cols[0] - 1) * factor), (cols[-1] + 2) * factor
    window = mask[top:bottom, left:right]
    rows, cols = np.nonzero(window.any(axis=1))[0], np.nonzero(window.any(axis=0))[0]
    if rows.size == 0:
        raise BlankImageError(f"no digit found in {name}: the image is blank")
    return (top + rows[0], top + rows[-1] + 1, left + cols[0], left + cols[-1] + 1), marks


# ---- MNIST's normalization ----------------------------------------------------------------------

def _fit(patch: np.ndarray, longest: int) -> np.ndarray:
    """Resized so the ink box's longer side (``longest``) is 20 px, strokes as thick as MNIST's, peak 255."""
    image = Image.fromarray(np.ascontiguousarray(patch, dtype=np.float32), "F")
    if longest > WORK_SIDE:
        scale = WORK_SIDE / longest
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BOX)
        longest = WORK_SIDE
    if longest >= 2 * BOX:
        width = _stroke_width(np.asarray(image) > 127.5) * BOX / longest
        if width < THIN_STROKE:
            grow = (MNIST_STROKE - width) * longest / BOX
            size = min(15, 1 + 2 * math.ceil(grow / 2))  # MaxFilter widens by size - 1, which must be even
            image = image.filter(ImageFilter.MaxFilter(size))
            longest += size - 1  # the ink box grew with the strokes
    scale = BOX / longest
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    fitted = np.clip(np.asarray(image.resize(size, Image.LANCZOS), dtype=np.float32), 0, None)
    peak = float(fitted.max())
    return fitted * (255 / peak) if peak > 0 else fitted


def _stroke_width(mask: np.ndarray) -> float:
    """2·area / perimeter: a stroke of width w and length L has area wL and perimeter about 2L."""
    perimeter = (np.count_nonzero(mask[1:] != mask[:-1]) + np.count_nonzero(mask[:, 1:] != mask[:, :-1])
                 + np.count_nonzero(mask[[0, -1]]) + np.count_nonzero(mask[:, [0, -1]]))
    return 2 * np.count_nonzero(mask) / max(1, perimeter)


def _centre(patch: np.ndarray) -> np.ndarray:
    """Pasted into 28×28 with its centre of mass at pixel (14, 14), rounded; what falls outside is cut."""
    height, width = patch.shape
    total = patch.sum()
    cy = float((patch.sum(axis=1) * np.arange(height)).sum() / total)
    cx = float((patch.sum(axis=0) * np.arange(width)).sum() / total)
    top, left = math.floor(CENTRE - cy + 0.5), math.floor(CENTRE - cx + 0.5)
    out = np.zeros((SIZE, SIZE), np.float32)
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(SIZE, top + height), min(SIZE, left + width)
    out[y0:y1, x0:x1] = patch[y0 - top:y1 - top, x0 - left:x1 - left]
    return np.clip(out, 0, 255)
