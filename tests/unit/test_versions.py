"""serving.core.versions and serving.core.model_registry: TF Serving 2.16's version management, with a fake loader."""
import os
import threading

import pytest

from serving.errors import ServingError
from serving.core.model_registry import ModelRegistry
from serving.model_servers.server_config import ModelSpec, VersionPolicy
from serving.core.versions import VersionManager, VersionStatus, parse_version

WAIT = 10  # seconds; only a guard against a hung test, never a timing assumption


class FakeLoader:
    """Records loads and unloads; make(version) fail with fail(), or block until release() with block()."""

    def __init__(self):
        self.loads, self.unloads = [], []
        self.failing, self.blocked = {}, {}
        self.entered = {}

    def fail(self, version, message="bad model", times=None):
        self.failing[version] = [message, times]

    def block(self, version):
        self.blocked[version] = threading.Event()
        self.entered[version] = threading.Event()

    def release(self, version):
        self.blocked[version].set()

    def __call__(self, path):
        version = int(os.path.basename(path))
        self.loads.append(version)
        if version in self.blocked:
            self.entered[version].set()
            assert self.blocked[version].wait(WAIT)
        if version in self.failing:
            message, times = self.failing[version]
            if times is None or times > 0:
                if times is not None:
                    self.failing[version][1] -= 1
                raise RuntimeError(message)
        return f"model-{version}"

    def unload(self, servable):
        self.unloads.append(int(servable.split("-")[1]))


def make_dirs(base, *names):
    for name in names:
        os.makedirs(os.path.join(base, str(name)), exist_ok=True)


def remove_dir(base, name):
    os.rmdir(os.path.join(base, str(name)))


def spec(base, policy=VersionPolicy(), labels=None, name="mnist"):
    return ModelSpec(name, str(base), version_policy=policy, version_labels=dict(labels or {}))


@pytest.fixture
def loader():
    return FakeLoader()


def manager(base, loader, policy=VersionPolicy(), labels=None, retries=0):
    return VersionManager(spec(base, policy, labels), loader, loader.unload, poll_seconds=3600,
                          max_num_load_retries=retries, load_retry_interval_seconds=0)


def states(m):
    return [(s.version, s.state) for s in m.status()]


def error_of(fn, *args, **kwargs):
    with pytest.raises(ServingError) as info:
        fn(*args, **kwargs)
    return info.value.code, info.value.message


# ------------------------------------------------------------------------------------------- policies

def test_version_names_parse_as_safe_strto64():
    assert [parse_version(n) for n in ["1", "007", " 3 ", "-2", "+4", "1a", "", "1.0", "9" * 20, ".staging-5"]] == \
        [1, 7, 3, -2, None, None, None, None, None, None]


def test_latest_one_serves_highest_and_ignores_other_names(tmp_path, loader):
    make_dirs(tmp_path, 1, 2, 10, "abc", ".staging-99", "99.tmp")
    (tmp_path / "5").write_text("")  # a file would be a child too, so keep it below the latest
    m = manager(tmp_path, loader)
    m.poll_once()
    assert loader.loads == [10]
    assert m.get() == (10, "model-10")
    assert states(m) == [(10, "AVAILABLE")]


def test_latest_two_and_all_and_specific(tmp_path, loader):
    make_dirs(tmp_path, 1, 2, 3)
    m = manager(tmp_path, loader, VersionPolicy("latest", 2))
    m.poll_once()
    assert sorted(loader.loads) == [2, 3] and loader.loads[0] == 3  # highest first
    assert m.available_versions() == (2, 3)
    assert error_of(m.get, 1) == ("NOT_FOUND", "Servable not found for request: Specific(mnist, 1)")

    everything = manager(tmp_path, FakeLoader(), VersionPolicy("all", None))
    everything.poll_once()
    assert everything.available_versions() == (1, 2, 3)

    specific = manager(tmp_path, FakeLoader(), VersionPolicy("specific", None, (1, 3, 7)))
    specific.poll_once()
    assert specific.available_versions() == (1, 3)
    assert specific.get() == (3, "model-3")


