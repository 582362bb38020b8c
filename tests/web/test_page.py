"""The draw-a-digit page in headless chromium against the real app and a real model server: what the
page shows is what the model server answers for the 28×28 input the app made; the page says in plain
words when the model server is down or has no model, and recovers without a reload."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from serving.client.mnist_image import load_images
from tests.server_process import ServerProcess
from tests.web.conftest import AppProcess

from playwright.sync_api import expect  # noqa: E402

ONE = [[(135, 35), (140, 140), (146, 245)]]
SEVEN = [[(60, 55), (215, 50), (160, 150), (115, 248)]]


def model_input(page) -> list:
    """The 28×28 numbers the model saw for the displayed answer (the preview's data-input)."""
    text = page.locator("#preview").get_attribute("data-input")
    assert text, "the page shows no answer"
    return json.loads(text)


def draw(page, strokes) -> None:
    """Mouse strokes in the pad's own 280×280 coordinates, each move in several steps."""
    box = page.locator("#canvas").bounding_box()
    scale = box["width"] / 280

    def at(x, y):
        return box["x"] + x * scale, box["y"] + y * scale

    for stroke in strokes:
        page.mouse.move(*at(*stroke[0]))
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(*at(x, y), steps=8)
        page.mouse.up()
    settle(page)


def settle(page) -> None:
    """No request in flight and none waiting (the page's body[data-busy])."""
    page.wait_for_function("document.body.dataset.busy === 'false'")


def shown(page) -> tuple:
    """(digit, [(digit, data-probability, displayed text)] ...) as the page shows them."""
    digit = page.locator("#digit").get_attribute("data-digit")
    rows = page.eval_on_selector_all(
        "#probabilities li", "items => items.map(i => [Number(i.dataset.digit), i.dataset.probability, "
                             "i.querySelector('.value').textContent])")
    return digit, rows


def server_answer(server, image) -> np.ndarray:
    status, doc = server.rest("POST", "/v1/models/mnist:predict", {"instances": [np.asarray(image).tolist()]})
    assert status == 200, doc
    return np.asarray(doc["predictions"][0]["probabilities"], np.float32)


def assert_shows(page, want: np.ndarray) -> None:
    """The displayed digit and all ten probabilities are the model server's (to display rounding)."""
    digit, rows = shown(page)
    assert digit == str(int(want.argmax()))
    assert page.locator("#digit").inner_text() == digit
    assert [r[0] for r in rows] == list(range(10))
    for d, probability, text in rows:
        assert np.float32(float(probability)) == want[d], (d, probability, want[d])
        assert text.endswith("%") and abs(float(text[:-1]) - 100 * float(want[d])) <= 0.05 + 1e-6, (d, text)
    bar = page.locator(f"#probabilities li[data-digit='{digit}'] .bar").bounding_box()
    fill = page.locator(f"#probabilities li[data-digit='{digit}'] .fill").bounding_box()
    assert abs(fill["width"] / bar["width"] - float(want.max())) < 0.02, "the bar's length is its probability"


def screenshot(page, directory, state: str) -> None:
    path = directory / f"{state}.png"
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, path
    with Image.open(path) as image:
        assert image.width >= 800 and image.height >= 400
        assert len(image.convert("RGB").getcolors(1 << 20)) > 50, "a blank screenshot"


def available_version(server) -> int:
    return max(v for v, (state, _) in server.version_states("mnist").items() if state == "AVAILABLE")


def test_drawn_digits_show_what_the_model_server_answers(page, app, model_server, screenshots):
    page.goto(app.url)
    expect(page.locator("#model-version")).to_have_text(str(available_version(model_server)))
    expect(page.locator("#model-name")).to_have_text("mnist")
    for name, strokes, digit in (("one", ONE, 1), ("seven", SEVEN, 7)):
        page.click("#clear")
        draw(page, strokes)
        image = np.asarray(model_input(page), np.float32)
        assert image.shape == (28, 28) and image.max() > 200 and image.min() >= 0
        want = server_answer(model_server, model_input(page))
        assert_shows(page, want)
        assert int(want.argmax()) == digit, f"the drawn {name} was read as {int(want.argmax())}"
        expect(page.locator("#model-version")).to_have_text(str(available_version(model_server)))
        expect(page.locator("#message")).to_be_hidden()
        preview = page.evaluate("Array.from(document.getElementById('preview').getContext('2d')"
                                ".getImageData(0, 0, 28, 28).data).filter((v, i) => i % 4 === 0)")
        assert np.abs(np.asarray(preview) - np.clip(np.round(image), 0, 255).ravel()).max() <= 1
        screenshot(page, screenshots, f"drawn-{digit}")
    page.focus("#clear")  # keyboard-usable: Enter on the focused button clears
    page.keyboard.press("Enter")
    expect(page.locator("#digit")).to_have_text("–")
    assert page.locator("#canvas").get_attribute("aria-label")


def test_uploaded_image_is_read_as_digits_predict_reads_it(page, app, model_server, package_splits, tmp_path,
                                                          screenshots):
    test = package_splits["test"]
    digit = np.asarray(test.images[0], np.uint8).reshape(28, 28)
    big = np.asarray(Image.fromarray(digit).resize((160, 160), Image.BILINEAR), np.float32)
    paper = np.full((220, 260), 245, np.float32)
    paper[30:190, 50:210] -= big / 255 * 225  # dark ink on light paper, off-centre, not 28×28
    path = tmp_path / "scanned-digit.png"
    Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).save(path)

    page.goto(app.url)
    with page.expect_response(lambda r: "/api/predict" in r.url) as response:
        page.set_input_files("#upload", str(path))
    assert response.value.status == 200
    settle(page)
    prepared = load_images(str(path))[0]  # what `digits predict` makes of the same file
    assert np.array_equal(np.asarray(model_input(page), np.float32), prepared)
    want = server_answer(model_server, prepared)
    assert_shows(page, want)
    assert int(want.argmax()) == int(test.labels[0])
    expect(page.locator("#source")).to_contain_text("scanned-digit.png")
    expect(page.locator("#model-name")).to_have_text("mnist")
    expect(page.locator("#model-version")).to_have_text(str(available_version(model_server)))
    screenshot(page, screenshots, "upload")


