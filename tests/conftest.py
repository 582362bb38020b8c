"""Shared fixtures: small data made from the packaged MNIST, and one small pipeline run that the
component and end-to-end tests inspect."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is imported, as every entry point does
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gzip  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from components.data import mnist_source  # noqa: E402

# The Trainer fits on 2,500 images: the first 2,000 of train and 500 of eval (also the validation set),
# in batches of 32: on so few images, 128 (the default) leaves 20 steps an epoch, too few for the model to
# learn what the gates' tests feed it (a span of wrong labels must do measurable harm).
SMALL_RUN = dict(train_examples=2500, eval_examples=500, test_examples=500, epochs=2, batch_size=32,
                 accuracy_floor=0.5)


def write_idx(path, array: np.ndarray) -> str:
    """Writes ``array`` (uint8) as an IDX file, gzipped when the name ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
    return str(path)


def make_idx_dir(directory, train_images, train_labels, test_images, test_labels, gz=True) -> str:
    """A directory in the layout of the original MNIST release."""
    suffix = ".gz" if gz else ""
    os.makedirs(directory, exist_ok=True)
    write_idx(os.path.join(directory, "train-images-idx3-ubyte" + suffix), train_images)
    write_idx(os.path.join(directory, "train-labels-idx1-ubyte" + suffix), train_labels)
    write_idx(os.path.join(directory, "t10k-images-idx3-ubyte" + suffix), test_images)
    write_idx(os.path.join(directory, "t10k-labels-idx1-ubyte" + suffix), test_labels)
    return str(directory)


@pytest.fixture(scope="session")
def package_splits():
    return mnist_source.load_splits(mnist_source.package_data_dir(), True)


@pytest.fixture(scope="session")
def small_images(package_splits):
    """600 training and 100 test images of real MNIST, as uint8 [N, 28, 28] and labels."""
    train, test = package_splits["train"], package_splits["test"]
    return (train.images[:600].reshape(-1, 28, 28), train.labels[:600].astype(np.uint8),
            test.images[:100].reshape(-1, 28, 28), test.labels[:100].astype(np.uint8))


@pytest.fixture
def idx_dir(tmp_path, small_images):
    return make_idx_dir(tmp_path / "idx", *small_images)


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """One run of the whole pipeline on a small subset with a low floor, in a temp directory."""
    from pipeline import config as config_lib
    from pipeline.runs import local_runner

    root = tmp_path_factory.mktemp("pipeline")
    config = config_lib.PipelineConfig(  # a data root of its own with no spans: MNIST only, as ever
        pipeline_root=str(root / "root"), serving_dir=str(root / "serving"), data_root=str(root / "data"), **SMALL_RUN)
    summary = local_runner.run(config)
    return config, summary


def export_digits_model(root, package_splits, seed: int, epochs: int) -> str:
    """A real SavedModel made by the pipeline's own code: the tf.Transform graph of preprocessing_fn, the
    seed MLP fitted for ``epochs`` x 63 steps on 2,000 normalized MNIST images, signatures.export()."""
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    from components.data import features
    from components.training import signatures
    from components.training.model import HParams, build_model
    from components.training.preprocessing import preprocessing_fn

    feature_spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([features.NUM_PIXELS], tf.int64),
                    features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    raw_metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(feature_spec))
    train = package_splits["train"]
    images, labels = train.images[:2000].astype(np.int64), train.labels[:2000]
    # preprocessing_fn has no analyzers, so a few rows are enough to build the transform graph.
    rows = [{features.IMAGE_KEY: images[i], features.LABEL_KEY: int(labels[i])} for i in range(8)]
    transform_dir = os.path.join(root, "transform")
    with tft_beam.Context(temp_dir=os.path.join(root, "tft_tmp"), force_tf_compat_v1=False):
        transform_fn = (rows, raw_metadata) | tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(transform_dir)
    metadata_io.write_metadata(raw_metadata, os.path.join(transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    tf_transform_output = tft.TFTransformOutput(transform_dir)

    transformed = tf_transform_output.transform_raw_features(
        {features.IMAGE_KEY: tf.constant(images), features.LABEL_KEY: tf.constant(labels)})
    x = transformed[features.transformed_name(features.IMAGE_KEY)].numpy()
    tf.keras.utils.set_random_seed(seed)
    model = build_model(HParams(epochs=1))
    model.fit(x, labels, batch_size=32, epochs=epochs, verbose=0)
    export_dir = os.path.join(root, "model")
    signatures.export(model, tf_transform_output, export_dir)
    return export_dir


@pytest.fixture(scope="session")
def digits_exports(tmp_path_factory, package_splits):
    """Two different real exports, to serve as versions 1 and 2 of one model."""
    return tuple(export_digits_model(str(tmp_path_factory.mktemp(f"export_{i}")), package_splits, seed, epochs)
                 for i, (seed, epochs) in enumerate([(0, 4), (1, 1)]))


@pytest.fixture(scope="session")
def drawn_digits():
    """Digits that are not MNIST (tests/drawn_digits.py): {"fonts": (x, y), "strokes": (x, y)}, x uint8
    [N, 28, 28] in MNIST's form, y int64 [N]; about 3 s to build."""
    from tests import drawn_digits as drawn

    return {"fonts": drawn.font_digits(), "strokes": drawn.stroke_digits()}
