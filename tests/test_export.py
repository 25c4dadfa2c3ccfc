"""ONNX export: parity with PyTorch on real SSDD images, manifests, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from sarbridge.export.onnx_export import (  # noqa: E402
    ExportError,
    export_detector_model,
    matched_max_abs,
    parity_inputs,
    set_agreement,
)
from sarbridge.runtime.annotations import read_dataset  # noqa: E402
from sarbridge.runtime.fileio import sha256_file  # noqa: E402
from sarbridge.runtime.manifest import load_manifest  # noqa: E402
from sarbridge.runtime.preprocess import SarPreprocess  # noqa: E402
from sarbridge.train.evaluation import detector_predict  # noqa: E402
from sarbridge.train.models.registry import (  # noqa: E402
    build_detector,
    detector_spec,
    list_detectors,
)


def test_exported_run_manifest_and_graph(edge_artifact, data):
    manifest = load_manifest(edge_artifact)  # validates and checks the model hash
    assert manifest["task"] == "detect" and manifest["model"]["format"] == "onnx"
    assert manifest["metrics"]["parity_max_abs_diff"] <= 1e-3
    assert manifest["metrics"]["parity_detection_agreement"] >= 0.98
    assert "test_AP50" in manifest["metrics"]
    assert manifest["postprocessing"]["decode"] == "dense_ltrb"
    assert manifest["tiling"] == {"size": 128, "overlap": 0.25}  # exported --whole-scene-max off
    train, export = manifest["lineage"]
    assert (train["kind"], export["kind"]) == ("train", "export")
    run = edge_artifact.parents[1] / "runs" / train["name"]
    # the export's parent is the run's best checkpoint, by sha256; the train step's test
    # metrics are the manifest's test metrics
    assert export["parent"] == {"name": train["name"], "sha256": sha256_file(run / "best.pt")}
    assert manifest["metrics"]["test_AP50"] == train["metrics"]["test_AP50"]
    assert manifest["schema_version"] == 2
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest["tool_versions"])
    graph = onnx.load(str(edge_artifact / "model.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert "BatchNormalization" not in ops
    assert graph.opset_import[0].version >= 17
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_whole_scene_max_is_set_off_or_dropped(edge_artifact, data, tmp_path):
    from sarbridge.export.onnx_export import export_run

    run = edge_artifact.parents[1] / "runs" / load_manifest(edge_artifact)["lineage"][0]["name"]
    # trained on whole chips: by default a scene is letterboxed whole while that shrinks it no
    # more than training did (the largest training chip, 653 px, at the scale jitter floor 0.6)
    train = read_dataset(data / "SSDD").split("train")
    assert max(max(r.height, r.width) for r in train) == 653
    cases = ((None, 1088), ("off", None), (96, None), (700, 700))  # 96: not above the 128 tile
    for value, expected in cases:
        out = tmp_path / f"art_{value}"
        tiling = export_run(run, out, tile_size=128, whole_scene_max=value, parity_images=2)["tiling"]
        assert tiling.get("whole_scene_max") == expected
        assert load_manifest(out)["tiling"] == tiling


def test_training_whole_scene_max_rule():
    from types import SimpleNamespace

    from sarbridge.export.onnx_export import training_whole_scene_max

    records = [SimpleNamespace(height=h, width=w) for h, w in ((400, 600), (500, 300))]
    assert training_whole_scene_max(records, 0.6) == 1000  # 600 / 0.6
    assert training_whole_scene_max(records, 1.5) == 600  # no jitter below 1: the largest image
    assert training_whole_scene_max(records, 0.1) == 4096  # the manifest's bound
    with pytest.raises(ExportError, match="--whole-scene-max"):
        training_whole_scene_max([], 0.6)


@pytest.mark.parametrize(
    "name, options",
    [(name, {}) for name in list_detectors()] + [("edge_det", {"box_bins": 16})],
    ids=list_detectors() + ["edge_det-box_bins"],
)
def test_every_registered_detector_exports_with_parity(name, options, tmp_path, data):
    torch.manual_seed(0)
    size = 128
    model = build_detector(name, num_classes=1, input_size=size, **options).eval()
    ds = read_dataset(data / "SSDD")
    x = parity_inputs(ds.split("test"), SarPreprocess(), size, 3)
    kind = detector_spec(name).kind
    threshold = 0.05
    if kind == "dense":  # an untrained head scores everything 0.01: spread it, keep the top 1%
        heads = getattr(model, "cls_out", None) or [h[-1] for h in model.heads]
        for conv in heads:
            torch.nn.init.normal_(conv.weight, std=1.0)
        for m in model.modules():  # BatchNorm statistics of these images (as training would set)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
        with torch.no_grad():
            model.train()(torch.from_numpy(x))
            model.eval()
            dets = detector_predict(model, torch.from_numpy(x), size, 1e-6, 0.5, 10_000)
        threshold = float(np.quantile(np.concatenate([d[1] for d in dets]), 0.99))
    manifest = export_detector_model(
        model,
        tmp_path / name,
        model_name=name,
        classes=["ship"],
        params=SarPreprocess(),
        input_size=size,
        parity_x=x,
        predict=lambda m, t: detector_predict(m, t, size, threshold, 0.5, 300),
        score_threshold=threshold,
        kind=kind,
    )
    m = manifest["metrics"]
    assert m["parity_max_abs_diff"] < 1e-2 and m["parity_detection_agreement"] >= 0.98
    if options.get("box_bins"):  # the graph outputs the bins; the runtime takes the expectation
        assert manifest["postprocessing"]["decode"] == "dense_dfl"
        assert manifest["postprocessing"]["box_bins"] == options["box_bins"]
        assert manifest["outputs"][0]["shape"][1] == 4 * options["box_bins"] + 1  # channels first
        graph = onnx.load(str(tmp_path / name / "model.onnx"))
        assert graph.graph.node[-1].op_type != "Transpose"  # the two transposes cancelled
    assert load_manifest(tmp_path / name)["name"] == name
    # the runtime decodes this kind of output (dense_ltrb, yolo_anchors or boxes) on a real chip
    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.imageio import read_image

    record = ds.split("test")[0]
    res = Detector.from_artifact(tmp_path / name, score_threshold=1e-6).detect(record.path)
    chip = read_image(record.path)
    assert res.tiles > 1 and len(res) > 0
    assert (res.boxes[:, [0, 2]] <= chip.shape[1]).all() and (
        res.boxes[:, [1, 3]] <= chip.shape[0]
    ).all()


def test_parity_failure_writes_nothing(tmp_path, data):
    torch.manual_seed(0)
    model = build_detector("edge_det", num_classes=1).eval()
    x = parity_inputs(read_dataset(data / "SSDD").split("test"), SarPreprocess(), 64, 2)
    with pytest.raises(ExportError, match="does not match PyTorch"):
        export_detector_model(
            model,
            tmp_path / "bad",
            model_name="edge_det",
            classes=["ship"],
            params=SarPreprocess(),
            input_size=64,
            parity_x=x,
            # a prediction path that disagrees with the graph: detections where ONNX has none
            predict=lambda m, t: (
                [
                    (
                        np.array([[1, 1, 20, 20]], np.float32),
                        np.ones(1, np.float32),
                        np.zeros(1, np.int64),
                    )
                ]
                * len(t)
            ),
            score_threshold=0.99,
        )
    assert not (tmp_path / "bad").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind either


def test_set_agreement():
    a = (
        np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float),
        np.array([0.9, 0.8]),
        np.array([0, 0]),
    )
    same = set_agreement([(a, a)])
    moved = (a[0] + 100, a[1], a[2])
    assert same == 1.0 and set_agreement([(a, moved)]) == 0.0
    empty = (np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
    assert set_agreement([(empty, empty)]) == 1.0 and set_agreement([(a, empty)]) == 0.0


def test_parity_difference_compares_matched_detections_not_slots():
    """Two near-tied detections in swapped order are the same output; a moved box is not."""
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [80, 0, 90, 12]], np.float32)
    a = (boxes, np.array([0.9, 0.4294143, 0.4294142], np.float32), np.zeros(3, np.int64))
    swapped = (boxes[[0, 2, 1]], np.array([0.9, 0.4294142, 0.4294142], np.float32), a[2])
    assert np.abs(a[0] - swapped[0]).max() == 50  # slot by slot: another ship
    assert matched_max_abs(a, swapped) == pytest.approx(1e-7, abs=1e-7)
    nudged = (boxes + np.float32(0.5), a[1], a[2])
    assert matched_max_abs(a, nudged) == pytest.approx(0.5)
    empty = (np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    assert matched_max_abs(a, empty) == 0.0 and set_agreement([(a, empty)]) == 0.0


def test_export_sets_the_deployed_nms_iou(edge_artifact, tmp_path):
    from sarbridge.export.onnx_export import export_run

    run = edge_artifact.parents[1] / "runs" / "tiny_edge"
    assert load_manifest(edge_artifact)["postprocessing"]["iou_threshold"] == 0.5  # the run's
    manifest = export_run(run, tmp_path / "nms07", parity_images=2, nms_iou=0.7)
    assert manifest["postprocessing"]["iou_threshold"] == 0.7
    assert load_manifest(tmp_path / "nms07")["postprocessing"]["iou_threshold"] == 0.7
    assert manifest["lineage"][-1]["test_metrics_nms_iou"] == 0.5  # what the test metrics used
    with pytest.raises(ExportError, match="NMS IoU must be in"):
        export_run(run, tmp_path / "bad", parity_images=2, nms_iou=1.5)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ExportError, match="box-voting IoU must be in"):
        export_run(run, tmp_path / "bad", parity_images=2, vote_iou=0.0)
    assert not (tmp_path / "bad").exists()


def test_export_with_box_voting_and_the_runtime_applies_it(edge_artifact, tmp_path):
    from sarbridge.export.onnx_export import export_run
    from sarbridge.runtime.decode import decode_dense, grid_points
    from sarbridge.runtime.detector import Detector

    run = edge_artifact.parents[1] / "runs" / "tiny_edge"
    manifest = export_run(run, tmp_path / "vote", parity_images=2, nms_iou=0.7, vote_iou=0.3)
    assert manifest["postprocessing"]["vote_iou"] == 0.3
    assert manifest["lineage"][-1]["test_metrics_vote_iou"] is None  # the run's test had none
    assert "vote_iou" not in load_manifest(edge_artifact)["postprocessing"]
    det = Detector.from_artifact(tmp_path / "vote", score_threshold=0.001)
    assert det.vote_iou == 0.3
    x = np.random.default_rng(0).random((1, 1, det.input_size, det.input_size), np.float32)
    raw = det.backend.run(x)[0][0]
    points, strides = grid_points(det.input_size, tuple(manifest["postprocessing"]["strides"]))
    want = decode_dense(raw, points, strides, 0.001, 0.7, 300, vote_iou=0.3)
    got = det.run_inputs(x)[0]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    plain = decode_dense(raw, points, strides, 0.001, 0.7, 300)
    # the tiny model's boxes are about one grid step wide (neighbours overlap by IoU ~1/3):
    # voting at 0.3 moves them, so the check above fails if the runtime ignores vote_iou
    assert not np.array_equal(plain[0], want[0])


def test_bnn_encoder_exports_as_embed(tmp_path, data):
    from sarbridge.export.onnx_export import export_run
    from sarbridge.train.config import from_dict
    from sarbridge.train.recipes.bnn import BNNConfig, train_bnn

    cfg = from_dict(
        BNNConfig,
        {
            "name": "tiny_bnn",
            "threads": 2,
            "data": {"roots": ["optsar_sih1733_tharun"], "patch_size": 256, "input_size": 64},
            "optim": {"epochs": 1, "batch_size": 8},
        },
    )
    train_bnn(cfg, tmp_path, progress=False)
    manifest = export_run(tmp_path / "tiny_bnn", tmp_path / "bnn_art", parity_images=4)
    assert manifest["task"] == "embed"
    assert manifest["outputs"][0]["shape"] == ["batch", 50]
    assert manifest["metrics"]["parity_max_abs_diff"] <= 1e-4
    assert json.loads((tmp_path / "bnn_art" / "manifest.json").read_text())["task"] == "embed"
    for option in ({"nms_iou": 0.7}, {"vote_iou": 0.7}, {"tta_flips": "h"}, {"whole_scene_max": 700}):
        with pytest.raises(ExportError, match="an embedder.*whole scenes do not apply"):
            export_run(tmp_path / "tiny_bnn", tmp_path / "bnn_nms", parity_images=4, **option)
