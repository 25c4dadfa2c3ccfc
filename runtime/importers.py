"""Artifacts from models trained elsewhere: `sarbridge import ultralytics MODEL`.

An Ultralytics YOLOv8/YOLO11 detection model exported to ONNX (``yolo export format=onnx``) or
to OpenVINO (``format=openvino``, FP32 or ``int8=True``: the folder) gets a sarbridge manifest, so it runs through the same tiling, SAR radiometry, merge, GeoJSON
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

import numpy as np

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.fileio import sha256_file, tool_versions
from sarbridge.runtime.manifest import MANIFEST_NAME, SCHEMA_VERSION, save_manifest
from sarbridge.runtime.preprocess import SarPreprocess

ULTRALYTICS_FILL = 114 / 255  # LetterBox(padding_value=114) on 0-255 images


def _literal(meta: dict, key: str, path: Path):
    """``meta[key]``: ONNX metadata is text, read as a Python literal; metadata.yaml values
    come parsed already."""
    if key not in meta:
        raise SarbridgeError(f"{path}: no '{key}' in the ONNX metadata (not an Ultralytics export?)")
    if not isinstance(meta[key], str):
        return meta[key]
    try:
        return ast.literal_eval(meta[key])
    except (ValueError, SyntaxError):
        return meta[key]  # plain strings ("detect") are not Python literals


def _onnx_export(model: Path) -> tuple[dict, list, list]:
    """(metadata, inputs, outputs) of an ONNX export; tensors as (name, shape) with str dims."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types
        raise SarbridgeError(f"{model}: onnxruntime cannot load it: {exc}") from exc
    meta = session.get_modelmeta().custom_metadata_map
    return meta, [(t.name, t.shape) for t in session.get_inputs()], [
        (t.name, t.shape) for t in session.get_outputs()
    ]


def _openvino_export(folder: Path) -> tuple[dict, list, list, Path, Path, int]:
    """(metadata, inputs, outputs, xml, bin, FakeQuantize count) of an OpenVINO export folder
    (``yolo export format=openvino``: ``<name>.xml``, ``<name>.bin``, ``metadata.yaml``)."""
    try:
        import openvino as ov
    except ImportError:
        raise SarbridgeError(
            f"{folder}: reading an OpenVINO export needs openvino: pip install 'sarbridge[openvino]'"
        ) from None
    xmls = sorted(folder.glob("*.xml"))
    if len(xmls) != 1 or not xmls[0].with_suffix(".bin").is_file():
        raise SarbridgeError(f"{folder}: an OpenVINO export holds one .xml with its .bin")
    meta_file = folder / "metadata.yaml"
    if not meta_file.is_file():
        raise SarbridgeError(f"{folder}: no metadata.yaml (not an Ultralytics export?)")
    try:
        import yaml
    except ImportError:
        raise SarbridgeError(f"{meta_file}: reading it needs pyyaml: pip install pyyaml") from None
    try:
        meta = yaml.safe_load(meta_file.read_text())
    except yaml.YAMLError as exc:
        raise SarbridgeError(f"{meta_file}: not valid YAML ({exc})") from None
    if not isinstance(meta, dict):
        raise SarbridgeError(f"{meta_file}: not a mapping of Ultralytics' export metadata")
    try:
        model = ov.Core().read_model(str(xmls[0]))
    except Exception as exc:  # OpenVINO raises RuntimeError with its own text
        raise SarbridgeError(f"{xmls[0]}: openvino cannot read it: {exc}") from exc

    from sarbridge.runtime.backends.openvino import port_name

    def tensors(ports, kind):
        out = []
        for k, port in enumerate(ports):
            shape = [d.get_length() if d.is_static else "batch" for d in port.get_partial_shape()]
            out.append((port_name(port, k, kind), shape))
        return out

    fq = sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    inputs, outputs = tensors(model.inputs, "input"), tensors(model.outputs, "output")
    return meta, inputs, outputs, xmls[0], xmls[0].with_suffix(".bin"), fq


