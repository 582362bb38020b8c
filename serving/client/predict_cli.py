"""``digits predict``: asks the model server which digit each image shows.

    digits predict seven.png drawing.jpg        # REST on localhost:8501
    digits predict batch.npy --grpc --json      # gRPC on localhost:8500, machine-readable output

Every image is answered even when others cannot be read: each failure is one line on stderr (and an
``error`` entry with --json), and the exit status is 1. Images the model will likely misread (far
smaller than MNIST's digits, several separate marks) are answered with a warning on stderr (and in
the JSON entry's ``warnings``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Optional, Sequence

import numpy as np

from serving.client.model_client import (DEFAULT_GRPC_PORT, DEFAULT_REST_PORT, ClientError, ModelClient,
                            shortest_float32)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digits predict",
        description="Send images to the model server and print the digit each one shows. Photos and drawings "
                    "are brought to MNIST's 28x28 form first; .npy arrays [H, W] or [N, H, W] are accepted too.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...) or .npy arrays")
    parser.add_argument("--server", default=os.environ.get("DIGITS_SERVER"), metavar="HOST:PORT",
                        help=f"the model server (default: $DIGITS_SERVER, else localhost:{DEFAULT_REST_PORT}, "
                             f"or localhost:{DEFAULT_GRPC_PORT} with --grpc)")
    parser.add_argument("--grpc", action="store_true", help="use the gRPC API instead of REST")
    parser.add_argument("--model-name", default="mnist", help="model name on the server (default: %(default)s)")
    pinned = parser.add_mutually_exclusive_group()
    pinned.add_argument("--model-version", type=int, metavar="N", help="a version number (default: the latest)")
    pinned.add_argument("--model-label", metavar="LABEL", help="a version label, e.g. stable")
    parser.add_argument("--signature-name", default="serving_default", help="default: %(default)s")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of one line per image")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="seconds to wait for the server (default: %(default)s)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.model_version is not None and args.model_version < 0:
        parser.error("--model-version must be a non-negative integer")
    target = args.server or f"localhost:{DEFAULT_GRPC_PORT if args.grpc else DEFAULT_REST_PORT}"
    if args.grpc:  # only the fallback to the generated stubs imports TensorFlow: keep its start-up logs and notices off the user's terminal
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        warnings.filterwarnings("ignore", category=FutureWarning, module="google")
    try:
        client = ModelClient(target, args.model_name, args.model_version, args.model_label,
                             args.signature_name, args.grpc, args.timeout)
    except ValueError as e:
        parser.error(str(e))
    from serving.client.mnist_image import load_checked

    prepared = [item for path in args.images for item in load_checked(path)]
    good = [item for item in prepared if item.error is None]
    probabilities = np.zeros((0, 10), np.float32)
    if good:
        try:
            with client:
                probabilities = client.predict(np.stack([item.image for item in good]))
        except ClientError as e:
            for item in prepared:
                if item.error:
                    _tell(str(item.error))
            _tell(str(e))
            return 1
    answers = iter(probabilities)  # one per good image, in order
    rows = []
    for item in prepared:  # in the order given: a bad file is reported and the others are still answered
        if item.error:
            _tell(str(item.error))
            rows.append({"image": item.name, "error": str(item.error)})
            continue
        p = next(answers)
        d = int(p.argmax())
        if not args.json:
            print(f"{item.name}: {d} (p={p[d]:.3f})")
        for warning in item.warnings:
            _tell(f"warning: {warning}")
        rows.append({"image": item.name, "digit": d, "probability": shortest_float32(p[d]),
                     "probabilities": [shortest_float32(v) for v in p], "warnings": list(item.warnings)})
    if args.json:
        print(json.dumps(rows, indent=1))
    return 1 if len(good) < len(prepared) else 0


def _tell(message: str) -> None:
    sys.stdout.flush()  # answers and messages stay in order on a terminal
    print(f"digits predict: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
