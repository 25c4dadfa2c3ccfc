"""The manifest: the one contract between a model file and the runtime.

A manifest is a JSON object with a ``schema_version``. :func:`validate`
checks it against the schema of that version (required fields, types, allowed
values, unknown keys) and raises :class:`ManifestError` naming the file and
the field; an unknown version is refused, never guessed. Version 2 is written;
version 1 manifests still validate and load.

Schema version 2 (all keys required unless marked optional)::

    schema_version  int, 2
    task            "detect" | "embed"
    model           {file: str (a plain file name in the artifact folder), sha256: str (64 hex),
                     format: "onnx" | "tensorrt" | "openvino" (an OpenVINO IR: file is the .xml),
                     weights?: {file, sha256} (the IR's .bin; required for "openvino")}
    inputs          [{name, shape: [int|str], dtype}]     (str dims are dynamic)
    outputs         [{name, shape, dtype, meaning?: str}]
    preprocessing   SarPreprocess fields + input_size: int in [16, 4096]
                    + letterbox_align?: "corner" (default) | "center",
                      letterbox_fill?: number (default 0.0, in network-input units)
    tiling          {size: int in [16, 4096], overlap: float in [0, 0.9],
                     whole_scene_max?: int in [size, 4096] (a scene whose long side is at most
                     this is letterboxed whole into the input, as training saw its images;
                     default size)}
    postprocessing  {score_threshold, iou_threshold: float in [0, 1],
                     max_detections: int in [1, 100000],
                     vote_iou?: float in (0, 1] or null (box voting after NMS),
                     tta_flips?: list of "h" | "v" | "hv" (test-time flips),
                     decode?: a name of the decoder registry (default "dense_ltrb"),
                     strides?: [int in [1, 256], each dividing input_size], at most 8
                               (default [8, 16, 32]),
                     anchors?: [[w, h]] or one such list per stride, positive numbers
                               (required by "yolo_anchors"),
                     box_bins?: int in [2, 256], logits per box edge
                               (required by "dense_dfl")}     no other keys
    classes         [str]
    precision       "fp32" | "fp16" | "int8" | "mixed"
    quantization    {scheme: str, target: "onnxruntime" | "openvino" | "tensorrt",
                     activations: {dtype: "uint8" | "int8", symmetric: bool},
                     weights: {dtype: "int8", symmetric: bool, per_channel_axis: int | null},
                     calibration: {split: str, images: int > 0, list_sha256: 64 hex,
                                   method: str},
                     tool?: str (what placed the Q/DQ nodes),
                     float_layers?: [str] (nodes the accuracy guard kept in floating point),
                     guard?: {metric: str, split: str, images: int, max_drop, parent,
                              quantized: number, tried?: [object]}}
                                                                  (required when precision is int8)
    lineage         [step], oldest first; a step is
                    {kind: "train" | "prune" | "distill" | "qat" | "ptq" | "fp16" | "export"
                           | "engine",
                     name: str (the run or artifact name),
                     parent: null | {name: str, sha256: 64 hex},
                     config_sha256: null | 64 hex,
                     metrics: {str: number},
                     ...: any further JSON values}
    metrics         {name: number}       (at export)
    tool_versions   {package: version}
    engines         optional [{file: str (a plain file name in the artifact folder),
                     sha256: 64 hex, tensorrt_version: str, device_name: str,
                     compute_capability: str ("8.7"), dla_core: int >= 0 | null,
                     precision: "fp32" | "fp16" | "int8" | "best",
                     build_flags?: [str], build_seconds?: number,
                     onnx_sha256?: 64 hex (the model file it was built from)}]
    created, name, notes   optional str

Schema version 1 differs in: ``lineage`` [{step: str, ...}]; ``quantization`` optional
{scheme: str, ...}, never required; ``engines`` [{file, sha256, tensorrt_version, gpu: str,
...}]; ``postprocessing`` may hold further keys. ``model.file`` and the ``decode`` fields are
checked as in version 2 (every version 1 manifest sarbridge wrote passes).

Sizes are held to sane ranges (above) so a manifest cannot make the runtime allocate without
bound, and ``inputs[0]`` must agree with the preprocessing: rank 4 (batch, channels, height,
width), ``preprocessing.channels`` channels and ``input_size`` sides where the dimensions are
fixed, dtype float32. :func:`load_manifest` also refuses a ``model.file`` that is a link out of
the artifact folder; the backend checks the model file's own inputs against the manifest
(:func:`check_model_io`) before any scene is read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sarbridge.runtime.decode import (
    DEFAULT_STRIDES,
    LETTERBOX_ALIGNS,
    get_decoder,
    list_decoders,
    parse_flips,
)
from sarbridge.runtime.errors import ManifestError
from sarbridge.runtime.fileio import atomic_write_json, sha256_mismatch
from sarbridge.runtime.preprocess import SarPreprocess

SCHEMA_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"

TASKS = ("detect", "embed")
PRECISIONS = ("fp32", "fp16", "int8", "mixed")
MODEL_FORMATS = ("onnx", "tensorrt", "openvino")
LINEAGE_KINDS = ("train", "prune", "distill", "qat", "ptq", "fp16", "export", "engine")
QUANTIZATION_TARGETS = ("onnxruntime", "openvino", "tensorrt")
ACTIVATION_DTYPES = ("uint8", "int8")
WEIGHT_DTYPES = ("int8",)
ENGINE_PRECISIONS = ("fp32", "fp16", "int8", "best")

_REQUIRED = {
    "schema_version": int,
    "task": str,
    "model": dict,
    "inputs": list,
    "outputs": list,
    "preprocessing": dict,
    "tiling": dict,
    "postprocessing": dict,
    "classes": list,
    "precision": str,
    "lineage": list,
    "metrics": dict,
    "tool_versions": dict,
}
_OPTIONAL = {"quantization": dict, "engines": list, "created": str, "name": str, "notes": str}
_POSTPROCESSING_KEYS = (
    "score_threshold",
    "iou_threshold",
    "max_detections",
    "vote_iou",
    "tta_flips",
    "decode",
    "strides",
    "anchors",
    "box_bins",
)
MAX_BOX_BINS = 256
LETTERBOX_KEYS = ("letterbox_align", "letterbox_fill")  # optional, beside input_size
INPUT_SIZE_RANGE = (16, 4096)
TILE_SIZE_RANGE = (16, 4096)  # one tile is one read: 64 MiB as float32 at most
MAX_OVERLAP = 0.9
MAX_DETECTIONS = 100_000
STRIDE_RANGE = (1, 256)
MAX_LEVELS = 8
_HEX64 = re.compile(r"[0-9a-f]{64}")
_COMPUTE_CAPABILITY = re.compile(r"[0-9]+\.[0-9]+")


def _fail(path, message: str):
    raise ManifestError(path, message)


def _is_kind(value, kind) -> bool:
    if kind is float:  # any JSON number
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _need(obj: dict, key: str, kind, where: str, path, *, nullable: bool = False) -> Any:
    """``obj[key]``, which must exist and be of ``kind`` (or None when ``nullable``)."""
    if key not in obj:
        _fail(path, f"missing field '{where}{key}'")
    value = obj[key]
    if value is None and nullable:
        return None
    if not _is_kind(value, kind):
        name = "number" if kind is float else kind.__name__
        null = " or null" if nullable else ""
        _fail(path, f"field '{where}{key}' must be {name}{null}, got {type(value).__name__}")
    return value


def _object(obj, where: str, path, allowed: tuple[str, ...]) -> dict:
    """``obj`` as a JSON object whose keys are all in ``allowed``."""
    if not isinstance(obj, dict):
        _fail(path, f"field '{where}' must be an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        _fail(path, f"unknown fields {unknown} in '{where}'")
    return obj


def _choice(obj: dict, key: str, choices: tuple[str, ...], where: str, path) -> str:
    value = _need(obj, key, str, where, path)
    if value not in choices:
        _fail(path, f"field '{where}{key}' must be one of {list(choices)}, got {value!r}")
    return value


def _sha256(obj: dict, key: str, where: str, path, *, nullable: bool = False) -> str | None:
    value = _need(obj, key, str, where, path, nullable=nullable)
    if value is not None and not _HEX64.fullmatch(value):
        _fail(path, f"field '{where}{key}' must be 64 lower-case hex digits (a sha256)")
    return value


def _plain_file_name(obj: dict, key: str, where: str, path) -> str:
    """A file name inside the artifact folder: no folders, no drive, no '..', not absolute."""
    value = _need(obj, key, str, where, path)
    if value in ("", ".", "..") or any(c in value for c in "/\\:\0"):
        _fail(
            path,
            f"field '{where}{key}' must be a plain file name in the artifact folder (no path "
            f"separators, no '..', not absolute), got {value!r}",
        )
    return value


def _numbers(obj: dict, key: str, where: str, path) -> dict:
    values = _need(obj, key, dict, where, path)
    for name, value in values.items():
        if not _is_kind(value, float):
            _fail(path, f"field '{where}{key}.{name}' must be a number, got {type(value).__name__}")
    return values


def _check_tensors(items: list, where: str, path) -> None:
    if not items:
        _fail(path, f"'{where}' must list at least one tensor")
    for k, t in enumerate(items):
        if not isinstance(t, dict):
            _fail(path, f"'{where}[{k}]' must be an object")
        _need(t, "name", str, f"{where}[{k}].", path)
        shape = _need(t, "shape", list, f"{where}[{k}].", path)
        if not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in shape):
            _fail(path, f"'{where}[{k}].shape' must hold ints or dynamic-dimension names")
        _need(t, "dtype", str, f"{where}[{k}].", path)


def _check_input_shape(tensor: dict, channels: int, size: int, path) -> None:
    """``inputs[0]``: [batch, channels, size, size] float32 (named dimensions are dynamic)."""
    shape = tensor["shape"]
    if len(shape) != 4:
        _fail(path, f"field 'inputs[0].shape' must have 4 dimensions (N, C, H, W), got {shape}")
    if isinstance(shape[1], int) and shape[1] != channels:
        _fail(
            path,
            f"field 'inputs[0].shape' has {shape[1]} channels but preprocessing.channels is "
            f"{channels}",
        )
    for dim in shape[2:]:
        if isinstance(dim, int) and dim != size:
            _fail(
                path,
                f"field 'inputs[0].shape' {shape} does not match preprocessing.input_size {size}",
            )
    if tensor["dtype"] != "float32":
        _fail(path, f"field 'inputs[0].dtype' must be 'float32', got {tensor['dtype']!r}")


def _check_postprocessing(post: dict, version: int, path, input_size: int | None = None) -> None:
    where = "postprocessing."
    if version >= 2:
        _object(post, "postprocessing", path, _POSTPROCESSING_KEYS)
    for key in ("score_threshold", "iou_threshold"):
        if not 0 <= _need(post, key, float, where, path) <= 1:
            _fail(path, f"field 'postprocessing.{key}' must be in [0, 1]")
    if (
        post.get("vote_iou") is not None
        and not 0 < _need(post, "vote_iou", float, where, path) <= 1
    ):
        _fail(path, "field 'postprocessing.vote_iou' must be in (0, 1] or null")
    if "tta_flips" in post:
        flips = post["tta_flips"]
        try:
            if not isinstance(flips, list):
                raise ValueError(f"not a list: {flips!r}")
            parse_flips(flips)
        except ValueError as exc:
            _fail(path, f"field 'postprocessing.tta_flips': {exc}")
    if not 1 <= _need(post, "max_detections", int, where, path) <= MAX_DETECTIONS:
        _fail(path, f"field 'postprocessing.max_detections' must be in [1, {MAX_DETECTIONS}]")
    strides = list(DEFAULT_STRIDES)
    if "strides" in post:
        strides = _need(post, "strides", list, where, path)
        lo, hi = STRIDE_RANGE
        if (
            not strides
            or len(strides) > MAX_LEVELS
            or not all(_is_kind(s, int) and lo <= s <= hi for s in strides)
        ):
            _fail(
                path,
                f"field 'postprocessing.strides' must list 1 to {MAX_LEVELS} ints in [{lo}, {hi}], "
                f"got {strides!r}",
            )
        if input_size is not None and any(input_size % s for s in strides):
            _fail(
                path,
                f"field 'postprocessing.strides' {strides} must divide preprocessing.input_size "
                f"{input_size}",
            )
    if "decode" in post:
        decode = _choice(post, "decode", tuple(list_decoders()), where, path)
        decoder = get_decoder(decode)
        for key in decoder.requires:
            if key not in post:
                _fail(path, f"missing field 'postprocessing.{key}' (the {decode} decode needs it)")
        for key in ("vote_iou", "tta_flips"):
            if post.get(key) and not decoder.runtime_nms:
                _fail(
                    path,
                    f"field 'postprocessing.{key}' needs the runtime's NMS; the {decode} decode "
                    "takes the graph's own",
                )
    if "anchors" in post:
        _check_anchors(post["anchors"], len(strides), path)
    if "box_bins" in post:
        if not (_is_kind(post["box_bins"], int) and 2 <= post["box_bins"] <= MAX_BOX_BINS):
            _fail(path, f"field 'postprocessing.box_bins' must be an int in [2, {MAX_BOX_BINS}]")
        if post.get("decode") != "dense_dfl":
            _fail(path, "field 'postprocessing.box_bins' belongs to the dense_dfl decode only")


def _is_wh(pair) -> bool:
    return (
        isinstance(pair, list)
        and len(pair) == 2
        and all(_is_kind(v, float) and v > 0 for v in pair)
    )


def _check_anchors(anchors, levels: int, path) -> None:
    """[[w, h], ...] split evenly over the levels, or one list of [w, h] per level."""
    where = "postprocessing.anchors"
    if not isinstance(anchors, list) or not anchors:
        _fail(path, f"field '{where}' must be a non-empty list of [w, h] pairs")
    if all(isinstance(a, list) and a and isinstance(a[0], list) for a in anchors):  # per level
        if len(anchors) != levels or len({len(a) for a in anchors}) != 1:
            _fail(path, f"field '{where}' must hold one equal-length list per stride ({levels})")
        pairs = [pair for level in anchors for pair in level]
    else:
        pairs = anchors
        if len(pairs) % levels:
            _fail(path, f"field '{where}': {len(pairs)} anchors do not split over {levels} strides")
    for k, pair in enumerate(pairs):
        if not _is_wh(pair):
            _fail(
                path, f"field '{where}': anchor {k} must be [w, h], positive numbers, got {pair!r}"
            )


def _check_lineage_v1(lineage: list, path) -> None:
    for k, step in enumerate(lineage):
        if not isinstance(step, dict) or not isinstance(step.get("step"), str):
            _fail(path, f"'lineage[{k}]' must be an object with a 'step' name")


def _check_lineage_v2(lineage: list, path) -> None:
    for k, step in enumerate(lineage):
        where = f"lineage[{k}]."
        if not isinstance(step, dict):
            _fail(path, f"field 'lineage[{k}]' must be an object")
        _choice(step, "kind", LINEAGE_KINDS, where, path)
        if not _need(step, "name", str, where, path):
            _fail(path, f"field '{where}name' must not be empty")
        parent = _need(step, "parent", dict, where, path, nullable=True)
        if parent is not None:
            _object(parent, f"{where}parent", path, ("name", "sha256"))
            _need(parent, "name", str, f"{where}parent.", path)
            _sha256(parent, "sha256", f"{where}parent.", path)
        _sha256(step, "config_sha256", where, path, nullable=True)
        _numbers(step, "metrics", where, path)


def _check_quantization_v2(quant, path) -> None:
    keys = (
        "scheme",
        "target",
        "tool",
        "activations",
        "weights",
        "calibration",
        "float_layers",
        "guard",
    )
    _object(quant, "quantization", path, keys)
    where = "quantization."
    _need(quant, "scheme", str, where, path)
    if "tool" in quant:
        _need(quant, "tool", str, where, path)
    if "float_layers" in quant:
        layers = _need(quant, "float_layers", list, where, path)
        if not all(isinstance(v, str) for v in layers):
            _fail(path, "field 'quantization.float_layers' must list node names (strings)")
    if "guard" in quant:
        guard = _object(
            _need(quant, "guard", dict, where, path),
            "quantization.guard",
            path,
            ("metric", "split", "images", "max_drop", "parent", "quantized", "tried"),
        )
        for key in ("metric", "split"):
            _need(guard, key, str, "quantization.guard.", path)
        _need(guard, "images", int, "quantization.guard.", path)
        for key in ("max_drop", "parent", "quantized"):
            _need(guard, key, float, "quantization.guard.", path)
        if "tried" in guard:
            _need(guard, "tried", list, "quantization.guard.", path)
    _choice(quant, "target", QUANTIZATION_TARGETS, where, path)
    act = _object(
        _need(quant, "activations", dict, where, path),
        "quantization.activations",
        path,
        ("dtype", "symmetric"),
    )
    _choice(act, "dtype", ACTIVATION_DTYPES, "quantization.activations.", path)
    _need(act, "symmetric", bool, "quantization.activations.", path)
    weights = _object(
        _need(quant, "weights", dict, where, path),
        "quantization.weights",
        path,
        ("dtype", "symmetric", "per_channel_axis"),
    )
    _choice(weights, "dtype", WEIGHT_DTYPES, "quantization.weights.", path)
    _need(weights, "symmetric", bool, "quantization.weights.", path)
    _need(weights, "per_channel_axis", int, "quantization.weights.", path, nullable=True)
    cal = _object(
        _need(quant, "calibration", dict, where, path),
        "quantization.calibration",
        path,
        ("split", "images", "list_sha256", "method"),
    )
    _need(cal, "split", str, "quantization.calibration.", path)
    if _need(cal, "images", int, "quantization.calibration.", path) <= 0:
        _fail(path, "field 'quantization.calibration.images' must be positive")
    _sha256(cal, "list_sha256", "quantization.calibration.", path)
    _need(cal, "method", str, "quantization.calibration.", path)


_ENGINE_KEYS = (
    "file",
    "sha256",
    "tensorrt_version",
    "device_name",
    "compute_capability",
    "dla_core",
    "precision",
    "build_flags",
    "build_seconds",
    "onnx_sha256",
)


def _check_engines(engines: list, version: int, path) -> None:
    for k, eng in enumerate(engines):
        where = f"engines[{k}]."
        if not isinstance(eng, dict):
            _fail(path, f"field 'engines[{k}]' must be an object")
        _plain_file_name(eng, "file", where, path)
        if version == 1:
            for key in ("sha256", "tensorrt_version", "gpu"):
                _need(eng, key, str, where, path)
            continue
        _object(eng, f"engines[{k}]", path, _ENGINE_KEYS)
        _sha256(eng, "sha256", where, path)
        _need(eng, "tensorrt_version", str, where, path)
        _need(eng, "device_name", str, where, path)
        if not _COMPUTE_CAPABILITY.fullmatch(_need(eng, "compute_capability", str, where, path)):
            _fail(path, f"field '{where}compute_capability' must be like '8.7'")
        dla = _need(eng, "dla_core", int, where, path, nullable=True)
        if dla is not None and dla < 0:
            _fail(path, f"field '{where}dla_core' must be >= 0 or null")
        _choice(eng, "precision", ENGINE_PRECISIONS, where, path)
        if "build_flags" in eng:
            flags = _need(eng, "build_flags", list, where, path)
            if not all(isinstance(f, str) for f in flags):
                _fail(path, f"field '{where}build_flags' must list strings")
        if "onnx_sha256" in eng:
            _sha256(eng, "onnx_sha256", where, path)
        if "build_seconds" in eng and _need(eng, "build_seconds", float, where, path) < 0:
            _fail(path, f"field '{where}build_seconds' must be >= 0")


def validate(manifest: dict, path: str | Path = "<manifest>") -> dict:
    """Check a manifest dict against its schema version; return it unchanged.

    Raises:
        ManifestError: naming the file and the first offending field.
    """
    if not isinstance(manifest, dict):
        _fail(path, "a manifest must be a JSON object")
    if "schema_version" not in manifest:
        _fail(path, "missing field 'schema_version'")
    version = manifest["schema_version"]
    if not _is_kind(version, int) or version not in SUPPORTED_VERSIONS:
        _fail(
            path,
            f"unknown schema_version {version!r}; this sarbridge reads {list(SUPPORTED_VERSIONS)}. "
            "Re-export the model with this sarbridge version, or upgrade sarbridge",
        )
    unknown = set(manifest) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        _fail(path, f"unknown fields {sorted(unknown)} for schema_version {version}")
    for key, kind in _REQUIRED.items():
        _need(manifest, key, kind, "", path)
    for key, kind in _OPTIONAL.items():
        if key in manifest and not isinstance(manifest[key], kind):
            _fail(path, f"field '{key}' must be {kind.__name__}")
    if manifest["task"] not in TASKS:
        _fail(path, f"task must be one of {list(TASKS)}, got {manifest['task']!r}")
    if manifest["precision"] not in PRECISIONS:
        _fail(path, f"precision must be one of {list(PRECISIONS)}, got {manifest['precision']!r}")
    model = manifest["model"]
    _plain_file_name(model, "file", "model.", path)
    _sha256(model, "sha256", "model.", path)
    if _need(model, "format", str, "model.", path) not in MODEL_FORMATS:
        _fail(path, f"model.format must be one of {list(MODEL_FORMATS)}")
    if model["format"] == "openvino" or "weights" in model:
        if not isinstance(model.get("weights"), dict):
            _fail(path, "field 'model.weights' must be {file, sha256} (an OpenVINO IR's .bin)")
        _object(model["weights"], "model.weights", path, ("file", "sha256"))
        _plain_file_name(model["weights"], "file", "model.weights.", path)
        _sha256(model["weights"], "sha256", "model.weights.", path)
    _check_tensors(manifest["inputs"], "inputs", path)
    _check_tensors(manifest["outputs"], "outputs", path)
    pre = dict(manifest["preprocessing"])
    size = pre.pop("input_size", None)
    align = pre.pop("letterbox_align", "corner")
    fill = pre.pop("letterbox_fill", 0.0)
    if align not in LETTERBOX_ALIGNS:
        _fail(path, f"field 'preprocessing.letterbox_align' must be one of {list(LETTERBOX_ALIGNS)}")
    if not _is_kind(fill, float) or not -1e6 < fill < 1e6:
        _fail(path, "field 'preprocessing.letterbox_fill' must be a finite number")
    lo, hi = INPUT_SIZE_RANGE
    if not _is_kind(size, int) or not lo <= size <= hi:
        _fail(path, f"field 'preprocessing.input_size' must be an int in [{lo}, {hi}], got {size!r}")
    try:
        params = SarPreprocess.from_dict(pre)
    except (TypeError, ValueError) as exc:
        _fail(path, f"invalid 'preprocessing': {exc}")
    _check_input_shape(manifest["inputs"][0], params.channels, size, path)
    tiling = _object(manifest["tiling"], "tiling", path, ("size", "overlap", "whole_scene_max"))
    lo, hi = TILE_SIZE_RANGE
    if not lo <= _need(tiling, "size", int, "tiling.", path) <= hi:
        _fail(path, f"field 'tiling.size' must be in [{lo}, {hi}], got {tiling['size']}")
    overlap = _need(tiling, "overlap", float, "tiling.", path)
    if not 0 <= overlap <= MAX_OVERLAP:
        _fail(path, f"field 'tiling.overlap' must be in [0, {MAX_OVERLAP}], got {overlap}")
    whole = tiling.get("whole_scene_max")
    if whole is not None and (not _is_kind(whole, int) or not tiling["size"] <= whole <= hi):
        _fail(
            path,
            f"field 'tiling.whole_scene_max' must be an int in [tiling.size ({tiling['size']}), "
            f"{hi}], got {whole!r}",
        )
    _check_postprocessing(manifest["postprocessing"], version, path, size)
    if not manifest["classes"] or not all(isinstance(c, str) for c in manifest["classes"]):
        _fail(path, "field 'classes' must be a non-empty list of names")
    if version == 1:
        _check_lineage_v1(manifest["lineage"], path)
    else:
        _check_lineage_v2(manifest["lineage"], path)
        if "quantization" in manifest:
            _check_quantization_v2(manifest["quantization"], path)
        elif manifest["precision"] == "int8":
            _fail(path, "missing field 'quantization' (required when precision is int8)")
    _numbers(manifest, "metrics", "", path)
    _check_engines(manifest.get("engines", []), version, path)
    return manifest


def check_model_io(manifest: dict, model_io, path: str | Path = "<manifest>") -> None:
    """The manifest's ``inputs``/``outputs`` against the model file's own (a backend's
    ``model_io()``): one input, of the manifest's name, rank, channels, size and dtype; the
    manifest's outputs, by name. Nothing to check when ``model_io`` is None.

    Raises:
        ManifestError: naming the field that does not describe the model.
    """
    if model_io is None:
        return
    inputs, outputs = model_io
    want = manifest["inputs"][0]
    if len(inputs) != 1:
        _fail(path, f"the model file has {len(inputs)} inputs; the runtime feeds one ('inputs')")
    got = inputs[0]
    if got.name != want["name"]:
        _fail(
            path, f"field 'inputs[0].name' is {want['name']!r} but the model's input is {got.name!r}"
        )
    if len(got.shape) != len(want["shape"]):
        _fail(
            path,
            f"field 'inputs[0].shape' {want['shape']} has {len(want['shape'])} dimensions but the "
            f"model's input has {len(got.shape)} ({list(got.shape)})",
        )
    params, size = preprocess_of(manifest)
    labels = ("batch", "channels", "height", "width")
    expected = (None, params.channels, size, size)
    for k, (dim, exp) in enumerate(zip(got.shape, expected, strict=False)):
        if exp is not None and dim is not None and dim != exp:
            source = "preprocessing.channels" if k == 1 else "preprocessing.input_size"
            _fail(
                path,
                f"field '{source}' is {exp} but the model's input {got.name!r} has {dim} "
                f"{labels[k]} (shape {['?' if d is None else d for d in got.shape]})",
            )
    if got.dtype != want["dtype"]:
        _fail(path, f"field 'inputs[0].dtype' is {want['dtype']!r} but the model takes {got.dtype}")
    names = [o.name for o in outputs]
    missing = [t["name"] for t in manifest["outputs"] if t["name"] not in names]
    if missing or len(names) != len(manifest["outputs"]):
        _fail(
            path,
            f"field 'outputs' names {[t['name'] for t in manifest['outputs']]} but the model's "
            f"outputs are {names}",
        )


def preprocess_of(manifest: dict) -> tuple[SarPreprocess, int]:
    """The manifest's preprocessing parameters and network input size."""
    pre = dict(manifest["preprocessing"])
    size = pre.pop("input_size")
    for key in LETTERBOX_KEYS:
        pre.pop(key, None)
    return SarPreprocess.from_dict(pre), size


