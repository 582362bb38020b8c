"""The ``digits`` command.

    digits run                       # the whole pipeline on the embedded defaults
    digits run --epochs 1 --train-examples 5000 --accuracy-floor 0.9
    DIGITS_SERVING_DIR=/srv/models digits run
    digits run --verbose             # TFX's, absl's and TensorFlow's output live instead of in the run's run.log
    digits run --help                # every option by group, its default and its environment variable
    digits predict seven.png         # ask the model server which digit an image shows
    digits predict --help
    digits serve                     # the model server on what `digits run` pushed (make serve)
    digits ui                        # the draw-a-digit page on :8080, a client of the model server's REST API
    digits demo                      # both: the model server and the page (make demo)
    digits kfp                       # compile for Kubeflow Pipelines v2 into build/kfp (make kfp)
    digits kfp --beam-preset dataflow --dataflow-project my-project
    digits schedule                  # a KFP recurring run of build/kfp/digits_pipeline.json at --schedule
    digits schedule --local          # runs on this machine at --schedule and/or --run-on-open-span (make schedule-local)
    digits runs                      # the run history from ML Metadata (--json for scripts)
    digits data                      # spans of labelled digits; digits data add PATH / seal / drop SPAN
"""
from __future__ import annotations

import contextlib
import os

# TFX 1.16 and tensorflow-transform need Keras 2 (tf_keras); set it before TensorFlow is imported so
# that the trainer, the exported model and every test agree on one Keras.
os.environ["TF_USE_LEGACY_KERAS"] = "1"

import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import Optional, Sequence  # noqa: E402

from pipeline import config as config_lib  # noqa: E402
from pipeline import config_flags  # noqa: E402

# Errors whose message already says what is wrong and how to fix it: shown without a traceback.
_USER_ERRORS = ("ConfigError", "DataSourceError", "DataAnomaliesError")


