"""`make clean` removes what a run can make again and never the served models (README, "make clean")."""
import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_make_clean_keeps_the_served_models_and_says_so(tmp_path):
    for d in ("artifacts/pipeline/Trainer/model/1", "artifacts/bench", "artifacts/serving/mnist/17", "build/kfp",
              "tests/artifacts/web"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "artifacts/serving/mnist/17/saved_model.pb").write_bytes(b"model")
    done = subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "-C", str(tmp_path), "clean"],
                          capture_output=True, text=True, check=True)
    assert (tmp_path / "artifacts/serving/mnist/17/saved_model.pb").read_bytes() == b"model"
    for d in ("artifacts/pipeline", "artifacts/bench", "build", "tests/artifacts"):
        assert not (tmp_path / d).exists(), d
    assert "kept artifacts/serving" in done.stdout
