"""``python -m serving``: the same as ``digits-model-server``.

Run by a Python without the project's packages (the system python3 instead of .venv/bin/python), the
import of a dependency fails: that ends with one line that says which and what to run instead.
Help piped into ``head`` ends without a traceback."""
import os
import sys


def _missing(error: ModuleNotFoundError) -> bool:
    """A third-party module is missing (not one of ours, which would be a bug worth its traceback)."""
    return bool(error.name) and error.name.split(".")[0] != "serving"


def _exit_missing(error: ModuleNotFoundError) -> None:
    sys.exit(f"python -m serving: this Python ({sys.executable}) cannot import {error.name!r}, which the model "
             f"server needs. Run it with the project's virtualenv (.venv/bin/python -m serving, or "
             f".venv/bin/digits-model-server; `make setup` creates it), or install its packages into this "
             f"Python: pip install -r requirements.lock -e .")


try:
    from serving.model_servers.main import main
except ModuleNotFoundError as error:
    if not _missing(error):
        raise
    _exit_missing(error)

try:
    sys.exit(main())
except ModuleNotFoundError as error:  # a dependency imported later, e.g. TensorFlow before the first load
    if not _missing(error):
        raise
    _exit_missing(error)
except BrokenPipeError:  # `python -m serving --help | head`: the reader left; no traceback for that
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail again
    sys.exit(1)
