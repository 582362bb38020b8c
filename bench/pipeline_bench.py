"""Pipeline benchmark: the seed tutorial script against the full pipeline on all 70,000 images.

    make bench            # or: .venv/bin/python bench/pipeline_bench.py

One invocation runs, one after the other on an idle machine: (1) the seed script, (2) the pipeline
cold, in a fresh temp pipeline root, (3) the pipeline again with nothing changed. It prints each
wall time, the pipeline's as ratios to the seed's, per-component times, peak RSS and both test
accuracies. Goals (issue 3): cold <= 4x seed, re-run <= 1x, peak RSS <= 4 GB, accuracy >= 0.97.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PIPELINE = """
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
from pipeline import config
from pipeline.runs import local_runner
summary = local_runner.run(config.from_sources(sys.argv[1:]))
print("BENCH " + json.dumps({"components": [[c.node_id, c.state, c.seconds] for c in summary.components],
                             "accuracy": summary.verdict.get("accuracy"), "pushed": summary.pushed}))
"""


def measure(argv):
    """Wall seconds, peak RSS in MB (the child and its descendants) and the last JSON line printed."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        sys.exit(f"benchmark step failed ({status}): {' '.join(argv)}\n{output[-2000:]}")
    lines = [line for line in output.splitlines() if line.startswith(("{", "BENCH "))]
    result = json.loads(lines[-1].removeprefix("BENCH "))
    return seconds, usage.ru_maxrss / 1024.0, result


def main():
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="digits-bench-") as work:
        pipeline_argv = [python, "-c", RUN_PIPELINE, "--pipeline-root", os.path.join(work, "root"),
                         "--serving-dir", os.path.join(work, "serving")]
        print("running the seed tutorial script ...", flush=True)
        seed_s, seed_rss, seed = measure([python, os.path.join(ROOT, "bench", "seed_tutorial.py")])
        print("running the pipeline cold ...", flush=True)
        cold_s, cold_rss, cold = measure(pipeline_argv)
        print("running the pipeline again, nothing changed ...", flush=True)
        warm_s, warm_rss, warm = measure(pipeline_argv)

    print()
    print(f"{'':28} {'wall s':>8} {'x seed':>7} {'peak RSS MB':>12} {'test accuracy':>14}")
    print(f"{'seed tutorial script':28} {seed_s:8.1f} {1.0:7.2f} {seed_rss:12.0f} {seed['test_accuracy']:14.4f}")
    print(f"{'pipeline, cold':28} {cold_s:8.1f} {cold_s / seed_s:7.2f} {cold_rss:12.0f} {cold['accuracy']:14.4f}")
    print(f"{'pipeline, re-run unchanged':28} {warm_s:8.1f} {warm_s / seed_s:7.2f} {warm_rss:12.0f} "
          f"{warm['accuracy']:14.4f}")
    print("\nper component (cold | re-run):")
    for (name, state, seconds), (_, warm_state, warm_seconds) in zip(cold["components"], warm["components"]):
        print(f"  {name:32} {seconds:7.1f} s {state.lower():9} | {warm_seconds:7.1f} s {warm_state.lower()}")
    print(f"\ngoals: cold <= 4x seed: {cold_s / seed_s:.2f}x; re-run <= 1x: {warm_s / seed_s:.2f}x; "
          f"peak RSS <= 4096 MB: {max(cold_rss, warm_rss):.0f} MB; accuracy >= 0.97: {cold['accuracy']:.4f}; "
          f"pushed: {cold['pushed']}")


if __name__ == "__main__":
    main()
