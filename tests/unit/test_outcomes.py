"""The outcome table of `digits run` (pipeline/runs/outcomes.py): each outcome's exit code and summary.json."""
import json
import os
import re

import pytest

os.environ["TF_USE_LEGACY_KERAS"] = "1"

from components.validation.example_validator import DataAnomaliesError  # noqa: E402
from pipeline import cli, config as config_lib  # noqa: E402
from pipeline.runs import outcomes  # noqa: E402
from pipeline.runs.run_summary import ComponentRun, RunSummary  # noqa: E402


def summary(config, *, blessed, pushed, pushed_new):
    verdict = {"accuracy": 0.97, "example_count": 100, "blessed": blessed, "has_baseline": False,
               "reasons": [] if blessed else ["accuracy 0.9700 is below the floor 0.9900"],
               "sources": {"mnist": {"example_count": 100, "accuracy": 0.97, "baseline_accuracy": None}}}
    return RunSummary(run_id="2026-12-07T00:00:00.1", components=[ComponentRun("Trainer", "COMPLETE", 3.0)],
                      verdict=verdict, pushed=pushed, pushed_version="17" if pushed else None,
                      pushed_path=os.path.join(config.model_serving_dir, "17") if pushed else None,
                      report_path=None, config=config, pushed_new=pushed_new)


@pytest.mark.parametrize("blessed, pushed, pushed_new, outcome, line", [
    (True, True, True, "pushed", "pushed: version 17 at"),
    (True, True, False, "already_served", "pushed: nothing new; version 17"),
    (False, False, False, "not_blessed", "pushed: no;"),
])
def test_a_completed_run_exits_0_and_summary_json_says_which_outcome(tmp_path, monkeypatch, capsys, blessed, pushed,
                                                                      pushed_new, outcome, line):
    config = config_lib.PipelineConfig(pipeline_root=str(tmp_path / "p"), serving_dir=str(tmp_path / "s"))
    monkeypatch.setattr(config_lib, "from_sources", lambda argv: config)
    from pipeline.runs import local_runner
    monkeypatch.setattr(local_runner, "run", lambda c: summary(c, blessed=blessed, pushed=pushed,
                                                                pushed_new=pushed_new))
    assert cli.main(["run"]) == 0
    out = capsys.readouterr().out
    assert line in out and f"outcome: {outcome} (" in out
    path = outcomes.summary_path(config.pipeline_root, "2026-12-07T00:00:00.1")
    record = json.loads(open(path).read())
    assert record["outcome"] == outcome and record["exit_code"] == 0 and record["blessed"] == blessed
    assert record["version"] == (17 if pushed else None) and record["components"]["Trainer"]["state"] == "COMPLETE"
    assert record["sources"]["mnist"]["accuracy"] == 0.97 and "significance" in record
    assert not os.path.exists(path + ".tmp")


def test_data_that_breaks_the_schema_has_its_own_exit_code(tmp_path, monkeypatch, capsys):
    config = config_lib.PipelineConfig(pipeline_root=str(tmp_path / "p"), serving_dir=str(tmp_path / "s"))
    monkeypatch.setattr(config_lib, "from_sources", lambda argv: config)
    from pipeline.runs import local_runner

    def stopped(c):
        try:
            raise DataAnomaliesError("split 'test': feature 'label' has a value out of range")
        except DataAnomaliesError as e:
            raise RuntimeError("component ExampleValidator failed") from e
    monkeypatch.setattr(local_runner, "run", stopped)
    assert cli.main(["run"]) == 3
    err = capsys.readouterr().err
    assert "feature 'label'" in err and "outcome: stopped_by_data_validation" in err
    (run,) = os.listdir(tmp_path / "p" / "runs")
    record = json.loads((tmp_path / "p" / "runs" / run / "summary.json").read_text())
    assert record["outcome"] == "stopped_by_data_validation" and record["exit_code"] == 3
    assert "feature 'label'" in record["message"]


def test_the_documented_table_is_the_table_the_code_uses():
    rows = dict(re.findall(r"^\| ``(\w+)``\s*\|\s*(\d+)\s*\|", outcomes.__doc__, re.M))
    assert {name: int(code) for name, code in rows.items()} == outcomes.EXIT_CODES
