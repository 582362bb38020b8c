"""--num_serving_processes=2 when processes die: a dead serving process is replaced (and its replacement serves
what the others serve, the UNIX socket included), processes that keep dying stop the server, serving processes
whose coordinator is killed exit by themselves, and start-up failures end as a single process ends them."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

from tests.e2e.test_model_server import push  # noqa: E402
from tests.e2e.test_serving_processes import (SUMS, alive, grpc_predict, parent_of, rest_predict,  # noqa: E402,F401
                                              serving_pids, start, versions)
from tests.server_process import REPO, free_port, wait_for  # noqa: E402


def test_a_serving_process_that_dies_is_replaced(tmp_path, versions):
    """Process 0, which also holds the UNIX socket: its replacement loads the version, then takes the socket."""
    base = tmp_path / "m"
    base.mkdir()
    push(versions[1], base, 1)
    socket_path = tmp_path / "grpc.sock"
    with start([f"--grpc_socket_path={socket_path}"], base) as server:
        pids = serving_pids(server)
        os.kill(pids[0], signal.SIGKILL)
        line = wait_for(lambda: next((line for line in server.log_lines if "replaces the one that exited" in line),
                                     None), timeout=120, what="a replacement")
        new_pid = int(re.search(r"serving process 0 \(pid (\d+)\)", line).group(1))
        assert new_pid not in pids and parent_of(new_pid) == server.process.pid
        assert all(np.allclose(rest_predict(server), SUMS) for _ in range(20))
        assert {grpc_predict(f"127.0.0.1:{server.grpc_port}", version=1)[0] for _ in range(10)} == {1}
        assert grpc_predict(f"unix:{socket_path}")[0] == 1
        assert server.version_states("m") == {1: ("AVAILABLE", "")}
        assert server.stop() == 0
    assert f"serving process 0 (pid {pids[0]}) exited with code -9; starting a replacement." in server.log()
    wait_for(lambda: not any(alive(pid) for pid in (*pids, new_pid)), timeout=10, what="every process to be gone")


def test_serving_processes_stop_by_themselves_when_the_coordinator_is_killed(tmp_path, versions):
    base = tmp_path / "m"
    base.mkdir()
    push(versions[1], base, 1)
    with start([], base) as server:
        pids = serving_pids(server)
        server.process.kill()
        server.process.wait()
        wait_for(lambda: not any(alive(pid) for pid in pids), timeout=30, what="the orphaned serving processes to exit")


def run_server(*flags):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "serving", "--num_serving_processes=2", f"--port={free_port()}",
                           *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def test_start_up_failures_exit_as_a_single_process_does(tmp_path):
    version = tmp_path / "broken" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"garbage")
    result = run_server("--model_name=broken", f"--model_base_path={tmp_path / 'broken'}", "--max_num_load_retries=0")
    assert result.returncode == 1, result.stderr
    assert "1 model(s) did not become available: {{{name: broken version: 1} due to error: " in result.stderr
    assert "Traceback" not in result.stderr
    pids = re.search(r"Serving with 2 processes \(pids (\d+), (\d+)\)", result.stderr).groups()
    assert not any(alive(int(pid)) for pid in pids)

    result = run_server("--model_name=broken", f"--model_base_path={tmp_path / 'broken'}",
                        f"--tensorflow_session_config_file={tmp_path / 'missing.pbtxt'}")
    assert result.returncode == 2, result.stderr
    assert f"digits-model-server: Cannot read --tensorflow_session_config_file '{tmp_path / 'missing.pbtxt'}'" \
        in result.stderr
    assert "Traceback" not in result.stderr


def test_serving_processes_that_keep_dying_stop_the_server(tmp_path, versions):
    base = tmp_path / "m"
    base.mkdir()
    push(versions[1], base, 1)
    server = start([], base)
    with server:
        victim, killed = serving_pids(server)[1], []
        for deaths in range(1, 5):
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            if deaths == 4:
                break
            line = wait_for(lambda: (lines := [line for line in server.log_lines if "replaces the one" in line])
                            [deaths - 1:] and lines[deaths - 1], timeout=120, what=f"replacement {deaths}")
            victim = int(re.search(r"serving process 1 \(pid (\d+)\)", line).group(1))
        assert server.process.wait(60) == 1
    assert "serving processes exited 4 times within 60 s; stopping the server" in server.log()
    wait_for(lambda: not any(alive(pid) for pid in (*serving_pids(server), *killed)), timeout=10,
             what="every process to be gone")
