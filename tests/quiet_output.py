"""What counts as library noise in a command's output: TensorFlow's C++ start-up lines (cuDNN/cuFFT/cuBLAS
factories, CPU instructions, oneDNN, CUDA drivers, TensorRT), absl's and glog-style prefixed lines, Python's
FutureWarning/DeprecationWarning, and log-formatted INFO lines (the quiet wrappers print their own lines
without a log prefix)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from typing import Callable, List, Sequence, Tuple

from tests.server_process import REPO, stop_process, wait_for

LIBRARY_NOISE = re.compile(
    r"cuDNN|cuFFT|cuBLAS|oneDNN|cuda drivers|TensorRT|cpu_feature_guard|rebuild TensorFlow"
    r"|FutureWarning|DeprecationWarning|UserWarning|warnings\.warn|INFO:absl|WARNING:absl"
    r"|^[IWEF]\d{4} "  # absl/glog: I0000 00:00:... file.cc:12]
    r"|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ")  # TensorFlow's C++ and the model server's log format


def noise_lines(output: str) -> List[str]:
    """The lines of ``output`` that are library noise."""
    return [line for line in output.splitlines() if LIBRARY_NOISE.search(line)]


def clean_env(**extra: str) -> dict:
    """The environment of a clean start: no DIGITS_* settings, TensorFlow's C++ log level and Python's warning
    filters unset (as a new shell has them), plus ``extra``."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("DIGITS_") and name not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    return dict(env, TF_USE_LEGACY_KERAS="1", PYTHONUNBUFFERED="1", **extra)


def output_until(args: Sequence[str], env: dict, ready: Callable[[str], bool], timeout: float = 240,
                 what: str = "the command to be ready") -> Tuple[int, str]:
    """Runs ``args`` (stdout and stderr together, as a terminal shows them) until ``ready(output so far)``,
    then stops it with SIGTERM; returns its exit code and everything it printed."""
    process = subprocess.Popen(list(args), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines: List[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: ready("".join(lines)) or process.poll() is not None, timeout=timeout, what=what)
        assert process.poll() is None, f"{args} exited with {process.returncode}:\n" + "".join(lines)
    finally:
        stop_process(process, 60)
        reader.join(10)
    return process.returncode, "".join(lines)


def push_half_plus_two(serving_dir: str, model: str = "mnist") -> int:
    """Writes tests/half_plus_two's SavedModel as <serving_dir>/<model>/00000123 (in a child process, keeping
    TensorFlow out of this one); returns its version."""
    subprocess.run([sys.executable, "-c", "import sys; from tests.half_plus_two import save_half_plus_two; "
                    "save_half_plus_two(sys.argv[1])", os.path.join(serving_dir, model)],
                   cwd=REPO, env=clean_env(), check=True, capture_output=True, timeout=300)
    return 123