def letterbox_of(manifest: dict) -> tuple[str, float]:
    """How the network input is letterboxed: (``letterbox_align``, ``letterbox_fill``);
    ("corner", 0.0), as sarbridge trains, when the manifest does not say."""
    pre = manifest["preprocessing"]
    return str(pre.get("letterbox_align", "corner")), float(pre.get("letterbox_fill", 0.0))


def save_manifest(manifest: dict, path: str | Path) -> Path:
    """Validate and write a manifest atomically (temporary file, then rename)."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".json":
        path = path / MANIFEST_NAME
    validate(manifest, path)
    return atomic_write_json(manifest, path)


def _inside(manifest_path: Path, file: Path, field: str) -> None:
    """Refuse a file of the artifact that is a link out of the artifact folder."""
    if file.resolve().parent != manifest_path.parent.resolve():
        raise ManifestError(
            manifest_path,
            f"field '{field}': {file.name} is a link to {file.resolve()}, outside the artifact "
            "folder; copy the file into the folder",
        )


def load_manifest(path: str | Path, verify_model: bool = True) -> dict:
    """Read and validate a manifest; with ``verify_model``, check the model file's sha256.

    Args:
        path: the manifest file, or the artifact directory holding manifest.json.

    Raises:
        ManifestError: missing/malformed file, unknown version, missing field,
            or a model file that does not match its recorded hash.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(path, "no manifest here (an artifact directory holds manifest.json)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(path, f"not valid JSON ({exc})") from exc
    validate(manifest, path)
    if verify_model:
        model = path.parent / manifest["model"]["file"]
        if not model.is_file():
            raise ManifestError(path, f"its model file {model.name} is missing")
        _inside(path, model, "model.file")
        for k, eng in enumerate(manifest.get("engines", [])):
            if (path.parent / eng["file"]).exists():
                _inside(path, path.parent / eng["file"], f"engines[{k}].file")
        files = [(model, manifest["model"]["sha256"], "model.file")]
        weights = manifest["model"].get("weights")
        if weights:
            files.append((path.parent / weights["file"], weights["sha256"], "model.weights.file"))
        for file, want, field in files:
            if not file.is_file():
                raise ManifestError(path, f"its {field} {file.name} is missing")
            _inside(path, file, field)
            bad = sha256_mismatch(file, want)
            if bad:
                raise ManifestError(
                    path,
                    f"model file {file.name} does not match the manifest ({bad}): the model was "
                    "changed or replaced after export",
                )
    return manifest
