"""The transform is the seed's tf.keras.utils.normalize(x, axis=1), to 1e-6, inside a TF graph."""
import numpy as np
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from components.data import features
from components.training.preprocessing import normalize_images, preprocessing_fn


def _images(package_splits, n=256):
    images = package_splits["test"].images[:n].reshape(n, 28, 28)
    # MNIST digits leave the border columns all zero: the case Keras guards against dividing by.
    assert (np.linalg.norm(images.astype(float), axis=1) == 0).any()
    return images


def test_normalize_matches_keras_on_real_digits(package_splits):
    images = _images(package_splits)
    expected = tf.keras.utils.normalize(images, axis=1)
    actual = normalize_images(tf.constant(images.reshape(-1, 784), tf.int64)).numpy()
    assert np.abs(actual - expected).max() <= 1e-6
    assert np.all(actual[np.linalg.norm(images.astype(float), axis=1, keepdims=True).repeat(28, 1) == 0] == 0)


def test_normalize_is_scale_invariant(package_splits):
    images = _images(package_splits, 32).astype(np.float32)
    assert np.abs(normalize_images(images / 255.0).numpy() - normalize_images(images).numpy()).max() <= 1e-6


def test_preprocessing_fn_run_by_tensorflow_transform(package_splits, tmp_path):
    images = _images(package_splits, 64)
    labels = package_splits["test"].labels[:64]
    raw = [{features.IMAGE_KEY: image.reshape(784).astype(np.int64), features.LABEL_KEY: int(label)}
           for image, label in zip(images, labels)]
    metadata = schema_utils.schema_from_feature_spec({
        features.IMAGE_KEY: tf.io.FixedLenFeature([784], tf.int64),
        features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    })
    with tft_beam.Context(temp_dir=str(tmp_path), force_tf_compat_v1=False):
        (transformed, _), _ = (raw, dataset_metadata.DatasetMetadata(metadata)) | tft_beam.AnalyzeAndTransformDataset(
            preprocessing_fn)
    actual = np.stack([row[features.transformed_name(features.IMAGE_KEY)] for row in transformed])
    assert actual.shape == (64, 28, 28)
    assert np.abs(actual - tf.keras.utils.normalize(images, axis=1)).max() <= 1e-6
    assert [row[features.LABEL_KEY] for row in transformed] == list(labels)
