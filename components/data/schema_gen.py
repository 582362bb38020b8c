"""ImportSchemaGen whose cache knows the schema file's contents.

TFX's ImportSchemaGen has one execution property, the schema file's *path*, so its cache key does not
change when the curated schema does: after an upgrade that adds a feature, a pipeline root made
before it would reuse the old schema and stop at ExampleValidator ("New column"). This component
adds the file's SHA-256 as a second property; the executor ignores it, the cache does not.
"""
from __future__ import annotations

import hashlib

from tfx import types
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

SCHEMA_SHA256_KEY = "schema_sha256"


class _CuratedSchemaSpec(standard_component_specs.ImportSchemaGenSpec):
    PARAMETERS = {**standard_component_specs.ImportSchemaGenSpec.PARAMETERS,
                  SCHEMA_SHA256_KEY: ExecutionParameter(type=str)}


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class CuratedSchemaGen(ImportSchemaGen):
    """``schema_file`` is where the component reads the schema when it runs (in an image, for Kubeflow);
    ``local_copy`` is the same file on this machine, hashed now (default: ``schema_file`` itself)."""

    SPEC_CLASS = _CuratedSchemaSpec

    def __init__(self, schema_file: str, local_copy: str = ""):
        spec = _CuratedSchemaSpec(schema_file=schema_file, schema_sha256=file_sha256(local_copy or schema_file),
                                  schema=types.Channel(type=standard_artifacts.Schema))
        super(ImportSchemaGen, self).__init__(spec=spec)
