"""``digits serve``: the model server on the directory the pipeline pushes to.

    digits serve                              # gRPC :8500, REST :8501, Prometheus at /monitoring/prometheus/metrics
    digits serve --rest_api_port=9001         # any tensorflow_model_server flag; later flags win
    DIGITS_SERVING_DIR=/srv/models digits serve

The serving directory and model name come from the pipeline's config (defaults and DIGITS_* variables),
so this serves exactly what ``digits run`` with the same environment pushed.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

from pipeline import config as config_lib

MONITORING_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "serving", "model_servers", "monitoring.config")


def server_flags(config: config_lib.PipelineConfig) -> list:
    """tensorflow_model_server flags for the model the pipeline pushes, on TF Serving's default ports."""
    return ["--port=8500", "--rest_api_port=8501", f"--model_name={config.model_name}",
            f"--model_base_path={os.path.abspath(config.model_serving_dir)}",
            f"--monitoring_config_file={MONITORING_CONFIG}"]


def waits_for_first_push(config: config_lib.PipelineConfig, flags: Sequence[str]) -> bool:
    """Whether the server will wait for ``digits run`` to push a first version: nothing is pushed
    under the config's serving dir, and the flags name no other model source."""
    if any(flag.startswith(("--model_base_path", "--model_config_file")) for flag in flags):
        return False
    try:
        return not any(name.isdigit() for name in os.listdir(os.path.abspath(config.model_serving_dir)))
    except OSError:
        return True


def main(argv: Sequence[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__.strip() + "\n\nServer flags (tensorflow_model_server's):\n")
    try:
        config = config_lib.from_sources([])
    except config_lib.ConfigError as error:
        print(f"digits serve: {error}", file=sys.stderr)
        return 2
    if waits_for_first_push(config, argv):
        print(f"digits serve: no model version under {os.path.abspath(config.model_serving_dir)} yet. "
              "`make run` pushes one when the Evaluator blesses the model (its summary says why it did not); "
              "the server waits and serves the first version that appears.", file=sys.stderr)
    from serving.model_servers import main as server

    return server.main(server_flags(config) + list(argv))