def test_status_is_sorted_highest_first_and_keeps_unloaded_versions_as_end(tmp_path, loader):
    make_dirs(tmp_path, 1)
    m = manager(tmp_path, loader)
    m.poll_once()
    make_dirs(tmp_path, 2)
    m.poll_once()
    assert m.status() == [VersionStatus(2, "AVAILABLE"), VersionStatus(1, "END")]
    assert loader.unloads == [1]
    assert m.status(1) == [VersionStatus(1, "END", "OK", "")]
    assert error_of(m.status, 5) == ("NOT_FOUND", "Could not find version 5 of model mnist")


# ------------------------------------------------------------------------------------ swaps and errors

def test_new_version_is_served_only_once_available(tmp_path, loader):
    make_dirs(tmp_path, 1)
    m = manager(tmp_path, loader)
    m.poll_once()
    make_dirs(tmp_path, 2)
    loader.block(2)
    m.start()
    try:
        assert loader.entered[2].wait(WAIT)
        assert m.get() == (1, "model-1")  # old version still served while 2 loads
        assert states(m) == [(2, "LOADING"), (1, "AVAILABLE")]
        assert loader.unloads == []
        loader.release(2)
        m.poll_once()  # waits for the background poll to finish, then finds nothing to do
    finally:
        loader.release(2)
        m.stop()
    assert m.get() == (2, "model-2")
    assert states(m) == [(2, "AVAILABLE"), (1, "END")]
    assert loader.unloads == [1]


def test_failed_load_keeps_old_version_and_shows_error(tmp_path, loader):
    make_dirs(tmp_path, 1)
    m = manager(tmp_path, loader)
    m.poll_once()
    make_dirs(tmp_path, 2)
    loader.fail(2, "bad model")
    m.poll_once()
    assert m.get() == (1, "model-1")
    assert m.status() == [VersionStatus(2, "END", "UNKNOWN", "bad model"), VersionStatus(1, "AVAILABLE")]
    m.poll_once()  # still aspired and errored: not retried (enable_reload_servables_with_error is off)
    assert loader.loads == [1, 2]
    # un-aspired (directory gone) then aspired again: loaded anew
    remove_dir(tmp_path, 2)
    m.poll_once()
    make_dirs(tmp_path, 2)
    m.poll_once()
    assert loader.loads == [1, 2, 2]
    assert m.status() == [VersionStatus(2, "END", "UNKNOWN", "bad model"), VersionStatus(1, "AVAILABLE")]


def test_load_retries_up_to_max_num_load_retries(tmp_path, loader):
    make_dirs(tmp_path, 1)
    loader.fail(1, "flaky", times=2)
    m = manager(tmp_path, loader, retries=2)
    m.poll_once()
    assert loader.loads == [1, 1, 1]
    assert m.get() == (1, "model-1")

    other = FakeLoader()
    other.fail(1, "broken")
    m = manager(tmp_path, other, retries=1)
    m.poll_once()
    assert other.loads == [1, 1]
    assert m.status() == [VersionStatus(1, "END", "UNKNOWN", "broken")]


def test_stop_cancels_load_retry_wait(tmp_path, loader):
    make_dirs(tmp_path, 1)
    loader.block(1)
    loader.fail(1, "broken")
    m = VersionManager(spec(tmp_path), loader, loader.unload, poll_seconds=3600,
                       max_num_load_retries=3, load_retry_interval_seconds=3600)
    m.start()
    assert loader.entered[1].wait(WAIT)
    loader.release(1)  # the attempt fails; the next would come an hour later
    m.stop()  # ends the wait at once: no further attempt, the error stays
    assert loader.loads == [1]
    assert m.status() == [VersionStatus(1, "END", "UNKNOWN", "broken")]


