"""`sarbridge import ultralytics`: a model with Ultralytics' output layout and metadata becomes
an artifact the runtime runs; what does not describe a detection export is refused."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.importers import import_ultralytics

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _export(path, classes=1, names="{0: 'ship'}", metadata=True, size=64, pixel_boxes=False):
    """A tiny graph shaped like an Ultralytics detection export: images [1, 3, S, S] ->
    output0 [1, 4 + C, (S / 8)**2], with the metadata Ultralytics writes. ``pixel_boxes``:
    centres over the whole input and sides up to S/4 (else every value is in (0, 1))."""
    from onnx import TensorProto, helper, numpy_helper

    n = (size // 8) ** 2
    weight = np.random.default_rng(0).normal(size=(4 + classes, 3, 8, 8)).astype(np.float32)
    scale = np.ones((1, 4 + classes, 1), np.float32)
    if pixel_boxes:
        scale[0, :4, 0] = [size, size, size / 4, size / 4]
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["c"], strides=[8, 8]),
        helper.make_node("Reshape", ["c", "shape"], ["r"]),
        helper.make_node("Sigmoid", ["r"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + classes, n])],
        [numpy_helper.from_array(weight, "w"),
         numpy_helper.from_array(np.array([1, 4 + classes, n], np.int64), "shape"),
         numpy_helper.from_array(scale, "scale")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if metadata:
        for k, v in {"task": "detect", "names": names, "imgsz": f"[{size}, {size}]",
                     "stride": "8", "version": "8.4.190"}.items():  # fmt: skip
            model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path


def test_an_ultralytics_export_becomes_a_runnable_artifact(tmp_path):
    from sarbridge.runtime.detector import Detector

    out = import_ultralytics(_export(tmp_path / "best.onnx"), tmp_path / "art")
    m = json.loads((out / "manifest.json").read_text())
    assert m["postprocessing"]["decode"] == "ultralytics" and m["classes"] == ["ship"]
    pre = m["preprocessing"]
    assert (pre["channels"], pre["input_size"], pre["letterbox_align"]) == (3, 64, "center")
    assert pre["letterbox_fill"] == pytest.approx(114 / 255)
    assert m["inputs"][0]["name"] == "images" and m["outputs"][0]["shape"] == [1, 5, 64]
    det = Detector.from_artifact(out, threads=1)
    res = det.detect(np.random.default_rng(1).integers(0, 255, (100, 140), dtype=np.uint8))
    assert res.tiles > 1 and len(res) > 0  # random weights: sigmoid scores around 0.5
    assert np.all(res.boxes[:, 2] <= 140) and np.all(res.boxes[:, 3] <= 100)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"names": "{0: 'ship', 1: 'boat'}"}, r"of 2 classes gives \[batch, 6, anchors\]"),
        ({"names": "{1: 'ship'}"}, "must map 0..C-1"),
        ({"metadata": False}, "no 'task' in the ONNX metadata"),
    ],
)
def test_what_is_not_an_ultralytics_detection_export_is_refused(tmp_path, kwargs, message):
    model = _export(tmp_path / "best.onnx", **kwargs)
    with pytest.raises(SarbridgeError, match=message):
        import_ultralytics(model, tmp_path / "art")
    assert not (tmp_path / "art").exists()


def test_whole_scene_max_is_written_or_refused_under_the_input_size(tmp_path, capsys):
    from sarbridge.cli import main

    out = import_ultralytics(_export(tmp_path / "best.onnx"), tmp_path / "art", whole_scene_max=150)
    assert json.loads((out / "manifest.json").read_text())["tiling"]["whole_scene_max"] == 150
    with pytest.raises(SarbridgeError, match=r"--whole-scene-max 32 is under .* \(64 px\)"):
        import_ultralytics(tmp_path / "best.onnx", tmp_path / "art2", whole_scene_max=32)
    assert not (tmp_path / "art2").exists()
    # over the manifest's bound: refused by the command line before any work
    argv = ["import", "ultralytics", str(tmp_path / "best.onnx"), "--out", str(tmp_path / "art3")]
    assert main([*argv, "--whole-scene-max", "5000"]) == 2
    assert "at most 4096 pixels" in capsys.readouterr().err
    assert not (tmp_path / "art3").exists()


def test_an_existing_out_is_not_replaced(tmp_path):
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "keep.txt").write_text("mine")
    with pytest.raises(SarbridgeError, match="exists already"):
        import_ultralytics(_export(tmp_path / "best.onnx"), tmp_path / "art")
    assert (tmp_path / "art" / "keep.txt").read_text() == "mine"


HAS_ULTRALYTICS = importlib.util.find_spec("ultralytics") is not None


def _ultralytics_onnx(folder, seed: int, data, size: int = 512):
    """A YOLOv8n of random weights (seeded) exported by Ultralytics itself to ONNX. Untrained,
    its features vanish under BatchNorm's initial statistics, so these are measured on 8 SSDD
    train images first, and the class bias is set so that about 1 % of the anchors pass the
    0.25 threshold: each image gives detections to compare, with scores that differ."""
    import torch
    from PIL import Image
    from ultralytics import YOLO

    from sarbridge.runtime.annotations import read_dataset

    torch.manual_seed(seed)
    yolo = YOLO("yolov8n.yaml")
    paths = [r.path for r in read_dataset(data / "SSDD").split("train")[:8]]
    x = torch.stack([
        torch.from_numpy(np.asarray(Image.open(p).convert("RGB").resize((size, size)), np.float32) / 255).permute(2, 0, 1)
        for p in paths
    ])  # fmt: skip
    for module in yolo.model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # the plain average over the batch
    yolo.model.train()
    with torch.no_grad():
        yolo.model(x)
    yolo.model.eval()
    for branch in yolo.model.model[-1].cv3:
        branch[-1].bias.data.fill_(CLASS_BIAS)
    folder.mkdir(parents=True, exist_ok=True)
    path = yolo.export(format="onnx", imgsz=size, opset=17, simplify=False, project=str(folder))
    return Path(path).rename(folder / "model.onnx")


CLASS_BIAS = -7.5


@pytest.mark.skipif(not HAS_ULTRALYTICS, reason="needs the peers extra (ultralytics)")
def test_parity_with_ultralytics_own_predictions(tmp_path, data, monkeypatch):
    from sarbridge.export.ultralytics_parity import parity_check

    monkeypatch.chdir(tmp_path)  # Ultralytics writes next to the model it builds
    model = _ultralytics_onnx(tmp_path / "a", seed=0, data=data)
    # an untrained network's many large, overlapping boxes make NMS sensitive to the last
    # digit of the input (PIL vs OpenCV JPEG decoding): the bar here is below the default 0.95
    # meant for trained models; a different network falls far under it
    out = import_ultralytics(
        model, tmp_path / "art", check=parity_check(model, data / "SSDD", count=4, min_agreement=0.85)
    )
    m = json.loads((out / "manifest.json").read_text())
    parity = m["lineage"][-1]["parity"]
    assert parity["images"] == 4 and parity["detections_ultralytics"] >= 20
    assert parity["agreement"] >= 0.85 and m["metrics"]["ultralytics_parity_agreement"] >= 0.85
    # a model that is not the one imported: the check refuses and nothing is left
    other = _ultralytics_onnx(tmp_path / "b", seed=1, data=data)
    with pytest.raises(SarbridgeError, match="agree with Ultralytics' own at"):
        import_ultralytics(
            model, tmp_path / "art2",
            check=parity_check(other, data / "SSDD", count=4, min_agreement=0.85),
        )  # fmt: skip
    assert not (tmp_path / "art2").exists()


def test_import_without_ultralytics_records_that_parity_was_not_checked(tmp_path):
    out = import_ultralytics(
        _export(tmp_path / "best.onnx"), tmp_path / "art", unchecked="no ultralytics here"
    )
    m = json.loads((out / "manifest.json").read_text())
    assert m["lineage"][-1]["parity"] == "not checked: no ultralytics here"
    assert "ultralytics_parity_agreement" not in m["metrics"]


def test_an_ultralytics_openvino_export_becomes_an_openvino_artifact(tmp_path):
    """``yolo export format=openvino`` writes <name>.xml/.bin and metadata.yaml in a folder."""
    ov = pytest.importorskip("openvino")
    yaml = pytest.importorskip("yaml")
    from sarbridge.runtime.detector import Detector

    folder = tmp_path / "best_openvino_model"
    folder.mkdir()
    ov.save_model(ov.convert_model(str(_export(tmp_path / "best.onnx"))), str(folder / "best.xml"))
    meta = {"task": "detect", "names": {0: "ship"}, "imgsz": [64, 64], "stride": 8,
            "version": "8.4.190", "args": {"int8": False}}  # fmt: skip
    (folder / "metadata.yaml").write_text(yaml.safe_dump(meta))
    out = import_ultralytics(folder, tmp_path / "art", unchecked="test")
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["format"] == "openvino" and m["model"]["file"] == "model.xml"
    assert m["model"]["weights"]["file"] == "model.bin" and m["precision"] == "fp32"
    assert (m["classes"], m["preprocessing"]["input_size"]) == (["ship"], 64)
    image = np.random.default_rng(1).integers(0, 255, (100, 140), dtype=np.uint8)
    a = Detector.from_artifact(out, "openvino", threads=1).detect(image)
    onnx_art = import_ultralytics(tmp_path / "best.onnx", tmp_path / "art_onnx", unchecked="test")
    b = Detector.from_artifact(onnx_art, "onnxruntime", threads=1).detect(image)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
    (folder / "metadata.yaml").unlink()
    with pytest.raises(SarbridgeError, match="no metadata.yaml"):
        import_ultralytics(folder, tmp_path / "art2")


def test_the_parity_check_refuses_without_ultralytics_installed(tmp_path, data, monkeypatch):
    """Ultralytics' predictions stood in for by a small fake module (the real check runs in
    test_parity_with_ultralytics_own_predictions where the peers extra is installed): the
    runtime's own detections pass, shifted boxes are refused and nothing is left, and too few
    detections to say anything are refused."""
    import sys
    import types

    from sarbridge.export.ultralytics_parity import parity_check
    from sarbridge.runtime.detector import Detector

    model = _export(tmp_path / "best.onnx", size=512, pixel_boxes=True)
    ours = import_ultralytics(model, tmp_path / "ref", unchecked="test")
    det = Detector.from_artifact(ours, threads=1)
    shift = {"dx": 0.0, "keep": None}

    class Boxes:
        def __init__(self, res):
            keep = slice(None) if shift["keep"] is None else slice(0, shift["keep"])
            self.xyxy = _Tensor(res.boxes[keep] + np.float32(shift["dx"]))
            self.conf, self.cls = _Tensor(res.scores[keep]), _Tensor(res.labels[keep])

    class YOLO:
        def __init__(self, path, task=None):
            pass

        def predict(self, path, **kwargs):
            return [types.SimpleNamespace(boxes=Boxes(det.detect(path)))]

    fake = types.ModuleType("ultralytics")
    fake.YOLO, fake.__version__ = YOLO, "fake"
    monkeypatch.setitem(sys.modules, "ultralytics", fake)
    # random weights put boxes in the letterbox padding too, clipped to zero area, which the
    # one-to-one matching cannot pair even with themselves: the bar is lower than the default
    check = parity_check(model, data / "SSDD", count=4, min_agreement=0.8)
    out = import_ultralytics(model, tmp_path / "ok", check=check)
    parity = json.loads((out / "manifest.json").read_text())["lineage"][-1]["parity"]
    assert parity["agreement"] >= 0.9 and parity["detections_ultralytics"] >= 10
    assert parity["matched_max_abs"] == 0.0
    shift["dx"] = 40.0
    with pytest.raises(SarbridgeError, match="agree with Ultralytics' own at"):
        import_ultralytics(model, tmp_path / "shifted", check=check)
    assert not (tmp_path / "shifted").exists()
    shift["dx"], shift["keep"] = 0.0, 1
    with pytest.raises(SarbridgeError, match="the parity check would say nothing"):
        import_ultralytics(model, tmp_path / "few", check=check)
    det.close()


class _Tensor:
    """What Ultralytics' result tensors offer the check: .cpu().numpy()."""

    def __init__(self, array):
        self.array = np.asarray(array)

    def cpu(self):
        return self

    def numpy(self):
        return self.array


