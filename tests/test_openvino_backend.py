"""The ``openvino`` backend: the zoo detector gives ONNX Runtime's detections and raw outputs,
any batch runs, the precision hint is explicit and stated, bad models are clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO

from sarbridge.runtime.backends import open_backend
from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.manifest import load_manifest
from sarbridge.runtime.zoo import load_index, zoo_artifact

ov = pytest.importorskip("openvino")

DET = "ssdd_edge_det"
THREADS = 1  # the test machine's other core may be busy


@pytest.fixture(scope="module")
def artifact():
    if not any(m["name"] == DET for m in load_index(REPO / "zoo")["models"]):
        pytest.skip(f"no {DET} in the zoo")
    return zoo_artifact(f"zoo:{DET}")


@pytest.fixture(scope="module")
def manifest(artifact) -> dict:
    return load_manifest(artifact)


def _open(artifact, manifest, **options):
    return open_backend("openvino", artifact / manifest["model"]["file"], manifest, **options)


def test_same_detections_and_raw_outputs_as_onnxruntime(artifact, data):
    pytest.importorskip("onnxruntime")
    from sarbridge.runtime.annotations import read_dataset
    from sarbridge.runtime.decode import letterbox
    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.imageio import read_image
    from sarbridge.runtime.metrics import set_agreement
    from sarbridge.runtime.preprocess import preprocess

    records = read_dataset(data / "SSDD").split("test")[:16]
    # a low threshold compares many detections, not only the confident few
    dets = {
        name: Detector.from_artifact(artifact, backend=name, score_threshold=0.05, threads=THREADS)
        for name in ("openvino", "onnxruntime")
    }
    assert dets["openvino"].backend.precision_hint == "f32"  # the fp32 manifest's default
    pairs = []
    for rec in records:
        a, b = (dets[name].detect(rec.path) for name in ("openvino", "onnxruntime"))
        pairs.append(((a.boxes, a.scores, a.labels), (b.boxes, b.scores, b.labels)))
    assert sum(len(a[1]) for a, _ in pairs) >= 20  # enough ships to say something
    assert set_agreement(pairs) >= 0.98

    det = dets["openvino"]
    x = np.stack(
        [
            letterbox(preprocess(read_image(r.path), det.params, path=r.path), det.input_size)[0]
            for r in records[:4]
        ]
    ).astype(np.float32)
    ours, theirs = det.backend.run(x), dets["onnxruntime"].backend.run(x)
    assert len(ours) == len(theirs) == len(det.manifest["outputs"])
    for o, t in zip(ours, theirs, strict=True):
        assert o.shape == t.shape and o.dtype == t.dtype
        np.testing.assert_allclose(o, t, atol=1e-3 * max(1.0, float(np.abs(t).max())))
    for d in dets.values():
        d.close()


def test_batch_one_and_three_run_and_agree(artifact, manifest):
    be = _open(artifact, manifest, threads=THREADS)
    assert be.max_batch is None  # the zoo detector's batch is dynamic
    size = manifest["preprocessing"]["input_size"]
    channels = manifest["inputs"][0]["shape"][1]
    x = np.random.default_rng(0).random((3, channels, size, size), dtype=np.float32)
    three = be.run(x)
    one = be.run(x[:1])
    names = [t["name"] for t in manifest["outputs"]]
    assert len(three) == len(one) == len(names)
    assert three[0].shape[0] == 3 and one[0].shape[0] == 1
    np.testing.assert_allclose(one[0][0], three[0][0], atol=1e-4)
    # the arrays are the caller's: a later run does not overwrite them
    kept = one[0].copy()
    be.run(x[1:2])
    np.testing.assert_array_equal(one[0], kept)
    be.close()


def test_precision_hint_is_explicit_and_stated(artifact, manifest):
    be = _open(artifact, manifest, threads=THREADS)
    assert be.precision_hint == "f32"
    assert "precision hint f32" in be.description and "CPU" in be.description
    assert ov.__version__.split("-")[0] in be.description
    be.close()
    # int8 (Q/DQ) and mixed models: quantized layers run in int8, the rest in f32
    for precision in ("int8", "mixed"):
        be = _open(artifact, {**manifest, "precision": precision}, threads=THREADS)
        assert be.precision_hint == "f32"
        be.close()
    # the description states what OpenVINO applied, read back from the compiled model
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    be = _open(artifact, manifest, threads=THREADS, precision="bf16")
    assert f"precision hint {be.precision_hint}" in be.description
    if "BF16" in caps:
        assert be.precision_hint == "bf16"
    be.close()
    with pytest.raises(SarbridgeError, match="precision hint must be one of"):
        _open(artifact, manifest, precision="int4")


def test_bad_models_are_refused_naming_the_file(artifact, manifest, tmp_path):
    model = tmp_path / "model.onnx"
    with pytest.raises(SarbridgeError, match="runs ONNX models") as err:
        open_backend(
            "openvino", model, {**manifest, "model": {**manifest["model"], "format": "tensorrt"}}
        )
    assert str(model) in str(err.value)
    with pytest.raises(SarbridgeError, match="cannot read the model") as err:
        open_backend("openvino", model, manifest)  # missing
    assert str(model) in str(err.value)
    model.write_bytes(b"\x08\x07garbled, not a protobuf" * 10)
    with pytest.raises(SarbridgeError, match="cannot read the model") as err:
        open_backend("openvino", model, manifest)
    assert str(model) in str(err.value)


def test_cli_detect_and_bench_take_openvino(artifact, data, tmp_path, capsys):
    from sarbridge.benchmarks.bench import BenchSettings, bench_one
    from sarbridge.cli import main

    image = data / "SSDD" / "JPEGImages" / "000001.jpg"
    out = tmp_path / "det"
    args = ["detect", str(image), "--model", f"zoo:{DET}", "--out", str(out), "--no-progress"]
    assert main([*args, "--backend", "openvino", "--threads", str(THREADS)]) == 0
    assert "precision hint f32" in capsys.readouterr().out
    assert json.loads((out / "000001.json").read_text())
    assert main([*args, "--backend", "openvino", "--providers", "CPUExecutionProvider"]) == 2
    assert "--providers is for the onnxruntime backend" in capsys.readouterr().err

    settings = BenchSettings(
        data=None, threads=THREADS, batch_sizes=(1, 2), iterations=4, warmup=1, power="none"
    )
    rec = bench_one(str(artifact), "openvino", settings)
    assert rec["backend"] == "openvino"
    described = rec["backend_description"]
    assert described.startswith("openvino") and "precision hint f32" in described
    assert [r["batch"] for r in rec["latency"]["throughput"]] == [1, 2]
