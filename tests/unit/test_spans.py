"""The span store (components/data/spans.py): durable appends, atomic seals, splits by pixels alone."""
import json
import os
import threading
import time

import numpy as np
import pytest

from components.data import spans
from components.data.spans import SpanError, SpanStore, split_of


def digit(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)


def test_appended_digits_are_sealed_into_span_1_with_their_records(tmp_path):
    store = SpanStore(str(tmp_path / "data"))
    ids = [store.append(digit(i), i % 10, answer=(i + 1) % 10, model_version=7) for i in range(12)]
    store.append(digit(99), 4)  # no answer, no version
    assert store.open_count() == 13 and store.open_per_label()[4] == 2
    info = store.seal()
    assert (info.number, info.source, info.count) == (1, "feedback", 13)
    assert info.per_label == {0: 2, 1: 2, 2: 1, 3: 1, 4: 2, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1}
    assert store.open_count() == 0 and store.seal() is None
    images, labels, records = store.load(1)
    assert images.dtype == np.uint8 and images.shape == (13, 28, 28) and labels.dtype == np.int64
    assert [r["id"] for r in records[:12]] == ids  # time order
    assert np.array_equal(images[3], digit(3)) and labels[3] == 3
    assert records[3]["answer"] == 4 and records[3]["model_version"] == 7 and records[3]["source"] == "feedback"
    assert records[12]["answer"] is None and records[12]["model_version"] is None
    manifest = json.loads((tmp_path / "data/spans/span-0001/manifest.json").read_text())
    assert manifest["span"] == 1 and manifest["per_label"]["4"] == 2 and manifest["sha256"] == info.sha256
    assert [s.number for s in store.sealed()] == [1]


def test_add_makes_a_sealed_span_at_once_and_numbers_only_grow(tmp_path):
    store = SpanStore(str(tmp_path))
    images = np.stack([digit(i) for i in range(5)])
    first = store.add(images, np.array([1, 1, 2, 3, 9]), source="scans", origin="scans/", files=list("abcde"))
    assert (first.number, first.source, first.count, first.origin) == (1, "scans", 5, "scans/")
    assert store.load(1)[2][4]["file"] == "e"
    second = store.add(images[:2], [0, 0])
    assert second.number == 2 and second.source == "import"
    store.drop(2)
    assert store.add(images[:1], [5]).number == 3  # a dropped number is never given again
    assert [s.number for s in store.sealed()] == [1, 3]


def test_a_span_without_manifest_is_ignored_and_cleaned_by_the_next_seal(tmp_path):
    store = SpanStore(str(tmp_path))
    store.add(np.stack([digit(1)]), [1])
    half = tmp_path / "spans/span-0002"
    half.mkdir()
    (half / "images.npy").write_bytes(b"half")
    (tmp_path / "spans/.span-0003.tmp.part").write_bytes(b"x")
    assert [s.number for s in store.sealed()] == [1]
    with pytest.raises(SpanError, match="no sealed span 2 .*sealed spans: 1"):
        store.load(2)
    old_temp, new_temp = tmp_path / "spans/open/.a.npz.1.part", tmp_path / "spans/open/.b.npz.2.part"
    store.append(digit(2), 2)
    old_temp.write_bytes(b"crashed append")
    new_temp.write_bytes(b"an append under way")
    os.utime(old_temp, (time.time() - 7200, time.time() - 7200))
    info = store.seal()  # cleans first: a number no reader ever saw may be given again
    assert info.number == 2 and store.load(2)[1].tolist() == [2]
    assert (half / "images.npy").read_bytes() != b"half"
    assert not (tmp_path / "spans/.span-0003.tmp.part").exists() and not (tmp_path / "spans/.span-0003.tmp.part").exists()


def test_open_digits_already_sealed_before_a_crash_are_not_sealed_twice(tmp_path):
    store = SpanStore(str(tmp_path))
    store.append(digit(1), 1)
    open_dir = tmp_path / "spans/open"
    kept = {p.name: p.read_bytes() for p in open_dir.iterdir()}
    store.seal()
    for name, data in kept.items():  # as if the seal crashed after its manifest, before deleting
        (open_dir / name).write_bytes(data)
    store.append(digit(2), 2)
    info = store.seal()
    assert info.count == 1 and store.load(info.number)[1].tolist() == [2]


