"""digits runs' table (pipeline/runs/run_history.py) from run records; the records themselves come from a real
ML Metadata store in tests/e2e/test_pipeline.py::test_digits_runs_lists_each_run_from_ml_metadata."""
from pipeline.runs import run_history


def record(**changes):
    run = {"run_id": "2026-12-07T03:00:04.123456", "started": "2026-12-07T03:00:04Z", "seconds": 312.4,
           "spans": [{"span": 1, "source": "feedback", "count": 250, "sha256": "ab"}, {"span": 2}, {"span": 3}],
           "split_sizes": {"train": 50000, "eval": 10000, "test": 10300}, "test_examples": 10300,
           "accuracy": 0.97123, "accuracy_by_source": {"mnist": 0.9712, "feedback": 0.8},
           "blessed": True, "pushed": True, "pushed_version": 17, "pushed_new": True, "failed": []}
    run.update(changes)
    return run


def test_one_aligned_row_per_run():
    text = run_history.table([record(), record(run_id="2026-12-08T03:00:01.5", spans=None, accuracy_by_source={},
                                               blessed=False, pushed=False, pushed_version=None, pushed_new=False,
                                               split_sizes=None, test_examples=500, seconds=59.6)])
    header, first, second = text.splitlines()
    assert first.split("  ")[0] == "2026-12-07T03:00:04.123456"
    for cell in ("2026-12-07 03:00:04", "5m12s", "MNIST + spans 1-3", "50,000/10,000/10,300", "0.9712",
                 "feedback 0.8000 mnist 0.9712", "yes", "version 17"):
        assert cell in first, cell
    for cell in ("1m00s", "MNIST only", "test 500", " no "):
        assert cell in second, cell
    assert second.endswith("no") and header.index("pushed") == first.index("version 17")
    assert header.index("blessed") == first.index("yes") == second.index("no ")


def test_a_failed_run_and_an_already_served_model():
    row = run_history.table([record(blessed=None, accuracy=None, failed=["ExampleValidator"], pushed=False,
                                    pushed_version=None, pushed_new=False)]).splitlines()[1]
    assert "- (failed: ExampleValidator)" in row
    row = run_history.table([record(pushed_new=False)]).splitlines()[1]
    assert row.endswith("no (version 17 already serves it)")


def test_accuracy_by_source_as_the_report_gives_it():
    verdict = {"accuracy": 0.9, "sources": {
        "mnist": {"accuracy": 0.97, "baseline_accuracy": 0.96, "example_count": 500},
        "feedback": {"accuracy": 0.5, "baseline_accuracy": None, "example_count": 40},
        "scans": {"accuracy": None, "baseline_accuracy": None, "example_count": None}}}
    assert run_history.by_source(verdict) == {"mnist": 0.97, "feedback": 0.5}
    assert run_history.by_source({"accuracy": 0.9}) == {}  # a run made before per-source slices
