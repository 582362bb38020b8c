"""Labelled digits from files (components/data/image_import.py): label folders and IDX pairs, with rejects."""
import numpy as np
import pytest
from PIL import Image

from components.data.image_import import import_path
from components.data.mnist_source import DataSourceError
from serving.client.mnist_image import to_mnist
from tests.conftest import make_idx_dir, write_idx


def test_label_folders_of_pngs_become_digits_and_bad_files_are_rejects_with_reasons(tmp_path, small_images):
    images, labels = small_images[0][:6], small_images[1][:6]
    root = tmp_path / "mine"
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        # dark ink on white paper, 3x larger: the preparation inverts and shrinks it as digits predict does
        Image.fromarray(255 - image).resize((84, 84)).save(root / str(label) / f"d{i}.png")
    (root / "3" / "deeper").mkdir(parents=True)
    Image.fromarray(images[0]).save(root / "3" / "deeper" / "nested.jpg", quality=95)
    Image.new("L", (28, 28), 0).save(root / "3" / "blank.png")
    (root / "3" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "3" / "notes.txt").write_text("hello")
    (root / "3" / ".DS_Store").write_bytes(b"finder")
    (root / "seven").mkdir()
    Image.fromarray(images[1]).save(root / "seven" / "x.png")
    Image.fromarray(images[1]).save(root / "loose.png")

    imported = import_path(str(root))
    assert len(imported.images) == 7 and imported.images.dtype == np.uint8 and imported.labels.dtype == np.int64
    by_file = dict(zip(imported.files, imported.labels.tolist()))
    assert by_file[str(root / "3" / "deeper" / "nested.jpg")] == 3
    for i, (image, label) in enumerate(zip(images, labels)):
        k = imported.files.index(str(root / str(label) / f"d{i}.png"))
        assert imported.labels[k] == label
        expected = np.rint(to_mnist(Image.fromarray(255 - image).resize((84, 84))))
        assert np.array_equal(imported.images[k], expected.astype(np.uint8))  # the same preparation exactly
    reasons = {name.replace(str(root) + "/", ""): reason for name, reason in imported.rejects}
    assert set(reasons) == {"3/blank.png", "3/broken.png", "3/notes.txt", "seven/x.png", "loose.png"}
    assert "blank" in reasons["3/blank.png"]
    assert "cannot decode" in reasons["3/broken.png"] or "neither an image" in reasons["3/broken.png"]
    assert "not an image file" in reasons["3/notes.txt"]
    assert "label folder 'seven' is not a digit 0..9" in reasons["seven/x.png"]
    assert "not in a label folder" in reasons["loose.png"]


def test_noise_and_several_marks_are_rejected(tmp_path, small_images):
    root = tmp_path / "mine"
    (root / "1").mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(root / "1" / "noise.png")
    two = np.zeros((28, 80), np.uint8)
    two[:, :28], two[:, 52:] = small_images[0][0], small_images[0][1]
    Image.fromarray(two).save(root / "1" / "two.png")
    imported = import_path(str(root))
    assert len(imported.images) == 0
    reasons = dict(imported.rejects)
    assert "looks like noise" in reasons[str(root / "1" / "noise.png")]
    assert "separate marks" in reasons[str(root / "1" / "two.png")]


@pytest.mark.parametrize("gz", [True, False])
def test_idx_pairs_round_trip(tmp_path, small_images, gz):
    train_images, train_labels, test_images, test_labels = small_images
    directory = make_idx_dir(tmp_path / "idx", train_images[:30], train_labels[:30], test_images[:20],
                             test_labels[:20], gz=gz)
    both = import_path(directory)
    assert len(both.images) + len(both.rejects) == 50
    assert both.files[0].endswith("t10k-images-idx3-ubyte" + (".gz" if gz else "") + "[0]")  # sorted by file
    one = import_path(directory + "/train-images-idx3-ubyte" + (".gz" if gz else ""))
    assert len(one.images) + len(one.rejects) == 30
    assert one.labels.tolist() == [int(train_labels[int(f.rsplit("[", 1)[1][:-1])]) for f in one.files]
    # MNIST digits are already in MNIST form: they come through (almost) unchanged
    indices = [int(f.rsplit("[", 1)[1][:-1]) for f in one.files]
    close = [np.abs(one.images[k].astype(int) - train_images[i].astype(int)).max() <= 3 for k, i in enumerate(indices)]
    assert len(one.images) >= 27 and np.mean(close) >= 0.9


def test_idx_label_out_of_range_is_a_reject_and_missing_pieces_are_errors(tmp_path, small_images):
    images = small_images[0][:3]
    write_idx(tmp_path / "x-images-idx3-ubyte", images)
    write_idx(tmp_path / "x-labels-idx1-ubyte.gz", np.array([1, 12, 3], np.uint8))
    imported = import_path(str(tmp_path / "x-images-idx3-ubyte"))
    assert imported.rejects[0][0].endswith("[1]") and "label 12" in imported.rejects[0][1]
    assert imported.labels.tolist() == [1, 3]
    (tmp_path / "lonely").mkdir()
    write_idx(tmp_path / "lonely" / "y-images-idx3-ubyte", images)
    with pytest.raises(DataSourceError, match="no labels file beside it"):
        import_path(str(tmp_path / "lonely"))
    with pytest.raises(DataSourceError, match="does not exist"):
        import_path(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="holds no label folders"):
        import_path(str(tmp_path / "empty"))
