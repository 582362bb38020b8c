"""serving.client.model_client (ModelClient and `digits predict`) against real in-process servers: serving.rest_api.api and
serving.grpc_api.front over a ModelRegistry serving the conftest SavedModel as version 1 of "mnist"."""
import json
import os
import socket
import subprocess
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from serving.client.model_client import ClientError, ModelClient, VersionStatus, split_target  # noqa: E402
from serving.client.predict_cli import main  # noqa: E402
from serving.client.mnist_image import load_images, to_mnist  # noqa: E402
from serving.rest_api.transport import RestServer  # noqa: E402
from tests.component.conftest import serve_export  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START_HINT = "start it with `make serve`, or pass --server HOST:PORT"


@pytest.fixture(scope="module")
def registry(tmp_path_factory, digits_export):
    return serve_export(tmp_path_factory, digits_export, name="mnist", version_labels={"stable": 1})[0]


@pytest.fixture(scope="module")
def rest(registry):
    server = RestServer(registry, 0, host="127.0.0.1")
    server.start()
    yield f"127.0.0.1:{server.port}"
    server.stop()


@pytest.fixture(scope="module")
def served(registry):
    return registry.get("mnist")[1]


def core_probabilities(served, images):
    return served.predict("serving_default", {"images": np.asarray(images, np.float32)})["probabilities"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, digits):
    """Eight real test digits photographed: dark ink on light paper, 300x200, off-centre, as PNG files."""
    root = tmp_path_factory.mktemp("photos")
    paths = []
    for i, digit in enumerate(digits[0][:8]):
        ink = np.asarray(Image.fromarray(digit.astype(np.uint8)).resize((168, 168), Image.BILINEAR), np.float32)
        page = np.full((200, 300), 235, np.float32)
        page[16:184, 110:278] -= ink / 255 * 210
        page += np.random.default_rng(i).normal(0, 3, page.shape)
        path = str(root / f"digit{i}.png")
        Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def free_port():
    """A port nobody listens on: bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ---- the library -----------------------------------------------------------------------------------

def test_rest_probabilities_equal_the_core(rest, served, digits):
    images = np.stack([to_mnist(image) for image in digits[0][:16]])
    got = ModelClient(rest).predict(images)
    assert got.dtype == np.float32 and got.shape == (16, 10)
    assert np.array_equal(got, core_probabilities(served, images))


def test_versions_labels_and_batching(rest, served, digits, monkeypatch):
    images = digits[0][:5]
    want = core_probabilities(served, images)
    assert np.array_equal(ModelClient(rest, version=1).predict(images), want)
    assert np.array_equal(ModelClient(rest, label="stable").predict(images), want)
    client = ModelClient(rest)
    monkeypatch.setattr(client, "max_batch", 2)  # 3 requests of 2, 2 and 1 images
    # (the model's float results depend on the batch size in the last bit, so compare chunk by chunk)
    chunks = [core_probabilities(served, images[i:i + 2]) for i in (0, 2, 4)]
    assert np.array_equal(client.predict(images), np.concatenate(chunks))
    assert client.predict(np.zeros((0, 28, 28))).shape == (0, 10)


def test_mnist_digits_keep_their_predicted_class_through_to_mnist(served, digits):
    images = digits[0]
    prepared = np.stack([to_mnist(image) for image in images])
    want = core_probabilities(served, images).argmax(axis=1)
    assert np.array_equal(core_probabilities(served, prepared).argmax(axis=1), want)


def test_photographed_digits_are_predicted_like_the_originals(served, digits, photos):
    prepared = np.concatenate([load_images(path) for path in photos])
    got = core_probabilities(served, prepared).argmax(axis=1)
    want = core_probabilities(served, digits[0][:len(photos)]).argmax(axis=1)
    assert np.mean(got == want) >= 7 / 8, (got, want)


def test_server_errors_are_one_line(rest, digits):
    images = digits[0][:1]
    cases = [
        (ModelClient(rest, model_name="nope"), "the model server answered 404: Servable not found for request: "
                                               "Latest(nope)"),
        (ModelClient(rest, version=7), "the model server answered 404: Servable not found for request: "
                                       "Specific(mnist, 7)"),
        (ModelClient(rest, signature_name="nope"), 'the model server answered 400: Serving signature name: "nope" '
                                                   'not found in signature def'),
    ]
    for client, message in cases:
        with pytest.raises(ClientError) as error:
            client.predict(images)
        assert str(error.value) == message


def test_status_lists_versions_and_the_one_that_answers(rest, grpc_target):
    for target, grpc in ((rest, False), (grpc_target, True)):
        with ModelClient(target, grpc=grpc) as client:
            assert client.status() == [VersionStatus(1, "AVAILABLE", "")]
            assert client.available_version() == 1
        with ModelClient(target, model_name="nope", grpc=grpc) as client, pytest.raises(ClientError) as error:
            client.status()
        assert error.value.status == (404 if not grpc else "NOT_FOUND") and not error.value.unreachable
        assert error.value.detail == "Could not find any versions of model nope"


def test_status_of_a_server_that_is_not_there_is_unreachable():
    with pytest.raises(ClientError) as error:
        ModelClient(f"127.0.0.1:{free_port()}").status()
    assert error.value.unreachable and "connection refused" in str(error.value)


def test_status_over_rest_imports_no_tensorflow():
    code = ("import sys, serving.client.model_client as c\n"
            "try:\n    c.ModelClient('127.0.0.1:1').status()\nexcept c.ClientError:\n    pass\n"
            "assert not [m for m in sys.modules if m.startswith(('tensorflow', 'grpc'))]")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_server_that_does_not_answer_times_out(digits):
    with socket.socket() as listener:  # accepts connections (the kernel does) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with pytest.raises(ClientError) as error:
            ModelClient(f"127.0.0.1:{port}", timeout=0.2).predict(digits[0][:1])
    assert str(error.value) == (f"the model server at http://127.0.0.1:{port} did not answer within 0.2 s: "
                                f"pass a larger --timeout, or check the server")


def test_split_target():
    assert split_target("localhost", 8501) == ("localhost", 8501)
    assert split_target("example.org:9000", 8501) == ("example.org", 9000)
    assert split_target("http://127.0.0.1:8601/", 8501) == ("127.0.0.1", 8601)
    assert split_target("[::1]:8500", 8501) == ("::1", 8500)
    assert split_target("::1", 8500) == ("::1", 8500)
    for bad in ("host:port", ":8501", "host:70000"):
        with pytest.raises(ValueError, match="expected HOST:PORT"):
            split_target(bad, 8501)


# ---- digits predict ----------------------------------------------------------------------------------

def test_predict_prints_the_models_digit_per_image(rest, served, photos, capsys):
    code, out, err = run(capsys, ["--server", rest, *photos])
    assert code == 0 and err == ""
    probabilities = core_probabilities(served, np.concatenate([load_images(p) for p in photos]))
    want = [f"{path}: {p.argmax()} (p={p.max():.3f})" for path, p in zip(photos, probabilities)]
    assert out.splitlines() == want


def test_predict_json_and_npy_batches(rest, served, digits, tmp_path, capsys):
    batch = str(tmp_path / "batch.npy")
    np.save(batch, digits[0][:3].astype(np.uint8))
    code, out, _ = run(capsys, ["--server", rest, "--json", batch])
    assert code == 0
    doc = json.loads(out)
    want = core_probabilities(served, load_images(batch))
    assert [row["image"] for row in doc] == [f"{batch}[{i}]" for i in range(3)]
    assert [row["digit"] for row in doc] == want.argmax(axis=1).tolist()
    assert np.array_equal(np.array([row["probabilities"] for row in doc], np.float32), want)
    assert [np.float32(row["probability"]) for row in doc] == want.max(axis=1).tolist()
    assert [row["warnings"] for row in doc] == [[], [], []]
    code, out, _ = run(capsys, ["--server", rest, batch])
    assert [line.split(":")[0] for line in out.splitlines()] == [f"{batch}[{i}]" for i in range(3)]


def test_predict_uses_digits_server_from_the_environment(rest, photos, capsys, monkeypatch):
    monkeypatch.setenv("DIGITS_SERVER", rest)
    code, out, _ = run(capsys, [photos[0], "--model-label", "stable"])
    assert code == 0 and out.startswith(f"{photos[0]}: ")


def test_predict_unknown_model_exits_1_with_the_servers_message(rest, photos, capsys):
    code, out, err = run(capsys, ["--server", rest, "--model-name", "nope", photos[0]])
    assert (code, out) == (1, "")
    assert err == "digits predict: the model server answered 404: Servable not found for request: Latest(nope)\n"


def test_predict_without_a_server_says_how_to_start_one(photos, capsys):
    port = free_port()
    code, out, err = run(capsys, ["--server", f"127.0.0.1:{port}", photos[0]])
    assert (code, out) == (1, "")
    assert err == (f"digits predict: cannot reach the model server at http://127.0.0.1:{port} "
                   f"(connection refused): {START_HINT}\n")


def test_predict_bad_image_exits_1(rest, tmp_path, capsys):
    blank = str(tmp_path / "blank.png")
    Image.new("L", (64, 64), 255).save(blank)
    code, out, err = run(capsys, ["--server", rest, blank])
    assert (code, out, err) == (1, "", f"digits predict: no digit found in {blank}: the image is blank\n")


def test_predict_answers_every_good_file_around_bad_ones(rest, served, photos, tmp_path, capsys):
    """A bad file (or a bad image of a .npy batch) is one stderr line; the others are still answered; exit 1."""
    notes = tmp_path / "notes.png"
    notes.write_text("shopping list")
    batch = str(tmp_path / "batch.npy")
    np.save(batch, np.stack([np.asarray(Image.open(photos[2]).convert("L")), np.full((200, 300), 235)]))
    code, out, err = run(capsys, ["--server", rest, photos[0], str(notes), photos[1], batch])
    probabilities = core_probabilities(served, np.concatenate([load_images(p) for p in photos[:3]]))
    names = [photos[0], photos[1], f"{batch}[0]"]
    assert code == 1
    assert out.splitlines() == [f"{n}: {p.argmax()} (p={p.max():.3f})" for n, p in zip(names, probabilities)]
    assert err.splitlines() == [
        f"digits predict: {notes} is neither an image Pillow can read nor a .npy array: pass a PNG, JPEG, BMP, "
        f"GIF, TIFF or WebP image, or an array saved with numpy.save",
        f"digits predict: no digit found in {batch}[1]: the image is blank"]
    code, out, _ = run(capsys, ["--server", rest, "--json", photos[0], str(notes), photos[1]])
    doc = json.loads(out)
    assert code == 1 and [row["image"] for row in doc] == [photos[0], str(notes), photos[1]]
    assert doc[1] == {"image": str(notes), "error": err.splitlines()[0][len("digits predict: "):]}
    assert [doc[0]["digit"], doc[2]["digit"]] == probabilities[:2].argmax(axis=1).tolist()
    assert doc[0]["warnings"] == doc[2]["warnings"] == []


def test_predict_says_noise_is_noise(rest, photos, tmp_path, capsys):
    noise = str(tmp_path / "noise.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160), dtype=np.uint8)).save(noise)
    code, out, err = run(capsys, ["--server", rest, noise, photos[0]])
    assert code == 1 and out.startswith(f"{photos[0]}: ")
    assert err == f"digits predict: no single digit found in {noise}: the image looks like noise\n"


def test_predict_warns_about_tiny_images_and_several_marks(rest, served, digits, tmp_path, capsys):
    """The answer stays (the model still reads one digit); stderr and the JSON say why not to trust it."""
    images, labels, _ = digits
    tiny = str(tmp_path / "tiny.png")
    one = images[np.asarray(labels) == 1][0].astype(np.uint8)
    Image.fromarray(one).resize((8, 8), Image.LANCZOS).save(tiny)
    pair = str(tmp_path / "pair.png")
    Image.fromarray(np.concatenate([images[0], images[1]], axis=1).astype(np.uint8)).save(pair)
    code, out, err = run(capsys, ["--server", rest, tiny, pair])
    probabilities = core_probabilities(served, np.concatenate([load_images(tiny), load_images(pair)]))
    assert code == 0
    assert out.splitlines() == [f"{n}: {p.argmax()} (p={p.max():.3f})" for n, p in zip((tiny, pair), probabilities)]
    tiny_warning = (f"{tiny} is only 8x8 pixels, far smaller than MNIST's 28x28: a digit enlarged that much is "
                    f"often misread; use a larger image")
    pair_warning = f"{pair} holds 2 separate marks: one digit per image is read; crop each digit into its own image"
    assert err.splitlines() == [f"digits predict: warning: {tiny_warning}", f"digits predict: warning: {pair_warning}"]
    code, out, _ = run(capsys, ["--server", rest, "--json", tiny, pair])
    assert code == 0 and [row["warnings"] for row in json.loads(out)] == [[tiny_warning], [pair_warning]]


@pytest.mark.parametrize("argv", [[], ["--model-version", "1", "--model-label", "x", "a.png"],
                                  ["--server", "host:port", "a.png"], ["--timeout", "0", "a.png"]])
def test_predict_bad_usage_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "usage: digits predict" in capsys.readouterr().err


def test_digits_predict_starts_without_tensorflow_or_tfx(tmp_path):
    """`digits predict` goes through pipeline.cli lazily; REST needs neither TFX nor TensorFlow."""
    script = ("import sys\nfrom pipeline import cli\ncode = cli.main(['predict', '--server', '127.0.0.1:%d', 'x.png'])\n"
              "assert code == 1, code\n"
              "assert not {'tensorflow', 'tfx'} & set(sys.modules), sorted(m for m in sys.modules if 'tf' in m)\n"
              % free_port())
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "digits predict: cannot read x.png: no such file\n"


# ---- gRPC ------------------------------------------------------------------------------------------

def test_grpc_and_rest_give_identical_probabilities(rest, grpc_target, served, digits):
    images = np.stack([to_mnist(image) for image in digits[0][:16]])
    with ModelClient(grpc_target, grpc=True) as client:
        by_grpc = client.predict(images)
        assert np.array_equal(client.predict(images[:3]), core_probabilities(served, images[:3]))  # channel reused
    assert np.array_equal(by_grpc, ModelClient(rest).predict(images))
    assert np.array_equal(by_grpc, core_probabilities(served, images))
    with ModelClient(grpc_target, grpc=True, label="stable") as client:
        assert np.array_equal(client.predict(images[:2]), core_probabilities(served, images[:2]))


def test_grpc_predict_prints_what_rest_prints(rest, grpc_target, photos, capsys):
    _, by_rest, _ = run(capsys, ["--server", rest, *photos])
    code, by_grpc, err = run(capsys, ["--grpc", "--server", grpc_target, *photos])
    assert (code, err) == (0, "") and by_grpc == by_rest


def test_grpc_errors(grpc_target, photos, capsys, digits):
    code, _, err = run(capsys, ["--grpc", "--server", grpc_target, "--model-version", "7", photos[0]])
    assert (code, err) == (1, "digits predict: the model server answered NOT_FOUND: "
                              "Servable not found for request: Specific(mnist, 7)\n")
    port = free_port()
    code, _, err = run(capsys, ["--grpc", "--server", f"127.0.0.1:{port}", photos[0]])
    assert (code, err) == (1, f"digits predict: cannot reach the model server at 127.0.0.1:{port} "
                              f"(connection refused): {START_HINT}\n")