def test_a_damaged_span_is_reported_not_loaded(tmp_path):
    store = SpanStore(str(tmp_path))
    info = store.add(np.stack([digit(1)]), [1])
    with open(os.path.join(info.path, "labels.npy"), "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\x05")
    with pytest.raises(SpanError, match="does not match its manifest's sha256"):
        store.load(1)


def test_concurrent_appends_while_sealing_lose_nothing(tmp_path):
    store = SpanStore(str(tmp_path))
    appended, errors = [], []

    def writer(offset):
        try:
            for i in range(60):
                appended.append(store.append(digit(offset + i), i % 10))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(k * 1000,)) for k in range(4)]
    for thread in threads:
        thread.start()
    seals = []
    while any(t.is_alive() for t in threads):
        info = store.seal()
        if info:
            seals.append(info.number)
    for thread in threads:
        thread.join()
    assert not errors
    sealed_ids = [r["id"] for s in store.sealed() for r in store.load(s.number)[2]]
    open_ids = [name[:-4] for name in os.listdir(tmp_path / "spans/open") if name.endswith(".npz")]
    assert len(sealed_ids) + len(open_ids) == len(appended) == 240
    assert sorted(sealed_ids + open_ids) == sorted(appended)  # each exactly once
    assert len(seals) >= 2


def test_split_of_depends_on_pixels_alone_and_shares_80_10_10():
    image = digit(5)
    assert split_of(image) == split_of(image.copy()) == split_of(image.reshape(784))
    counts = {"train": 0, "eval": 0, "test": 0}
    for seed in range(5000):
        counts[split_of(digit(seed))] += 1
    assert abs(counts["train"] - 4000) < 150 and abs(counts["eval"] - 500) < 90 and abs(counts["test"] - 500) < 90
    assert {split_of(digit(s)) for s in range(50)} == {"train", "eval", "test"}
    with pytest.raises(ValueError, match="uint8"):
        split_of(image.astype(np.float32))


def test_drop_open_span_and_unknown_span(tmp_path):
    store = SpanStore(str(tmp_path))
    store.append(digit(1), 1)
    assert store.drop("open") == [] and store.open_count() == 0
    with pytest.raises(SpanError, match="no sealed span 4"):
        store.drop(4)


@pytest.mark.parametrize("image, label, message", [
    (np.zeros((32, 32), np.uint8), 1, r"shape \[28, 28\].*got dtype uint8 and shape \[32, 32\]"),
    (np.zeros((28, 28), np.float32), 1, "got dtype float32"),
    ([[0] * 28] * 28, 1, "got list"),
    (np.zeros((28, 28), np.uint8), 10, "label must be a digit 0..9, got 10"),
    (np.zeros((28, 28), np.uint8), True, "label must be a digit"),
    (np.zeros((28, 28), np.uint8), 3.0, "label must be a digit"),
])
def test_bad_appends_say_what_was_wrong(tmp_path, image, label, message):
    store = SpanStore(str(tmp_path))
    with pytest.raises(ValueError, match=message):
        store.append(image, label)
    assert store.open_count() == 0


def test_bad_adds_and_sources_say_what_was_wrong(tmp_path):
    store = SpanStore(str(tmp_path))
    images = np.zeros((2, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="label 12 at index 1"):
        store.add(images, [1, 12])
    with pytest.raises(ValueError, match="2 integers, one per image"):
        store.add(images, [1])
    with pytest.raises(ValueError, match="non-empty uint8 array"):
        store.add(images[:0], [])
    with pytest.raises(ValueError, match="not 'mnist'"):
        store.add(images, [1, 2], source=spans.SOURCE_MNIST)
    with pytest.raises(ValueError, match="answer .* must be a digit"):
        store.append(images[0], 1, answer=11)
    with pytest.raises(ValueError, match="model_version"):
        store.append(images[0], 1, model_version=-2)
    assert store.sealed() == [] and not (tmp_path / "spans").exists()  # nothing half-made


def test_sealed_spans_are_read_through_tf_io_gfile_for_uris(tmp_path):
    SpanStore(str(tmp_path)).add(np.stack([digit(1), digit(2)]), [1, 2], source="scans")
    remote = SpanStore("file://" + str(tmp_path))  # the URI path that gs:// takes too
    assert [(s.number, s.source, s.count) for s in remote.sealed()] == [(1, "scans", 2)]
    images, labels, records = remote.load(1)
    assert np.array_equal(images[1], digit(2)) and labels.tolist() == [1, 2] and len(records) == 2
    with pytest.raises(SpanError, match="is an object store: spans are read there but written on"):
        remote.append(digit(3), 3)
