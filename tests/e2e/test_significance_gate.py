"""Issue 15's gate that knows noise from regression, on real runs on small data: after a first run pushes,
the same config trained with another seed is blessed against it by the paired test (whatever its point
drop), and a clearly worse model (one epoch, a hidden layer of 4 units) is not, a p-value its reason."""
import dataclasses
import json
import os

import pytest

from pipeline.runs import local_runner
from pipeline.config import PipelineConfig
from tests.conftest import SMALL_RUN
from tests.e2e.test_pipeline import snapshot


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("significance_gate")
    config = PipelineConfig(pipeline_root=str(root / "root"), serving_dir=str(root / "serving"),
                            data_root=str(root / "empty"), **SMALL_RUN)
    summary = local_runner.run(config)
    assert summary.pushed and summary.pushed_new, summary.render()
    assert summary.verdict["significance"] is None  # no baseline yet: the floors alone
    return config


def _significance_file(config):
    """The newest Evaluator execution's significance.json."""
    evaluation = os.path.join(config.pipeline_root, "Evaluator", "evaluation")
    newest = max((name for name in os.listdir(evaluation) if name.isdigit()), key=int)
    with open(os.path.join(evaluation, newest, "significance.json")) as f:
        return json.load(f)


def test_another_seed_is_blessed_and_a_clearly_worse_model_is_not(first_run):
    config = first_run
    reseeded = local_runner.run(dataclasses.replace(config, seed=config.seed + 1))
    verdict = reseeded.verdict
    assert verdict["has_baseline"] and verdict["blessed"] and reseeded.pushed_new, reseeded.render()
    overall = verdict["significance"]["slices"]["overall"]
    assert overall["n"] == SMALL_RUN["test_examples"] and overall["p_value"] >= config.significance_level
    assert set(verdict["significance"]["slices"]) == {"overall", "mnist"}
    assert overall["diff"] == pytest.approx(verdict["accuracy"] - verdict["baseline_accuracy"], abs=1e-6)
    assert _significance_file(config) == verdict["significance"]
    text = reseeded.render()
    assert "paired test against the baseline" in text and "  overall: " in text, text
    print(f"\nanother seed: {overall['accuracy']:.4f} vs {overall['baseline_accuracy']:.4f}, "
          f"b={overall['b']} c={overall['c']} p={overall['p_value']:.4g} ci={overall['ci']}")

    served = snapshot(config.serving_dir)
    worse = local_runner.run(dataclasses.replace(config, seed=config.seed + 1, epochs=1, hidden_units=(4,),
                                                 accuracy_floor=0.1))  # the floor passes: the paired test decides
    verdict = worse.verdict
    overall = verdict["significance"]["slices"]["overall"]
    assert not verdict["blessed"] and not worse.pushed, worse.render()
    assert overall["significant_drop"] and overall["p_value"] < config.significance_level
    assert any(r.startswith("overall: accuracy ") and "a significant drop (McNemar p = " in r
               for r in verdict["reasons"]), verdict["reasons"]
    assert any(r.startswith("source 'mnist': accuracy ") for r in verdict["reasons"]), verdict["reasons"]
    assert "blessed: no — overall: accuracy" in worse.render()
    with open(worse.report_artifact_path or worse.report_path) as f:
        page = f.read()
    assert "the paired test per gated slice" in page and "significant drop" in page
    assert snapshot(config.serving_dir) == served
    print(f"worse model: {overall['accuracy']:.4f} vs {overall['baseline_accuracy']:.4f}, "
          f"b={overall['b']} c={overall['c']} p={overall['p_value']:.4g} ci={overall['ci']}")
