import copy
import json
import re

import pytest

from sarbridge.runtime.decode import list_decoders
from sarbridge.runtime.errors import ManifestError
from sarbridge.runtime.fileio import sha256_file
from sarbridge.runtime.manifest import (
    LINEAGE_KINDS,
    SCHEMA_VERSION,
    load_manifest,
    preprocess_of,
    save_manifest,
    validate,
)
from sarbridge.runtime.preprocess import SarPreprocess

SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64

# A detector manifest exactly as export/onnx_export.export_detector wrote it under schema 1
# (a BNN-initialised edge detector, DFL head, box voting and flips picked on validation).
V1_EXPORTED = {
    "schema_version": 1,
    "name": "det_edge_bnn_512",
    "task": "detect",
    "model": {"file": "model.onnx", "sha256": SHA_A, "format": "onnx"},
    "inputs": [{"name": "images", "shape": ["batch", 1, 512, 512], "dtype": "float32"}],
    "outputs": [
        {
            "name": "raw",
            "shape": ["batch", 5376, 5],
            "dtype": "float32",
            "meaning": "per grid point (strides 8/16/32, level-major, row-major): log-distances "
            "to the box's left/top/right/bottom edges in strides, then class logits; decoded by "
            "sarbridge.runtime.decode.decode_dense",
        }
    ],
    "preprocessing": {
        "input_kind": "amplitude",
        "to_db": True,
        "clip": "percentile",
        "clip_low": 1.0,
        "clip_high": 99.5,
        "mean": 0.0,
        "std": 1.0,
        "channels": 1,
        "eight_bit_passthrough": True,
        "input_size": 512,
    },
    "tiling": {"size": 512, "overlap": 0.5},
    "postprocessing": {
        "score_threshold": 0.3,
        "iou_threshold": 0.6,
        "max_detections": 300,
        "vote_iou": 0.7,
        "tta_flips": ["h", "v", "hv"],
        "decode": "dense_ltrb",
        "strides": [8, 16, 32],
    },
    "classes": ["ship"],
    "precision": "fp32",
    "lineage": [
        {
            "step": "train",
            "run": "runs/det_edge_bnn_512",
            "model": "edge_det",
            "backbone": "cspdark_s",
            "config_sha256": SHA_B,
            "git_sha": "e92cca43afad13b46d08a9bfe981ab64a497f793",
            "best_epoch": 57,
            "test_metrics_nms_iou": 0.6,
            "test_metrics_vote_iou": 0.7,
            "test_metrics_tta_flips": ["h", "v", "hv"],
            "init": "bnn",
            "init_run": "runs/bnn_edge",
        },
        {
            "step": "export",
            "format": "onnx",
            "opset": 17,
            "batchnorm_folded": True,
            "simplified": "onnxslim",
        },
    ],
    "metrics": {
        "test_AP50": 0.925,
        "test_AP50_95": 0.539,
        "parity_max_abs_diff": 2.1e-05,
        "parity_output_scale": 11.3,
        "parity_detection_agreement": 1.0,
        "parity_images": 16,
        "parameters": 2710000.0,
        "gmacs_per_image": 2.85,
    },
    "tool_versions": {"sarbridge": "0.1.0", "torch": "2.14.1", "onnxruntime": "1.22.0"},
    "created": "2025-06-01T10:00:00+00:00",
}


