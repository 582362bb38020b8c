"""Trainer's ``run_fn``: the seed tutorial's MLP, trained on Transform's output and exported with
every serving signature of ARCHITECTURE.md.

Hyper-parameters come from the Trainer's ``custom_config`` (filled from ``PipelineConfig``), so the
seed's values are defaults, not constants.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Tuple

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components.data import features
from components.training import signatures
from pipeline.runs import console

# Rows parsed and transformed per step before the data is cached in memory: parsing 784-value
# examples one small batch at a time costs more than training on them.
_PARSE_BATCH = 1024
HISTORY_FILE = "history.json"  # in the Trainer's ModelRun: the Keras History, for the run report


@dataclasses.dataclass(frozen=True)
class HParams:
    epochs: int = 3
    batch_size: int = 32
    hidden_units: Tuple[int, ...] = (128, 128)
    learning_rate: float = 0.001
    seed: int = 42

    @classmethod
    def from_custom_config(cls, custom_config: Dict[str, Any] | None) -> "HParams":
        known = {field.name for field in dataclasses.fields(cls)}
        values = {k: v for k, v in (custom_config or {}).items() if k in known}
        if "hidden_units" in values:
            values["hidden_units"] = tuple(values["hidden_units"])
        return cls(**values)


def build_model(hparams: HParams) -> tf.keras.Model:
    """Flatten -> Dense(relu) x N -> Dense(10, softmax), compiled as the seed compiles it."""
    model = tf.keras.Sequential(name="digits_mlp")
    model.add(tf.keras.layers.Flatten(input_shape=(features.IMAGE_SIZE, features.IMAGE_SIZE)))
    for units in hparams.hidden_units:
        model.add(tf.keras.layers.Dense(units, activation=tf.nn.relu))
    model.add(tf.keras.layers.Dense(features.NUM_CLASSES, activation=tf.nn.softmax))
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=hparams.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _dataset(fn_args, files, tf_transform_output, hparams: HParams, training: bool) -> tf.data.Dataset:
    """Raw examples -> transform graph -> (image_xf, label) batches, cached after the first pass."""
    raw = fn_args.data_accessor.tf_dataset_factory(
        files,
        tfxio.TensorFlowDatasetOptions(batch_size=_PARSE_BATCH, shuffle=False, num_epochs=1),
        tf_transform_output.raw_metadata.schema,
    )
    transform_layer = tf_transform_output.transform_features_layer()
    image_key = features.transformed_name(features.IMAGE_KEY)

    def transform(batch):
        transformed = transform_layer(batch)
        return transformed[image_key], transformed[features.LABEL_KEY]

    dataset = raw.map(transform, num_parallel_calls=tf.data.AUTOTUNE).unbatch().cache()
    if training:
        dataset = dataset.shuffle(60_000, seed=hparams.seed, reshuffle_each_iteration=True)
    return dataset.batch(hparams.batch_size).prefetch(tf.data.AUTOTUNE)


def _warmup_images(fn_args, tf_transform_output):
    """The first training digits, unshuffled (the same data gives the same warmup file), which the
    export's warmup requests are made of."""
    from components.training.warmup_requests import NUM_WARMUP_DIGITS, first_images

    options = tfxio.TensorFlowDatasetOptions(batch_size=NUM_WARMUP_DIGITS, shuffle=False, num_epochs=1)
    raw = fn_args.data_accessor.tf_dataset_factory(fn_args.train_files, options, tf_transform_output.raw_metadata.schema)
    return first_images(raw)


class _EpochLog(tf.keras.callbacks.Callback):
    """One absl log line per epoch, so progress shows in the pipeline's log, not only on a TTY; in a
    quiet `digits run` also one console line per epoch (and, on a terminal, tqdm's bar within it)."""

    def __init__(self, epochs: int):
        super().__init__()
        self._epochs = epochs
        self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        out = console.stream()
        if out is not None and out.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.params.get("steps"), file=out, leave=False, unit="step",
                             desc=f"  Trainer epoch {epoch + 1}/{self._epochs}")

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        shown = ", ".join(f"{name}={value:.4f}" for name, value in sorted((logs or {}).items()))
        logging.info("Trainer epoch %d/%d: %s", epoch + 1, self._epochs, shown)
        console.show(console.epoch_line(epoch + 1, self._epochs, logs or {}))


def write_history(history: tf.keras.callbacks.History, model_run_dir: str) -> None:
    """Per-epoch loss and accuracy beside TensorBoard's logs, as JSON the run report can read
    without TensorBoard; gfile, so an object-store ModelRun works too."""
    record = {"epoch": [int(epoch) for epoch in history.epoch],
              "history": {name: [float(value) for value in values] for name, values in history.history.items()}}
    tf.io.gfile.makedirs(model_run_dir)
    with tf.io.gfile.GFile(os.path.join(model_run_dir, HISTORY_FILE), "w") as f:
        f.write(json.dumps(record, indent=1))


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains the seed's model, deterministically for a given config, and exports it for serving."""
    hparams = HParams.from_custom_config(fn_args.custom_config)
    logging.info("Trainer hyper-parameters: %s", hparams)
    tf.keras.utils.set_random_seed(hparams.seed)
    tf.config.experimental.enable_op_determinism()

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    train = _dataset(fn_args, fn_args.train_files, tf_transform_output, hparams, training=True)
    # Validating on examples the model trains on would only flatter it: validate on held-out data only.
    held_out = not set(fn_args.eval_files) & set(fn_args.train_files)
    evaluation = _dataset(fn_args, fn_args.eval_files, tf_transform_output, hparams, training=False) if held_out else None
    if not held_out:
        logging.info("Trainer fits on the eval split too, so it reports no per-epoch validation; "
                     "the Evaluator's test split is the held-out measure")

    model = build_model(hparams)
    history = model.fit(
        train,
        epochs=hparams.epochs,
        validation_data=evaluation,
        verbose=2,
        callbacks=[
            _EpochLog(hparams.epochs),
            tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch"),
        ],
    )
    write_history(history, fn_args.model_run_dir)
    signatures.export(model, tf_transform_output, fn_args.serving_model_dir,
                      warmup_images=_warmup_images(fn_args, tf_transform_output))
    logging.info("Trainer exported the serving model to %s", os.path.abspath(fn_args.serving_model_dir))
