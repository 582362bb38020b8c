"""Reads back from ML Metadata what the latest pipeline run did, and says it in a few lines."""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.artifact_files import read_json
from components.pusher import NEW_VERSION_PROPERTY
from components.training.hparams import describe as describe_hparams
from components.report.report import REPORT_FILE, SUMMARY_FILE, HtmlReport
from components.evaluation.significance import summary_lines as significance_lines
from components.evaluation.source_slices import summary_lines as source_lines
from components.validation.span_validation import drift_lines
from components.validation.span_validator import CHECKS_FILE, SpanChecks
from pipeline.config import PipelineConfig

_STATE_NAMES = {value: name for name, value in metadata_store_pb2.Execution.State.items()}


@dataclasses.dataclass
class ComponentRun:
    node_id: str
    state: str  # COMPLETE, CACHED, FAILED, ...
    seconds: float


@dataclasses.dataclass
class RunSummary:
    run_id: str
    components: List[ComponentRun]
    verdict: Dict  # the RunReport's summary.json: accuracy, blessed, reasons, has_baseline, ...
    pushed: bool
    pushed_version: Optional[str]
    pushed_path: Optional[str]
    report_path: Optional[str]
    config: PipelineConfig
    served_version: Optional[int] = None  # with baseline=serving-dir: the version compared against, 0 = none
    pushed_new: bool = False  # this run made a new version (not a cached push, not a model already served)
    report_artifact_path: Optional[str] = None  # the RunReport's own page, when report_path is the completed copy
    span_checks: Optional[Dict] = None  # SpanValidator's span_checks.json: per-span figures and drift
    infra: Optional[Dict] = None  # InfraValidator's verdict: blessed, reason, canary_calls (None: it did not run)

    def render(self, components: bool = True) -> str:
        """The summary; ``components=False`` leaves out the per-component table (already shown live)."""
        lines = [f"digits run {self.run_id}"]
        if components:
            lines += [f"  {run.node_id:<32} {run.state.lower():<9} {run.seconds:7.1f} s" for run in self.components]
        lines.append(f"trained on: {self._training_set()}")
        if (self.verdict or {}).get("hparams"):  # the Trainer's hparams.json, via the RunReport
            lines.append(f"hyper-parameters: {describe_hparams(self.verdict['hparams'])}")
        lines += drift_lines(self.span_checks or {})
        verdict = self.verdict
        if verdict:
            accuracy = verdict.get("accuracy")
            lines.append(f"test accuracy: {accuracy:.4f} on {verdict.get('example_count')} test images"
                         if accuracy is not None else "test accuracy: not computed")
            lines.append(self._baseline_line())
            config = self.config
            lines += ["  " + line for line in source_lines(
                verdict.get("sources") or {}, config.effective_mnist_floor, config.max_accuracy_drop,
                config.max_new_data_drop, config.min_slice_examples)]
            lines += ["  " + line for line in significance_lines(verdict.get("significance"))]
            if verdict.get("blessed"):
                lines.append("blessed: yes")
            else:
                lines.append("blessed: no — " + "; ".join(verdict.get("reasons") or ["see the report"]))
                lines.append("  (the gate kept this model from serving; train longer with --epochs, try another "
                             "--seed, or change --accuracy-floor / --max-accuracy-drop / --significance-level if the "
                             "gate is too strict)")
        if self.infra is not None:
            lines.append("InfraValidator: " + (
                f"served by the model server; {self.infra['canary_calls']} canary calls (gRPC and REST, every "
                "signature) answered as the model does" if self.infra["blessed"] else
                (self.infra["reason"] or "not blessed (see the InfraValidator's log)")))
        if self.pushed and self.pushed_new:
            lines.append(f"pushed: version {self.pushed_version} at {self.pushed_path}")
        elif self.pushed:
            lines.append(f"pushed: nothing new; version {self.pushed_version} at {self.pushed_path} already serves "
                         "this model")
        else:
            lines.append(f"pushed: no; {self.config.model_serving_dir} is unchanged")
        if self.report_path:
            lines.append(f"report: {self.report_path}")
        return "\n".join(lines)

    def _training_set(self) -> str:
        """The config's words, with the count StatisticsGen made when the config gives none or another."""
        described = self.config.describe_training_set()
        counted = (self.verdict or {}).get("train_examples")
        if counted is None or counted == self.config.train_examples:
            return described
        return f"{described}: {counted:,} images"

    def _baseline_line(self) -> str:
        """What the paired test compared against. The verdict holds baseline metrics only when
        the Evaluator had a baseline model: the resolver found one, or a version was served."""
        floor_only = f"only the accuracy floor ({self.config.accuracy_floor}) applied"
        allowed = f"(allowed drop {self.config.max_accuracy_drop})"
        if self.config.baseline == "serving-dir":
            if not self.verdict.get("has_baseline"):
                return f"no model was served yet from {self.config.model_serving_dir}: {floor_only}"
            return (f"served model's accuracy (version {self.served_version}): "
                    f"{self.verdict['baseline_accuracy']:.4f} {allowed}")
        if not self.verdict.get("has_baseline"):
            return f"no blessed model existed yet: {floor_only}"
        return f"latest blessed model's accuracy: {self.verdict['baseline_accuracy']:.4f} {allowed}"