def test_loader_serving_error_code_is_kept(tmp_path):
    make_dirs(tmp_path, 1)

    def load(path):
        raise ServingError("Could not find SavedModel", "NOT_FOUND")
    m = VersionManager(spec(tmp_path), load, None, max_num_load_retries=0)
    m.poll_once()
    assert m.status() == [VersionStatus(1, "END", "NOT_FOUND", "Could not find SavedModel")]


def test_deleted_version_is_unloaded(tmp_path, loader):
    make_dirs(tmp_path, 1, 2)
    m = manager(tmp_path, loader, VersionPolicy("all", None))
    m.poll_once()
    remove_dir(tmp_path, 2)
    m.poll_once()
    assert loader.unloads == [2]
    assert m.get() == (1, "model-1")
    assert error_of(m.get, 2)[0] == "NOT_FOUND"
    remove_dir(tmp_path, 1)  # no version left: nothing aspired, everything unloads
    m.poll_once()
    assert loader.unloads == [2, 1]
    assert error_of(m.get) == ("NOT_FOUND", "Servable not found for request: Latest(mnist)")
    assert states(m) == [(2, "END"), (1, "END")]


def test_missing_base_path_keeps_polling_and_serving(tmp_path, loader):
    base = tmp_path / "models"
    m = manager(base, loader)
    m.poll_once()
    assert m.last_error.code == "INVALID_ARGUMENT"
    assert m.last_error.message.startswith(f"Could not find base path {base} for servable mnist with error "
                                           f"NOT_FOUND: {base}; ")
    assert error_of(m.status) == ("NOT_FOUND", "Could not find any versions of model mnist")
    make_dirs(base, 1)
    m.poll_once()
    assert m.last_error is None and m.get() == (1, "model-1")
    os.rename(base, tmp_path / "gone")  # transiently unavailable: the loaded version keeps serving
    m.poll_once()
    assert m.last_error is not None and m.get() == (1, "model-1") and loader.unloads == []


def test_stop_joins_thread_and_poll_seconds_zero_polls_once(tmp_path, loader):
    make_dirs(tmp_path, 1)
    loader.block(1)
    m = VersionManager(spec(tmp_path), loader, loader.unload, poll_seconds=0)
    m.start()
    assert loader.entered[1].wait(WAIT)
    loader.release(1)
    m.stop()  # joins: the load under way finishes first
    assert m._thread is None and m.get() == (1, "model-1")
    make_dirs(tmp_path, 2)
    m.start()  # poll_seconds=0: one poll, then the thread ends by itself
    m._thread.join(WAIT)
    assert not m._thread.is_alive() and m.get() == (2, "model-2") and loader.loads == [1, 2]
    m.stop()


# ------------------------------------------------------------------------------------------------ labels

def test_labels_resolve_to_versions(tmp_path, loader):
    make_dirs(tmp_path, 1, 2)
    m = manager(tmp_path, loader, VersionPolicy("all", None), labels={"stable": 1, "canary": 2, "next": 3})
    m.poll_once()
    assert m.get(label="stable") == (1, "model-1")
    assert m.get(label="canary") == (2, "model-2")
    assert error_of(m.get, label="next") == ("NOT_FOUND", "Servable not found for request: Specific(mnist, 3)")
    assert error_of(m.get, label="beta") == ("INVALID_ARGUMENT", "Unrecognized servable version label: beta")
    m.set_labels({"stable": 2})
    assert m.get(label="stable") == (2, "model-2")
    assert error_of(m.get, label="canary")[0] == "INVALID_ARGUMENT"
    # 2.16's GetModelStatus looks at the version only: a label gives every version
    assert states(m) == [(2, "AVAILABLE"), (1, "AVAILABLE")]
    assert m.status(label="stable") == m.status()


# -------------------------------------------------------------------------------------------- registry

