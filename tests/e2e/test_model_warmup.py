"""Model warmup in the real server (``python -m serving``): a version whose export carries
assets.extra/tf_serving_warmup_requests replays them in every serving process before it is AVAILABLE
(log and metrics show it), a warmup file that is not TFRecord fails the version as TF Serving fails it
(the served version stays), and --enable_model_warmup=false skips the file."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import shutil  # noqa: E402

import pytest  # noqa: E402

from components.training.warmup_requests import write_warmup_requests  # noqa: E402
from tests.e2e.test_model_server import push  # noqa: E402
from tests.server_process import ServerProcess, wait_for  # noqa: E402

NOT_TFRECORD = b"this is no TFRecord file"
DATA_LOSS = ("corrupted record at 0 (Is this even a TFRecord file?). Please verify your warmup data is in "
             "TFRecord format.")


@pytest.fixture(scope="module")
def exports(tmp_path_factory, digits_exports, package_splits):
    """{"warm": the digits export with warmup records of 32 test digits, "corrupt": with a warmup file
    that is no TFRecord}."""
    root = tmp_path_factory.mktemp("warmup_exports")
    warm, corrupt = str(root / "warm"), str(root / "corrupt")
    shutil.copytree(digits_exports[0], warm)
    write_warmup_requests(warm, package_splits["test"].images[:32])
    shutil.copytree(digits_exports[0], corrupt)
    os.makedirs(os.path.join(corrupt, "assets.extra"))
    with open(os.path.join(corrupt, "assets.extra", "tf_serving_warmup_requests"), "wb") as f:
        f.write(NOT_TFRECORD)
    return {"warm": warm, "corrupt": corrupt}


def metrics_lines(server):
    status, text = server.rest("GET", "/metrics")
    assert status == 200, text
    return text.splitlines()


def test_every_process_warms_up_before_available_and_a_corrupt_file_ends_the_version(tmp_path, exports):
    base = tmp_path / "m"
    base.mkdir()
    push(exports["warm"], base, 1)
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    flags = ["--model_name=m", f"--model_base_path={base}", "--num_serving_processes=2", "--max_num_load_retries=0",
             "--file_system_poll_wait_seconds=1", f"--monitoring_config_file={monitoring}"]
    with ServerProcess(flags) as server:
        warmup_file = f"{base}/1/assets.extra/tf_serving_warmup_requests"
        done = [i for i, line in enumerate(server.log_lines) if f"Finished reading warmup data for model at "
                f"{warmup_file}. Number of warmup records read: 6." in line]
        assert len(done) == 2, server.log()
        assert {"serving process 0", "serving process 1"} == {
            p for i in done for p in ("serving process 0", "serving process 1") if p in server.log_lines[i]}
        available = next(i for i, line in enumerate(server.log_lines)
                         if "Successfully loaded servable version {name: m version: 1}" in line)
        assert max(done) < available, server.log()
        lines = metrics_lines(server)
        assert f':tensorflow:serving:model_warmup_records_read{{model_path="{base}/1",status="OK"}} 12' in lines
        assert f':tensorflow:serving:model_warmup_latency_count{{model_path="{base}/1",status="OK"}} 2' in lines

        push(exports["corrupt"], base, 2)  # a hot reload whose warmup file is not TFRecord
        states = wait_for(lambda: (s := server.version_states("m")).get(2, ("",))[0] == "END" and s,
                          what="version 2 to end")
        assert states == {2: ("END", DATA_LOSS), 1: ("AVAILABLE", "")}
        status, answer = server.rest("POST", "/v1/models/m:predict", {"instances": [[[0.0] * 28] * 28]})
        assert status == 200 and len(answer["predictions"]) == 1  # version 1 serves on
        assert any(f'model_path="{base}/2",status="DATA_LOSS: corrupted record at 0' in line
                   for line in metrics_lines(server))


def test_enable_model_warmup_false_skips_the_file(tmp_path, exports):
    base = tmp_path / "m"
    base.mkdir()
    push(exports["corrupt"], base, 1)
    with ServerProcess(["--model_name=m", f"--model_base_path={base}", "--enable_model_warmup=false",
                        "--max_num_load_retries=0"]) as server:
        assert server.version_states("m") == {1: ("AVAILABLE", "")}
        assert "warmup data" not in server.log()