def _user_error(error: BaseException) -> Optional[BaseException]:
    """The first error in the cause chain that was raised for the user to read, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ in _USER_ERRORS:
            return error
        error = error.__cause__ or error.__context__
    return None


def _run(argv: Sequence[str]) -> int:
    from absl import logging

    try:
        config = config_lib.from_sources(argv)
    except config_lib.ConfigError as error:
        print(f"digits run: {error}", file=sys.stderr)
        return 2
    from pipeline.runs import run_lock  # one run at a time per pipeline root (digits schedule --local too)

    lock = run_lock.RunLock(config.pipeline_root)
    try:
        stale = lock.acquire(shlex.join(["digits", "run", *argv]))
    except run_lock.RunLockHeld as held:
        print(f"digits run: refused: {held}; outcome: error", file=sys.stderr)
        return 1
    if stale:
        print(f"digits run: an earlier run ended without releasing the run lock ({stale.describe()}); "
              "its record was replaced", file=sys.stderr)
    try:
        with lock.released_on_sigterm():
            return _run_locked(config, stale)
    finally:
        lock.release()


def _run_locked(config, stale=None) -> int:
    """The run, with the run lock held: first what crashed runs left behind (pipeline/runs/crash_cleanup.py)."""
    from absl import logging

    logging.set_verbosity(logging.INFO)
    warnings.filterwarnings("ignore", category=FutureWarning, module="google")  # Python 3.10 notices
    from pipeline.runs import console, outcomes

    log_path = None
    if config.verbose:
        quiet = contextlib.nullcontext()
    else:  # one line per component and epoch here; the libraries' output goes to the run's log
        log_path = console.log_path(config.pipeline_root)
        print(f"digits run: the full log is in {log_path}", flush=True)
        quiet = console.quiet(log_path)
    cleaned = None
    try:
        with quiet as shown:
            from pipeline.runs import crash_cleanup  # imports TFX's file I/O (TensorFlow): inside the quiet part

            cleaned = crash_cleanup.clean(config, stale)
            for line in cleaned.lines():
                print(line, file=shown or sys.stdout, flush=True)
                logging.info("%s", line)
            from pipeline.runs import local_runner  # imports TensorFlow, whose C++ lines go to the log too

            summary = local_runner.run(config)
    except Exception as error:  # noqa: BLE001 - shown plainly when it is the user's to fix
        known = _user_error(error)
        if known is None:
            if log_path:
                print(f"digits run failed; the full log is in {log_path}", file=sys.stderr)
            raise
        outcome = "stopped_by_data_validation" if type(known).__name__ == "DataAnomaliesError" else "error"
        path = outcomes.write(config.pipeline_root, time.strftime("stopped-%Y%m%dT%H%M%SZ", time.gmtime()),
                              outcome, message=str(known), cleaned=cleaned and cleaned.record())
        print(f"\ndigits run stopped: {known}\nEarlier artifacts, the serving directory and earlier metadata "
              f"are intact.\noutcome: {outcome} ({path})", file=sys.stderr)
        if log_path:
            print(f"log: {console.move_log(log_path, os.path.dirname(path))}", file=sys.stderr)
        return outcomes.EXIT_CODES[outcome]
    outcome = outcomes.of_summary(summary)
    summary = outcomes.complete_report(config.pipeline_root, summary)  # the copy with the component times
    path = outcomes.write(config.pipeline_root, summary.run_id, outcome, summary,
                          cleaned=cleaned and cleaned.record())
    print(summary.render(components=log_path is None))  # quiet: the components were shown as they ran
    print(f"outcome: {outcome} ({path})")
    if log_path:
        print(f"log: {console.move_log(log_path, os.path.dirname(path))}")
    return outcomes.EXIT_CODES[outcome]


def _predict(argv: Sequence[str]) -> int:
    from serving.client import predict_cli  # lazy: predict needs neither TFX nor TensorFlow for REST

    return predict_cli.main(argv)


def _serve(argv: Sequence[str]) -> int:
    from pipeline import serve

    return serve.main(argv)


def _ui(argv: Sequence[str]) -> int:
    from web import server  # lazy: the page needs neither TFX nor TensorFlow

    return server.main(argv, prog="digits ui")


def _demo(argv: Sequence[str]) -> int:
    from pipeline import demo

    return demo.main(argv)


def _kfp(argv: Sequence[str]) -> int:
    from pipeline import kubeflow_v2_runner

    return kubeflow_v2_runner.main(argv)


def _schedule(argv: Sequence[str]) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)  # kfp.Client's notice about KFP versions
    if "--local" in argv:  # runs on this machine, no Kubeflow
        from pipeline.schedule import local_scheduler

        return local_scheduler.main(argv)
    from pipeline.schedule import recurring_run

    return recurring_run.main(argv)


def _runs(argv: Sequence[str]) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)  # google-api-core's notices about Python 3.10
    from pipeline.runs import run_history

    return run_history.main(argv)


def _data(argv: Sequence[str]) -> int:
    from pipeline import data_cli  # lazy: listing spans needs no TensorFlow

    return data_cli.main(argv)


# Commands that parse their own arguments (so that `digits predict --help` is the client's own help).
_PASS_THROUGH = {
    "kfp": (_kfp, "compile the pipeline into a Kubeflow Pipelines v2 spec in build/kfp "
                  "(takes run's options and --output-dir)"),
    "schedule": (_schedule, "create a Kubeflow Pipelines recurring run of the compiled spec at --schedule "
                            "(takes run's options and --spec); with --local, run on this machine at --schedule "
                            "and/or --run-on-open-span"),
    "runs": (_runs, "the run history from ML Metadata: spans, examples, accuracy, blessed, pushed version "
                    "(takes run's options and --json)"),
    "data": (_data, "list, add, seal and drop spans of labelled digits that runs train on besides MNIST "
                    "(see digits data --help)"),
    "predict": (_predict, "ask the model server which digit each image shows (see digits predict --help)"),
    "serve": (_serve, "serve the pushed model with TF Serving's REST (:8501) and gRPC (:8500) APIs "
                      "(takes tensorflow_model_server's flags)"),
    "ui": (_ui, "the draw-a-digit page on :8080, a client of the model server (see digits ui --help)"),
    "demo": (_demo, "serve the pushed model and the draw-a-digit page together; Ctrl-C stops both "
                    "(takes serve's flags and --ui-port)"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in _PASS_THROUGH:
        return _PASS_THROUGH[argv[0]][0](argv[1:])
    # One-line argparse errors, for `digits run` too (subparsers take their parent's class).
    parser = config_flags.OneLineParser(prog="digits", description="The digits MNIST pipeline and its tools.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run_parser = commands.add_parser(
        "run", allow_abbrev=False, usage="%(prog)s [options]", help="run the TFX pipeline (LocalDagRunner)",
        description="Run the TFX pipeline locally. Options override DIGITS_* environment variables, "
                    "which override the defaults.")
    config_lib.add_arguments(run_parser)
    for name, (_, text) in _PASS_THROUGH.items():
        commands.add_parser(name, add_help=False, help=text)
    args, _ = parser.parse_known_args(argv)
    if args.command == "run":
        return _run(argv[1:])
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
