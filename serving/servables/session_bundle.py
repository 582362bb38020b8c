"""A SavedModel loaded as TF Serving loads it: its MetaGraphDef imported into a graph, variables restored
and the init op run in a ``tf.compat.v1.Session`` (LoadSavedModel -> SavedModelBundle), each signature
run as ``Session::Run`` of its SignatureDef's tensor names.

Why not ``tf.saved_model.load``: calling a restored concrete function eagerly costs ~300-450 µs of
Python and eager-runtime overhead per call on this machine for the digits MLP, a session callable
(``Session::MakeCallable`` / ``RunCallable``) ~130 µs, with bit-identical outputs (same FunctionDefs,
same kernels; ``tests/component/test_serving_core.py`` compares them with the functions called directly).
A callable fetches every output of its signature; errors are the runtime's own ``OpError`` text, which
is what a TF Serving session run reports.
"""
from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Sequence

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import config_pb2  # noqa: E402
from tensorflow.python.saved_model import loader_impl  # noqa: E402


def session_config() -> config_pb2.ConfigProto:
    """The process's TensorFlow threading settings (--tensorflow_*_parallelism set them on the eager
    context before any model loads), for the model's session.

    Inter-op parallelism left at 0 (unset) becomes -1, "run every op in the caller's thread": the
    server's request threads already run requests concurrently, and handing each run to TensorFlow's
    inter-op pool and back cost ~110 of ~190 µs CPU per batch-1 digits call here (bench/profile_serving.py
    notes), for no parallelism a model of one chain of ops can use. Results are the same (only op
    scheduling changes; intra-op parallelism, which can change reduction order, is left as set). A value
    given with --tensorflow_inter_op_parallelism or --tensorflow_session_parallelism is used as given."""
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    return config_pb2.ConfigProto(
        intra_op_parallelism_threads=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op_parallelism_threads=inter if inter else -1,
        allow_soft_placement=True)  # a graph exported with device annotations still loads on CPU


class SessionBundle:
    """SavedModelBundle: one graph and session per loaded version; closed when the version unloads
    (or when garbage-collected)."""

    def __init__(self, path: str, tags: Sequence[str]):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config())
        try:
            with self.graph.as_default():
                loader_impl.SavedModelLoader(path).load(self.session, list(tags))
        except BaseException:
            self.session.close()
            raise

    def runner(self, signature_def) -> Optional["SignatureRunner"]:
        """A callable for the signature, or None when its tensors are not plain graph tensors (the
        init-op "signature", composite TensorInfo encodings)."""
        feeds = sorted(signature_def.inputs)
        fetches = sorted(signature_def.outputs)
        names = [signature_def.inputs[a].name for a in feeds] + [signature_def.outputs[a].name for a in fetches]
        if not fetches or not all(_is_tensor_name(self.graph, n) for n in names):
            return None
        options = config_pb2.CallableOptions()
        options.feed.extend(signature_def.inputs[a].name for a in feeds)
        options.fetch.extend(signature_def.outputs[a].name for a in fetches)
        return SignatureRunner(self.session._make_callable_from_options(options), tuple(feeds), tuple(fetches))

    def finalize(self) -> None:
        self.graph.finalize()

    def close(self) -> None:
        self.session.close()


def _is_tensor_name(graph: tf.Graph, name: str) -> bool:
    op, sep, index = name.rpartition(":")
    if not sep or not index.isdigit():
        return False
    try:
        graph.get_tensor_by_name(name)
    except (KeyError, ValueError):
        return False
    return True


class SignatureRunner:
    """Session::Run of one signature: feeds by alias (every input alias of the signature, as the core's
    GetInputValues() fills them) -> every output by alias. Arrays go to the session as they are: the
    core has checked their dtypes against the SignatureDef; shapes are the graph's to judge."""

    __slots__ = ("_call", "feed_aliases", "fetch_aliases")

    def __init__(self, call, feed_aliases: tuple, fetch_aliases: tuple):
        self._call, self.feed_aliases, self.fetch_aliases = call, feed_aliases, fetch_aliases

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if len(feeds) != len(self.feed_aliases) or any(a not in feeds for a in self.feed_aliases):
            raise TypeError(f"feeds {sorted(feeds)} do not match the signature's inputs {list(self.feed_aliases)}")
        return dict(zip(self.fetch_aliases, self._call(*[feeds[a] for a in self.feed_aliases])))
