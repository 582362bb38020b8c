"""Fixtures of the serving core's tests: a real SavedModel exported by the pipeline's own code,
loaded by serving.servables.loaded_model and, independently, by tf.saved_model.load."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from serving.errors import ServingError  # noqa: E402
from serving.rest_api.transport import RestServer  # noqa: E402

N = 64  # test digits per request in the serving tests


@pytest.fixture(scope="session")
def digits_export(digits_exports):
    """A real export made by the pipeline's own code (tests/conftest.py export_digits_model)."""
    return digits_exports[0]


@pytest.fixture(scope="session")
def model(digits_export):
    from serving.servables.loaded_model import LoadedModel
    return LoadedModel.load(digits_export)


@pytest.fixture(scope="session")
def direct(digits_export):
    """The same export loaded independently, to call its signatures directly."""
    return tf.saved_model.load(digits_export)


@pytest.fixture(scope="session")
def digits(package_splits):
    from components.data.example_gen import _to_examples
    test = package_splits["test"]
    images, labels = test.images[:N], test.labels[:N]
    return images.reshape(N, 28, 28).astype(np.float32), labels, list(_to_examples(images, labels))


def serve_export(tmp_path_factory, export, name="digits", version=1, **spec):
    """The real serving core without a server process: a ModelRegistry holding ``export`` as version
    ``version`` of model ``name`` (a symlink in a fresh base path), polled once. ``spec``: more
    ModelSpec fields (e.g. version_labels). Returns (registry, base path)."""
    from serving.core.model_registry import ModelRegistry
    from serving.model_servers.server_config import ModelSpec
    from serving.servables.loaded_model import LoadedModel

    base = tmp_path_factory.mktemp(f"{name}_models") / name
    base.mkdir()
    os.symlink(export, base / str(version))
    registry = ModelRegistry([ModelSpec(name, str(base), **spec)], LoadedModel.load, poll_seconds=-1)
    registry.poll_once()
    return registry, str(base)


class StubRegistry:
    """A registry holding one servable as version 1 of the model "stub": the REST front's tests
    without TensorFlow or a model directory."""

    def __init__(self, servable):
        self.servable = servable

    def get(self, name, version=None, label=None):
        if name != "stub":
            raise ServingError(f"Servable not found for request: Latest({name})", "NOT_FOUND")
        return 1, self.servable


@pytest.fixture
def stub_rest():
    """``start(servable, **RestServer options)``: a started RestServer for the stub on a free loopback
    port; every server started is stopped at teardown."""
    servers = []

    def start(servable, **kwargs):
        rest = RestServer(StubRegistry(servable), 0, host="127.0.0.1", **kwargs)
        rest.start()
        servers.append(rest)
        return rest

    yield start
    for rest in servers:
        rest.stop()


@pytest.fixture(scope="module")
def grpc_target(registry):
    """A gRPC front on a free loopback port over the requesting module's own ``registry`` fixture."""
    from serving.grpc_api.front import GrpcServer  # imported here so REST-only modules never load gRPC

    server = GrpcServer(registry, -1, host="127.0.0.1")
    server.start()
    yield f"127.0.0.1:{server.port}"
    server.stop()
