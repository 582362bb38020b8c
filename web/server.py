"""``digits ui`` / ``python -m web``: the draw-a-digit app on uvicorn.

    digits ui                                      # http://localhost:8080, model server at http://localhost:8501
    digits ui --port 9000 --server http://models:8501 --model-name mnist
    DIGITS_UI_SERVER=http://tf-serving:8501 python -m web
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from web import config as config_lib


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m web", announce: bool = True) -> int:
    """``announce=False`` (``digits demo``, which prints the one URL once everything answers): no URL line
    and uvicorn logs warnings and errors only, not its own "running on" URL or each request."""
    try:
        config = config_lib.from_sources(sys.argv[1:] if argv is None else list(argv), prog=prog)
    except config_lib.ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    import uvicorn

    from web.app import create_app

    try:
        app = create_app(config)  # reads the feedback token file, if one is given
    except config_lib.ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    shown = "localhost" if config.host in ("0.0.0.0", "::") else config.host
    if announce:
        print(f"{prog}: http://{shown}:{config.port} (model {config.model_name!r} on {config.server})", flush=True)
    try:
        uvicorn.run(app, host=config.host, port=config.port,
                    log_level="info" if announce else "warning",
                    timeout_graceful_shutdown=5)
    except SystemExit as e:  # e.g. the port is taken: uvicorn has logged why
        return e.code if isinstance(e.code, int) else 1
    except OSError as e:
        print(f"{prog}: cannot listen on {config.host}:{config.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0
