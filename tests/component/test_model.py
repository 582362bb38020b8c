"""The trained model and its signatures: no training/serving skew, the seed's architecture,
reproducible weights. Uses the model the shared small pipeline run trained and pushed."""
import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tfx.components.trainer import fn_args_utils
from tfx.types import artifact_utils, standard_artifacts

from components.training import model as model_module
from components.training import signatures
from components.data.example_gen import _to_examples

N = 200


@pytest.fixture(scope="module")
def pushed_model_dir(pipeline_run):
    _, summary = pipeline_run
    assert summary.pushed, summary.render()
    return summary.pushed_path


@pytest.fixture(scope="module")
def test_digits(package_splits):
    test = package_splits["test"]
    return test.images[:N].reshape(N, 28, 28), test.labels[:N]


def test_signatures_and_keras_model_agree(pushed_model_dir, test_digits):
    images, labels = test_digits
    loaded = tf.saved_model.load(pushed_model_dir)
    by_pixels = loaded.signatures[signatures.DEFAULT_SIGNATURE](images=tf.constant(images, tf.float32))
    by_unit_floats = loaded.signatures[signatures.DEFAULT_SIGNATURE](images=tf.constant(images / 255.0, tf.float32))
    serialized = tf.constant(_to_examples(images.reshape(N, 784), labels))
    by_examples = loaded.signatures[signatures.EXAMPLES_SIGNATURE](examples=serialized)
    classified = loaded.signatures[signatures.CLASSIFY_SIGNATURE](inputs=serialized)
    keras_model = tf.keras.models.load_model(pushed_model_dir)
    by_keras = keras_model(tf.keras.utils.normalize(images, axis=1), training=False).numpy()

    probabilities = by_pixels["probabilities"].numpy()
    assert probabilities.shape == (N, 10) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    for other in (by_unit_floats["probabilities"], by_examples["probabilities"], classified["scores"], by_keras):
        assert np.abs(np.asarray(other) - probabilities).max() <= 1e-5
    assert by_pixels["classes"].dtype == tf.int64
    assert np.array_equal(by_pixels["classes"].numpy(), probabilities.argmax(axis=1))
    assert np.array_equal(by_examples["classes"].numpy(), probabilities.argmax(axis=1))
    assert classified["classes"].numpy()[0].tolist() == [str(d).encode() for d in range(10)]
    assert (probabilities.argmax(axis=1) == labels).mean() > 0.5  # it learned something


