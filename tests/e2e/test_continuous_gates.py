"""Issue 14's gates on real runs on small data: after a first run on MNIST pushes a version, a span of
blank images stops the next run at validation, naming the span; a span whose labels are all wrong
(over half the training data) stops at the Evaluator's per-source gate. Neither pushes."""
import dataclasses

import numpy as np
import pytest

from components.validation.example_validator import DataAnomaliesError
from components.data.spans import SpanStore
from pipeline.runs import local_runner
from pipeline.config import PipelineConfig
from tests.conftest import SMALL_RUN
from tests.e2e.test_pipeline import mlmd_executions, snapshot


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A run on MNIST only (an empty data root) that pushes the version the later runs compare with."""
    root = tmp_path_factory.mktemp("continuous_gates")
    config = PipelineConfig(pipeline_root=str(root / "root"), serving_dir=str(root / "serving"),
                            data_root=str(root / "empty"), **SMALL_RUN)
    summary = local_runner.run(config)
    assert summary.pushed and summary.pushed_new, summary.render()
    return config, root


def _cause(error, kind):
    while not isinstance(error, kind) and (error.__cause__ or error.__context__):
        error = error.__cause__ or error.__context__
    return error


def test_a_span_of_blank_images_stops_the_run_at_validation(first_run):
    config, root = first_run
    rng = np.random.default_rng(1)
    blank = np.zeros((300, 28, 28), dtype=np.uint8)
    for image in blank:  # a few stray dots each: still blank, and each image its own split hash
        image.flat[rng.choice(784, 3, replace=False)] = 255
    span = SpanStore(str(root / "blank")).add(blank, rng.integers(0, 10, 300), source="import")
    served, transforms_before = snapshot(config.serving_dir), len(mlmd_executions(config)["Transform"])

    with pytest.raises(Exception) as raised:
        local_runner.run(dataclasses.replace(config, data_root=str(root / "blank")))
    error = _cause(raised.value, DataAnomaliesError)
    assert isinstance(error, DataAnomaliesError), raised.value
    assert (f"span {span.number} (import): 300 of 300 images are blank (100%, allowed 1%) — feature 'image'"
            in str(error))
    assert "span 0 (mnist)" not in str(error)  # MNIST's digits pass
    assert len(mlmd_executions(config)["Transform"]) == transforms_before  # stopped before Transform
    assert snapshot(config.serving_dir) == served


def test_a_span_with_wrong_labels_stops_at_the_gate(first_run, package_splits):
    """Every label one digit off, as a labelling tool with an off-by-one would send: the Trainer's
    shifts and cosine schedule shrug off randomly shuffled labels on this little data (MNIST's slice
    lost 0.8 points, p = 0.47), not a consistent wrong mapping."""
    config, root = first_run
    train = package_splits["train"]
    images, labels = train.images[20_000:23_000].reshape(-1, 28, 28), train.labels[20_000:23_000]
    wrong = (labels + 1) % 10
    assert (wrong != labels).all()
    SpanStore(str(root / "wrong")).add(images.astype(np.uint8), wrong, source="import")
    served = snapshot(config.serving_dir)

    summary = local_runner.run(dataclasses.replace(config, data_root=str(root / "wrong")))
    verdict = summary.verdict
    assert verdict["has_baseline"] and not verdict["blessed"] and not summary.pushed, summary.render()
    assert any(reason.startswith("source 'mnist': accuracy ") and "a significant drop (McNemar p = " in reason
               for reason in verdict["reasons"]), verdict
    assert verdict["sources"]["import"]["example_count"] >= config.min_slice_examples
    assert verdict["sources"]["mnist"]["example_count"] == SMALL_RUN["test_examples"]
    text = summary.render()
    assert "  source 'mnist': " in text and "  source 'import': " in text, text
    # MNIST's label shares, each moved one digit on (about a tenth each): measured, within the drift threshold
    assert "drift: label distributions within L∞ 0.30 of earlier data" in text, text
    assert snapshot(config.serving_dir) == served
