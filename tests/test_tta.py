"""Test-time flips: views, boxes mapped back, one NMS over every view; config, manifest, export
and the deployed runtime all carry the same setting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sarbridge.runtime.decode import (
    FLIP_AXES,
    decode_dense,
    decode_views,
    dense_candidates,
    flip_inputs,
    grid_points,
    parse_flips,
    unflip_boxes,
)


def _bright_box(image: np.ndarray) -> np.ndarray:
    """xyxy (pixel edges) of the non-zero region of a [1, S, S] image."""
    ys, xs = np.nonzero(image[0])
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("flip", sorted(FLIP_AXES))
def test_a_box_found_in_a_flipped_view_maps_back_onto_the_ship(flip):
    S = 64
    image = np.zeros((1, S, S), np.float32)
    image[:, 10:17, 40:52] = 1.0  # a ship: rows 10-16, columns 40-51
    seen = _bright_box(flip_inputs(image, flip))
    np.testing.assert_array_equal(unflip_boxes(seen[None], flip, S)[0], _bright_box(image))
    assert not np.array_equal(seen, _bright_box(image))  # the view moved it


def test_parse_flips():
    assert parse_flips("h,v,hv") == ("h", "v", "hv")
    assert parse_flips(" H , v ") == ("h", "v")
    assert parse_flips("off") == parse_flips("") == parse_flips(None) == parse_flips([]) == ()
    assert parse_flips(["hv"]) == ("hv",)
    assert parse_flips(False) == ()  # YAML reads a bare `off` as False
    for bad in ("x", "h,h", ["h", "r90"], True, 3):
        with pytest.raises(ValueError, match="test-time flips"):
            parse_flips(bad)


def test_decode_views_without_flips_is_the_plain_decode():
    from functools import partial

    S = 64
    points, strides = grid_points(S)
    raw = np.random.default_rng(0).normal(size=(len(points), 5)).astype(np.float32)
    want = decode_dense(raw, points, strides, 0.05, 0.6, 100, vote_iou=0.5)
    candidates = partial(dense_candidates, points=points, strides=strides, score_threshold=0.05)
    got = decode_views([raw], candidates, (), S, 0.6, 100, 0.5)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_one_ship_seen_in_two_views_is_one_detection_and_voting_averages_them():
    S = 100
    plain = (np.array([[10.0, 20.0, 30.0, 40.0]], np.float32), np.array([0.9]), np.array([0]))
    # the mirrored view sees the ship 2 px wider on its (mirrored) right side
    mirrored = (np.array([[70.0, 20.0, 92.0, 40.0]], np.float32), np.array([0.6]), np.array([0]))
    views = [plain, mirrored]
    boxes, scores, labels = decode_views(views, lambda v: v, ("h",), S, 0.5, 100)
    np.testing.assert_allclose(boxes, [[10, 20, 30, 40]])  # NMS keeps the plain view's
    np.testing.assert_allclose(scores, [0.9])
    voted, _, _ = decode_views(views, lambda v: v, ("h",), S, 0.5, 100, vote_iou=0.5)
    np.testing.assert_allclose(voted, [[(0.9 * 10 + 0.6 * 8) / 1.5, 20, 30, 40]], rtol=1e-6)
    # a ship only one view finds is kept from that view, in the plain view's frame
    alone = (np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, np.int64))
    boxes, scores, _ = decode_views([alone, mirrored], lambda v: v, ("h",), S, 0.5, 100)
    np.testing.assert_allclose(boxes, [[8, 20, 30, 40]])
    with pytest.raises(ValueError, match="3 raw outputs for 2 views"):
        decode_views([plain, plain, plain], lambda v: v, ("h",), S, 0.5, 100)


def test_config_and_manifest_refuse_unknown_flips(tmp_path, edge_artifact):
    pytest.importorskip("torch")
    from sarbridge.runtime.errors import ManifestError
    from sarbridge.runtime.manifest import MANIFEST_NAME, load_manifest
    from sarbridge.train.config import ConfigError, from_dict
    from sarbridge.train.recipes.detect import DetConfig

    assert from_dict(DetConfig, {"eval": {"tta_flips": ["h", "v"]}}).eval.tta_flips == ("h", "v")
    with pytest.raises(ConfigError, match="eval.tta_flips"):
        from_dict(DetConfig, {"eval": {"tta_flips": ["rot90"]}})
    cfg = from_dict(DetConfig, {"distill": {"teacher": "zoo:x", "teacher_flips": ["h", "hv"]}})
    assert cfg.distill.teacher_flips == ("h", "hv")
    with pytest.raises(ConfigError, match="distill.teacher_flips"):
        from_dict(DetConfig, {"distill": {"teacher": "zoo:x", "teacher_flips": ["h", "h"]}})
    manifest = load_manifest(edge_artifact)
    manifest["postprocessing"]["tta_flips"] = ["h", "sideways"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="postprocessing.tta_flips"):
        load_manifest(tmp_path / "bad")


def test_exported_flips_run_in_the_runtime_as_in_pytorch(edge_artifact, tmp_path):
    torch = pytest.importorskip("torch")
    from functools import partial

    from sarbridge.export.onnx_export import (
        ExportError,
        export_run,
        matched_max_abs,
        set_agreement,
    )
    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.manifest import load_manifest
    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.evaluation import detector_predict

    run = edge_artifact.parents[1] / "runs" / "tiny_edge"
    manifest = export_run(run, tmp_path / "tta", parity_images=2, tta_flips="h,hv")
    assert manifest["postprocessing"]["tta_flips"] == ["h", "hv"]
    assert manifest["lineage"][-1]["test_metrics_tta_flips"] == []  # the run's test had none
    assert "tta_flips" not in load_manifest(edge_artifact)["postprocessing"]
    with pytest.raises(ExportError, match="test-time flips"):
        export_run(run, tmp_path / "bad", parity_images=2, tta_flips="h,r90")
    assert not (tmp_path / "bad").exists()

    det = Detector.from_artifact(tmp_path / "tta", score_threshold=0.001)
    assert det.flips == ("h", "hv")
    x = np.random.default_rng(0).random((2, 1, det.input_size, det.input_size), np.float32)
    got = det.run_inputs(x)
    # by hand: the backend on each view, every view's candidates, one NMS
    raws = [det.backend.run(v)[0] for v in (x, flip_inputs(x, "h"), flip_inputs(x, "hv"))]
    S, post = det.input_size, manifest["postprocessing"]
    points, strides = grid_points(S, tuple(post["strides"]))
    cand = partial(dense_candidates, points=points, strides=strides, score_threshold=0.001)
    for k in range(len(x)):
        want = decode_views([r[k] for r in raws], cand, ("h", "hv"), S, post["iou_threshold"], 300)
        for a, b in zip(got[k], want, strict=True):
            np.testing.assert_array_equal(a, b)
    plain = Detector.from_artifact(tmp_path / "tta", score_threshold=0.001, tta_flips="off")
    assert plain.flips == ()
    assert not np.array_equal(plain.run_inputs(x)[0][0], got[0][0])  # the flips changed them

    # PyTorch's evaluation path with the same flips finds the same detections
    loaded = load_model(run)
    model = loaded.model
    with torch.no_grad():
        ref = detector_predict(
            model, torch.from_numpy(x), S, 0.001, post["iou_threshold"], 300, None, ("h", "hv")
        )
    # (matched as sets: this barely trained model's scores tie, so equal ones may swap slots and
    # NMS may keep one of two near-duplicates a fraction of a pixel apart)
    assert set_agreement(zip(got, ref, strict=True)) > 0.98
    assert max(matched_max_abs(a, b) for a, b in zip(got, ref, strict=True)) < 0.5
    plain.close()
    det.close()
