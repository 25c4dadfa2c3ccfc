"""`make report`'s own logic: the two targets measured from the records, and what is missing."""

from __future__ import annotations

from sarbridge.benchmarks.research.canonical_report import Candidate, prepare, targets


def _rec(model, backend, family, ap50, ap, ms):
    return {
        "model": model, "backend": backend, "family": family,
        "accuracy": {"AP50": ap50, "AP50_95": ap, "AP_small": -1.0},
        "latency": {"batch1": {"p50_ms": ms}},
    }  # fmt: skip


def test_targets_met_and_missed_are_said_with_the_ratio():
    records = [
        _rec("ours_int8", "openvino", "sarbridge", 0.93, 0.55, 4.0),
        _rec("ours_fp32", "onnxruntime", "sarbridge", 0.93, 0.56, 20.0),
        _rec("yolov8n_int8", "openvino", "ultralytics", 0.90, 0.50, 10.0),
        _rec("yolov8n", "onnxruntime", "ultralytics", 0.92, 0.58, 30.0),
    ]
    fastest, accurate = targets(records)
    assert "2.50x" in fastest and "target met" in fastest
    assert "ours_fp32 [onnxruntime] AP50:95 0.560" in accurate and "MISSED" in accurate
    assert "AP50:95 -0.020" in accurate
    records[0]["accuracy"]["AP50"] = 0.85
    fastest, _ = targets(records)
    assert "MISSED by AP50 -0.050" in fastest
    assert targets(records[:2])[0].startswith("- Not measured")


def test_missing_candidates_are_listed_with_how_to_make_them(tmp_path):
    expensive = Candidate(
        str(tmp_path / "student"),
        ("onnxruntime",),
        "sarbridge",
        missing_hint="python -m sarbridge.benchmarks.research.prune_pareto",
    )
    peer = Candidate(str(tmp_path / "peer"), ("onnxruntime",), "ultralytics",
                     ("sarbridge", "import", "ultralytics", str(tmp_path / "last.onnx")),
                     str(tmp_path / "last.onnx"), "peers train ...")  # fmt: skip
    ready, missing = prepare([expensive, peer], make=True)  # nothing can be made: no source
    assert ready == []
    assert missing[0].endswith("prune_pareto")
    assert "last.onnx, not found" in missing[1] and "peers train" in missing[1]


def test_an_int8_peer_gets_its_sources_size():
    from sarbridge.benchmarks.research.canonical_report import quantized_sizes

    fp32 = _rec("peer_yolov8n_e30", "onnxruntime", "ultralytics", 0.9, 0.5, 30.0)
    fp32["size"] = {"parameters": 3.0e6, "gmacs_per_image": 2.6}
    ov = _rec("peer_yolov8n_e30_openvino_int8", "openvino", "ultralytics", 0.9, 0.5, 13.0)
    ov["size"] = {"parameters": None, "gmacs_per_image": None}
    quantized_sizes([fp32, ov])
    assert ov["size"] == {
        "parameters": 3.0e6,
        "gmacs_per_image": 2.6,
        "counted_from": "peer_yolov8n_e30",
    }


def test_an_import_whose_source_changed_is_left_out_as_stale(tmp_path):
    import pytest

    pytest.importorskip("onnx")
    from test_import_ultralytics import _export

    from sarbridge.runtime.importers import import_ultralytics

    source = _export(tmp_path / "last.onnx")
    art = import_ultralytics(source, tmp_path / "peer", unchecked="test")
    peer = Candidate(str(art), ("onnxruntime",), "ultralytics",
                     ("sarbridge", "import", "ultralytics", str(source)), str(source))  # fmt: skip
    assert prepare([peer], make=False) == ([peer], [])
    _export(source, size=32)  # retrained or re-exported since the import
    ready, missing = prepare([peer], make=False)
    assert ready == [] and "stale" in missing[0] and "remove the folder" in missing[0]


def test_the_gap_is_measured_by_iou_threshold_and_size(tmp_path):
    from sarbridge.benchmarks.research.canonical_report import gap_lines, gap_plot

    records = [
        _rec("ours", "openvino", "sarbridge", 0.92, 0.52, 6.0),
        _rec("peer", "openvino", "ultralytics", 0.92, 0.55, 13.0),
    ]
    assert gap_lines(records) == [] and gap_plot(records, tmp_path) is None  # not measured
    ious = [round(0.5 + 0.05 * k, 2) for k in range(10)]
    for r, slope in zip(records, (1.0, 0.8), strict=True):  # ours falls faster with the IoU
        r["accuracy"]["AP_by_iou"] = [{"iou": t, "AP": 0.92 - slope * (t - 0.5)} for t in ious]
        r["accuracy"].update(AP_small=0.50, AP_medium=0.60, AP_large=-1.0)
    records[0]["accuracy"]["AP_small"] = 0.48
    (line,) = gap_lines(records)  # one pair for both targets (a model per family): one line
    assert line.startswith("- Fastest vs fastest and most accurate vs most accurate: ours ")
    assert "AP50:95 -0.030; at IoU 0.50 +0.000" in line and "0.90 -0.080" in line
    assert line.endswith("by size small -0.020, medium +0.000.")  # large: no ground truth
    png = gap_plot(records, tmp_path)
    assert png == tmp_path / "ap_gap.png" and png.read_bytes()[:4] == b"\x89PNG"

    # a faster, less accurate model of ours: the two targets compare different pairs
    fast = _rec("ours_int8", "onnxruntime", "sarbridge", 0.90, 0.50, 3.0)
    fast["accuracy"]["AP_by_iou"] = [{"iou": t, "AP": 0.90 - 1.2 * (t - 0.5)} for t in ious]
    fastest, accurate = gap_lines([fast, *records])
    assert fastest.startswith("- Fastest vs fastest: ours_int8 [onnxruntime] minus peer")
    assert "at IoU 0.50 -0.020" in fastest and "by size" not in fastest  # no sizes for ours_int8
    assert accurate.startswith("- Most accurate vs most accurate: ours [openvino] minus peer")


def test_a_compressed_child_of_an_earlier_zoo_export_is_left_out_as_stale(tmp_path):
    import json

    from sarbridge.runtime.manifest import load_manifest
    from sarbridge.runtime.zoo import resolve_artifact

    zoo_sha = load_manifest(resolve_artifact("zoo:ssdd_edge_det"), verify_model=False)["model"]
    art = tmp_path / "int8"
    art.mkdir()
    manifest = json.loads((resolve_artifact("zoo:ssdd_edge_det") / "manifest.json").read_text())
    parent = {"name": "ssdd_edge_det", "sha256": zoo_sha["sha256"]}
    step = {"kind": "ptq", "name": "int8", "parent": parent, "config_sha256": None, "metrics": {}}
    manifest["lineage"].append(step)
    (art / "manifest.json").write_text(json.dumps(manifest))
    make = ("sarbridge", "compress", "--method", "int8", "--from", "zoo:ssdd_edge_det",
            "--target", "onnxruntime", "--out", str(art))  # fmt: skip
    child = Candidate(str(art), ("onnxruntime",), "sarbridge", make)
    assert prepare([child], make=False) == ([child], [])
    manifest["lineage"][-1]["parent"]["sha256"] = "0" * 64  # made from another export
    (art / "manifest.json").write_text(json.dumps(manifest))
    ready, missing = prepare([child], make=False)
    assert ready == [] and "earlier export of zoo:ssdd_edge_det" in missing[0]
