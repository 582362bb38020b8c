"""The Pusher's versioning: atomic appearance, versions that only grow, no duplicate pushes."""
import os
import time

import pytest

from components import pusher


def _model(directory, payload=b"graph"):
    os.makedirs(os.path.join(directory, "variables"), exist_ok=True)
    with open(os.path.join(directory, "saved_model.pb"), "wb") as f:
        f.write(payload)
    with open(os.path.join(directory, "variables", "variables.index"), "wb") as f:
        f.write(b"index")
    return str(directory)


def test_only_integer_directories_are_versions(tmp_path):
    for name in ("12", "7", ".staging-99", "notes", "3a"):
        os.makedirs(tmp_path / name)
    assert pusher.existing_versions(str(tmp_path)) == [7, 12]
    assert pusher.existing_versions(str(tmp_path / "missing")) == []


def test_versions_only_grow_even_when_the_clock_is_behind(tmp_path):
    future = int(time.time()) + 10_000
    os.makedirs(tmp_path / str(future))
    assert pusher.next_version(str(tmp_path)) == future + 1
    assert pusher.next_version(str(tmp_path / "empty")) >= int(time.time())


def test_push_lands_complete_under_a_new_version_and_leaves_no_staging(tmp_path):
    model_dir = tmp_path / "serving" / "mnist"
    first = pusher.push_atomically(_model(tmp_path / "m1", b"one"), str(model_dir))
    second = pusher.push_atomically(_model(tmp_path / "m2", b"two"), str(model_dir))
    assert int(os.path.basename(second)) > int(os.path.basename(first))
    assert sorted(os.listdir(model_dir)) == sorted([os.path.basename(first), os.path.basename(second)])
    with open(os.path.join(second, "saved_model.pb"), "rb") as f:
        assert f.read() == b"two"
    assert os.path.exists(os.path.join(second, "variables", "variables.index"))


def test_a_failed_copy_leaves_the_serving_directory_as_it_was(tmp_path, monkeypatch):
    model_dir = tmp_path / "serving"
    existing = pusher.push_atomically(_model(tmp_path / "m1"), str(model_dir))

    def broken_copy(source, destination, **kwargs):
        os.makedirs(destination)
        raise OSError("disk full")

    monkeypatch.setattr(pusher.io_utils, "copy_dir", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        pusher.push_atomically(_model(tmp_path / "m2", b"new"), str(model_dir))
    assert os.listdir(model_dir) == [os.path.basename(existing)]


def test_an_identical_model_is_recognised(tmp_path):
    model_dir = str(tmp_path / "serving")
    pushed = pusher.push_atomically(_model(tmp_path / "m1", b"same"), model_dir)
    assert pusher.newest_identical_version(_model(tmp_path / "copy", b"same"), model_dir) == pushed
    assert pusher.newest_identical_version(_model(tmp_path / "other", b"different"), model_dir) is None


def test_a_push_in_progress_names_its_owner_beside_its_staging_copy(tmp_path, monkeypatch):
    import json

    model_dir = tmp_path / "serving"
    seen = {}
    real_copy = pusher.io_utils.copy_dir

    def copy_and_look(source, destination, **kwargs):
        real_copy(source, destination, **kwargs)
        seen["names"] = sorted(os.listdir(model_dir))
        with open(destination + pusher.OWNER_SUFFIX) as f:
            seen["owner"] = json.load(f)

    monkeypatch.setattr(pusher.io_utils, "copy_dir", copy_and_look)
    target = pusher.push_atomically(_model(tmp_path / "m1"), str(model_dir), pushed_model="/root/Pusher/pushed_model/9")
    staging = f"{pusher.STAGING_PREFIX}{os.path.basename(target)}-{os.getpid()}-{pusher.host_name()}"
    assert seen["names"] == [staging, staging + pusher.OWNER_SUFFIX]
    assert seen["owner"]["pid"] == os.getpid() and seen["owner"]["host"] == pusher.host_name()
    assert seen["owner"]["pushed_model"] == "/root/Pusher/pushed_model/9"
    assert pusher.owner_of(staging) == {"pid": os.getpid(), "host": pusher.host_name()}  # the name alone says who
    assert pusher.owner_of(".staging-1796000000") is None  # an older pusher's name
    assert os.listdir(model_dir) == [os.path.basename(target)]  # the record goes once the version is in place
