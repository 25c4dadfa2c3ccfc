"""Artifacts from models trained elsewhere: `sarbridge import ultralytics MODEL.onnx`.

An Ultralytics YOLOv8/YOLO11 detection model exported to ONNX (``yolo export format=onnx``)
gets a sarbridge manifest, so it runs through the same tiling, SAR radiometry, merge, GeoJSON
and bench as sarbridge's own detectors. What the manifest says comes from the ONNX file itself:
the class names, input size and task from the metadata Ultralytics writes into it (read as
literals, never evaluated), the input and output tensors from the graph. Preprocessing is the
one Ultralytics trains with on 8-bit images: x / 255, the grey band replicated to 3 channels,
the image centred in the square input and the rest filled with 114 / 255.
"""

from __future__ import annotations

import ast
import datetime
import shutil
from pathlib import Path

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.fileio import sha256_file, tool_versions
from sarbridge.runtime.manifest import MANIFEST_NAME, SCHEMA_VERSION, save_manifest
from sarbridge.runtime.preprocess import SarPreprocess

ULTRALYTICS_FILL = 114 / 255  # LetterBox(padding_value=114) on 0-255 images


def _literal(meta: dict, key: str, path: Path):
    if key not in meta:
        raise SarbridgeError(f"{path}: no '{key}' in the ONNX metadata (not an Ultralytics export?)")
    try:
        return ast.literal_eval(meta[key])
    except (ValueError, SyntaxError):
        return meta[key]  # plain strings ("detect") are not Python literals


def ultralytics_manifest(model: Path, name: str, overlap: float = 0.25) -> dict:
    """The manifest of an Ultralytics detection ONNX export (the file is only read).

    Raises:
        SarbridgeError: not an ONNX file ONNX Runtime loads, no Ultralytics metadata, another
            task than detection, a non-square input, or an output that is not [B, 4 + C, N].
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types
        raise SarbridgeError(f"{model}: onnxruntime cannot load it: {exc}") from exc
    meta = session.get_modelmeta().custom_metadata_map
    task = _literal(meta, "task", model)
    if task != "detect":
        raise SarbridgeError(f"{model}: an Ultralytics '{task}' model; only 'detect' is imported")
    names = _literal(meta, "names", model)
    if not isinstance(names, dict) or sorted(names) != list(range(len(names))):
        raise SarbridgeError(f"{model}: metadata 'names' must map 0..C-1 to class names")
    imgsz = _literal(meta, "imgsz", model)
    if not (isinstance(imgsz, list) and len(imgsz) == 2 and imgsz[0] == imgsz[1]):
        raise SarbridgeError(f"{model}: a square input is needed, the metadata says imgsz {imgsz}")
    size = int(imgsz[0])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise SarbridgeError(
            f"{model}: {len(inputs)} inputs and {len(outputs)} outputs; an Ultralytics detection "
            "export has one of each"
        )
    out_shape = outputs[0].shape
    if len(out_shape) != 3 or out_shape[1] != 4 + len(names):
        raise SarbridgeError(
            f"{model}: output {outputs[0].name} is {out_shape}; a detection export of "
            f"{len(names)} classes gives [batch, {4 + len(names)}, anchors] (an end-to-end "
            "export with NMS in the graph is not supported)"
        )

    def dims(shape):
        return [d if isinstance(d, int) else "batch" for d in shape]

    classes = [str(names[k]) for k in range(len(names))]
    pre = SarPreprocess(channels=3, eight_bit_passthrough=True).to_dict()
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "task": "detect",
        "model": {"file": "model.onnx", "sha256": sha256_file(model), "format": "onnx"},
        "inputs": [{"name": inputs[0].name, "shape": dims(inputs[0].shape), "dtype": "float32"}],
        "outputs": [
            {
                "name": outputs[0].name,
                "shape": dims(out_shape),
                "dtype": "float32",
                "meaning": "per anchor point: box centre x, y, width, height in input pixels, "
                "then class probabilities; decoded by sarbridge.runtime.decode."
                "ultralytics_candidates",
            }
        ],
        "preprocessing": pre
        | {"input_size": size, "letterbox_align": "center", "letterbox_fill": ULTRALYTICS_FILL},
        "tiling": {"size": size, "overlap": float(overlap)},
        "postprocessing": {  # Ultralytics' predict defaults
            "score_threshold": 0.25,
            "iou_threshold": 0.7,
            "max_detections": 300,
            "decode": "ultralytics",
        },
        "classes": classes,
        "precision": "fp32",
        "lineage": [
            {
                "kind": "export",
                "name": name,
                "parent": None,
                "config_sha256": None,
                "metrics": {},
                "source": f"ultralytics {meta.get('version', '?')}: {model.name}",
            }
        ],
        "metrics": {},
        "tool_versions": tool_versions(["sarbridge", "onnxruntime"]),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "notes": "imported with sarbridge import ultralytics; trained and exported by Ultralytics",
    }


def import_ultralytics(
    model: str | Path, out: str | Path, name: str | None = None, overlap: float = 0.25
) -> Path:
    """Write ``out/`` (model.onnx + manifest.json) for an Ultralytics detection export, then
    load it as a :class:`~sarbridge.runtime.detector.Detector` (the manifest against the model).

    Raises:
        SarbridgeError: see :func:`ultralytics_manifest`; ``out`` exists already.
    """
    from sarbridge.runtime.detector import Detector

    model, out = Path(model), Path(out)
    if not model.is_file():
        raise SarbridgeError(f"{model}: no such file")
    if out.exists():
        raise SarbridgeError(f"{out}: exists already; choose another --out")
    manifest = ultralytics_manifest(model, name or out.name, overlap)
    out.mkdir(parents=True)
    try:
        shutil.copyfile(model, out / "model.onnx")
        save_manifest(manifest, out / MANIFEST_NAME)
        Detector.from_artifact(out, threads=1).close()
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # nothing half-made is left
        raise
    return out
