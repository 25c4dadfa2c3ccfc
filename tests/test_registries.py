"""The lazy backend registry and the decoder registry: names, refusals, imports only when chosen."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from conftest import run_without_torch

from sarbridge.runtime import backends
from sarbridge.runtime.decode import (
    dense_candidates,
    get_decoder,
    grid_points,
    list_decoders,
    register_decoder,
    yolo_candidates,
    yolo_grid,
)
from sarbridge.runtime.errors import SarbridgeError


def test_builtin_backends_and_their_extras():
    assert {"onnxruntime", "pytorch"} <= set(backends.list_backends())
    assert backends.backend_entry("onnxruntime").extra == "onnx"
    assert backends.backend_entry("pytorch").extra == "train"
    assert backends.backend_entry("openvino").extra == "openvino"


def test_listing_backends_imports_no_backend_package():
    code = (
        "from sarbridge.runtime.backends import list_backends\n"
        "names = list_backends()\n"
        "loaded = [m for m in ('onnxruntime', 'openvino', 'tensorrt', 'torch') if sys.modules.get(m)]\n"
        "print(','.join(names), '|', ','.join(loaded))\n"
    )
    res = run_without_torch(code)
    assert res.returncode == 0, res.stderr
    names, loaded = (s.strip() for s in res.stdout.split("|"))
    assert "onnxruntime" in names.split(",") and "pytorch" in names.split(",")
    assert loaded == ""


def test_a_missing_backend_package_names_the_extra():
    code = (
        "from sarbridge.runtime.backends import open_backend\n"
        "from sarbridge.runtime.errors import SarbridgeError\n"
        "try:\n"
        "    open_backend('pytorch', 'model.onnx', {})\n"
        "except SarbridgeError as exc:\n"
        "    print(exc)\n"
    )
    res = run_without_torch(code)
    assert res.returncode == 0, res.stderr
    assert "'pytorch' backend" in res.stdout and "'torch' package" in res.stdout
    assert "pip install 'sarbridge[train]'" in res.stdout


def test_a_missing_openvino_names_its_extra():
    code = (
        "sys.modules['openvino'] = None\n"
        "from sarbridge.runtime.backends import open_backend\n"
        "from sarbridge.runtime.errors import SarbridgeError\n"
        "try:\n"
        "    open_backend('openvino', 'model.onnx', {})\n"
        "except SarbridgeError as exc:\n"
        "    print(exc)\n"
    )
    res = run_without_torch(code)
    assert res.returncode == 0, res.stderr
    assert "'openvino' package" in res.stdout and "pip install 'sarbridge[openvino]'" in res.stdout


def test_registry_refusals(monkeypatch):
    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))
    with pytest.raises(ValueError, match="'onnxruntime' is already registered"):
        backends.register_backend("onnxruntime", "somewhere:Else", "onnx")
    with pytest.raises(ValueError, match="module:attr"):
        backends.register_backend("nocolon", "sarbridge.runtime.backends.openvino", "openvino")
    with pytest.raises(
        SarbridgeError, match=r"unknown backend 'tflite'; choose one of: .*onnxruntime"
    ):
        backends.open_backend("tflite", "model.onnx", {})
    # a broken import that is not a backend package is a bug: raised as it is, not reworded
    backends.register_backend("broken", "sarbridge_no_such_module:Backend", "onnx")
    with pytest.raises(ModuleNotFoundError, match="sarbridge_no_such_module"):
        backends.open_backend("broken", "model.onnx", {})


def test_a_registered_backend_is_imported_when_opened(monkeypatch, tmp_path):
    """Registration stores a path; opening imports it and builds (model_path, manifest, **options)."""
    import sys
    import types

    module = types.ModuleType("sarbridge_test_backend")

    class Echo(backends.Backend):
        def __init__(self, model_path, manifest, scale=1.0):
            self.model_path, self.manifest, self.scale = model_path, manifest, scale

        def run(self, batch):
            return [batch * self.scale]

    module.Echo = Echo
    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))
    backends.register_backend("echo", "sarbridge_test_backend:Echo", "dev")
    monkeypatch.setitem(sys.modules, "sarbridge_test_backend", module)
    be = backends.open_backend("echo", str(tmp_path / "m.onnx"), {"k": 1}, scale=2.0)
    assert isinstance(be, Echo) and be.model_path == tmp_path / "m.onnx" and be.manifest == {"k": 1}
    np.testing.assert_array_equal(be.run(np.ones(3, np.float32))[0], [2, 2, 2])


# ---------------------------------------------------------------- decoders


def test_decoder_names_and_refusals():
    assert list_decoders() == ["boxes", "dense_dfl", "dense_ltrb", "ultralytics", "yolo_anchors"]
    assert get_decoder("dense_dfl").requires == ("box_bins",)
    assert get_decoder("boxes").runtime_nms is False and get_decoder("boxes").build is None
    assert get_decoder("yolo_anchors").requires == ("anchors",)
    with pytest.raises(ValueError, match=r"unknown decode 'ssd'; choose one of: boxes, dense_dfl, dense_ltrb"):
        get_decoder("ssd")
    with pytest.raises(ValueError, match="'dense_ltrb' is already registered"):
        register_decoder("dense_ltrb", None, runtime_nms=False)


def test_dense_decoder_builds_the_grid_of_its_strides():
    S, strides = 64, [8, 16]
    n = (S // 8) ** 2 + (S // 16) ** 2
    raw = np.random.default_rng(0).normal(size=(n, 5)).astype(np.float32)
    post = {"decode": "dense_ltrb", "strides": strides}
    got = get_decoder("dense_ltrb").build(post, S, 0.3)(raw)
    points, per_point = grid_points(S, tuple(strides))
    want = dense_candidates(raw, points, per_point, 0.3)
    assert len(want[1]) > 0
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_yolo_decoder_uses_the_manifest_anchors():
    S, strides = 64, [16, 32]
    anchors = [[[10.0, 14.0], [20.0, 24.0]], [[40.0, 30.0], [60.0, 50.0]]]
    n = 2 * ((S // 16) ** 2 + (S // 32) ** 2)
    raw = np.random.default_rng(1).normal(size=(n, 6)).astype(np.float32)
    post = {"decode": "yolo_anchors", "strides": strides, "anchors": anchors}
    got = get_decoder("yolo_anchors").build(post, S, 0.2)(raw)
    cells, per_row, wh = yolo_grid(S, tuple(strides), np.asarray(anchors, np.float32))
    want = partial(yolo_candidates, cells=cells, strides=per_row, anchors=wh, score_threshold=0.2)(
        raw
    )
    assert len(want[1]) > 0
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_ultralytics_decoder_reads_centre_size_and_probabilities():
    """A hand-made [4 + C, N] output of an Ultralytics export: 2 classes, 4 anchor points."""
    from sarbridge.runtime.decode import decode_views

    raw = np.array(
        [
            [100.0, 300.0, 102.0, 50.0],  # centre x (input pixels)
            [200.0, 100.0, 201.0, 50.0],  # centre y
            [40.0, 20.0, 40.0, 10.0],  # width
            [20.0, 60.0, 20.0, 10.0],  # height
            [0.90, 0.10, 0.80, 0.01],  # class 0 probability
            [0.05, 0.70, 0.10, 0.02],  # class 1 probability
        ],
        np.float32,
    )
    boxes, scores, labels = get_decoder("ultralytics").build({}, 512, 0.3)(raw)
    np.testing.assert_allclose(
        boxes, [[80, 190, 120, 210], [290, 70, 310, 130], [82, 191, 122, 211]]
    )
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.8])
    np.testing.assert_array_equal(labels, [0, 1, 0])
    # through the runtime's NMS: the two overlapping class-0 boxes become one
    candidates = get_decoder("ultralytics").build({}, 512, 0.3)
    b, sc, lab = decode_views([raw], candidates, (), 512, iou_threshold=0.5)
    np.testing.assert_allclose(sc, [0.9, 0.7])
    np.testing.assert_array_equal(lab, [0, 1])
    with pytest.raises(ValueError, match=r"\[4 \+ classes, anchors\]"):
        candidates(raw.T)
