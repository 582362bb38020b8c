"""Pipeline benchmark on all 70,000 images: seed script vs pipeline, seeds, CNN vs MLP, the Tuner.

Issue 16: the seed tutorial script against the pipeline, the default config over several seeds, the
CNN beside the seed's MLP, and the Tuner's result.

    make bench                                   # or: .venv/bin/python bench/pipeline_bench.py
    make bench ARGS="--only seeds,cnn --seeds 5"
    make bench ARGS="--train-examples 3000 --test-examples 1000 --epochs 2 --accuracy-floor 0"  # a smoke run

Steps, one after the other on an idle machine, all in one pipeline root (a fresh temp dir unless
--root), so the data components run once and later runs reuse them from the cache:
  pipeline  the seed script (bench/seed_tutorial.py), the pipeline cold (default config, seed 42) and
            again with nothing changed: wall times as ratios to the seed's, per-component times, peak
            RSS, test accuracies. Goals (issue 16): cold <= 3x seed, re-run <= 1x, peak RSS <= 4 GB,
            accuracy >= 0.985.
  seeds     the default config with --seeds seeds (42, then 1, 2, ...): test accuracy and Trainer
            seconds each, and their min / mean / max.
  cnn       --architecture cnn (seed 42) beside the default MLP (bench/model_compare.py): MNIST, font
            and stroke digits accuracy through the model server, latency per image there, model size.
  tune      --tune --tune-trials N (last: a tuned result is reused by later runs of the same root):
            the Trainer's hyper-parameters, each with where it came from, and the test accuracy.
Every other argument is a `digits run` flag passed to every pipeline run (not to the seed script).
Each run is its own process (bench/pipeline_run.py). Results: artifacts/bench/pipeline.json, written
after each step.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from components.training.hparams import describe  # noqa: E402
from pipeline import config  # noqa: E402

STEPS = ("pipeline", "seeds", "cnn", "tune")  # the order they run in
DEFAULT_SEED = config.PipelineConfig.__dataclass_fields__["seed"].default
GOAL_RATIO, GOAL_RSS_MB, GOAL_ACCURACY = 3.0, 4096, 0.985


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


def seed_list(count):
    """The default seed first, then 1, 2, ... (skipping the default): ``count`` seeds."""
    return ([DEFAULT_SEED] + [s for s in range(1, count + 1) if s != DEFAULT_SEED])[:count]


def stats(values):
    return {"min": min(values), "mean": sum(values) / len(values), "max": max(values)}


def component_seconds(result, node_id):
    return next((seconds for name, _, seconds in result["components"] if name == node_id), None)


def parse_only(text):
    steps = [step.strip() for step in text.split(",") if step.strip()]
    unknown = [step for step in steps if step not in STEPS]
    if unknown or not steps:
        raise argparse.ArgumentTypeError(f"{text!r}: choose among {','.join(STEPS)}")
    return steps


class Runs:
    """Pipeline runs in one root, each once per bench: ``run(flags)`` again gives the first result."""

    def __init__(self, root, pipeline_flags):
        self.root, self.pipeline_flags, self.done = root, list(pipeline_flags), {}

    def run(self, what, flags=(), fresh=False):
        """``fresh``: run and measure again even if this bench ran these flags (kept: the first result)."""
        key = tuple(flags)
        if key not in self.done or fresh:
            print(f"running the pipeline, {what} ...", flush=True)
            wall, rss, result = measure([sys.executable, os.path.join(ROOT, "bench", "pipeline_run.py"),
                                         "--pipeline-root", os.path.join(self.root, "root"),
                                         "--serving-dir", os.path.join(self.root, "serving"),
                                         *self.pipeline_flags, *flags])
            run = {"flags": list(flags), "wall_s": wall, "peak_rss_mb": rss, **result,
                   "trainer_s": component_seconds(result, "Trainer")}
            if fresh:
                return run
            self.done[key] = run
        return self.done[key]


def step_pipeline(runs):
    print("running the seed tutorial script ...", flush=True)
    seed_s, seed_rss, seed = measure([sys.executable, os.path.join(ROOT, "bench", "seed_tutorial.py")])
    cold = runs.run("default config, cold")
    warm = runs.run("again, nothing changed", fresh=True)
    print(f"\n{'':28} {'wall s':>8} {'x seed':>7} {'peak RSS MB':>12} {'test accuracy':>14}")
    print(f"{'seed tutorial script':28} {seed_s:8.1f} {1.0:7.2f} {seed_rss:12.0f} {seed['test_accuracy']:14.4f}")
    for name, run in (("pipeline, cold", cold), ("pipeline, re-run unchanged", warm)):
        print(f"{name:28} {run['wall_s']:8.1f} {run['wall_s'] / seed_s:7.2f} {run['peak_rss_mb']:12.0f} "
              f"{run['accuracy']:14.4f}")
    print("\nper component (cold | re-run):")
    for (name, state, seconds), (_, warm_state, warm_seconds) in zip(cold["components"], warm["components"]):
        print(f"  {name:32} {seconds:7.1f} s {state.lower():9} | {warm_seconds:7.1f} s {warm_state.lower()}")
    ratio, rss = cold["wall_s"] / seed_s, max(cold["peak_rss_mb"], warm["peak_rss_mb"])
    goals = {"cold_x_seed": ratio, "rerun_x_seed": warm["wall_s"] / seed_s, "peak_rss_mb": rss,
             "accuracy": cold["accuracy"], "pushed": cold["pushed"]}
    print(f"\ngoals: cold <= {GOAL_RATIO:g}x seed: {ratio:.2f}x; re-run <= 1x: {goals['rerun_x_seed']:.2f}x; "
          f"peak RSS <= {GOAL_RSS_MB} MB: {rss:.0f} MB; accuracy >= {GOAL_ACCURACY}: {cold['accuracy']:.4f}; "
          f"pushed: {cold['pushed']}")
    return {"seed_script": {"wall_s": seed_s, "peak_rss_mb": seed_rss, "accuracy": seed["test_accuracy"]},
            "cold": cold, "rerun": warm, "goals": goals}


def step_seeds(runs, count):
    rows = []
    for seed in seed_list(count):
        run = runs.run(f"seed {seed}", () if seed == DEFAULT_SEED else ("--seed", str(seed)))
        rows.append({"seed": seed, "accuracy": run["accuracy"], "trainer_s": run["trainer_s"],
                     "pushed": run["pushed"]})
    accuracy, trainer = stats([r["accuracy"] for r in rows]), stats([r["trainer_s"] for r in rows])
    print(f"\ndefault config, {len(rows)} seeds:\n  {'seed':>6} {'test accuracy':>14} {'Trainer s':>10}")
    for row in rows:
        print(f"  {row['seed']:>6} {row['accuracy']:14.4f} {row['trainer_s']:10.1f}")
    for name in ("min", "mean", "max"):
        print(f"  {name:>6} {accuracy[name]:14.4f} {trainer[name]:10.1f}")
    print(f"goal: accuracy >= {GOAL_ACCURACY}: min {accuracy['min']:.4f}, mean {accuracy['mean']:.4f} "
          f"({sum(r['accuracy'] >= GOAL_ACCURACY for r in rows)} of {len(rows)} seeds reach it)")
    return {"runs": rows, "accuracy": accuracy, "trainer_s": trainer}


def step_cnn(runs, latency_requests):
    import model_compare
    columns = {}
    for name, flags in (("mlp", ()), ("cnn", ("--architecture", "cnn"))):
        run = runs.run(f"{name}, seed {DEFAULT_SEED}", flags)
        model_dir = run["pushed_path"] if run["pushed"] else run["trainer_model"]
        if not run["pushed"]:
            print(f"  {name}: not pushed (blessed: {run['blessed']}); measuring the Trainer's model", flush=True)
        columns[name] = {"model_dir": model_dir, "pushed": run["pushed"], "pipeline_accuracy": run["accuracy"],
                         "trainer_s": run["trainer_s"]}
    columns = model_compare.compare(columns, latency_requests)
    print("\nthe seed's MLP beside the CNN (seed %d):" % DEFAULT_SEED)
    print(model_compare.format_table(columns))
    return columns


def step_tune(runs, trials):
    run = runs.run(f"tuned, {trials} trials", ("--tune", "--tune-trials", str(trials)))
    print(f"\ntuned ({trials} trials): test accuracy {run['accuracy']:.4f}, Trainer {run['trainer_s']:.1f} s, "
          f"Tuner {component_seconds(run, 'Tuner') or 0:.1f} s, pushed: {run['pushed']}")
    print("  " + (describe(run["hparams"]) if run["hparams"] else "no hparams.json in the Trainer's model_run"))
    return {"trials": trials, "tuner_s": component_seconds(run, "Tuner"), **run}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False,  # --seed: a pipeline flag
                                     epilog="Other arguments: `digits run` flags for every pipeline run.")
    parser.add_argument("--only", type=parse_only, default=list(STEPS),
                        help=f"comma-separated steps among {','.join(STEPS)} (default: all)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the default config (default 3: 42, 1, 2)")
    parser.add_argument("--tune-trials", type=int, default=4, help="the Tuner's trial budget (default 4)")
    parser.add_argument("--latency-requests", type=int, default=500,
                        help="single-image Predicts timed per model after 50 of warm-up (default 500)")
    parser.add_argument("--root", help="keep the pipeline root and served models here (default: a temp dir, "
                        "deleted at the end); runs already in it are cached, so 'cold' is not cold then")
    parser.add_argument("--output", default=os.path.join(ROOT, "artifacts", "bench", "pipeline.json"),
                        help="the results as JSON (default artifacts/bench/pipeline.json)")
    args, pipeline_flags = parser.parse_known_args(argv)
    try:
        config.from_sources(pipeline_flags)  # a typo fails now, not after the seed script's minutes
    except (config.ConfigError, SystemExit) as error:
        parser.error(f"pipeline flags {pipeline_flags}: {error}")
    return args, pipeline_flags


def main(argv=None):
    args, pipeline_flags = parse_args(argv)
    load_average = os.getloadavg()[0]
    if load_average > 0.5:
        print(f"WARNING: load average {load_average:.1f} before starting: other work will skew the figures", flush=True)
    report = {"cpus": os.cpu_count(), "load_average_at_start": load_average, "pipeline_flags": pipeline_flags,
              "steps": [s for s in STEPS if s in args.only]}
    work = args.root or tempfile.mkdtemp(prefix="digits-bench-")
    try:
        runs = Runs(os.path.abspath(work), pipeline_flags)
        for step in report["steps"]:
            report[step] = {"pipeline": lambda: step_pipeline(runs), "seeds": lambda: step_seeds(runs, args.seeds),
                            "cnn": lambda: step_cnn(runs, args.latency_requests),
                            "tune": lambda: step_tune(runs, args.tune_trials)}[step]()
            write(args.output, report)
    finally:
        if not args.root:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nwritten: {args.output}")


def write(output, report):
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
