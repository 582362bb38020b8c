"""--tune and its budget, the fields the user set explicitly, and the merge of config, tuned and explicit
values that the Trainer uses (components/training/hparams.resolve)."""
import pytest

from components.training.hparams import TUNABLE, HParams, describe, resolve, tuned_for_another_network
from pipeline.config import ConfigError, PipelineConfig, from_sources


def test_tuning_is_off_by_default_with_a_budget_of_8():
    config = PipelineConfig()
    assert (config.tune, config.tune_trials, config.explicit) == (False, 8, ())


def test_tune_flags_and_variables():
    config = from_sources(["--tune", "--tune-trials", "3"], {})
    assert (config.tune, config.tune_trials) == (True, 3)
    assert from_sources([], {"DIGITS_TUNE": "true", "DIGITS_TUNE_TRIALS": "2"}).tune_trials == 2


@pytest.mark.parametrize("text", ["0", "-1"])
def test_a_budget_below_one_trial_is_refused_naming_the_flag(text):
    with pytest.raises(ConfigError, match=f"^--tune-trials: tune_trials must be at least 1, got {text}$"):
        from_sources(["--tune-trials", text], {})


def test_explicit_holds_each_field_set_by_flag_or_variable_and_what_set_it():
    config = from_sources(["--batch-size", "64", "--epochs", "4"], {"DIGITS_EPOCHS": "3", "DIGITS_SEED": "1"})
    assert config.explicit_sources == {"batch_size": "--batch-size", "epochs": "--epochs", "seed": "DIGITS_SEED"}
    assert from_sources([], {}).explicit == ()


def test_explicit_is_no_flag_nor_variable():
    with pytest.raises(ConfigError, match="unknown option --explicit"):
        from_sources(["--explicit", "x"], {})
    assert from_sources([], {"DIGITS_EXPLICIT": "epochs"}).explicit == ()


TUNED = {"learning_rate": 0.01, "lr_schedule": "constant", "batch_size": 256, "augment_shift": 2, "epochs": 7}


def test_without_a_tuned_result_the_config_trains():
    hparams, origins = resolve({"epochs": 3, "code_version": "abc"}, None)
    assert hparams == HParams(epochs=3)
    assert origins["epochs"] == {"value": 3, "source": "config"}
    assert origins["batch_size"] == {"value": 128, "source": "default"}
    assert origins["hidden_units"] == {"value": [128, 128], "source": "default"}


def test_tuned_values_override_the_config_but_explicit_ones_win():
    config = {"epochs": 4, "batch_size": 64, "explicit": {"batch_size": "--batch-size", "epochs": "DIGITS_EPOCHS"}}
    hparams, origins = resolve(config, TUNED)
    assert (hparams.batch_size, hparams.epochs) == (64, 4)  # explicit
    assert (hparams.learning_rate, hparams.lr_schedule, hparams.augment_shift) == (0.01, "constant", 2)  # tuned
    assert origins["batch_size"] == {"value": 64, "source": "--batch-size"}
    assert origins["epochs"] == {"value": 4, "source": "DIGITS_EPOCHS"}
    assert origins["learning_rate"] == {"value": 0.01, "source": "tuned"}
    assert "epochs 4 (DIGITS_EPOCHS)" in describe(origins) and "learning_rate 0.01 (tuned)" in describe(origins)


def test_only_the_training_is_tuned_never_the_network():
    hparams, origins = resolve({}, {**TUNED, "hidden_units": [8], "architecture": "cnn", "seed": 3})
    assert (hparams.hidden_units, hparams.architecture, hparams.seed) == ((128, 128), "mlp", 42)
    assert {name for name, origin in origins.items() if origin["source"] == "tuned"} == set(TUNABLE)


def test_a_result_tuned_for_another_network_is_not_used():
    tuned = {**TUNED, "network": "mlp 128,128"}
    assert resolve({}, tuned)[0].learning_rate == 0.01  # tuned for this network: used
    assert tuned_for_another_network({"architecture": "cnn"}, tuned) == "mlp 128,128"
    hparams, origins = resolve({"architecture": "cnn", "explicit": {"architecture": "--architecture"}}, tuned)
    assert (hparams.learning_rate, hparams.epochs) == (HParams().learning_rate, HParams().epochs)
    assert "tuned" not in {origin["source"] for origin in origins.values()}
    assert tuned_for_another_network({"hidden_units": [256, 256]}, tuned) == "mlp 128,128"
    assert tuned_for_another_network({}, TUNED) is None  # a result that names no network: the config's
