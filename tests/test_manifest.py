import json

import pytest

from sarbridge.runtime.errors import ManifestError
from sarbridge.runtime.manifest import (
    load_manifest,
    preprocess_of,
    save_manifest,
    sha256_file,
    validate,
)
from sarbridge.runtime.preprocess import SarPreprocess


def make_manifest(model_sha: str) -> dict:
    return {
        "schema_version": 1,
        "task": "detect",
        "model": {"file": "model.onnx", "sha256": model_sha, "format": "onnx"},
        "inputs": [{"name": "images", "shape": ["batch", 1, 512, 512], "dtype": "float32"}],
        "outputs": [
            {
                "name": "preds",
                "shape": ["batch", 5376, 5],
                "dtype": "float32",
                "meaning": "cx,cy,w,h,score",
            }
        ],
        "preprocessing": SarPreprocess().to_dict() | {"input_size": 512},
        "tiling": {"size": 512, "overlap": 0.5},
        "postprocessing": {"score_threshold": 0.25, "iou_threshold": 0.5, "max_detections": 300},
        "classes": ["ship"],
        "precision": "fp32",
        "lineage": [{"step": "train", "config_sha256": "0" * 64}],
        "metrics": {"AP50": 0.9},
        "tool_versions": {"sarbridge": "0.1.0"},
    }


@pytest.fixture
def artifact(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"model bytes")
    save_manifest(make_manifest(sha256_file(tmp_path / "model.onnx")), tmp_path)
    return tmp_path


def test_roundtrip(artifact):
    m = load_manifest(artifact)
    pre, size = preprocess_of(m)
    assert size == 512 and pre == SarPreprocess()
    assert not list(artifact.glob(".*partial"))


def test_wrong_version_names_file_and_field(artifact):
    path = artifact / "manifest.json"
    m = json.loads(path.read_text())
    m["schema_version"] = 7
    path.write_text(json.dumps(m))
    with pytest.raises(ManifestError, match=r"manifest\.json: unknown schema_version 7"):
        load_manifest(artifact)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda m: m.pop("classes"), "missing field 'classes'"),
        (lambda m: m["tiling"].update(overlap=1.5), "tiling.overlap"),
        (lambda m: m["model"].update(sha256="xyz"), "model.sha256"),
        (lambda m: m.update(color="red"), "unknown fields"),
        (lambda m: m["preprocessing"].update(clip="sometimes"), "invalid 'preprocessing'"),
        (lambda m: m.update(task="segment"), "task must be one of"),
        (lambda m: m["postprocessing"].update(vote_iou=0), "postprocessing.vote_iou"),
        (lambda m: m["postprocessing"].update(vote_iou="0.7"), "postprocessing.vote_iou"),
    ],
)
def test_invalid_fields(mutate, match):
    m = make_manifest("a" * 64)
    mutate(m)
    with pytest.raises(ManifestError, match=match):
        validate(m, "m.json")


def test_model_hash_mismatch_is_refused(artifact):
    (artifact / "model.onnx").write_bytes(b"another model")
    with pytest.raises(ManifestError, match="does not match the manifest"):
        load_manifest(artifact)
    assert load_manifest(artifact, verify_model=False)["task"] == "detect"
    (artifact / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(artifact)