def make_v2(model_sha: str = SHA_A) -> dict:
    """An INT8 artifact: train -> ptq -> export, quantized for ONNX Runtime, one TensorRT engine."""
    m = copy.deepcopy(V1_EXPORTED)
    m["schema_version"] = 2
    m["model"]["sha256"] = model_sha
    m["precision"] = "int8"
    m["lineage"] = [
        {
            "kind": "train",
            "name": "det_edge_bnn_512",
            "parent": None,
            "config_sha256": SHA_B,
            "metrics": {"test_AP50": 0.925, "test_AP50_95": 0.539},
            "git_sha": "e92cca43afad13b46d08a9bfe981ab64a497f793",
            "init": {"kind": "bnn", "run": "runs/bnn_edge"},
        },
        {
            "kind": "ptq",
            "name": "det_edge_bnn_512_int8",
            "parent": {"name": "det_edge_bnn_512", "sha256": SHA_C},
            "config_sha256": SHA_B,
            "metrics": {"test_AP50": 0.921},
        },
        {
            "kind": "export",
            "name": "det_edge_bnn_512_int8",
            "parent": {"name": "det_edge_bnn_512_int8", "sha256": SHA_C},
            "config_sha256": None,
            "metrics": {"parity_detection_agreement": 0.99},
            "opset": 17,
        },
    ]
    m["quantization"] = {
        "scheme": "qdq_u8s8_per_channel",
        "target": "onnxruntime",
        "activations": {"dtype": "uint8", "symmetric": False},
        "weights": {"dtype": "int8", "symmetric": True, "per_channel_axis": 0},
        "calibration": {"split": "train", "images": 256, "list_sha256": SHA_C, "method": "minmax"},
    }
    m["engines"] = [
        {
            "file": "model.10.8.sm87.plan",
            "sha256": SHA_B,
            "tensorrt_version": "10.8.0",
            "device_name": "Orin (nvgpu)",
            "compute_capability": "8.7",
            "dla_core": None,
            "precision": "int8",
            "build_flags": ["--int8", "--timing-cache"],
            "build_seconds": 312.5,
        }
    ]
    return m


def make_manifest(model_sha: str) -> dict:
    """A v1 manifest with the least each field needs (older exports wrote no decode fields)."""
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


def refused(manifest: dict, field: str) -> str:
    """Validate ``manifest`` as m.json; it must be refused with a message naming ``field``."""
    with pytest.raises(ManifestError) as info:
        validate(manifest, "m.json")
    message = str(info.value)
    assert message.startswith("m.json: "), message
    assert field in message, message
    return message


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


def test_exported_v1_manifest_validates_and_loads(tmp_path):
    assert SCHEMA_VERSION == 2
    (tmp_path / "model.onnx").write_bytes(b"an exported graph")
    v1 = copy.deepcopy(V1_EXPORTED)
    v1["model"]["sha256"] = sha256_file(tmp_path / "model.onnx")
    (tmp_path / "manifest.json").write_text(json.dumps(v1, indent=2))
    assert load_manifest(tmp_path) == v1


def test_v2_with_quantization_and_engines_round_trips(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"an int8 graph")
    m = make_v2(sha256_file(tmp_path / "model.onnx"))
    save_manifest(m, tmp_path)
    loaded = load_manifest(tmp_path)
    assert loaded == m
    assert [s["kind"] for s in loaded["lineage"]] == ["train", "ptq", "export"]
    assert set(s["kind"] for s in loaded["lineage"]) <= set(LINEAGE_KINDS)


def test_v2_optional_forms_are_accepted():
    m = make_v2()
    m["precision"] = "fp16"
    del m["quantization"]  # only int8 needs it
    m["engines"][0].update(dla_core=1, precision="best")
    del m["engines"][0]["build_flags"], m["engines"][0]["build_seconds"]
    m["quantization"] = make_v2()["quantization"]
    m["quantization"]["weights"]["per_channel_axis"] = None
    validate(m, "m.json")
    del m["quantization"]
    validate(m, "m.json")


@pytest.mark.parametrize("anchors", [
    [[[10, 13], [16, 30]], [[30, 61], [62, 45]], [[116, 90], [156, 198]]],  # one list per stride
    [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59.5, 119]],  # flat, split over strides
])  # fmt: skip
def test_yolo_anchors_in_either_layout(anchors):
    m = make_v2()
    m["postprocessing"].update(decode="yolo_anchors", anchors=anchors)
    validate(m, "m.json")


