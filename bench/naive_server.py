"""The baseline for bench/serving_bench.py: the model server users write by hand in FastAPI.

    python bench/naive_server.py --model-dir artifacts/serving/mnist/<version> --port 8601

One uvicorn worker with default settings, a pydantic request model, a plain ``def`` endpoint (FastAPI
runs it in its thread pool) that calls the SavedModel's serving_default signature once per request
and answers TF Serving's row format, so the bench sends it the same bodies and gets the same answers
as from the real server: POST /v1/models/mnist:predict {"instances": [[[...28]...28]...]}
-> {"predictions": [{"probabilities": [...10], "classes": k}, ...]}.
"""
import argparse
import os
from typing import List

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from pydantic import BaseModel  # noqa: E402


class PredictRequest(BaseModel):
    instances: List[List[List[float]]]


def create_app(model_dir: str) -> FastAPI:
    model = tf.saved_model.load(model_dir)
    infer = model.signatures["serving_default"]
    app = FastAPI()

    @app.post("/v1/models/mnist:predict")
    def predict(request: PredictRequest):
        outputs = infer(images=tf.constant(request.instances, dtype=tf.float32))
        probabilities = outputs["probabilities"].numpy().tolist()
        classes = outputs["classes"].numpy().tolist()
        return {"predictions": [{"probabilities": p, "classes": c} for p, c in zip(probabilities, classes)]}

    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="a SavedModel directory (one version)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8601)
    args = parser.parse_args()
    uvicorn.run(create_app(args.model_dir), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