def test_signature_contract(pushed_model_dir):
    loaded = tf.saved_model.load(pushed_model_dir)
    default = loaded.signatures[signatures.DEFAULT_SIGNATURE]
    spec = default.structured_input_signature[1]["images"]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, 28, 28]
    assert set(default.structured_outputs) == {"probabilities", "classes"}
    assert loaded.signatures[signatures.EXAMPLES_SIGNATURE].structured_input_signature[1]["examples"].dtype == tf.string
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(pushed_model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    methods = {name: sig.method_name for name, sig in saved_model.meta_graphs[0].signature_def.items()}
    assert methods[signatures.CLASSIFY_SIGNATURE] == "tensorflow/serving/classify"
    assert methods[signatures.DEFAULT_SIGNATURE] == "tensorflow/serving/predict"


def test_clients_send_the_image_alone_though_the_training_data_carries_source_and_span(
        pipeline_run, pushed_model_dir, test_digits):
    import tensorflow_transform as tft

    config, _ = pipeline_run
    graph = tft.TFTransformOutput(_first_output(config, "Transform", "transform_graph"))
    assert {"image", "label", "source", "span"} <= set(graph.raw_feature_spec())  # the schema's features
    images, labels = test_digits
    flat = images.reshape(N, 784)
    as_in_training = tf.constant(_to_examples(flat, labels, ["feedback"] * N, 3))
    image_only = tf.constant([tf.train.Example(features=tf.train.Features(feature={"image": tf.train.Feature(
        int64_list=tf.train.Int64List(value=image.astype(np.int64)))})).SerializeToString() for image in flat])
    loaded = tf.saved_model.load(pushed_model_dir)
    for name, key, output in ((signatures.EXAMPLES_SIGNATURE, "examples", "probabilities"),
                              (signatures.CLASSIFY_SIGNATURE, "inputs", "scores")):
        expected = loaded.signatures[name](**{key: as_in_training})[output].numpy()
        assert np.abs(loaded.signatures[name](**{key: image_only})[output].numpy() - expected).max() <= 1e-6, name


def test_model_is_the_seed_architecture():
    model = model_module.build_model(model_module.HParams())
    layers = [(type(layer).__name__, getattr(layer, "units", None)) for layer in model.layers]
    assert layers == [("Flatten", None), ("Dense", 128), ("Dense", 128), ("Dense", 10)]
    assert [layer.activation for layer in model.layers[1:]] == [tf.nn.relu, tf.nn.relu, tf.nn.softmax]
    assert model.loss == "sparse_categorical_crossentropy"
    assert type(model.optimizer).__name__ == "Adam"


def _first_output(config, component, output):
    """The shared run's artifact (later tests may add more runs to the same pipeline root)."""
    runs = glob.glob(os.path.join(config.pipeline_root, component, output, "*"))
    return min(runs, key=lambda path: int(os.path.basename(path)))


def _train(pipeline_run, out_dir, examples_uri=None, **custom_config):
    config, _ = pipeline_run
    examples = standard_artifacts.Examples()
    examples.uri = examples_uri or _first_output(config, "MnistExampleGen", "examples")
    examples.split_names = artifact_utils.encode_split_names(["train", "eval", "test"])
    graph = standard_artifacts.TransformGraph()
    graph.uri = _first_output(config, "Transform", "transform_graph")
    fn_args = fn_args_utils.get_common_fn_args(
        {"examples": [examples], "transform_graph": [graph]},
        {"train_args": '{"splits": ["train"]}', "eval_args": '{"splits": ["eval"]}'})
    fn_args.serving_model_dir = os.path.join(out_dir, "serving")
    fn_args.model_run_dir = os.path.join(out_dir, "logs")
    fn_args.custom_config = {"epochs": 1, **custom_config}
    model_module.run_fn(fn_args)
    return [w for w in tf.keras.models.load_model(fn_args.serving_model_dir).get_weights()]


def test_same_config_gives_the_same_weights(pipeline_run, tmp_path):
    """Shuffling, the shifts of augmentation and the cosine schedule included (the defaults)."""
    assert model_module.HParams().augment_shift > 0 and model_module.HParams().lr_schedule == "cosine"
    first = _train(pipeline_run, str(tmp_path / "a"), seed=7)
    second = _train(pipeline_run, str(tmp_path / "b"), seed=7)
    other_seed = _train(pipeline_run, str(tmp_path / "c"), seed=8)
    unshifted = _train(pipeline_run, str(tmp_path / "d"), seed=7, augment_shift=0)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, c) for a, c in zip(first, other_seed))
    assert not all(np.array_equal(a, d) for a, d in zip(first, unshifted))


def _reversed_copy(examples_uri, out_dir):
    """The same examples with the train split's records written in the opposite order, as another
    ExampleGen run may write them."""
    shutil.copytree(examples_uri, out_dir)
    for path in glob.glob(os.path.join(out_dir, "Split-train", "*")):
        records = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for record in reversed(records):
                writer.write(record)
    return out_dir


def test_the_order_examples_were_written_in_does_not_change_the_weights(pipeline_run, tmp_path):
    config, _ = pipeline_run
    reordered = _reversed_copy(_first_output(config, "MnistExampleGen", "examples"), str(tmp_path / "reversed"))
    first = _train(pipeline_run, str(tmp_path / "a"), seed=7)
    second = _train(pipeline_run, str(tmp_path / "b"), examples_uri=reordered, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_cnn_option_trains_and_exports_every_signature(pipeline_run, tmp_path):
    weights = _train(pipeline_run, str(tmp_path / "cnn"), seed=7, architecture="cnn")
    model = tf.keras.models.load_model(str(tmp_path / "cnn" / "serving"))
    assert {"serving_default", "serving_examples", "classify"} <= set(model.signatures)
    assert [w.shape for w in weights[:2]] == [(3, 3, 1, 32), (32,)]


def test_cnn_architecture():
    model = model_module.build_model(model_module.HParams(architecture="cnn"))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Reshape", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense", "Dense"]
    assert model.output_shape == (None, 10)
