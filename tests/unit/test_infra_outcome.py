"""A blessed model the InfraValidator did not bless: its own outcome and exit code, and the summary says why."""
import json
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

from pipeline import cli, config as config_lib  # noqa: E402
from pipeline.runs import outcomes  # noqa: E402
from pipeline.runs.run_summary import ComponentRun, RunSummary  # noqa: E402

REFUSED = ("the model server refused the model (exit code 1): NOT_FOUND: MetaGraphDef associated with tags 'serve' "
           "could not be found in SavedModel")


def summary(config, infra):
    return RunSummary(run_id="2026-12-07T00:00:00.2", components=[ComponentRun("InfraValidator", "COMPLETE", 9.0)],
                      verdict={"accuracy": 0.97, "example_count": 100, "blessed": True, "has_baseline": False},
                      pushed=False, pushed_version=None, pushed_path=None, report_path=None, config=config,
                      infra=infra)


def test_a_model_that_does_not_serve_is_not_servable_exit_4_with_the_reason(tmp_path, monkeypatch, capsys):
    config = config_lib.PipelineConfig(pipeline_root=str(tmp_path / "p"), serving_dir=str(tmp_path / "s"))
    monkeypatch.setattr(config_lib, "from_sources", lambda argv: config)
    from pipeline.runs import local_runner
    infra = {"blessed": False, "reason": REFUSED, "canary_calls": 0}
    monkeypatch.setattr(local_runner, "run", lambda c: summary(c, infra))
    assert cli.main(["run"]) == 4
    out = capsys.readouterr().out
    assert f"InfraValidator: {REFUSED}" in out and "pushed: no;" in out and "outcome: not_servable (" in out
    record = json.loads(open(outcomes.summary_path(config.pipeline_root, "2026-12-07T00:00:00.2")).read())
    assert record["outcome"] == "not_servable" and record["exit_code"] == 4 and record["infra_validation"] == infra


def test_a_model_the_evaluator_held_back_stays_not_blessed_whatever_the_infra_validator_said(tmp_path):
    config = config_lib.PipelineConfig(pipeline_root=str(tmp_path / "p"), serving_dir=str(tmp_path / "s"))
    held_back = summary(config, {"blessed": False, "reason": REFUSED, "canary_calls": 0})
    held_back.verdict = {**held_back.verdict, "blessed": False, "reasons": ["accuracy below the floor"]}
    assert outcomes.of_summary(held_back) == "not_blessed"
    served = summary(config, {"blessed": True, "reason": "", "canary_calls": 6})
    assert "InfraValidator: served by the model server; 6 canary calls (gRPC and REST" in served.render()
