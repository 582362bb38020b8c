"""The curated schema's contents key ImportSchemaGen's cache, not just its path."""
from components.data.schema_gen import SCHEMA_SHA256_KEY, CuratedSchemaGen, file_sha256
from pipeline.config import PipelineConfig
from pipeline.pipeline import SCHEMA_FILE, create_pipeline


def test_a_changed_schema_file_changes_the_cache_key(tmp_path):
    schema = tmp_path / "schema.pbtxt"
    schema.write_text('feature { name: "image" type: INT }\n')
    before = CuratedSchemaGen(schema_file=str(schema)).exec_properties
    schema.write_text('feature { name: "image" type: INT }\nfeature { name: "source" type: BYTES }\n')
    after = CuratedSchemaGen(schema_file=str(schema)).exec_properties
    assert before["schema_file"] == after["schema_file"]
    assert before[SCHEMA_SHA256_KEY] != after[SCHEMA_SHA256_KEY]


def test_the_pipeline_hashes_the_repository_schema_even_when_it_reads_another_path(tmp_path):
    pipeline = create_pipeline(PipelineConfig(pipeline_root=str(tmp_path / "root"), serving_dir=str(tmp_path / "s")))
    schema_gen = next(node for node in pipeline.components if node.id == "ImportSchemaGen")
    assert schema_gen.exec_properties[SCHEMA_SHA256_KEY] == file_sha256(SCHEMA_FILE)
