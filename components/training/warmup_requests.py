"""The warmup file an exported model carries: ``assets.extra/tf_serving_warmup_requests``, a TFRecord of
``tensorflow_serving.apis.PredictionLog`` (TF Serving's format), with one request per serving signature
built by ``components.infra.serving_requests`` from a few real digits.

TF Serving (and our model server, ``serving/servables/warmup.py``) replays these on load, before the
version is AVAILABLE, so a hot reload's first client request finds every signature already traced and
optimised. The requests carry no version (a pushed model gets its number only when it is copied into the
serving directory) and the model name ``WARMUP_MODEL_NAME``: warmup runs on the version being loaded,
whatever the name says.
"""
from __future__ import annotations

import os
from typing import List, Sequence

import numpy as np

from components.infra import serving_requests

ASSETS_EXTRA = "assets.extra"
REQUESTS_FILE_NAME = "tf_serving_warmup_requests"
MAX_NUM_RECORDS = 1000  # TF Serving refuses to load a model whose warmup file holds more
NUM_WARMUP_DIGITS = 32  # real digits the warmup requests are made of
BATCH_SIZES = (1, NUM_WARMUP_DIGITS)  # one digit (what the draw-a-digit page sends) and a batch, per signature
WARMUP_MODEL_NAME = "mnist"


def prediction_logs(requests: Sequence[serving_requests.CanaryRequest]) -> List[object]:
    """Each request as a PredictionLog (predict_log / classify_log)."""
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for request in requests:
        log = prediction_log_pb2.PredictionLog()
        if request.method == serving_requests.CLASSIFY:
            log.classify_log.request.CopyFrom(request.grpc_request)
        else:
            log.predict_log.request.CopyFrom(request.grpc_request)
        logs.append(log)
    return logs


def write_warmup_requests(export_dir: str, images: np.ndarray, model_name: str = WARMUP_MODEL_NAME) -> str:
    """Writes the warmup file of a SavedModel from ``images`` (digits in MNIST form, [N, 784] or [N, 28, 28]):
    for each batch size of BATCH_SIZES, one request per serving signature of the export. Returns its path."""
    import tensorflow as tf

    signatures = serving_requests.model_signatures(export_dir)
    logs = prediction_logs([request for size in sorted({min(s, len(images)) for s in BATCH_SIZES})
                            for request in serving_requests.build_requests(images[:size], model_name, signatures)])
    if len(logs) > MAX_NUM_RECORDS:
        raise ValueError(f"{len(logs)} warmup requests: TF Serving loads a model with at most {MAX_NUM_RECORDS}")
    directory = os.path.join(export_dir, ASSETS_EXTRA)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, REQUESTS_FILE_NAME)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def first_images(dataset, count: int = NUM_WARMUP_DIGITS) -> np.ndarray:
    """The first ``count`` raw ``image`` rows of a batched dataset of parsed raw examples (unshuffled,
    so the warmup file is the same for the same data)."""
    from components.data import features

    rows, total = [], 0
    for batch in dataset:
        pixels = np.asarray(batch[features.IMAGE_KEY]).reshape(-1, features.NUM_PIXELS)
        rows.append(pixels[:count - total])
        total += len(rows[-1])
        if total >= count:
            break
    if not rows:
        raise ValueError("no examples to build warmup requests from")
    return np.concatenate(rows)
