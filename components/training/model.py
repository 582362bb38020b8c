"""Trainer's ``run_fn``: the seed tutorial's MLP (or a small CNN), trained on Transform's output and exported with
every serving signature of ARCHITECTURE.md.

Hyper-parameters come from the Trainer's ``custom_config`` (filled from ``PipelineConfig``), so the
seed's values are defaults, not constants; a tuned result (tuner.py) overrides those the user did not
set explicitly (hparams.resolve). ``fit`` is the training both share.
"""
from __future__ import annotations

import os
from typing import Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components.artifact_files import write_json
from components.data import features
from components.training import augment, signatures
from components.training.hparams import ARCHITECTURES, HParams, describe, network, resolve, tuned_for_another_network
from pipeline.runs import console

# Rows parsed and transformed per step before the data is cached in memory: parsing 784-value
# examples one small batch at a time costs more than training on them.
_PARSE_BATCH = 1024
HISTORY_FILE = "history.json"  # in the Trainer's ModelRun: the Keras History, for the run report
HPARAMS_FILE = "hparams.json"  # beside it: each hyper-parameter's value and where it came from
_ALL_AT_ONCE = 2**31 - 1  # a batch size no split reaches: in_content_order's single batch of every example


def _layers(hparams: HParams):
    """The seed's Flatten -> Dense(relu) x N, or two conv blocks before the same dense layers."""
    shape = (features.IMAGE_SIZE, features.IMAGE_SIZE)
    if hparams.architecture == "cnn":
        yield tf.keras.layers.Reshape(shape + (1,), input_shape=shape)
        for filters in (32, 64):
            yield tf.keras.layers.Conv2D(filters, 3, activation=tf.nn.relu)
            yield tf.keras.layers.MaxPooling2D()
        yield tf.keras.layers.Flatten()
    elif hparams.architecture == "mlp":
        yield tf.keras.layers.Flatten(input_shape=shape)
    else:
        raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {hparams.architecture!r}")
    for units in hparams.hidden_units:
        yield tf.keras.layers.Dense(units, activation=tf.nn.relu)
    yield tf.keras.layers.Dense(features.NUM_CLASSES, activation=tf.nn.softmax)


def build_model(hparams: HParams, steps: int = 0) -> tf.keras.Model:
    """The network of ``hparams.architecture``, compiled as the seed compiles it but for the rate:
    with ``lr_schedule`` cosine it decays over ``steps`` (all training steps; 0 = constant)."""
    model = tf.keras.Sequential(list(_layers(hparams)), name=f"digits_{hparams.architecture}")
    rate = hparams.learning_rate
    if hparams.lr_schedule == "cosine" and steps > 0:
        rate = tf.keras.optimizers.schedules.CosineDecay(hparams.learning_rate, decay_steps=steps)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def transformed_examples(fn_args, files, tf_transform_output) -> tf.data.Dataset:
    """Raw examples -> transform graph -> (image_xf, label) pairs, cached after the first pass."""
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

    return raw.map(transform, num_parallel_calls=tf.data.AUTOTUNE).unbatch().cache()


def in_content_order(examples: tf.data.Dataset) -> Tuple[tf.data.Dataset, int]:
    """The (image, label) examples sorted by a fingerprint of their content, and their count.
    ExampleGen's Beam write does not keep the order of records from one run to the next, and the
    seeded shuffle permutes whatever order it is given: in content order the same examples give the
    same weights whichever order they were written in. The training set is held in memory for the
    sort (60,000 digits: 190 MB), as the cache holds it anyway."""
    whole = next(iter(examples.batch(_ALL_AT_ONCE)), None)  # one pass: a batch holds what there is
    if whole is None:
        raise ValueError("the Trainer's training splits hold no examples; check --train-splits and --train-examples")
    images, labels = whole
    count = int(images.shape[0])
    keys = tf.bitcast(tf.fingerprint(tf.reshape(images, [count, -1])), tf.int64)
    # Ties (the same image twice) are ordered by label, then kept as they are: identical examples.
    order = np.lexsort((labels.numpy(), keys.numpy()))
    return tf.data.Dataset.from_tensor_slices((tf.gather(images, order), tf.gather(labels, order))), count