@pytest.mark.parametrize("name", list_decoders())
def test_every_registered_decode_validates(name):
    m = make_v2()
    m["postprocessing"]["decode"] = name
    if name == "yolo_anchors":
        m["postprocessing"]["anchors"] = [[10, 13], [30, 61], [116, 90]]
    if name == "dense_dfl":
        m["postprocessing"]["box_bins"] = 16
    if name == "boxes":  # the graph's own NMS: no runtime flips or voting
        del m["postprocessing"]["tta_flips"], m["postprocessing"]["vote_iou"]
    validate(m, "m.json")


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
        (lambda m: m["tiling"].update(whole_scene_max=256), "tiling.whole_scene_max"),  # < size
        (lambda m: m["tiling"].update(whole_scene_max=640.0), "tiling.whole_scene_max"),
        (lambda m: m["tiling"].update(whole_scene_max=10_000), "tiling.whole_scene_max"),
        (lambda m: m["tiling"].update(whole_scene=640), "unknown fields ['whole_scene'] in 'tiling'"),
        (lambda m: m["model"].update(sha256="xyz"), "model.sha256"),
        (lambda m: m.update(color="red"), "unknown fields"),
        (lambda m: m["preprocessing"].update(clip="sometimes"), "invalid 'preprocessing'"),
        (lambda m: m.update(task="segment"), "task must be one of"),
        (lambda m: m["postprocessing"].update(vote_iou=0), "postprocessing.vote_iou"),
        (lambda m: m["postprocessing"].update(vote_iou="0.7"), "postprocessing.vote_iou"),
        (lambda m: m["model"].update(file="/srv/models/model.onnx"), "'model.file'"),
        (lambda m: m["model"].update(file="../other/model.onnx"), "'model.file'"),
        (lambda m: m["model"].update(file="sub/model.onnx"), "'model.file'"),
        (lambda m: m["model"].update(file=".."), "'model.file'"),
        (lambda m: m["postprocessing"].update(decode="ssd"), "'postprocessing.decode'"),
        (lambda m: m["metrics"].update(AP50="high"), "'metrics.AP50'"),
        (lambda m: m.update(lineage=[{"kind": "train"}]), "'lineage[0]' must be an object with a 'step'"),
    ],
)  # fmt: skip
def test_invalid_v1_fields(mutate, match):
    m = make_manifest("a" * 64)
    mutate(m)
    refused(m, match)


def _set(path: str, value):
    """A mutation setting the dotted ``path`` (list indices as numbers) of a manifest."""

    def mutate(m):
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in parents:
            m = m[key]
        m[last] = value

    return mutate


def _drop(path: str):
    def mutate(m):
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in parents:
            m = m[key]
        del m[last]

    return mutate


