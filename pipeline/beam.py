"""Beam presets: the only change between running Beam on this machine, on Dataflow or on Flink.

ExampleGen, StatisticsGen, Transform and Evaluator are Beam pipelines; where they run is decided by
the arguments composed here from the config (``PipelineConfig.beam_pipeline_args`` appends the
user's extra ``beam_args``). Kept apart from config.py so that file stays a list of fields.
"""
from __future__ import annotations

from typing import Any, List, Tuple

PRESETS = ("direct", "dataflow", "flink")


def problems(config: Any) -> List[str]:
    """What is wrong with the config's Beam fields, one sentence each (empty when usable)."""
    found = []
    if config.beam_preset not in PRESETS:
        found.append(f"beam_preset must be one of {', '.join(PRESETS)}, got {config.beam_preset!r}")
    if config.beam_direct_workers < 0:
        found.append(f"beam_direct_workers must be 0 (one per CPU) or a positive count, got {config.beam_direct_workers}")
    if config.beam_preset == "dataflow" and not config.dataflow_project:
        found.append("beam_preset=dataflow needs a Google Cloud project: set --dataflow-project or DIGITS_DATAFLOW_PROJECT")
    if config.beam_preset == "flink" and not config.flink_master:
        found.append("beam_preset=flink needs the Flink master: set --flink-master or DIGITS_FLINK_MASTER")
    return found


def preset_args(config: Any) -> Tuple[str, ...]:
    """The Beam arguments of ``config.beam_preset`` (assumed valid: the config checked it)."""
    if config.beam_preset == "dataflow":
        temp_location = config.dataflow_temp_location or config.kfp_pipeline_root.rstrip("/") + "/beam-tmp"
        return ("--runner=DataflowRunner", f"--project={config.dataflow_project}",
                f"--region={config.dataflow_region}", f"--temp_location={temp_location}",
                f"--setup_file={config.dataflow_setup_file}")
    if config.beam_preset == "flink":
        args = ("--runner=FlinkRunner", f"--flink_master={config.flink_master}",
                f"--environment_type={config.flink_environment_type}")
        if config.flink_environment_config:
            args += (f"--environment_config={config.flink_environment_config}",)
        return args
    # direct: one worker runs in memory, in this process (fast to start, what tests use); more
    # workers, or 0 (Beam's "one per CPU"), run in separate processes so they use several cores.
    workers = config.beam_direct_workers
    mode = "in_memory" if workers == 1 else "multi_processing"
    return (f"--direct_running_mode={mode}", f"--direct_num_workers={workers}")
