"""serving.core.versions: a version whose load fails and waits to retry (max_num_load_retries x
load_retry_interval_micros, 5 x 60 s by default) must not hold back a newer version. As in TF Serving
(aspired_versions_manager.cc ProcessAspiredVersionsRequest -> BasicManager::CancelLoadServableRetry),
un-aspiring it cancels its retries; meanwhile its status shows the error. The retry interval here is an
hour: a test passes only if the wait is cut short, and a hung wait fails at WAIT."""
import threading
import time

from serving.core.model_registry import ModelRegistry
from serving.errors import ServingError
from serving.core.versions import VersionManager, VersionStatus
from serving.model_servers.server_config import VersionPolicy
from tests.unit.test_versions import WAIT, FakeLoader, make_dirs, spec

HOUR = 3600.0


def eventually(condition, what):
    """Polls ``condition`` until true; fails after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def retrying(tmp_path, poll_seconds, policy=VersionPolicy()):
    loader = FakeLoader()
    loader.fail(1, "saved_model.pb is not a SavedModel")
    make_dirs(tmp_path, 1)
    m = VersionManager(spec(tmp_path, policy), loader, loader.unload, poll_seconds=poll_seconds,
                       max_num_load_retries=5, load_retry_interval_seconds=HOUR)
    return m, loader


FAILED_1 = ("UNKNOWN", "saved_model.pb is not a SavedModel")


def waiting_to_retry(status_of) -> bool:
    """The highest version is LOADING with an error: an attempt failed and the next is awaited."""
    try:
        latest = status_of()[0]
    except ServingError:  # no version seen yet
        return False
    return latest.state == "LOADING" and latest.error_code != "OK"


def test_status_shows_the_error_while_the_load_waits_to_retry(tmp_path):
    m, loader = retrying(tmp_path, poll_seconds=HOUR)
    m.start()
    try:
        eventually(lambda: waiting_to_retry(m.status), "the first attempt's error")
        assert m.status() == [VersionStatus(1, "LOADING", *FAILED_1)]
        assert loader.loads == [1]
    finally:
        m.stop()
    assert m.status() == [VersionStatus(1, "END", *FAILED_1)]


def test_a_newer_version_found_while_waiting_to_retry_cancels_the_retries(tmp_path):
    """The polling thread is the one waiting: its wait polls the base path every poll_seconds."""
    m, loader = retrying(tmp_path, poll_seconds=0.05)
    m.start()
    try:
        eventually(lambda: waiting_to_retry(m.status), "a retry wait")
        make_dirs(tmp_path, 2)
        started = time.monotonic()
        eventually(lambda: m.available_versions() == (2,), "version 2 to be served")
        assert time.monotonic() - started < WAIT
        assert m.get() == (2, "model-2")
        assert m.status() == [VersionStatus(2, "AVAILABLE"), VersionStatus(1, "END", *FAILED_1)]
        assert loader.loads == [1, 2]  # version 1 was not tried again
    finally:
        m.stop()


def test_a_poll_from_another_thread_cancels_the_wait_on_the_polling_thread(tmp_path):
    """Without periodic scans during the wait (poll_seconds an hour), un-aspiring still ends it: the scan
    sets the version's cancel event before waiting for the manager."""
    m, loader = retrying(tmp_path, poll_seconds=HOUR)
    m.start()
    try:
        eventually(lambda: waiting_to_retry(m.status), "a retry wait")
        make_dirs(tmp_path, 2)
        polling = threading.Thread(target=m.poll_once, daemon=True)  # returns once the polling thread has
        polling.start()                                              # given up version 1 and loaded version 2
        polling.join(WAIT)
        assert not polling.is_alive()
        assert m.get() == (2, "model-2")
        assert m.status() == [VersionStatus(2, "AVAILABLE"), VersionStatus(1, "END", *FAILED_1)]
        assert loader.loads == [1, 2]
    finally:
        m.stop()


def test_a_version_that_stays_aspired_keeps_retrying(tmp_path):
    """"all" keeps version 1 aspired when 2 arrives: its retries go on (TF Serving cancels only un-aspired
    ones), and the next attempt comes after the interval."""
    loader = FakeLoader()
    loader.fail(1, "flaky", times=2)
    make_dirs(tmp_path, 1)
    m = VersionManager(spec(tmp_path, VersionPolicy("all", None)), loader, loader.unload, poll_seconds=0.01,
                       max_num_load_retries=5, load_retry_interval_seconds=0.2)
    started = time.monotonic()
    m.poll_once()
    assert time.monotonic() - started >= 0.4  # two waits of the interval, polls in between changed nothing
    assert loader.loads == [1, 1, 1] and m.status() == [VersionStatus(1, "AVAILABLE")]


def test_startup_waits_for_the_newer_version_not_for_the_retries(tmp_path):
    """ServerCore::Create's wait (start_and_wait on the caller's thread): a broken only version, then a good
    newer one pushed meanwhile is served and start-up completes."""
    loader = FakeLoader()
    loader.fail(1, "saved_model.pb is not a SavedModel")
    make_dirs(tmp_path / "mnist", 1)
    r = ModelRegistry([spec(tmp_path / "mnist")], loader, loader.unload, poll_seconds=0.05,
                      max_num_load_retries=5, load_retry_interval_seconds=HOUR)
    starting = threading.Thread(target=r.start_and_wait, daemon=True)
    starting.start()
    try:
        eventually(lambda: waiting_to_retry(lambda: r.status("mnist")), "the error in the status")
        assert r.status("mnist") == [VersionStatus(1, "LOADING", *FAILED_1)]
        make_dirs(tmp_path / "mnist", 2)
        starting.join(WAIT)
        assert not starting.is_alive()
        assert r.get("mnist") == (2, "model-2")
        assert r.status("mnist") == [VersionStatus(2, "AVAILABLE"), VersionStatus(1, "END", *FAILED_1)]
    finally:
        r.stop()
        starting.join(WAIT)


def test_retiring_the_model_cancels_its_retries(tmp_path):
    m, loader = retrying(tmp_path, poll_seconds=HOUR)
    m.start()
    eventually(lambda: waiting_to_retry(m.status), "a retry wait")
    retiring = threading.Thread(target=m.retire, daemon=True)
    retiring.start()
    retiring.join(WAIT)
    assert not retiring.is_alive()
    assert m.status() == [VersionStatus(1, "END", *FAILED_1)] and loader.loads == [1]
