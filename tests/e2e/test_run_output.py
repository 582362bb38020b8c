"""What `digits run` prints: a line per component started and finished, a line per epoch, the summary
and where the log is; the libraries' output goes to that log, or shows live with --verbose."""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import SMALL_RUN

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODES = ("ImportSchemaGen", "MnistExampleGen", "StatisticsGen", "SpanValidator", "ExampleValidator", "Transform",
         "Trainer", "latest_blessed_model_resolver", "latest_hyperparameters_resolver", "Evaluator", "InfraValidator",
         "Pusher", "RunReport")


def digits_run(tmp_path, *extra):
    """`digits run` in its own process on small data, stdout and stderr together, as a terminal shows them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITS_") and k != "TF_CPP_MIN_LOG_LEVEL"}
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in SMALL_RUN.items()]
    flags += [f"--pipeline-root={tmp_path / 'root'}", f"--serving-dir={tmp_path / 'serving'}", *extra]
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", *flags], cwd=ROOT, env=env, timeout=600,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert done.returncode == 0, done.stdout[-5000:]
    return done.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A default run, then the same run again with --verbose (mostly cached)."""
    tmp_path = tmp_path_factory.mktemp("run_output")
    return digits_run(tmp_path), digits_run(tmp_path, "--verbose")


def test_a_default_run_prints_a_few_lines(runs):
    out = runs[0]
    lines = out.splitlines()
    epochs = SMALL_RUN["epochs"]
    assert len(lines) <= 40 + epochs, out
    assert re.match(r"digits run: the full log is in .*/runs/\d{8}T\d{6}Z/run\.log$", lines[0]), lines[0]
    for node in NODES:
        assert re.search(rf"^  started  {node}$", out, re.M), (node, out)
        assert re.search(rf"^  finished {node} +\d+\.\d s$", out, re.M), (node, out)
    epoch_lines = [line for line in lines if line.startswith("  Trainer epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == [f"  Trainer epoch {n}/{epochs}" for n in (1, 2)]
    assert all(re.search(r": loss \d\.\d{4}, accuracy \d\.\d{4}$", line) for line in epoch_lines), epoch_lines
    assert "\r" not in out  # piped: no progress bar
    assert re.search(r"^outcome: pushed \(", out, re.M) and "test accuracy:" in out and "blessed: yes" in out
    assert not re.search(r"^  Trainer +(complete|cached) ", out, re.M), "the components are not listed twice"
    for noise in ("Running launcher", "INFO:absl", "absl", "FutureWarning", "cuFFT", "ExecutionInfo("):
        assert noise not in out, (noise, out)


def test_the_log_holds_the_libraries_output(runs):
    out = runs[0]
    (log_path,) = re.findall(r"^log: (.*run\.log)$", out, re.M)
    summary_dir = os.path.dirname(re.search(r"^outcome: \w+ \((.*)\)$", out, re.M).group(1))
    assert os.path.dirname(log_path) == summary_dir  # the run's own directory, beside its summary.json
    (report_path,) = re.findall(r"^report: (.*)$", out, re.M)
    assert report_path == os.path.join(summary_dir, "report.html")  # the copy with the component times
    with open(report_path) as f:
        assert "<th>component</th><th>state</th><th>seconds</th>" in f.read()
    with open(log_path) as f:
        log = f.read()
    assert "Running launcher for" in log and "Component Trainer is running." in log and "Trainer epoch 2/2" in log


def test_verbose_shows_everything_live(runs):
    out = runs[1]
    assert "Running launcher for" in out and "Component Trainer is running." in out
    assert "the full log is in" not in out and not re.search(r"^log: ", out, re.M)
    assert re.search(r"^outcome: \w+ \(", out, re.M)
