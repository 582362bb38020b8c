"""serving.client.mnist_image: photos, drawings and arrays to MNIST's form, checked against real MNIST digits
rendered the way a user would photograph or draw them."""
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from serving.client.mnist_image import (BlankImageError, ImageError, NoiseImageError, _stroke_width, load_bytes,
                                        load_checked, load_images, load_labelled, to_mnist, to_mnist_checked)

YS, XS = np.mgrid[0:28, 0:28]


@pytest.fixture(scope="module")
def mnist(package_splits):
    test = package_splits["test"]
    return test.images[:300].reshape(-1, 28, 28).astype(np.float32), test.labels[:300]


def centre_of_mass(image):
    return float((image * YS).sum() / image.sum()), float((image * XS).sum() / image.sum())


def ink_box(image, threshold=127.5):
    rows, cols = np.nonzero((image > threshold).any(axis=1))[0], np.nonzero((image > threshold).any(axis=0))[0]
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def aligned_correlation(a, b):
    """Best correlation over shifts of at most one pixel: centring rounds the centre of mass."""
    return max(np.corrcoef(np.roll(a, (dy, dx), (0, 1)).ravel(), b.ravel())[0, 1]
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def photo(digit, size=(300, 200), at=(110, 16), scale=6, paper=235, ink=25, noise=3.0, seed=0):
    """A real MNIST digit as dark ink on light paper, enlarged, off-centre, with sensor noise."""
    enlarged = Image.fromarray(digit.astype(np.uint8)).resize((28 * scale, 28 * scale), Image.BILINEAR)
    coverage = np.asarray(enlarged, np.float32) / 255
    canvas = np.full((size[1], size[0]), paper, np.float32)
    h, w = coverage.shape
    canvas[at[1]:at[1] + h, at[0]:at[0] + w] = paper - coverage * (paper - ink)
    canvas += np.random.default_rng(seed).normal(0, noise, canvas.shape)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def save(image, path, **kwargs):
    image.save(path, **kwargs)
    return str(path)


def drawn_seven(width, size=(400, 400), ink="black", paper="white", mode="RGB"):
    image = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(image)
    draw.line([(120, 80), (280, 80), (170, 330)], fill=ink, width=width, joint="curve")
    draw.line([(150, 200), (250, 200)], fill=ink, width=width)
    return image


# ---- MNIST's own form -----------------------------------------------------------------------------

def test_mnist_digits_come_through_nearly_unchanged(mnist):
    images, _ = mnist
    out = np.stack([to_mnist(image) for image in images])
    assert out.shape == images.shape and out.dtype == np.float32
    max_diff = np.abs(out - images).max(axis=(1, 2))
    assert np.mean(max_diff <= 3) >= 0.97, np.sort(max_diff)[-10:]  # the rest: centre-of-mass ties, clipped digits
    assert min(aligned_correlation(a, b) for a, b in zip(out, images)) > 0.9


def test_uint8_and_0_to_1_arrays_give_the_same(mnist):
    image = mnist[0][0]
    want = to_mnist(image)
    assert np.allclose(to_mnist(image.astype(np.uint8)), want)
    assert np.allclose(to_mnist(image / 255), want, atol=1e-3)


# ---- photos and drawings --------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_photographed_digits_come_back_close_to_the_original(tmp_path, mnist, fmt):
    images, _ = mnist
    correlations = []
    for i, digit in enumerate(images[:40]):
        path = save(photo(digit, seed=i), tmp_path / f"d{i}.{fmt.lower()}", format=fmt,
                    **({"quality": 85} if fmt == "JPEG" else {}))
        (out,) = load_images(path)
        assert out.max() == pytest.approx(255) and out.min() == 0
        correlations.append(aligned_correlation(out, digit))
    assert np.median(correlations) > 0.95 and np.mean(np.array(correlations) > 0.9) >= 0.9, correlations


def test_dark_on_light_is_inverted_and_matches_light_on_dark(mnist):
    digit = mnist[0][3]
    dark_on_light = photo(digit, noise=0)
    light_on_dark = Image.fromarray(255 - np.asarray(dark_on_light))
    a, b = to_mnist(dark_on_light), to_mnist(light_on_dark)
    assert (a[0] == 0).all() and (a[:, 0] == 0).all()  # black background, white digit
    assert np.abs(a - b).max() < 2


def test_grey_paper_in_dim_light_is_still_dark_ink(mnist):
    """The background is below mid-grey, but the ink is darker still: polarity comes from the ink side."""
    digit = mnist[0][5]
    out = to_mnist(photo(digit, paper=110, ink=30))
    assert aligned_correlation(out, digit) > 0.9


def test_centre_of_mass_is_at_14_14_and_the_box_fits_20x20():
    image = Image.new("L", (400, 300), 255)
    ImageDraw.Draw(image).rectangle([(30, 40), (89, 189)], fill=0)  # 60 x 150, far off-centre
    out = to_mnist(image)
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    height, width = ink_box(out)
    assert height == 20 and width == 8  # 150 -> 20, so 60 -> 8: the aspect ratio kept


def test_wide_digit_fits_20_wide():
    image = Image.new("L", (500, 500), 255)
    ImageDraw.Draw(image).rectangle([(300, 300), (449, 329)], fill=0)  # 150 wide, 30 high
    out = to_mnist(image)
    assert ink_box(out) == (4, 20)
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_a_speck_of_dust_does_not_stretch_the_box(mnist):
    digit = mnist[0][7]
    clean = photo(digit, noise=0)
    dusty = np.asarray(clean).copy()
    dusty[180:183, 10:13] = 0  # a 3x3 black speck in the far corner
    assert aligned_correlation(to_mnist(Image.fromarray(dusty)), to_mnist(clean)) > 0.99


def test_thin_pen_strokes_are_thickened_to_mnist_width():
    """A 3-px line on a 250-px digit would be a faint 0.2-px line at 20 px; MNIST's strokes are ~2 px."""
    thin, thick = to_mnist(drawn_seven(3)), to_mnist(drawn_seven(24))
    assert _stroke_width(thin > 127.5) >= 1.2
    assert 45 < thin.sum() / 255 < 165  # MNIST's 5th..95th percentile of ink is 52..164
    assert abs(thin.sum() - thick.sum()) / thick.sum() < 0.35


def test_transparent_png_drawings(tmp_path):
    want = to_mnist(drawn_seven(20))
    dark = drawn_seven(20, ink=(0, 0, 0, 255), paper=(0, 0, 0, 0), mode="RGBA")
    light = drawn_seven(20, ink=(255, 255, 255, 255), paper=(255, 255, 255, 0), mode="RGBA")
    for name, image in (("dark", dark), ("light", light)):
        (out,) = load_images(save(image, tmp_path / f"{name}.png"))
        assert np.abs(out - want).max() < 2, name


def test_palette_gif_and_16_bit_png(tmp_path):
    want = to_mnist(drawn_seven(20))
    gif = save(drawn_seven(20).convert("P"), tmp_path / "seven.gif")
    deep = Image.fromarray((np.asarray(drawn_seven(20).convert("L"), np.uint16) * 257))
    assert deep.mode.startswith("I;16")
    png16 = save(deep, tmp_path / "seven16.png")
    for path in (gif, png16):
        assert np.abs(load_images(path)[0] - want).max() < 2, path


# ---- .npy arrays ------------------------------------------------------------------------------------

def test_npy_single_image_and_batch(tmp_path, mnist):
    images = mnist[0][:5]
    np.save(tmp_path / "one.npy", images[0].astype(np.uint8))
    np.save(tmp_path / "batch.npy", images / 255)
    names, one = load_labelled(str(tmp_path / "one.npy"))
    assert names == [str(tmp_path / "one.npy")] and one.shape == (1, 28, 28)
    assert np.abs(one[0] - to_mnist(images[0])).max() < 1e-3
    names, batch = load_labelled(str(tmp_path / "batch.npy"))
    assert names == [f"{tmp_path / 'batch.npy'}[{i}]" for i in range(5)] and batch.shape == (5, 28, 28)
    assert np.abs(batch - np.stack([to_mnist(i) for i in images])).max() < 1e-2


def test_npy_of_another_size_is_brought_to_mnist_form(tmp_path, mnist):
    digit = mnist[0][1]
    np.save(tmp_path / "big.npy", np.asarray(photo(digit, noise=0), np.float32) / 255)
    assert aligned_correlation(load_images(str(tmp_path / "big.npy"))[0], digit) > 0.9


@pytest.mark.parametrize("array, message", [
    (np.zeros((2, 2, 28, 28)), "holds an array of shape [2, 2, 28, 28]: expected one image [H, W]"),
    (np.zeros((0, 28, 28)), "holds an array of shape [0, 28, 28]"),
    (np.zeros((28, 28), np.complex64), "holds values of type complex64"),
    (np.array([["a"] * 28] * 28), "holds values of type <U1"),
    (np.full((28, 28), 300.0), "holds values from 300 to 300: expected pixels in 0..255 or 0..1"),
    (np.full((28, 28), -1.0), "holds values from -1 to -1"),
    (np.full((28, 28), np.nan), "holds NaN or infinite values"),
])
def test_bad_npy_arrays(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ImageError) as error:
        load_images(str(path))
    assert str(error.value) == f"{path} {message}" or str(error.value).startswith(f"{path} {message}")


def test_npy_of_python_objects(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageError, match=r"objects\.npy holds Python objects, not numbers"):
        load_images(str(path))


# ---- blank images and bad files ---------------------------------------------------------------------

def test_blank_images(tmp_path):
    white = save(Image.new("L", (200, 200), 255), tmp_path / "white.png")
    noise = np.clip(np.random.default_rng(1).normal(230, 4, (300, 400)), 0, 255).astype(np.uint8)
    paper = save(Image.fromarray(noise), tmp_path / "paper.jpg", quality=80)
    np.save(tmp_path / "zeros.npy", np.zeros((3, 28, 28)))
    for path in (white, paper):
        with pytest.raises(ImageError) as error:
            load_images(path)
        assert str(error.value) == f"no digit found in {path}: the image is blank"
    with pytest.raises(ImageError) as error:
        load_images(str(tmp_path / "zeros.npy"))
    assert str(error.value) == f"no digit found in {tmp_path / 'zeros.npy'}[0]: the image is blank"
    with pytest.raises(ImageError, match="^no digit found in the image: the image is blank$"):
        to_mnist(np.zeros((28, 28)))


def test_unreadable_files(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    fake_npy = tmp_path / "fake.npy"
    fake_npy.write_bytes(b"PK\x03\x04 zip, not npy")
    png = io.BytesIO()
    drawn_seven(20).save(png, format="PNG")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(png.getvalue()[:200])
    cases = [
        (tmp_path / "missing.png", f"cannot read {tmp_path / 'missing.png'}: no such file"),
        (tmp_path, f"cannot read {tmp_path}: it is a directory"),
        (text, f"{text} is neither an image Pillow can read nor a .npy array"),
        (fake_npy, f"{fake_npy} is not a .npy file (no NumPy header)"),
        (truncated, f"cannot decode {truncated} ("),
    ]
    for path, message in cases:
        with pytest.raises(ImageError) as error:
            load_images(str(path))
        assert str(error.value).startswith(message), str(error.value)
        assert "\n" not in str(error.value)


def test_to_mnist_rejects_arrays_that_are_not_one_image():
    with pytest.raises(ImageError, match=r"has shape \[28, 28, 3\]: expected one image"):
        to_mnist(np.zeros((28, 28, 3)))


def test_load_bytes_reads_uploads_as_files_are_read(tmp_path):
    """An upload's bytes become what the same file gives ``digits predict``; blank is its own error."""
    from serving.client.mnist_image import BlankImageError, load_bytes

    page = np.full((90, 120), 240, np.uint8)
    page[20:70, 55:62] = 20  # a dark "1" on light paper
    path = tmp_path / "one.png"
    Image.fromarray(page).save(path)
    assert np.array_equal(load_bytes(path.read_bytes(), "one.png"), load_images(str(path))[0])
    npy = tmp_path / "one.npy"
    np.save(npy, page)
    assert np.array_equal(load_bytes(npy.read_bytes()), load_images(str(npy))[0])
    with pytest.raises(BlankImageError, match="^no digit found in the drawing: the image is blank$"):
        load_bytes(_png(np.zeros((50, 50), np.uint8)), "the drawing")
    with pytest.raises(ImageError, match="^upload is neither an image Pillow can read"):
        load_bytes(b"text", "upload")
    with pytest.raises(ImageError, match="^upload is empty"):
        load_bytes(b"", "upload")


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


# ---- noise, tiny digits, several marks --------------------------------------------------------------

def test_noise_is_told_apart_from_blank(tmp_path):
    """Noise: neighbouring pixels unlike each other, or ink only in scattered specks. Blank: paper, even
    grainy or unevenly lit (smooth from pixel to pixel)."""
    rng = np.random.default_rng(2)
    uniform = save(Image.fromarray(rng.integers(0, 256, (200, 300), dtype=np.uint8)), tmp_path / "uniform.png")
    np.save(tmp_path / "gauss.npy", np.clip(rng.normal(0.5, 0.1, (28, 28)), 0, 1))
    specks = np.zeros((28, 28), np.uint8)
    specks[rng.random((28, 28)) < 0.1] = 255  # salt on black: the border is clean, the ink is all specks
    speckled = save(Image.fromarray(specks), tmp_path / "specks.png")
    for path in (uniform, str(tmp_path / "gauss.npy"), speckled):
        with pytest.raises(NoiseImageError) as error:
            load_images(path)
        assert str(error.value) == f"no single digit found in {path}: the image looks like noise"
        assert isinstance(error.value, ImageError) and not isinstance(error.value, BlankImageError)
    shading = np.linspace(150, 250, 400)[None, :] + rng.normal(0, 8, (300, 400))  # grainy, lit from one side
    with pytest.raises(BlankImageError, match="the image is blank$"):
        to_mnist(np.clip(shading, 0, 255))
    with pytest.raises(NoiseImageError, match="^no single digit found in upload: the image looks like noise$"):
        load_bytes(_png(rng.integers(0, 256, (64, 64), dtype=np.uint8)), "upload")


def test_mnist_digits_and_photos_carry_no_warnings(mnist):
    images, _ = mnist
    assert [to_mnist_checked(image)[1] for image in images] == [[]] * len(images)
    assert [to_mnist_checked(photo(digit, seed=i))[1] for i, digit in enumerate(images[:20])] == [[]] * 20


def test_tiny_images_and_tiny_digits_are_prepared_with_a_warning(mnist):
    images, labels = mnist
    one = images[labels == 1][0]
    tiny = np.asarray(Image.fromarray(one.astype(np.uint8)).resize((8, 8), Image.LANCZOS))
    out, warnings = to_mnist_checked(tiny, "one.png")
    assert out.shape == (28, 28) and out.max() == pytest.approx(255)
    assert warnings == ["one.png is only 8x8 pixels, far smaller than MNIST's 28x28: a digit enlarged that much "
                        "is often misread; use a larger image"]
    page = np.full((100, 150), 235, np.uint8)
    page[50:59, 70:73] = 20  # a "1" 9 pixels tall on a larger page
    (warning,) = to_mnist_checked(page, "page.png")[1]
    assert warning.startswith("the digit in page.png is only 9 pixels tall or wide, far smaller than MNIST's 20")


def test_two_digits_side_by_side_are_prepared_with_a_warning(mnist):
    images, _ = mnist
    for gap in (0, 6):
        pair = np.zeros((28, 56 + gap), np.float32)
        pair[:, :28], pair[:, 28 + gap:] = images[0], images[1]
        out, warnings = to_mnist_checked(pair, "42.png")
        assert out.shape == (28, 28)
        assert warnings == ["42.png holds 2 separate marks: one digit per image is read; "
                            "crop each digit into its own image"]
    three = photo(np.concatenate([images[2], images[3], images[4]], axis=1), size=(700, 250), at=(20, 30))
    assert to_mnist_checked(three, "x")[1] == ["x holds 3 separate marks: one digit per image is read; "
                                               "crop each digit into its own image"]


def test_load_checked_reports_each_image_and_never_raises(tmp_path, mnist):
    images = mnist[0]
    batch = str(tmp_path / "batch.npy")
    np.save(batch, np.stack([images[0], np.zeros((28, 28)), images[1]]))
    good, blank, other = load_checked(batch)
    assert [good.name, blank.name, other.name] == [f"{batch}[{i}]" for i in range(3)]
    assert np.array_equal(good.image, to_mnist(images[0])) and good.error is None and good.warnings == ()
    assert blank.image is None and isinstance(blank.error, BlankImageError)
    assert str(blank.error) == f"no digit found in {batch}[1]: the image is blank"
    (missing,) = load_checked(str(tmp_path / "missing.png"))
    assert missing.image is None and str(missing.error) == f"cannot read {tmp_path / 'missing.png'}: no such file"
    (seven,) = load_checked(save(drawn_seven(20), tmp_path / "seven.png"))
    assert np.array_equal(seven.image, load_images(str(tmp_path / "seven.png"))[0]) and seven.error is None