@pytest.mark.parametrize(
    "mutate,field",
    [
        # quantization
        (_drop("quantization"), "missing field 'quantization'"),
        (_set("quantization.activations.dtype", "fp8"), "'quantization.activations.dtype'"),
        (_set("quantization.weights.dtype", "uint8"), "'quantization.weights.dtype'"),
        (_set("quantization.activations.symmetric", "yes"), "'quantization.activations.symmetric'"),
        (_set("quantization.weights.per_channel_axis", 1.5), "'quantization.weights.per_channel_axis'"),
        (_set("quantization.target", "tflite"), "'quantization.target'"),
        (_set("quantization.calibration.images", 0), "'quantization.calibration.images'"),
        (_set("quantization.calibration.list_sha256", "A" * 64), "'quantization.calibration.list_sha256'"),
        (_drop("quantization.calibration.method"), "'quantization.calibration.method'"),
        (_set("quantization.weights.granularity", "channel"), "in 'quantization.weights'"),
        # lineage
        (_set("lineage.0.kind", "finetune"), "'lineage[0].kind'"),
        (_set("lineage.0.name", ""), "'lineage[0].name'"),
        (_drop("lineage.0.config_sha256"), "'lineage[0].config_sha256'"),
        (_set("lineage.0.config_sha256", "0" * 63), "'lineage[0].config_sha256'"),
        (_set("lineage.1.parent.sha256", "abc"), "'lineage[1].parent.sha256'"),
        (_set("lineage.1.parent", "det_edge_bnn_512"), "'lineage[1].parent'"),
        (_set("lineage.1.metrics.test_AP50", "0.9"), "'lineage[1].metrics.test_AP50'"),
        (_set("lineage.0", {"step": "train"}), "'lineage[0].kind'"),
        # engines
        (_set("engines.0.file", "../model.plan"), "'engines[0].file'"),
        (_set("engines.0.file", "/opt/engines/model.plan"), "'engines[0].file'"),
        (_set("engines.0.sha256", "B" * 64), "'engines[0].sha256'"),
        (_set("engines.0.compute_capability", "sm87"), "'engines[0].compute_capability'"),
        (_set("engines.0.dla_core", "0"), "'engines[0].dla_core'"),
        (_set("engines.0.dla_core", -1), "'engines[0].dla_core'"),
        (_set("engines.0.precision", "int4"), "'engines[0].precision'"),
        (_set("engines.0.build_flags", "--int8"), "'engines[0].build_flags'"),
        (_set("engines.0.build_seconds", "5 min"), "'engines[0].build_seconds'"),
        (_set("engines.0.gpu", "Orin"), "unknown fields ['gpu'] in 'engines[0]'"),
        (_drop("engines.0.device_name"), "'engines[0].device_name'"),
        (_set("engines.0.onnx_sha256", "c" * 63), "'engines[0].onnx_sha256'"),
        # an OpenVINO IR needs its weights file
        (_set("model.format", "openvino"), "'model.weights'"),
        (_set("model.weights", {"file": "model.bin"}), "'model.weights.sha256'"),
        (_set("model.weights", {"file": "../m.bin", "sha256": "d" * 64}), "'model.weights.file'"),
        (_set("model.weights", {"file": "m.bin", "sha256": "d" * 64, "x": 1}), "in 'model.weights'"),
        # decode fields and the model file
        (_set("postprocessing.decode", "ssd"), "'postprocessing.decode'"),
        (_set("postprocessing.decode", "yolo_anchors"), "'postprocessing.anchors'"),
        (_set("postprocessing.strides", [8, 0, 32]), "'postprocessing.strides'"),
        (_set("postprocessing.strides", "8,16,32"), "'postprocessing.strides'"),
        (_set("postprocessing.anchors", [[10, -13], [16, 30], [33, 23]]), "'postprocessing.anchors'"),
        (_set("postprocessing.anchors", [[10, 13], [16, 30]]), "'postprocessing.anchors'"),
        (_set("postprocessing.decode", "dense_dfl"), "'postprocessing.box_bins'"),
        (_set("postprocessing.box_bins", 1), "'postprocessing.box_bins'"),
        (_set("postprocessing.box_bins", 16.0), "'postprocessing.box_bins'"),
        (_set("postprocessing.box_bins", 16), "'postprocessing.box_bins' belongs to the dense_dfl"),
        (_set("postprocessing.nms", "fast"), "unknown fields ['nms'] in 'postprocessing'"),
        (_set("postprocessing.decode", "boxes"), "'postprocessing.vote_iou' needs the runtime's NMS"),
        (_set("model.file", "/srv/models/model.onnx"), "'model.file'"),
        (_set("model.file", "C:model.onnx"), "'model.file'"),
    ],
)  # fmt: skip
def test_invalid_v2_fields(mutate, field):
    m = make_v2()
    validate(copy.deepcopy(m), "m.json")  # the base passes: the mutation alone is refused
    mutate(m)
    refused(m, field)


def test_int8_without_quantization_is_a_v2_rule_only():
    m = copy.deepcopy(V1_EXPORTED)
    m["precision"] = "int8"
    validate(m, "m.json")  # schema 1 never required it
    m = make_v2()
    del m["quantization"]
    message = refused(m, "missing field 'quantization'")
    assert re.search(r"precision is int8", message)


def test_model_hash_mismatch_is_refused(artifact):
    (artifact / "model.onnx").write_bytes(b"another model")
    with pytest.raises(ManifestError, match="does not match the manifest"):
        load_manifest(artifact)
    assert load_manifest(artifact, verify_model=False)["task"] == "detect"
    (artifact / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(artifact)


def test_an_openvino_ir_is_checked_file_by_file(tmp_path):
    (tmp_path / "model.xml").write_bytes(b"<net/>")
    (tmp_path / "model.bin").write_bytes(b"weights")
    m = make_manifest(sha256_file(tmp_path / "model.xml"))
    m["model"].update(
        file="model.xml", format="openvino",
        weights={"file": "model.bin", "sha256": sha256_file(tmp_path / "model.bin")},
    )  # fmt: skip
    save_manifest(m, tmp_path)
    assert load_manifest(tmp_path)["model"]["weights"]["file"] == "model.bin"
    (tmp_path / "model.bin").write_bytes(b"other weights")
    with pytest.raises(ManifestError, match="model file model.bin does not match"):
        load_manifest(tmp_path)
    (tmp_path / "model.bin").unlink()
    with pytest.raises(ManifestError, match="model.weights.file model.bin is missing"):
        load_manifest(tmp_path)
