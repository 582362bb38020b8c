"""Step "cnn" of bench/pipeline_bench.py: pushed models side by side, each measured through the model
server as a client sees it (issue 16).

For each model: `python -m serving` serves a copy of it as version 1 (bench/serving_bench.prepare_model,
tests/server_process.ServerProcess); REST Predicts of serving_default give the accuracy on MNIST's
10,000 test images, on the digits rendered from fonts and on the drawn strokes (tests/drawn_digits.py);
then single-image Predicts one after the other on one keep-alive connection (after a warm-up) give
the latency per image, median and p99. Size: the SavedModel's bytes on disk, and its parameter count
(the model's weights in the SavedModel's checkpoint, optimizer slots left out).
"""
import http.client
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

# parameter_count imports TensorFlow here: keep its start-up logs and notices off the bench's output (set, not
# defaulted: the Makefile exports level 1, under which TensorFlow's CUDA-registration errors print on a CPU host).
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
warnings.filterwarnings("ignore", category=FutureWarning, module="google")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = "/v1/models/mnist:predict"
BATCH = 500  # images per Predict for the accuracies
WARMUP_REQUESTS = 50
# (label, key, format) of format_table's rows; a value missing from a column prints as "-".
ROWS = (("pipeline test accuracy", "pipeline_accuracy", "{:.4f}"),
        ("MNIST test accuracy (server)", "mnist_accuracy", "{:.4f}"),
        ("font digits accuracy", "fonts_accuracy", "{:.4f}"),
        ("stroke digits accuracy", "strokes_accuracy", "{:.4f}"),
        ("latency / image, median ms", "latency_median_ms", "{:.2f}"),
        ("latency / image, p99 ms", "latency_p99_ms", "{:.2f}"),
        ("SavedModel size, MB", "saved_model_mb", "{:.2f}"),
        ("parameters", "parameters", "{:,}"),
        ("Trainer seconds", "trainer_s", "{:.1f}"))


def format_table(columns):
    """{column name: {key: value}} as a text table, one ROWS line each, the columns side by side."""
    names = list(columns)
    cells = [[fmt.format(columns[n][key]) if columns[n].get(key) is not None else "-" for n in names]
             for _, key, fmt in ROWS]
    width = max([len(n) for n in names] + [len(c) for row in cells for c in row])
    label_width = max(len(label) for label, _, _ in ROWS)
    lines = [" " * label_width + "".join(f"  {n:>{width}}" for n in names)]
    for (label, _, _), row in zip(ROWS, cells):
        lines.append(f"{label:<{label_width}}" + "".join(f"  {c:>{width}}" for c in row))
    return "\n".join(lines)


def latency_summary(milliseconds):
    """Median and 99th percentile (linear interpolation) of per-request times."""
    values = np.asarray(milliseconds, dtype=float)
    return {"latency_median_ms": float(np.median(values)), "latency_p99_ms": float(np.percentile(values, 99)),
            "latency_requests": int(values.size)}


def saved_model_bytes(model_dir):
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(model_dir) for name in names)


def is_weight(name):
    """A checkpoint key of a layer's weight (not an optimizer slot, step counter or metric)."""
    return (name.startswith("layer_with_weights-") and name.endswith("/.ATTRIBUTES/VARIABLE_VALUE")
            and ".OPTIMIZER_SLOT" not in name)


def parameter_count(model_dir):
    import tensorflow as tf
    return int(sum(np.prod(shape) for name, shape in tf.train.list_variables(
        os.path.join(model_dir, "variables", "variables")) if is_weight(name)))


def evaluation_sets():
    """{name: (uint8 images [N, 28, 28], labels)}: MNIST's test split and tests/drawn_digits.py's two sets."""
    sys.path.insert(0, ROOT)
    from components.data import mnist_source
    from tests import drawn_digits
    test = mnist_source.load_splits(mnist_source.package_data_dir(), True)["test"]
    return {"mnist": (np.asarray(test.images).reshape(-1, 28, 28), np.asarray(test.labels)),
            "fonts": drawn_digits.font_digits(), "strokes": drawn_digits.stroke_digits()}


def predict_classes(connection, images):
    """serving_default's classes for images [N, 28, 28] (pixels 0..255) over one REST Predict."""
    body = json.dumps({"instances": np.asarray(images).astype(int).tolist()}, separators=(",", ":"))
    connection.request("POST", PATH, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    if response.status != 200:
        raise RuntimeError(f"Predict answered {response.status}: {str(answer)[:300]}")
    return np.asarray([p["classes"] for p in answer["predictions"]])


def measure_server(rest_port, sets, latency_requests):
    """Accuracy on each set and single-image latency, against a server already serving the model."""
    connection = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=120)
    try:
        result = {}
        for name, (images, labels) in sets.items():
            classes = np.concatenate([predict_classes(connection, images[i:i + BATCH])
                                      for i in range(0, len(images), BATCH)])
            result[f"{name}_accuracy"] = float(np.mean(classes == labels))
            result[f"{name}_images"] = int(len(images))
        images = sets["mnist"][0]
        times = []
        for i in range(WARMUP_REQUESTS + latency_requests):
            started = time.perf_counter()
            predict_classes(connection, images[i % len(images)][None])
            if i >= WARMUP_REQUESTS:
                times.append(1000.0 * (time.perf_counter() - started))
        result.update(latency_summary(times))
        return result
    finally:
        connection.close()


def measure_model(model_dir, sets, latency_requests, server_args=()):
    """One model, served alone: its column of the table."""
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from serving_bench import prepare_model
    from tests.server_process import ServerProcess
    with tempfile.TemporaryDirectory(prefix="digits-model-compare-") as work:
        _, base = prepare_model(work, None, model_dir)
        with ServerProcess(["--model_name=mnist", f"--model_base_path={base}", *server_args]) as server:
            result = measure_server(server.rest_port, sets, latency_requests)
    size = saved_model_bytes(model_dir)
    return {**result, "model_dir": model_dir, "saved_model_bytes": size, "saved_model_mb": size / 1e6,
            "parameters": parameter_count(model_dir)}


def compare(models, latency_requests):
    """{column name: {"model_dir": ..., other known figures}} -> the same with each model's measurements."""
    sets = evaluation_sets()
    columns = {}
    for name, known in models.items():
        print(f"serving {name} ({known['model_dir']}) ...", flush=True)
        columns[name] = {**known, **measure_model(known["model_dir"], sets, latency_requests)}
    return columns
