"""The model zoo: files match their sha256, a changed file is refused, zoo:<name> loads and
starts runs, the index is checked, the board side needs no torch."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import REPO, run_without_torch

from sarbridge.runtime.fileio import sha256_file
from sarbridge.runtime.manifest import load_manifest
from sarbridge.runtime.zoo import (
    ZooError,
    check_all,
    load_index,
    zoo_artifact,
    zoo_checkpoint,
    zoo_dir,
)

ZOO = REPO / "zoo"
BNN = "bnn_edge_sar"


def test_every_zoo_file_matches_its_sha256_and_the_budget():
    index = load_index(ZOO)
    names = [m["name"] for m in index["models"]]
    assert BNN in names
    lines = check_all(ZOO)
    assert len(lines) == sum(len(m["files"]) for m in index["models"])
    total = 0
    for m in index["models"]:
        for f in m["files"].values():
            path = ZOO / f["path"]
            assert sha256_file(path) == f["sha256"] and path.stat().st_size == f["bytes"]
            assert f["bytes"] <= 10 * 2**20
            total += f["bytes"]
        assert m["command"].strip() and m["task"] in ("detect", "bnn")
    assert total <= 40 * 2**20


def test_zoo_dir_is_the_repository_folder_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv("SARBRIDGE_ZOO", raising=False)
    assert zoo_dir() == ZOO
    monkeypatch.setenv("SARBRIDGE_ZOO", str(tmp_path))
    assert zoo_dir() == tmp_path


@pytest.fixture
def zoo_copy(tmp_path, monkeypatch):
    copy = tmp_path / "zoo"
    shutil.copytree(ZOO, copy)
    monkeypatch.setenv("SARBRIDGE_ZOO", str(copy))
    return copy


def test_a_changed_zoo_file_is_refused(zoo_copy):
    assert zoo_artifact(f"zoo:{BNN}") == zoo_copy / BNN
    model = zoo_copy / BNN / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(ZooError, match=r"model\.onnx: the file does not match zoo\.json \(sha256 "):
        zoo_artifact(f"zoo:{BNN}")
    with pytest.raises(ZooError, match="does not match"):
        check_all(zoo_copy)
    (zoo_copy / BNN / "checkpoint.pt").unlink()
    with pytest.raises(ZooError, match="missing"):
        zoo_checkpoint(f"zoo:{BNN}")
    with pytest.raises(ZooError, match="no model 'nope' in the zoo"):
        zoo_checkpoint("zoo:nope")
    from pathlib import Path

    with pytest.raises(ZooError, match="no model 'nope'"):  # a path given on a command line
        zoo_artifact(Path("zoo:nope"))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m["files"]["model"].update(path="../outside.onnx"), "relative 'path'"),
        (lambda m: m["files"]["model"].update(sha256="abc"), "64-hex"),
        (lambda m: m["files"].update(weights=m["files"]["model"]), "unknown file role"),
        (lambda m: m.update(name="Bad Name"), "lower-case"),
    ],
)
def test_a_bad_index_is_refused(zoo_copy, change, message):
    index = json.loads((zoo_copy / "zoo.json").read_text())
    change(index["models"][0])
    (zoo_copy / "zoo.json").write_text(json.dumps(index))
    with pytest.raises(ZooError, match=message):
        load_index(zoo_copy)


def test_a_name_listed_twice_is_refused(zoo_copy):
    index = json.loads((zoo_copy / "zoo.json").read_text())
    index["models"].append(index["models"][0])
    (zoo_copy / "zoo.json").write_text(json.dumps(index))
    with pytest.raises(ZooError, match="listed twice"):
        load_index(zoo_copy)


def test_the_zoo_bnn_loads_and_matches_its_artifact():
    torch = pytest.importorskip("torch")
    from sarbridge.runtime.backends import open_backend
    from sarbridge.train.checkpoint import load_model

    loaded = load_model(f"zoo:{BNN}")
    assert loaded.task == "bnn" and loaded.lineage[-1]["kind"] == "train"
    folder = zoo_artifact(f"zoo:{BNN}")
    manifest = load_manifest(folder)
    # the artifact was exported from this very checkpoint
    export = manifest["lineage"][-1]
    assert export["kind"] == "export" and export["parent"]["sha256"] == sha256_file(
        zoo_checkpoint(f"zoo:{BNN}")
    )
    size = manifest["preprocessing"]["input_size"]
    x = np.random.default_rng(0).random((2, 1, size, size), dtype=np.float32)
    backend = open_backend("onnxruntime", folder / manifest["model"]["file"], manifest)
    with torch.no_grad():
        ref = loaded.model.sar(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(backend.run(x)[0], ref, atol=1e-4)


def test_init_from_the_zoo_bnn_starts_the_detector_backbone():
    torch = pytest.importorskip("torch")
    from dataclasses import replace

    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.recipes.detect import DetConfig, initialise, model_from_config

    cfg = replace(DetConfig(), init=f"zoo:{BNN}")
    model = model_from_config(cfg, 1)
    steps, start = initialise(model, cfg, ["ship"])
    sar = load_model(f"zoo:{BNN}").model.sar.backbone.state_dict()
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, sar[k], rtol=0, atol=0, msg=k)
    assert [s["name"] for s in steps] == ["bnn_edge"]
    assert start["parent"]["sha256"] == sha256_file(zoo_checkpoint(f"zoo:{BNN}"))


def test_zoo_list_and_check_run_without_torch():
    code = "from sarbridge.cli import main\nsys.exit(main(sys.argv[1:]))"
    res = run_without_torch(code, "zoo", "check")
    assert res.returncode == 0, res.stderr
    assert f"ok {BNN} model: {BNN}/model.onnx" in res.stdout
    res = run_without_torch(code, "zoo", "list")
    assert res.returncode == 0, res.stderr
    assert f"zoo:{BNN}" in res.stdout


def test_release_writes_a_checked_entry_and_keeps_only_better_models(edge_artifact, tmp_path):
    pytest.importorskip("torch")
    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.release import add_bench, release

    run = edge_artifact.parents[1] / "runs" / "tiny_edge"
    root = tmp_path / "zoo"
    entry = release(run, "tiny_det", "sarbridge train detect ...", root=root)
    assert [line.split(":")[0] for line in check_all(root)] == [
        "ok tiny_det checkpoint",
        "ok tiny_det model",
        "ok tiny_det manifest",
    ]
    manifest = load_manifest(root / "tiny_det")
    assert manifest["name"] == "tiny_det" and manifest["lineage"][-1]["source"] == "zoo:tiny_det"
    released = load_model(root / "tiny_det" / "checkpoint.pt")
    trained = load_model(run)
    assert entry["parameters"] == sum(p.numel() for p in trained.model.parameters())
    assert entry["metrics"] == trained.lineage[-1]["metrics"] == released.lineage[-1]["metrics"]
    assert "| `tiny_det` | detect" in (root / "README.md").read_text()
    # the same weights may be released again (a new export); other weights must score higher
    again = release(root / "tiny_det" / "checkpoint.pt", "tiny_det", "again", root=root)
    assert again["metrics"] == entry["metrics"] and len(check_all(root)) == 3
    assert again["files"]["checkpoint"] == entry["files"]["checkpoint"]  # the same file kept
    assert again["source_run"] == entry["source_run"] and "deployed" not in again
    torch = pytest.importorskip("torch")
    other = torch.load(run / "best.pt", weights_only=False)
    weights = other.get("ema") or other["model"]
    first = next(k for k, v in weights.items() if v.is_floating_point())
    weights[first] = weights[first] + 0.01
    torch.save(other, tmp_path / "other.pt")
    before = (root / "zoo.json").read_text()
    with pytest.raises(ZooError, match="replaced only by a better one"):
        release(tmp_path / "other.pt", "tiny_det", "other weights", root=root)
    assert (root / "zoo.json").read_text() == before and len(check_all(root)) == 3

    bench = tmp_path / "results.json"
    bench.write_text(
        json.dumps(
            {
                "environment": {"cpu": "test CPU", "threads": 2},
                "records": [
                    {
                        "model": "tiny_det",
                        "backend": "onnxruntime",
                        "accuracy": {"AP50": 0.5, "AP50_95": 0.25, "AP_small": 0.2, "images": 3},
                        "latency": {"batch1": {"p50_ms": 12.5}},
                    }
                ],
            }
        )
    )
    measured = add_bench("tiny_det", bench, root)
    assert measured["deployed"] == {"AP50": 0.5, "AP50_95": 0.25, "AP_small": 0.2, "images": 3}
    assert load_index(root)["models"][0]["latency_ms_batch1_p50"] == 12.5
    assert "0.500 / 0.250 / 0.200 | 12.5 ms (2 threads)" in (root / "README.md").read_text()


def test_exporting_a_zoo_model_keeps_its_name(tmp_path):
    pytest.importorskip("torch")
    from sarbridge.export.onnx_export import export_run

    manifest = export_run(f"zoo:{BNN}", tmp_path / "bnn", parity_images=2)
    assert manifest["name"] == BNN and manifest["lineage"][-1]["source"] == f"zoo:{BNN}"
    assert manifest["lineage"][-1]["parent"]["sha256"] == sha256_file(zoo_checkpoint(f"zoo:{BNN}"))


def test_the_zoo_bnn_backbone_exports_for_detectors(tmp_path):
    torch = pytest.importorskip("torch")
    from sarbridge.runtime.errors import SarbridgeError
    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.models.backbones import build_backbone, load_backbone_weights
    from sarbridge.train.recipes.bnn import export_sar_backbone

    with pytest.raises(SarbridgeError, match="--out"):
        export_sar_backbone(f"zoo:{BNN}")
    path = export_sar_backbone(f"zoo:{BNN}", tmp_path / "sar.pt")
    backbone = build_backbone("edge")
    load_backbone_weights(backbone, path)
    ref = load_model(f"zoo:{BNN}").model.sar.backbone.state_dict()
    for k, v in backbone.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0, msg=k)


DET = "ssdd_edge_det"


def _zoo_has(name: str) -> bool:
    return any(m["name"] == name for m in load_index(ZOO)["models"])


@pytest.mark.slow
def test_the_zoo_detector_meets_its_recorded_accuracy_through_the_deployed_path(data):
    """The zoo's SSDD figures are re-measured here: the torch-free Detector, loaded by name, on
    every SSDD test image, scored with the runtime's COCO AP, must give what zoo.json records."""
    if not _zoo_has(DET):
        pytest.skip(f"no {DET} in the zoo")
    from sarbridge.runtime.annotations import read_dataset
    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.metrics import Detections, coco_ap

    entry = next(m for m in load_index(ZOO)["models"] if m["name"] == DET)
    det = Detector.from_artifact(f"zoo:{DET}", score_threshold=0.001, threads=2)
    ds = read_dataset(data / "SSDD")
    records = ds.split("test")
    dets = []
    for rec in records:
        r = det.detect(rec.path)
        dets.append(Detections(rec.image_id, r.boxes, r.scores, r.labels))
    ap = coco_ap(records, dets, ds.classes, det.max_detections)
    recorded = entry["deployed"]
    assert recorded["images"] == len(records) == 232
    for k in ("AP50", "AP50_95", "AP_small"):
        assert ap[k] == pytest.approx(recorded[k], abs=1e-6), k
