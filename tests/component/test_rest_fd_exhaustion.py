"""The REST transport out of file descriptors, in a server process whose RLIMIT_NOFILE is lowered to
128 and which is then sent 300 idle connections. Before the back-off, ``accept`` failed with EMFILE in a
busy loop: 99% CPU, hundreds of thousands of identical log lines, clients timing out."""
import os
import socket
import subprocess
import sys
import time

from tests.component.test_rest_limits import small_predict
from tests.server_process import REPO, stop_process

SERVER = """
import logging, resource, sys
import numpy as np
from serving.rest_api.transport import RestServer

class Doubler:
    def input_specs(self, signature_name):
        return {"x": (np.float32, None)}
    def predict(self, signature_name, inputs):
        return {"y": np.asarray(inputs["x"]) * 2}

class Registry:
    def get(self, name, version=None, label=None):
        return 1, Doubler()

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
rest = RestServer(Registry(), 0, host="127.0.0.1", num_threads=2)
rest.start()
print(rest.port, flush=True)
sys.stdin.read()  # until the test closes it
rest.stop()
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(predicate, within: float, what: str):
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {within} s"
        time.sleep(0.05)


def test_out_of_file_descriptors_the_server_backs_off_and_keeps_serving(tmp_path):
    log_path = tmp_path / "server.log"
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONPATH=REPO)
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-c", SERVER], cwd=REPO, env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=log, text=True)
    idle = []
    try:
        port = int(server.stdout.readline())
        good = socket.create_connection(("127.0.0.1", port), timeout=10)
        small_predict(good)
        for _ in range(300):  # more than 128 descriptors: accept fails with EMFILE, the rest wait
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        wait_for(lambda: "Too many open files" in log_path.read_text(), 10, "EMFILE report")
        cpu, began = cpu_seconds(server.pid), time.monotonic()
        answers = []
        while time.monotonic() - began < 2.0:  # a 2 s window, clients served all along
            answers.append(small_predict(good))
            time.sleep(0.05)
        busy = (cpu_seconds(server.pid) - cpu) / (time.monotonic() - began)
        assert busy < 0.25, f"the server used {busy:.0%} of a CPU while out of file descriptors"
        assert max(answers) < 1.0, answers
        lines = log_path.read_text().splitlines()
        assert 1 <= len([line for line in lines if "accept failed" in line]) <= 2, lines[:5]
        assert any("ulimit -n" in line for line in lines)  # says what to do about it
        for sock in idle:
            sock.close()
        idle.clear()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as new:  # accepted again
            assert small_predict(new) < 5
        good.close()
    finally:
        for sock in idle:
            sock.close()
        server.stdin.close()
        stop_process(server, 10)
