"""`digits data` (pipeline/data_cli.py) on a real span store and a real ML Metadata SQLite file."""
import json

import numpy as np
import pytest
from PIL import Image

from components.data.spans import SpanStore
from pipeline import cli


def record_run(metadata_path: str, run_name: str, spans) -> None:
    """What ExampleGen leaves in ML Metadata: an Examples artifact with digits_spans, output by an
    execution in the run's pipeline_run context."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    connection = pb.ConnectionConfig()
    connection.sqlite.filename_uri = metadata_path
    connection.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(connection)
    artifact = pb.Artifact(type_id=store.put_artifact_type(pb.ArtifactType(name="Examples")), uri="/x")
    artifact.custom_properties["digits_spans"].string_value = json.dumps(
        [{"span": n, "source": "import", "count": 1, "sha256": "0"} for n in spans])
    execution = pb.Execution(type_id=store.put_execution_type(pb.ExecutionType(name="ExampleGen")),
                             last_known_state=pb.Execution.COMPLETE)
    context = pb.Context(type_id=store.put_context_type(pb.ContextType(name="pipeline_run")), name=run_name)
    store.put_execution(execution, [(artifact, pb.Event(type=pb.Event.OUTPUT))], [context])


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITS_DATA_ROOT", str(tmp_path / "data"))
    return tmp_path / "data", ["--pipeline-root", str(tmp_path / "pipeline")], tmp_path / "pipeline"


def png_folder(root, small_images, count=4):
    for i in range(count):
        label = int(small_images[1][i])
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(small_images[0][i]).save(root / str(label) / f"{i}.png")
    (root / "x").mkdir()
    (root / "x" / "a.png").write_bytes(b"")
    return str(root)


def test_add_list_seal_and_drop(tmp_path, roots, small_images, capsys):
    data, flags, pipeline_root = roots
    assert cli.main(["data", *flags]) == 0
    out = capsys.readouterr().out
    assert "no spans yet" in out and "no runs yet" in out
    folder = png_folder(tmp_path / "mine", small_images)
    assert cli.main(["data", "add", folder, "--source", "scans", *flags]) == 0
    out = capsys.readouterr().out
    assert "span 1 (scans): 4 digits, 1 rejected" in out
    assert f"rejected {folder}/x/a.png: label folder 'x' is not a digit 0..9" in out
    assert cli.main(["data", "add", folder, *flags]) == 0  # a retry adds nothing
    assert "are span 1 already" in capsys.readouterr().out
    assert [s.number for s in SpanStore(str(data)).sealed()] == [1]

    store = SpanStore(str(data))
    store.append(small_images[0][0], 7)
    store.append(small_images[0][1], 7)
    assert cli.main(["data", "list", *flags]) == 0
    out = capsys.readouterr().out
    assert "open (next run seals it)" in out and "    1  scans" in out
    assert cli.main(["data", "seal", *flags]) == 0
    assert "sealed span 2: 2 digits" in capsys.readouterr().out

    pipeline_root.mkdir()
    record_run(str(pipeline_root / "metadata.sqlite"), "run-a", [1])
    record_run(str(pipeline_root / "metadata.sqlite"), "run-b", [1, 2])
    assert cli.main(["data", *flags]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert next(line for line in lines if line.strip().startswith("1 ")).endswith("run-a, run-b")
    assert next(line for line in lines if line.strip().startswith("2 ")).endswith("run-b")
    assert not any("no runs yet" in line for line in lines)

    assert cli.main(["data", "drop", "1", *flags]) == 1
    assert capsys.readouterr().err.strip() == (
        "digits data drop: span 1 was used by runs run-a, run-b; --force removes it anyway; "
        "those runs' models keep what they learned")
    assert [s.number for s in store.sealed()] == [1, 2]
    assert cli.main(["data", "drop", "1", "--force", *flags]) == 0
    assert "dropped span 1: its digits are deleted; it was used by runs run-a, run-b" in capsys.readouterr().out
    assert [s.number for s in store.sealed()] == [2]


def test_drop_of_unused_and_open_spans_needs_no_force(tmp_path, roots, small_images, capsys):
    data, flags, pipeline_root = roots
    store = SpanStore(str(data))
    store.add(small_images[0][:3], [1, 2, 3])
    store.append(small_images[0][4], 4)
    pipeline_root.mkdir()
    record_run(str(pipeline_root / "metadata.sqlite"), "run-a", [])  # a run on MNIST only
    assert cli.main(["data", "drop", "1", *flags]) == 0
    assert cli.main(["data", "drop", "open", *flags]) == 0
    assert "dropped the open span: 1 digits deleted" in capsys.readouterr().out
    assert store.sealed() == [] and store.open_count() == 0


def test_errors_are_one_line_with_the_fix(tmp_path, roots, capsys):
    data, flags, _ = roots
    empty = tmp_path / "empty"
    (empty / "3").mkdir(parents=True)
    (empty / "3" / "a.txt").write_text("no image")
    assert cli.main(["data", "add", str(empty), *flags]) == 1
    err = capsys.readouterr().err
    assert "nothing usable" in err and "<digit>/<name>.png" in err and len(err.strip().splitlines()) == 1
    cases = [(["data", "drop", "0"], 2, "span 0 is MNIST"), (["data", "drop", "x"], 2, "SPAN is a span number"),
             (["data", "drop", "5"], 1, "no sealed span 5"), (["data", "--data-rot", "x"], 2, "did you mean --data-root"),
             (["data", "add", str(empty), "--source", "mnist"], 2, "--source: source must be"),
             (["data", "add", str(tmp_path / "nowhere")], 1, "does not exist")]
    for argv, code, message in cases:
        assert cli.main(argv + flags) == code, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
    with pytest.raises(SystemExit) as exit_:  # argparse's own: a missing SPAN
        cli.main(["data", "drop"])
    assert exit_.value.code == 2 and "SPAN" in capsys.readouterr().err