def training_batches(examples: tf.data.Dataset, hparams: HParams) -> Tuple[tf.data.Dataset, int]:
    """Endless shuffled, shifted batches and the steps that make one epoch. Endless, so each batch
    has its own index for a reproducible shift (augment.shifted); Keras cuts epochs by steps."""
    examples, count = in_content_order(examples)
    batches = (examples.shuffle(count, seed=hparams.seed, reshuffle_each_iteration=True)
               .batch(hparams.batch_size).repeat())
    batches = augment.shifted(batches, hparams.augment_shift, hparams.seed)
    return batches.prefetch(tf.data.AUTOTUNE), -(-count // hparams.batch_size)


def validation_batches(examples: tf.data.Dataset, hparams: HParams) -> tf.data.Dataset:
    return examples.batch(hparams.batch_size).prefetch(tf.data.AUTOTUNE)


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
    write_json(model_run_dir, HISTORY_FILE, record)


def fit(hparams: HParams, train_examples: tf.data.Dataset, eval_examples=None, callbacks=()):
    """Seeds, builds and fits the network of ``hparams`` on (image, label) examples; the Trainer's
    run_fn and the Tuner's trials share it, so a tuned value means what it means in training.
    Returns the model and its Keras History (validation metrics only with ``eval_examples``)."""
    tf.keras.utils.set_random_seed(hparams.seed)
    tf.config.experimental.enable_op_determinism()
    train, steps = training_batches(train_examples, hparams)
    evaluation = validation_batches(eval_examples, hparams) if eval_examples is not None else None
    model = build_model(hparams, steps=steps * hparams.epochs)
    history = model.fit(train, epochs=hparams.epochs, steps_per_epoch=steps, validation_data=evaluation,
                        verbose=2, callbacks=list(callbacks))
    return model, history


def write_hparams(origins, model_run_dir: str) -> None:
    """The values the Trainer used and where each came from (hparams.resolve), for the run report."""
    write_json(model_run_dir, HPARAMS_FILE, origins)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains the seed's model, deterministically for a given config, and exports it for serving.
    A tuned result (the Tuner's best hyper-parameters, fn_args.hyperparameters) overrides the
    config's values but for those the user set explicitly (hparams.resolve)."""
    tuned = (fn_args.hyperparameters or {}).get("values")
    other = tuned_for_another_network(fn_args.custom_config, tuned)
    if other:
        this = network(HParams.from_custom_config(fn_args.custom_config))
        console.show(f"  Trainer: the last tuned result was for the {other} network, not {this}: training "
                     "with the config's values (run with --tune to tune this one)")
    hparams, origins = resolve(fn_args.custom_config, tuned)
    logging.info("Trainer hyper-parameters: %s", describe(origins))
    if tuned:
        console.show(f"  Trainer hyper-parameters: {describe(origins)}")

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    # Validating on examples the model trains on would only flatter it: validate on held-out data only.
    held_out = not set(fn_args.eval_files) & set(fn_args.train_files)
    if not held_out:
        logging.info("Trainer fits on the eval split too, so it reports no per-epoch validation; "
                     "the Evaluator's test split is the held-out measure")
    model, history = fit(
        hparams, transformed_examples(fn_args, fn_args.train_files, tf_transform_output),
        transformed_examples(fn_args, fn_args.eval_files, tf_transform_output) if held_out else None,
        callbacks=[_EpochLog(hparams.epochs),
                   tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch")])
    write_history(history, fn_args.model_run_dir)
    write_hparams(origins, fn_args.model_run_dir)
    signatures.export(model, tf_transform_output, fn_args.serving_model_dir,
                      warmup_images=_warmup_images(fn_args, tf_transform_output))
    logging.info("Trainer exported the serving model to %s", os.path.abspath(fn_args.serving_model_dir))