def test_size_metrics_count_convolutions_weight_and_attention_products(tmp_path):
    """MACs per image by hand: a 3x3 conv, an attention-style product of two activations (no
    weight, as in YOLO11's C2PSA) and a transposed-A Gemm; parameters are the initializers."""
    from onnx import TensorProto, helper, numpy_helper

    from sarbridge.runtime.importers import onnx_size_metrics

    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")  # 216 parameters
    g = numpy_helper.from_array(np.zeros((4, 5), np.float32), "g")  # 20
    shape = numpy_helper.from_array(np.array([1, 8, 16], np.int64), "shape")  # 3
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),  # [1, 8, 4, 4]
        helper.make_node("Reshape", ["c", "shape"], ["q"]),  # [1, 8, 16]
        helper.make_node("Transpose", ["q"], ["k"], perm=[0, 2, 1]),  # [1, 16, 8]
        helper.make_node("MatMul", ["q", "k"], ["attn"]),  # [1, 8, 8], K = 16
        helper.make_node("Flatten", ["attn"], ["f"], axis=2),  # [8, 8]
        helper.make_node("Slice", ["f", "s0", "s1", "ax"], ["fa"]),  # [4, 8]: A of Gemm, transA
        helper.make_node("Gemm", ["fa", "g"], ["y"], transA=1),  # [8 (batch), 5], K = 4
    ]
    consts = [numpy_helper.from_array(np.array(v, np.int64), n)
              for n, v in (("s0", [0]), ("s1", [4]), ("ax", [0]))]  # fmt: skip
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[w, g, shape, *consts],
    )  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    got = onnx_size_metrics(path)
    conv, attn, gemm = 8 * 4 * 4 * 27, 8 * 8 * 16, 5 * 4  # per image: dim 0 is the batch
    assert got["gmacs_per_image"] * 1e9 == pytest.approx(conv + attn + gemm)
    assert got["parameters"] == 216 + 20 + 3 + 3
