"""The serving signatures of ARCHITECTURE.md, exported around one trained Keras model.

- ``serving_default``: ``images`` float32 [None, 28, 28] raw pixels (0..255 or 0..1: the
  normalization is scale-invariant) -> ``probabilities`` [None, 10], ``classes`` int64 [None].
- ``serving_examples``: serialized tf.Example ``examples`` -> the same outputs (what TFMA calls).
- ``classify``: serialized tf.Example ``inputs`` -> ``classes`` (string labels "0".."9") and
  ``scores`` [None, 10], with TF Serving's classify method name so its Classify API accepts it.

tf.Examples go through Transform's own graph and need only ``image``: ``label``, ``source`` and ``span``
are in the training data, not in requests, so the signatures parse none of them. Raw-pixel floats
cannot go through that graph (it takes int64 pixels, and 0..1 floats would truncate), so
``serving_default`` calls the very function ``preprocessing_fn`` is made of; the signature-parity
test keeps the two paths equal.
"""
from __future__ import annotations

import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from components.data import features
from components.training.preprocessing import normalize_images

DEFAULT_SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "serving_examples"
CLASSIFY_SIGNATURE = "classify"
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
PROBABILITIES = "probabilities"
CLASSES = "classes"


def _outputs(model: tf.keras.Model, normalized_images: tf.Tensor):
    probabilities = model(normalized_images, training=False)
    return {PROBABILITIES: probabilities, CLASSES: tf.argmax(probabilities, axis=1, output_type=tf.int64)}


def make_signatures(model: tf.keras.Model, tf_transform_output):
    """Concrete functions for ``model.save(signatures=...)``; the transform layer is tracked by the model."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_feature_spec = tf_transform_output.raw_feature_spec()
    # What clients send is the image alone: the label and the data's provenance are not inputs.
    for key in (features.LABEL_KEY, features.SOURCE_KEY, features.SPAN_KEY):
        raw_feature_spec.pop(key, None)
    image_key = features.transformed_name(features.IMAGE_KEY)

    def transformed_images(serialized):
        parsed = tf.io.parse_example(serialized, raw_feature_spec)
        return model.tft_layer(parsed)[image_key]

    @tf.function(input_signature=[
        tf.TensorSpec([None, features.IMAGE_SIZE, features.IMAGE_SIZE], tf.float32, name="images")])
    def serve_images(images):
        return _outputs(model, normalize_images(images))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        return _outputs(model, transformed_images(examples))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(inputs):
        scores = _outputs(model, transformed_images(inputs))[PROBABILITIES]
        labels = tf.constant([str(digit) for digit in range(features.NUM_CLASSES)])
        return {"classes": tf.broadcast_to(labels, tf.shape(scores)), "scores": scores}

    return {
        DEFAULT_SIGNATURE: serve_images.get_concrete_function(),
        EXAMPLES_SIGNATURE: serve_examples.get_concrete_function(),
        CLASSIFY_SIGNATURE: classify.get_concrete_function(),
    }


def export(model: tf.keras.Model, tf_transform_output, export_dir: str, warmup_images=None) -> None:
    """Saves the model with its signatures; with ``warmup_images`` (digits in MNIST form) also the
    warmup requests a model server replays on load (components/training/warmup_requests.py)."""
    model.save(export_dir, save_format="tf", signatures=make_signatures(model, tf_transform_output))
    _set_method_name(export_dir, CLASSIFY_SIGNATURE, CLASSIFY_METHOD_NAME)
    if warmup_images is not None:
        from components.training.warmup_requests import write_warmup_requests
        write_warmup_requests(export_dir, warmup_images)


def _set_method_name(export_dir: str, signature: str, method_name: str) -> None:
    """TF2 saves every signature as 'predict'; TF Serving's Classify API checks for 'classify'."""
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[signature].method_name = method_name
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(saved_model.SerializeToString())