def onnx_size_metrics(model: Path) -> dict:
    """``parameters`` (initializer elements) and ``gmacs_per_image`` (convolutions and matrix
    products, from ONNX shape inference) of an ONNX model; empty without the onnx package or
    when shapes are not known."""
    try:
        import onnx
        from onnx import numpy_helper, shape_inference
    except ImportError:
        return {}
    graph = shape_inference.infer_shapes(onnx.load(str(model))).graph
    weights = {t.name: numpy_helper.to_array(t).shape for t in graph.initializer}
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*graph.value_info, *graph.output, *graph.input)
    }
    parameters = float(sum(int(np.prod(s)) for s in weights.values()))
    macs = 0
    for node in graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.input) < 2:
            continue
        out = shapes.get(node.output[0])
        if node.op_type == "Conv":  # out [B, Co, H', W'], weight [Co, Ci/g, kh, kw]
            inner = weights.get(node.input[1])
            inner = None if inner is None else int(np.prod(inner[1:]))
        else:  # out [..., M, N] from A [..., M, K] (a weight or an activation, e.g. attention)
            a = weights.get(node.input[0]) or shapes.get(node.input[0])
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            inner = int(a[-2] if trans_a else a[-1]) if a and len(a) >= 2 else None
        if not inner or not out or 0 in out[1:]:  # a shape that shape inference did not find
            return {"parameters": parameters}
        macs += int(np.prod(out[1:])) * inner
    return {"parameters": parameters, "gmacs_per_image": macs / 1e9}


def ultralytics_manifest(
    model: Path, name: str, overlap: float = 0.25, whole_scene_max: int | None = None
) -> dict:
    """The manifest of an Ultralytics detection export (the files are only read): an ONNX file
    (``format=onnx``) or an OpenVINO folder (``format=openvino``, FP32 or ``int8=True``).

    Raises:
        SarbridgeError: not a model ONNX Runtime / OpenVINO loads, no Ultralytics metadata,
            another task than detection, a non-square input, or an output that is not
            [B, 4 + C, N].
    """
    fake_quantize, size_metrics = 0, {}
    if model.is_dir():
        meta, inputs, outputs, xml, weights, fake_quantize = _openvino_export(model)
        model_block = {
            "file": "model.xml", "sha256": sha256_file(xml), "format": "openvino",
            "weights": {"file": "model.bin", "sha256": sha256_file(weights)},
        }  # fmt: skip
    else:
        meta, inputs, outputs = _onnx_export(model)
        model_block = {"file": "model.onnx", "sha256": sha256_file(model), "format": "onnx"}
        size_metrics = onnx_size_metrics(model)
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
    if len(inputs) != 1 or len(outputs) != 1:
        raise SarbridgeError(
            f"{model}: {len(inputs)} inputs and {len(outputs)} outputs; an Ultralytics detection "
            "export has one of each"
        )
    (in_name, in_shape), (out_name, out_shape) = inputs[0], outputs[0]
    if len(out_shape) != 3 or out_shape[1] != 4 + len(names):
        raise SarbridgeError(
            f"{model}: output {out_name} is {out_shape}; a detection export of "
            f"{len(names)} classes gives [batch, {4 + len(names)}, anchors] (an end-to-end "
            "export with NMS in the graph is not supported)"
        )

    def dims(shape):
        return [d if isinstance(d, int) else "batch" for d in shape]

    classes = [str(names[k]) for k in range(len(names))]
    pre = SarPreprocess(channels=3, eight_bit_passthrough=True).to_dict()
    if whole_scene_max and int(whole_scene_max) < size:
        raise SarbridgeError(
            f"{model}: --whole-scene-max {whole_scene_max} is under the model's input size "
            f"({size} px), the tile every scene is cut into: give at least {size}, or leave it out"
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "task": "detect",
        "model": model_block,
        "inputs": [{"name": in_name, "shape": dims(in_shape), "dtype": "float32"}],
        "outputs": [
            {
                "name": out_name,
                "shape": dims(out_shape),
                "dtype": "float32",
                "meaning": "per anchor point: box centre x, y, width, height in input pixels, "
                "then class probabilities; decoded by sarbridge.runtime.decode."
                "ultralytics_candidates",
            }
        ],
        "preprocessing": pre
        | {"input_size": size, "letterbox_align": "center", "letterbox_fill": ULTRALYTICS_FILL},
        "tiling": {
            "size": size,
            "overlap": float(overlap),
            **({"whole_scene_max": int(whole_scene_max)} if whole_scene_max else {}),
        },
        "postprocessing": {  # Ultralytics' predict defaults
            "score_threshold": 0.25,
            "iou_threshold": 0.7,
            "max_detections": 300,
            "decode": "ultralytics",
        },
        "classes": classes,
        # an INT8 OpenVINO export keeps some layers in float (Ultralytics leaves the head out of
        # NNCF's quantization); its calibration is Ultralytics', not described here
        "precision": "mixed" if fake_quantize else "fp32",
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
        "metrics": size_metrics,
        "tool_versions": tool_versions(
            ["sarbridge", "openvino" if model_block["format"] == "openvino" else "onnxruntime"]
        ),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "notes": "imported with sarbridge import ultralytics; trained and exported by Ultralytics"
        + (
            f"; OpenVINO INT8 by Ultralytics' NNCF export ({fake_quantize} FakeQuantize nodes)"
            if fake_quantize
            else ""
        ),
    }


