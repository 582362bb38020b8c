"""The per-source gate run by TFMA itself: our eval config with the source floors the Evaluator
adds, on tf.Examples that carry both models' predictions (TFMA's model-agnostic evaluation, so no
SavedModel is needed), then read back as the report and the summary read it; the drops are judged
by the paired test (components/evaluation/significance.py) on the same rows."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx.types import artifact_utils, standard_artifacts

from components.evaluation import significance, source_slices
from components.evaluation.eval_config import SourceGate, make_eval_config, with_source_thresholds
from components.evaluation.evaluator import count_sources
from components.report.report import _failure_reasons

GATE = SourceGate(mnist_floor=0.9, max_accuracy_drop=0.005, max_new_data_drop=0.005, min_slice_examples=50)


def _example(label, source, candidate_right, baseline_right):
    def probabilities(right):
        p = np.full(10, 0.01)
        p[label if right else (label + 1) % 10] = 0.91
        return tf.train.Feature(float_list=tf.train.FloatList(value=p.tolist()))

    feature = {"label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
               "source": tf.train.Feature(bytes_list=tf.train.BytesList(value=[source.encode()])),
               "candidate": probabilities(candidate_right), "baseline": probabilities(baseline_right)}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write(path, rows):
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i, (source, candidate_right, baseline_right) in enumerate(rows):
            writer.write(_example(i % 10, source, candidate_right, baseline_right))


def _rows(source, n, candidate_wrong, baseline_wrong=0):
    return [(source, i >= candidate_wrong, i >= baseline_wrong) for i in range(n)]


@pytest.fixture(autouse=True)
def _baseline_by_prediction_key(monkeypatch):
    """TFMA counts a baseline only when given two SavedModels; here the baseline's predictions are a
    feature (model-agnostic), so tell its config step that a baseline is there."""
    from tensorflow_model_analysis.api import model_eval_lib
    from tensorflow_model_analysis.utils import config_util

    monkeypatch.setattr(model_eval_lib, "_update_eval_config_with_defaults",
                        lambda eval_config, eval_shared_model: config_util.update_eval_config_with_defaults(
                            eval_config, has_baseline=True, rubber_stamp=False))


def _evaluate(tmp_path, rows):
    data = tmp_path / "Split-test"
    data.mkdir()
    _write(str(data / "data.gz"), rows)
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path)
    examples.split_names = artifact_utils.encode_split_names(["test"])
    counts = count_sources(examples, ["test"])
    config = with_source_thresholds(make_eval_config(0.9), counts, GATE)
    del config.model_specs[:]
    config.model_specs.add(name="candidate", label_key="label", prediction_key="candidate")
    config.model_specs.add(name="baseline", label_key="label", prediction_key="baseline", is_baseline=True)
    out = str(tmp_path / "evaluation")
    tfma.run_model_analysis(eval_config=config, data_location=str(data / "data.gz"), file_format="tfrecords",
                            output_path=out)
    return counts, tfma.load_validation_result(out), out


def _judge(rows):
    sources, candidate, baseline = (np.array(column) for column in zip(*rows))
    return significance.judge(candidate, baseline, sources, GATE.significance_level, mnist_source="mnist",
                              min_slice_examples=GATE.min_slice_examples, max_drop=GATE.max_accuracy_drop,
                              max_new_data_drop=GATE.max_new_data_drop)


def test_a_new_source_that_drops_fails_the_paired_test_named_by_its_slice(tmp_path):
    # feedback: 10 of 100 newly wrong, a drop of 0.1; overall only 10 of 3120 (within 0.005);
    # import: all wrong for both models, too few to be gated anyway.
    rows = _rows("mnist", 3000, 0) + _rows("feedback", 100, 10) + _rows("import", 20, 20, baseline_wrong=20)
    counts, validation, out = _evaluate(tmp_path, rows)
    assert counts == {"mnist": 3000, "feedback": 100, "import": 20}
    assert validation.validation_ok, _failure_reasons(validation)  # TFMA holds the floors only
    verdict = _judge(rows)
    assert list(verdict["slices"]) == ["overall", "feedback", "mnist"]  # import: 20 < 50, not gated
    assert verdict["reasons"] == ["source 'feedback': accuracy 0.9000 vs baseline 1.0000, a significant drop "
                                  "(McNemar p = 0.002 < 0.05, allowed drop 0.005)"]
    metrics = source_slices.source_metrics(out)
    assert metrics["feedback"] == {"accuracy": pytest.approx(0.9), "baseline_accuracy": pytest.approx(1.0),
                                   "example_count": 100}
    assert metrics["import"]["accuracy"] == pytest.approx(0.0)  # measured, not gated: 20 < 50


def test_mnist_below_its_own_floor_fails_even_within_the_allowed_drop(tmp_path):
    rows = _rows("mnist", 200, 30, baseline_wrong=30) + _rows("feedback", 2000, 0)
    _, validation, _ = _evaluate(tmp_path, rows)
    assert _failure_reasons(validation) == ["source 'mnist': accuracy 0.8500 is below the floor 0.9000"]


def test_small_new_slices_do_not_block_and_good_runs_bless(tmp_path):
    rows = _rows("mnist", 3000, 0) + _rows("feedback", 10, 10)  # dropped by 1.0, but 10 < 50: not gated
    rows += _rows("import", 60, 0)  # gated, and as good as the baseline
    _, validation, _ = _evaluate(tmp_path, rows)
    assert validation.validation_ok, _failure_reasons(validation)
    assert not validation.missing_slices
    assert _judge(rows)["blessed"]