def test_model_server_down_then_back_without_a_reload(page, models_base, tmp_path, screenshots):
    flags = ["--model_name=mnist", f"--model_base_path={models_base}"]
    first = ServerProcess(flags).__enter__()
    try:
        with AppProcess(first.rest_port, tmp_path) as app:
            page.goto(app.url)
            draw(page, ONE)
            expect(page.locator("#digit")).not_to_have_text("–")
            first.stop()

            page.click("#clear")
            draw(page, SEVEN)
            message = page.locator("#message")
            expect(message).to_be_visible()
            expect(message).to_have_text(f"The model server at http://127.0.0.1:{first.rest_port} is not answering. "
                                         f"Start it with `make serve` (or check --server).")
            expect(page.locator("#digit")).to_have_text("–")
            screenshot(page, screenshots, "server-down")

            with ServerProcess(flags, grpc_port=first.grpc_port, rest_port=first.rest_port) as second:
                # The periodic status check clears the message and asks again for the drawing on the pad.
                expect(message).to_be_hidden(timeout=60_000)
                expect(page.locator("#digit")).not_to_have_text("–", timeout=30_000)
                settle(page)
                assert_shows(page, server_answer(second, model_input(page)))
                screenshot(page, screenshots, "recovered")
    finally:
        first.stop()


def test_no_model_says_so_in_plain_words(page, model_server, tmp_path, screenshots):
    with AppProcess(model_server.rest_port, tmp_path, model_name="nope") as app:
        page.goto(app.url)
        message = page.locator("#message")
        text = "The model server has no model 'nope' yet: push one with `make run`."
        expect(message).to_have_text(text)
        expect(page.locator("#model-version")).to_have_text("none")
        draw(page, ONE)
        expect(message).to_have_text(text)
        expect(page.locator("#digit")).to_have_text("–")
        screenshot(page, screenshots, "no-model")
