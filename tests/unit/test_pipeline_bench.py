"""The pure parts of bench/pipeline_bench.py and bench/model_compare.py: seeds, statistics, step
selection, the pass-through of pipeline flags, the side-by-side table, latency percentiles, model size."""
import argparse
import os
import sys

import pytest

from tests.server_process import REPO

sys.path.insert(0, os.path.join(REPO, "bench"))

import model_compare  # noqa: E402
import pipeline_bench  # noqa: E402


def test_seed_list_starts_with_the_default_seed_and_never_repeats_it():
    assert pipeline_bench.DEFAULT_SEED == 42
    assert pipeline_bench.seed_list(3) == [42, 1, 2]
    assert pipeline_bench.seed_list(1) == [42]
    assert len(set(pipeline_bench.seed_list(50))) == 50


def test_stats_gives_min_mean_max():
    assert pipeline_bench.stats([0.98, 0.99, 0.985]) == pytest.approx({"min": 0.98, "mean": 0.985, "max": 0.99})


def test_component_seconds_finds_the_trainer_or_none():
    result = {"components": [["Transform", "CACHED", 0.5], ["Trainer", "COMPLETE", 41.7]]}
    assert pipeline_bench.component_seconds(result, "Trainer") == 41.7
    assert pipeline_bench.component_seconds(result, "Tuner") is None


def test_only_accepts_known_steps_and_names_the_choices_otherwise():
    assert pipeline_bench.parse_only("seeds, cnn") == ["seeds", "cnn"]
    with pytest.raises(argparse.ArgumentTypeError, match="pipeline,seeds,cnn,tune"):
        pipeline_bench.parse_only("seeds,cnnn")


def test_unknown_arguments_go_to_every_pipeline_run_and_seed_is_not_taken_for_seeds():
    args, flags = pipeline_bench.parse_args(["--only", "seeds", "--epochs", "2", "--seed", "7", "--seeds", "2"])
    assert args.only == ["seeds"] and args.seeds == 2
    assert flags == ["--epochs", "2", "--seed", "7"]


def test_a_mistyped_pipeline_flag_fails_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        pipeline_bench.parse_args(["--epoch", "2"])
    assert exit_info.value.code == 2
    assert "--epoch" in capsys.readouterr().err


def test_format_table_puts_models_side_by_side_and_dashes_missing_values():
    table = model_compare.format_table({
        "mlp": {"mnist_accuracy": 0.98612, "fonts_accuracy": 0.5, "parameters": 118282, "latency_p99_ms": 1.234},
        "cnn": {"mnist_accuracy": 0.9912, "parameters": 225034}})
    lines = table.splitlines()
    assert lines[0].split() == ["mlp", "cnn"]
    assert len(lines) == len(model_compare.ROWS) + 1
    rows = {line[:30].strip(): line[30:].split() for line in lines[1:]}
    assert rows["MNIST test accuracy (server)"] == ["0.9861", "0.9912"]
    assert rows["font digits accuracy"] == ["0.5000", "-"]
    assert rows["parameters"] == ["118,282", "225,034"]
    assert rows["latency / image, p99 ms"] == ["1.23", "-"]
    assert len({len(line) for line in lines}) == 1  # aligned


def test_latency_summary_median_and_p99():
    summary = model_compare.latency_summary(list(range(1, 101)))  # 1..100 ms
    assert summary == {"latency_median_ms": 50.5, "latency_p99_ms": pytest.approx(99.01), "latency_requests": 100}


def test_is_weight_keeps_layer_weights_only():
    assert model_compare.is_weight("layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    assert not model_compare.is_weight("layer_with_weights-0/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/"
                                       "VARIABLE_VALUE")
    assert not model_compare.is_weight("optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE")
    assert not model_compare.is_weight("keras_api/metrics/0/total/.ATTRIBUTES/VARIABLE_VALUE")


def test_saved_model_bytes_counts_every_file_below(tmp_path):
    (tmp_path / "variables").mkdir()
    (tmp_path / "saved_model.pb").write_bytes(b"x" * 10)
    (tmp_path / "variables" / "variables.data-00000-of-00001").write_bytes(b"y" * 32)
    assert model_compare.saved_model_bytes(str(tmp_path)) == 42
