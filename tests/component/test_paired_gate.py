"""The Evaluator's paired test on real tiny models: both run on the same test tf.Examples through the
tf.Example signature (the report's predict_split), the counts match the predictions, and a withheld
blessing is written as TFX's executor writes one."""
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import artifact_utils, standard_artifacts

from components.evaluation.eval_config import SourceGate
from components.evaluation.evaluator import paired_judgement, withhold_blessing
from components.report.report import predict_split


def _model_artifact(tmp_path, name, export_dir):
    """A Model artifact whose Format-Serving is ``export_dir`` (where the Evaluator reads a model)."""
    uri = tmp_path / name
    uri.mkdir()
    os.symlink(export_dir, uri / "Format-Serving")
    return str(uri)


def _examples(tmp_path, images, labels, sources):
    split = tmp_path / "examples" / "Split-test"
    split.mkdir(parents=True)
    # two files, so that the order files are read in matters
    for part, rows in enumerate(np.array_split(np.arange(len(labels)), 2)):
        with tf.io.TFRecordWriter(str(split / f"data_tfrecord-0000{part}-of-00002.gz"), options="GZIP") as writer:
            for i in rows:
                feature = {"image": tf.train.Feature(int64_list=tf.train.Int64List(value=images[i].ravel().tolist())),
                           "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[i])])),
                           "source": tf.train.Feature(bytes_list=tf.train.BytesList(value=[sources[i].encode()]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    examples.split_names = artifact_utils.encode_split_names(["test"])
    return examples


def test_both_models_are_judged_per_slice_on_the_same_examples(tmp_path, digits_exports, package_splits):
    test = package_splits["test"]
    images, labels = test.images[:300].reshape(-1, 784).astype(np.int64), test.labels[:300]
    sources = np.array(["mnist"] * 200 + ["feedback"] * 60 + ["import"] * 40)
    examples = _examples(tmp_path, images, labels, sources)
    better, worse = (_model_artifact(tmp_path, name, path) for name, path in zip(("a", "b"), digits_exports))
    gate = SourceGate(mnist_floor=0.5, max_accuracy_drop=0.005, max_new_data_drop=0.01, min_slice_examples=50)

    judgement = paired_judgement(examples, worse, better, ["test"], gate)  # candidate: 1 epoch; baseline: 4

    candidate, baseline = predict_split(worse, examples, "test"), predict_split(better, examples, "test")
    assert (candidate["labels"] == labels).all() and (candidate["sources"] == sources).all()  # file order kept
    c_right = candidate["probabilities"].argmax(1) == labels
    b_right = baseline["probabilities"].argmax(1) == labels
    assert set(judgement["slices"]) == {"overall", "mnist", "feedback"}  # import: 40 < 50
    for name, mask in [("overall", np.ones(300, bool)), ("mnist", sources == "mnist"),
                       ("feedback", sources == "feedback")]:
        figures = judgement["slices"][name]
        assert figures["n"] == mask.sum()
        assert figures["b"] == int((b_right & ~c_right)[mask].sum())
        assert figures["c"] == int((c_right & ~b_right)[mask].sum())
        assert figures["accuracy"] == pytest.approx(c_right[mask].mean())
    assert judgement["slices"]["feedback"]["margin"] == 0.01 and judgement["slices"]["mnist"]["margin"] == 0.005

    same = paired_judgement(examples, better, better, ["test"], gate)  # a model against itself: never worse
    assert same["blessed"] and all(s["b"] == s["c"] == 0 and s["p_value"] == 1.0 for s in same["slices"].values())


def test_a_withheld_blessing_is_tfx_not_blessed(tmp_path):
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path)
    (tmp_path / "BLESSED").write_text("")
    blessing.set_int_custom_property("blessed", 1)
    withhold_blessing(blessing)
    assert sorted(os.listdir(tmp_path)) == ["NOT_BLESSED"]
    assert blessing.get_int_custom_property("blessed") == 0