def import_ultralytics(
    model: str | Path,
    out: str | Path,
    name: str | None = None,
    overlap: float = 0.25,
    check=None,
    unchecked: str | None = None,
    whole_scene_max: int | None = None,
) -> Path:
    """Write ``out/`` (model.onnx, or model.xml + model.bin, + manifest.json) for an Ultralytics
    detection export, then
    load it as a :class:`~sarbridge.runtime.detector.Detector` (the manifest against the model).

    Args:
        check: ``check(out, manifest) -> dict``, the parity check against Ultralytics' own
            predictions (:func:`sarbridge.export.ultralytics_parity.parity_check`; it needs
            Ultralytics, so the runtime takes it from the caller). Its record goes into the
            import step of the lineage and its agreement into the metrics; when it raises,
            nothing is left.
        unchecked: why there is no check (recorded in the lineage instead).
        whole_scene_max: scenes up to this long side are letterboxed whole (None: the input
            size; tiling.whole_scene_max of the manifest).

    Raises:
        SarbridgeError: see :func:`ultralytics_manifest`; ``out`` exists already; the check
            failed.
    """
    from sarbridge.runtime.detector import Detector

    model, out = Path(model), Path(out)
    if not model.exists():
        raise SarbridgeError(f"{model}: no such file or folder")
    if out.exists():
        raise SarbridgeError(f"{out}: exists already; choose another --out")
    manifest = ultralytics_manifest(model, name or out.name, overlap, whole_scene_max)
    out.mkdir(parents=True)
    try:
        backend = "onnxruntime"
        if manifest["model"]["format"] == "openvino":
            xml = next(model.glob("*.xml"))
            shutil.copyfile(xml, out / "model.xml")
            shutil.copyfile(xml.with_suffix(".bin"), out / "model.bin")
            backend = "openvino"
        else:
            shutil.copyfile(model, out / "model.onnx")
        save_manifest(manifest, out / MANIFEST_NAME)
        Detector.from_artifact(out, backend, threads=1).close()
        if check is not None:
            parity = check(out, manifest)
            manifest["metrics"]["ultralytics_parity_agreement"] = parity["agreement"]
        else:
            parity = f"not checked: {unchecked or 'no check was asked for'}"
        manifest["lineage"][-1]["parity"] = parity
        save_manifest(manifest, out / MANIFEST_NAME)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # nothing half-made is left
        raise
    return out
