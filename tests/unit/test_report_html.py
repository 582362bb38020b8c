"""The run report renders offline from synthetic inputs, with errors-only confusion colours."""
import base64
import io

import numpy as np
from PIL import Image

from components import features, report_html


def _verdict():
    return {"blessed": True, "reasons": [], "accuracy": 0.95, "baseline_accuracy": None,
            "has_baseline": False, "example_count": 100}


def _figures():
    confusion = np.diag(np.full(features.NUM_CLASSES, 90))
    confusion[3, 5] = 7
    return {"confusion": confusion, "per_digit_accuracy": np.linspace(0.9, 0.99, features.NUM_CLASSES),
            "most_confident_wrong": [{"image": np.zeros((28, 28)), "label": 3, "predicted": 5,
                                      "confidence": 0.9}]}


def test_render_is_self_contained_with_all_sections():
    page = report_html.render(_verdict(), _figures(), "test")
    for section in ("Evaluator verdict", "Confusion matrix (test split)", "Accuracy per digit",
                    "most confidently wrong"):
        assert section in page
    assert "http://" not in page and "https://" not in page  # offline: nothing fetched
    assert page.count("data:image/png;base64,") == 3


def test_confusion_matrix_colours_only_errors():
    """The diagonal is masked grey, so the single error cell carries the strongest colour."""
    confusion = np.diag(np.full(features.NUM_CLASSES, 1000))
    confusion[3, 5] = 7
    png = Image.open(io.BytesIO(base64.b64decode(report_html.confusion_matrix_png(confusion)))).convert("RGB")
    pixels = np.asarray(png).reshape(-1, 3).astype(int)
    grey = np.all(np.abs(pixels - [211, 211, 211]) <= 2, axis=1)  # matplotlib "lightgrey"
    strong_red = (pixels[:, 0] > 80) & (pixels[:, 1] < 40) & (pixels[:, 2] < 40)
    assert grey.sum() > 1000 and strong_red.sum() > 100


def test_run_info_table_shows_hyper_parameters_and_code_version():
    info = {"epochs": 3, "batch_size": 32, "hidden_units": [128, 128], "learning_rate": 0.001, "seed": 42,
            "train_splits": ["train"], "code_version": "abc<123>"}
    page = report_html.render(_verdict(), _figures(), "test", info)
    assert "Hyper-parameters and code version" in page
    assert "<th>epochs</th><td>3</td>" in page and "<th>batch_size</th><td>32</td>" in page
    assert "<th>hidden_units</th><td>[128, 128]</td>" in page and "<th>learning_rate</th><td>0.001</td>" in page
    assert "<th>train_splits</th><td>[&#x27;train&#x27;]</td>" in page
    assert "<td>abc&lt;123&gt;</td>" in page  # escaped
    assert "No run information was given." in report_html.render(_verdict(), _figures(), "test")
