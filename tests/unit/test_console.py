"""The console lines of a quiet `digits run` and the fd-level redirect that sends the rest to the log."""
import io
import logging
import os
import subprocess
import sys

from pipeline import config as config_lib  # noqa: F401 - config_flags is imported through config
from pipeline import config_flags


from pipeline.runs import console
def test_component_line_names_the_event_and_the_time():
    assert console.component_line("Trainer", "started") == "  started  Trainer"
    assert console.component_line("Trainer", "finished", 12.34) == "  finished " + "Trainer".ljust(32) + "   12.3 s"


def test_epoch_line_puts_training_metrics_before_validation_ones():
    logs = {"val_accuracy": 0.9, "accuracy": 0.8, "val_loss": 0.3, "loss": 0.5}
    assert console.epoch_line(2, 3, logs) == (
        "  Trainer epoch 2/3: loss 0.5000, accuracy 0.8000, val_loss 0.3000, val_accuracy 0.9000")
    assert console.epoch_line(1, 1, {"loss": 1.0, "accuracy": 0.5}) == "  Trainer epoch 1/1: loss 1.0000, accuracy 0.5000"


def _record(msg, *args):
    return logging.LogRecord("absl", logging.INFO, __file__, 1, msg, args, None)


def test_component_records_become_start_and_finish_lines(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(console, "_console", out)
    handler = console.ComponentLines()
    for record in [_record("Component %s is running.", "Transform"), _record("A cached execution %d is used.", 7),
                   _record("Component %s is finished.", "Transform"), _record("Component %s is running.", "Trainer"),
                   _record("Running launcher for %s", "node_info {...}"), _record("Component %s is finished.", "Trainer")]:
        handler.emit(record)
    lines = out.getvalue().splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["started", "Transform"], ["cached", "Transform"], ["started", "Trainer"], ["finished", "Trainer"]]
    assert lines[1].endswith(" s") and lines[3].endswith(" s")


def test_without_a_console_nothing_is_printed(capsys):
    assert console.stream() is None
    console.show("never shown")
    assert capsys.readouterr() == ("", "")


def test_quiet_sends_fds_1_and_2_to_the_log_and_console_lines_to_the_real_stdout(tmp_path, capfd, monkeypatch):
    path = console.log_path(str(tmp_path))
    assert path.startswith(str(tmp_path / "runs")) and path.endswith("run.log")
    absl_logger = logging.getLogger("absl")
    # `digits run` sets absl's verbosity to INFO; setLevel (not the attribute) so that logging's cache of
    # isEnabledFor answers, kept from earlier tests, is cleared too.
    previous = absl_logger.level
    absl_logger.setLevel(logging.INFO)
    try:
        with console.quiet(path):
            os.write(2, b"E0000 Unable to register cuDNN factory\n")  # as TensorFlow's C++ code writes
            print("a library's print")
            print("a warning", file=sys.stderr)
            absl_logger.info("Component %s is running.", "Pusher")
            console.show("a console line")
    finally:
        absl_logger.setLevel(previous)
    assert console.stream() is None
    out, err = capfd.readouterr()
    assert out.splitlines() == ["  started  Pusher", "a console line"] and err == ""
    with open(path) as f:
        log = f.read()
    assert "Unable to register cuDNN factory" in log and "a library's print" in log and "a warning" in log


def test_move_log_puts_the_log_in_the_runs_own_directory(tmp_path):
    path = console.log_path(str(tmp_path))
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("noise")
    run_dir = tmp_path / "runs" / "2026-12-07T00:30:00.000001"
    run_dir.mkdir()
    assert console.move_log(path, str(run_dir)) == str(run_dir / "run.log")
    assert (run_dir / "run.log").read_text() == "noise" and os.listdir(tmp_path / "runs") == [run_dir.name]


def test_verbose_is_a_flag_and_an_environment_variable():
    assert config_flags.from_sources(["--verbose"]).verbose is True
    assert config_flags.from_sources(["--verbose", "false", "--epochs", "1"]).verbose is False
    assert config_flags.from_sources([], {"DIGITS_VERBOSE": "true"}).verbose is True
    assert config_flags.from_sources([], {}).verbose is False


def test_redirected_puts_child_processes_in_the_log_and_gives_the_chosen_console(tmp_path, capfd):
    """`digits serve`'s form: the console is the original stderr; children inherit the log as 1 and 2."""
    path = console.command_log_path(str(tmp_path), "serve")
    assert os.path.dirname(path) == str(tmp_path / "logs") and os.path.basename(path).startswith("serve-")
    with console.redirected(path, console_fd=2) as terminal:
        subprocess.run([sys.executable, "-c", "import sys; print('child out'); print('child err', file=sys.stderr)"],
                       check=True)
        os.write(2, b"I tensorflow/core/util/port.cc:113] oneDNN custom operations are on.\n")
        terminal.write("digits serve: a line of ours\n")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "digits serve: a line of ours\n")
    with open(path) as f:
        log = f.read()
    assert "child out" in log and "child err" in log and "oneDNN" in log
    print("after")  # descriptors are back
    assert capfd.readouterr().out == "after\n"
