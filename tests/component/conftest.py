"""Fixtures of the serving core's tests: a real SavedModel exported by the pipeline's own code,
loaded by serving.core and, independently, by tf.saved_model.load."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

N = 64  # test digits per request in the serving tests


@pytest.fixture(scope="session")
def digits_export(tmp_path_factory, package_splits):
    """A real export: tf.Transform graph of preprocessing_fn, the seed MLP trained ~250 steps on
    2,000 normalized MNIST images, signatures.export(). About 35 s on 2 cores, most of it TensorFlow's first fit()."""
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    from components import features, signatures
    from components.model import HParams, build_model
    from components.preprocessing import preprocessing_fn

    root = tmp_path_factory.mktemp("serving_core")
    feature_spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([features.NUM_PIXELS], tf.int64),
                    features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    raw_metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(feature_spec))
    train = package_splits["train"]
    images, labels = train.images[:2000].astype(np.int64), train.labels[:2000]
    # preprocessing_fn has no analyzers, so a few rows are enough to build the transform graph.
    rows = [{features.IMAGE_KEY: images[i], features.LABEL_KEY: int(labels[i])} for i in range(8)]
    transform_dir = str(root / "transform")
    with tft_beam.Context(temp_dir=str(root / "tft_tmp"), force_tf_compat_v1=False):
        transform_fn = (rows, raw_metadata) | tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(transform_dir)
    metadata_io.write_metadata(raw_metadata, os.path.join(transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    tf_transform_output = tft.TFTransformOutput(transform_dir)

    transformed = tf_transform_output.transform_raw_features(
        {features.IMAGE_KEY: tf.constant(images), features.LABEL_KEY: tf.constant(labels)})
    x = transformed[features.transformed_name(features.IMAGE_KEY)].numpy()
    tf.keras.utils.set_random_seed(0)
    model = build_model(HParams(epochs=1))
    model.fit(x, labels, batch_size=32, epochs=4, verbose=0)  # 4 x 63 steps
    export_dir = str(root / "model")
    signatures.export(model, tf_transform_output, export_dir)
    return export_dir


@pytest.fixture(scope="session")
def model(digits_export):
    from serving.core import LoadedModel
    return LoadedModel.load(digits_export)


@pytest.fixture(scope="session")
def direct(digits_export):
    """The same export loaded independently, to call its signatures directly."""
    return tf.saved_model.load(digits_export)


@pytest.fixture(scope="session")
def digits(package_splits):
    from components.example_gen import _to_examples
    test = package_splits["test"]
    images, labels = test.images[:N], test.labels[:N]
    return images.reshape(N, 28, 28).astype(np.float32), labels, list(_to_examples(images, labels))