def _store(connection: metadata_store_pb2.ConnectionConfig) -> metadata_store.MetadataStore:
    return metadata_store.MetadataStore(connection)


def _latest_run(store: metadata_store.MetadataStore) -> metadata_store_pb2.Context:
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        raise LookupError("ML Metadata holds no pipeline run yet")
    return max(runs, key=lambda context: context.create_time_since_epoch)


def _output_events(store, execution_ids: List[int]) -> List[metadata_store_pb2.Event]:
    """The events by which these executions output (or, cached, declared) artifacts."""
    return [e for e in store.get_events_by_execution_ids(execution_ids)
            if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)]


def _output_artifacts(store, execution_ids: List[int]) -> Dict[int, List[metadata_store_pb2.Artifact]]:
    events = _output_events(store, execution_ids)
    artifacts = {a.id: a for a in store.get_artifacts_by_id(list({e.artifact_id for e in events}))}
    outputs: Dict[int, List[metadata_store_pb2.Artifact]] = {}
    for event in events:
        outputs.setdefault(event.execution_id, []).append(artifacts[event.artifact_id])
    return outputs


def node_outputs(config: PipelineConfig, node: str, run_id: Optional[str] = None) -> Dict[str, str]:
    """{output key: artifact URI} of ``node``'s execution (run, or cached and reused) in local run
    ``run_id`` (default: the newest), e.g. where the Trainer's ``model_run`` of that run is."""
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = config.metadata_path
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = _store(connection)
    run = store.get_context_by_type_and_name("pipeline_run", run_id) if run_id else _latest_run(store)
    node_context = store.get_context_by_type_and_name("node", f"{config.pipeline_name}.{node}")
    if run is None or node_context is None:
        raise LookupError(f"ML Metadata ({config.metadata_path}) holds no run {run_id!r} of node {node!r}")
    executions = ({e.id for e in store.get_executions_by_context(run.id)}
                  & {e.id for e in store.get_executions_by_context(node_context.id)})
    events = _output_events(store, sorted(executions))
    uris = {a.id: a.uri for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    return {(e.path.steps[0].key if e.path.steps else ""): uris[e.artifact_id] for e in events}


def collect(config: PipelineConfig, connection: metadata_store_pb2.ConnectionConfig) -> RunSummary:
    """What the newest run of ``config.pipeline_name`` did, component by component."""
    store = _store(connection)
    return summarize(config, store, _latest_run(store))


def summarize(config: PipelineConfig, store: metadata_store.MetadataStore,
              run: metadata_store_pb2.Context) -> RunSummary:
    """What one pipeline run (a ``pipeline_run`` context) did, component by component."""
    executions = sorted(store.get_executions_by_context(run.id), key=lambda e: e.create_time_since_epoch)
    node_of = {}
    for context in store.get_contexts_by_type("node"):
        for execution in store.get_executions_by_context(context.id):
            node_of[execution.id] = context.name.split(".", 1)[-1]
    outputs = _output_artifacts(store, [e.id for e in executions])
    report_type = store.get_artifact_type(HtmlReport.TYPE_NAME)
    checks_types = {t.id for t in store.get_artifact_types() if t.name == SpanChecks.TYPE_NAME}
    infra_types = {t.id for t in store.get_artifact_types() if t.name == "InfraBlessing"}
    infra = None
    span_checks = None

    components, pushed, pushed_version, pushed_path, report_dir = [], False, None, None, None
    served_version, pushed_new = None, False
    for execution in executions:
        seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000.0
        components.append(ComponentRun(node_of.get(execution.id, execution.type),
                                       _STATE_NAMES.get(execution.last_known_state, "UNKNOWN"), seconds))
        for artifact in outputs.get(execution.id, []):
            properties = artifact.custom_properties
            if "pushed" in properties:
                pushed = bool(properties["pushed"].int_value)
                if pushed:
                    pushed_version = properties["pushed_version"].string_value
                    pushed_path = properties["pushed_destination"].string_value
                    pushed_new = (execution.last_known_state != metadata_store_pb2.Execution.CACHED
                                  and bool(properties[NEW_VERSION_PROPERTY].int_value
                                           if NEW_VERSION_PROPERTY in properties else 1))
            if "served_version" in properties:  # ServedBaseline's output
                served_version = properties["served_version"].int_value
            if artifact.type_id == report_type.id:
                report_dir = artifact.uri
            if artifact.type_id in infra_types:  # properties: components/infra/infra_validator.py
                infra = {"blessed": bool(properties["blessed"].int_value) if "blessed" in properties else False,
                         "reason": properties["reason"].string_value if "reason" in properties else "",
                         "canary_calls": properties["canary_calls"].int_value if "canary_calls" in properties else 0}
            if artifact.type_id in checks_types:
                span_checks = read_json(artifact.uri, CHECKS_FILE) or span_checks
    verdict = (read_json(report_dir, SUMMARY_FILE) if report_dir else None) or {}
    return RunSummary(
        run_id=run.name, components=components, verdict=verdict, pushed=pushed,
        pushed_version=pushed_version, pushed_path=pushed_path,
        report_path=os.path.join(report_dir, REPORT_FILE) if report_dir else None, config=config,
        served_version=served_version, pushed_new=pushed_new, span_checks=span_checks, infra=infra)