def registry(tmp_path, loader, names=("mnist",), **kw):
    specs = []
    for name in names:
        make_dirs(tmp_path / name, 1)
        specs.append(spec(tmp_path / name, name=name))
    r = ModelRegistry(specs, loader, loader.unload, poll_seconds=3600, max_num_load_retries=0,
                      load_retry_interval_seconds=0, **kw)
    r.poll_once()
    return r


def test_registry_routes_and_reports_unknown_models(tmp_path, loader):
    r = registry(tmp_path, loader, ("mnist", "fashion"))
    assert r.model_names() == ["fashion", "mnist"]
    assert r.get("mnist") == (1, "model-1")
    assert error_of(r.get, "nope") == ("NOT_FOUND", "Servable not found for request: Latest(nope)")
    assert error_of(r.get, "nope", 4) == ("NOT_FOUND", "Servable not found for request: Specific(nope, 4)")
    assert error_of(r.get, "nope", label="x") == ("INVALID_ARGUMENT", "Unrecognized servable version label: x")
    assert error_of(r.status, "nope") == ("NOT_FOUND", "Could not find any versions of model nope")
    assert error_of(r.status, "nope", 4) == ("NOT_FOUND", "Could not find version 4 of model nope")
    assert error_of(r.get, "mnist", 9) == ("NOT_FOUND", "Servable not found for request: Specific(mnist, 9)")


def test_reload_adds_removes_and_relabels(tmp_path, loader):
    r = registry(tmp_path, loader, ("mnist", "old"))
    make_dirs(tmp_path / "mnist", 2)
    r.poll_once()
    make_dirs(tmp_path / "new", 5)
    mnist = spec(tmp_path / "mnist", VersionPolicy("all", None), labels={"stable": 2})
    r.reload([mnist, spec(tmp_path / "new", name="new")])
    assert r.model_names() == ["mnist", "new"]
    assert r.get("new") == (5, "model-5")  # new models are loaded before reload returns
    assert error_of(r.get, "old")[0] == "NOT_FOUND"
    assert r.status("old") == [VersionStatus(1, "END")]  # removed: unloaded, still in status
    assert r.get("mnist", label="stable") == (2, "model-2")
    r.poll_once()  # the new policy ("all") applies from the next poll
    assert r.manager("mnist").available_versions() == (1, 2)


def test_reload_rejects_bad_configs_without_changing_anything(tmp_path, loader):
    r = registry(tmp_path, loader)
    good = spec(tmp_path / "mnist")
    assert error_of(r.reload, [good, good]) == (
        "INVALID_ARGUMENT", "Illegal to list model mnist multiple times in config list")
    assert error_of(r.reload, [ModelSpec("x", "rel/path")]) == (
        "INVALID_ARGUMENT", "Expected model x to have an absolute path or URI; got base_path()=rel/path")
    code, message = error_of(r.reload, [spec(tmp_path / "mnist", labels={"stable": 7})])
    assert code == "FAILED_PRECONDITION"
    assert message.startswith("Request to assign label to version 7 of model mnist, which is not currently "
                              "available for inference")
    assert error_of(r.get, "mnist", label="stable")[0] == "INVALID_ARGUMENT"  # label map unchanged
    r.allow_unavailable_labels = True
    r.reload([spec(tmp_path / "mnist", labels={"stable": 7})])
    assert error_of(r.get, "mnist", label="stable") == (
        "NOT_FOUND", "Servable not found for request: Specific(mnist, 7)")


def test_reload_reports_new_model_that_failed_to_load(tmp_path, loader):
    r = registry(tmp_path, loader)
    make_dirs(tmp_path / "broken", 3)
    loader.fail(3, "no graph")
    with pytest.raises(ServingError) as info:
        r.reload([spec(tmp_path / "mnist"), spec(tmp_path / "broken", name="broken")])
    assert (info.value.code, info.value.message) == (
        "UNKNOWN", "1 model(s) did not become available: {{{name: broken version: 3} due to error: "
        "UNKNOWN: no graph}, }")
    assert r.get("mnist") == (1, "model-1")
