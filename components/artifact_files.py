"""JSON files a component writes into its output artifact for a later component, the run report or the
run summary to read: one home for both sides. Through gfile, so object-store URIs (gs://, s3://) work
as local paths do; TensorFlow is imported on first use, not by whoever merely imports this module."""
from __future__ import annotations

import json
import os
from typing import Any, Optional


def write_json(artifact_uri: str, name: str, value: Any) -> None:
    import tensorflow as tf

    tf.io.gfile.makedirs(artifact_uri)
    with tf.io.gfile.GFile(os.path.join(artifact_uri, name), "w") as f:
        f.write(json.dumps(value, indent=2))


def read_json(artifact_uri: str, name: str) -> Optional[Any]:
    """The file's value, or None if the component did not write it (a run made before it did)."""
    import tensorflow as tf

    path = os.path.join(artifact_uri, name)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
