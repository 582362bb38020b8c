"""The per-source gate's thresholds, decided from the test examples each source holds."""
import tensorflow_model_analysis as tfma

from components.evaluation.eval_config import SourceGate, make_eval_config, source_slice, with_source_thresholds
from components.evaluation.source_slices import summary_lines

GATE = SourceGate(mnist_floor=0.95, max_accuracy_drop=0.005, max_new_data_drop=0.01, min_slice_examples=50)


def _thresholds(eval_config):
    """{slice: floor or None} of the accuracy metric's per-slice thresholds (each a floor only: drops
    against the baseline are the Evaluator's paired test, components/evaluation/significance.py)."""
    [accuracy] = [m for spec in eval_config.metrics_specs for m in spec.metrics
                  if m.class_name == "SparseCategoricalAccuracy"]
    result = {}
    for per_slice in accuracy.per_slice_thresholds:
        [spec] = per_slice.slicing_specs
        name = dict(spec.feature_values).get("source", "overall")
        assert not per_slice.threshold.HasField("change_threshold"), name  # no point-estimate drop threshold
        value = per_slice.threshold.value_threshold
        result[name] = value.lower_bound.value if value.HasField("lower_bound") else None
    return result


def test_the_static_config_slices_by_source_and_gates_the_overall_floor_only():
    config = make_eval_config(0.965)
    assert tfma.SlicingSpec(feature_keys=["source"]) in config.slicing_specs
    assert _thresholds(config) == {"overall": 0.965}


def test_mnist_gets_its_floor_and_new_sources_no_tfma_threshold():
    config = make_eval_config(0.965)
    gated = with_source_thresholds(config, {"mnist": 1000, "feedback": 50, "import": 49}, GATE)
    assert _thresholds(gated) == {"overall": 0.965, "mnist": 0.95}
    assert _thresholds(config) == {"overall": 0.965}  # the input is left as it was


def test_absent_mnist_gets_no_threshold_so_tfma_reports_no_missing_slice():
    config = make_eval_config(0.965)
    assert _thresholds(with_source_thresholds(config, {}, GATE)) == {"overall": 0.965}
    assert _thresholds(with_source_thresholds(config, {"mnist": 0, "feedback": 3}, GATE)) == {"overall": 0.965}
    assert _thresholds(with_source_thresholds(config, {"feedback": 500}, GATE)) == {"overall": 0.965}


def test_the_gate_travels_as_json():
    assert SourceGate.from_json(GATE.to_json()) == GATE
    assert GATE.significance_level == 0.05  # the default; older JSON without it still loads
    assert SourceGate.from_json('{"mnist_floor": 0.9, "max_accuracy_drop": 0.0, "max_new_data_drop": 0.0, '
                                '"min_slice_examples": 5}').significance_level == 0.05
    assert source_slice("feedback") == tfma.SlicingSpec(feature_values={"source": "feedback"})


def test_the_summary_has_one_line_per_source_with_its_gate():
    sources = {"feedback": {"accuracy": 0.81234, "baseline_accuracy": 0.9, "example_count": 60},
               "import": {"accuracy": 0.5, "baseline_accuracy": None, "example_count": 20},
               "mnist": {"accuracy": 0.97, "baseline_accuracy": 0.971, "example_count": 1000}}
    assert summary_lines(sources, 0.95, 0.005, 0.01, 50) == [
        "source 'feedback': 0.8123 on 60 test images vs baseline 0.9000 (allowed drop 0.01)",
        "source 'import': 0.5000 on 20 test images, no baseline (not gated: fewer than 50 test images)",
        "source 'mnist': 0.9700 on 1,000 test images vs baseline 0.9710 (floor 0.95, allowed drop 0.005)"]


def test_the_report_table_has_a_row_per_source():
    from components.evaluation.source_slices import sources_html
    page = sources_html({"<i>x</i>": {"accuracy": 0.8, "baseline_accuracy": 0.9, "example_count": 1200},
                         "mnist": {"accuracy": 0.97, "baseline_accuracy": None, "example_count": 500}})
    assert page.count("<tr>") == 3 and "&lt;i&gt;x&lt;/i&gt;" in page and "<i>x" not in page
    assert "<td>1,200</td><td>0.8000</td><td>0.9000</td><td>-0.1000</td>" in page
    assert sources_html({}) == ""
