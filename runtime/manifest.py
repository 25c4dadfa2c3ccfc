"""The manifest: the one contract between a model file and the runtime.

A manifest is a JSON object with a ``schema_version``. :func:`validate`
checks it against the schema of that version (required fields, types, allowed
values, unknown keys) and raises :class:`ManifestError` naming the file and
the field; an unknown version is refused, never guessed.

Schema version 1 (all keys required unless marked optional)::

    schema_version  int, 1
    task            "detect" | "embed"
    model           {file: str, sha256: str (64 hex), format: "onnx" | "tensorrt"}
    inputs          [{name, shape: [int|str], dtype}]     (str dims are dynamic)
    outputs         [{name, shape, dtype, meaning?: str}]
    preprocessing   SarPreprocess fields + input_size: int
    tiling          {size: int, overlap: float in [0, 1)}
    postprocessing  {score_threshold, iou_threshold: float in [0, 1], max_detections: int,
                     vote_iou: optional float in (0, 1] (box voting after NMS),
                     tta_flips: optional list of "h" | "v" | "hv" (test-time flips), ...}
    classes         [str]
    precision       "fp32" | "fp16" | "int8" | "mixed"
    quantization    optional {scheme: str, ...}
    lineage         [{step: str, ...}]  (train config hash, every compression step)
    metrics         {name: float}       (at export)
    tool_versions   {package: version}
    engines         optional [{file, sha256, tensorrt_version, gpu, dla_core?}]
    created         optional ISO date
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sarbridge.runtime.decode import parse_flips
from sarbridge.runtime.errors import ManifestError
from sarbridge.runtime.preprocess import SarPreprocess

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"

TASKS = ("detect", "embed")
PRECISIONS = ("fp32", "fp16", "int8", "mixed")
MODEL_FORMATS = ("onnx", "tensorrt")

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


def _fail(path, message: str):
    raise ManifestError(path, message)


def _need(obj: dict, key: str, kind, where: str, path) -> Any:
    if key not in obj:
        _fail(path, f"missing field '{where}{key}'")
    value = obj[key]
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        _fail(path, f"field '{where}{key}' must be {kind.__name__}, got {type(value).__name__}")
    return value


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
    if version not in SUPPORTED_VERSIONS:
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
    _need(model, "file", str, "model.", path)
    sha = _need(model, "sha256", str, "model.", path)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        _fail(path, "field 'model.sha256' must be 64 lower-case hex digits")
    if _need(model, "format", str, "model.", path) not in MODEL_FORMATS:
        _fail(path, f"model.format must be one of {list(MODEL_FORMATS)}")
    _check_tensors(manifest["inputs"], "inputs", path)
    _check_tensors(manifest["outputs"], "outputs", path)
    pre = dict(manifest["preprocessing"])
    size = pre.pop("input_size", None)
    if not isinstance(size, int) or size <= 0:
        _fail(path, "field 'preprocessing.input_size' must be a positive int")
    try:
        SarPreprocess.from_dict(pre)
    except (TypeError, ValueError) as exc:
        _fail(path, f"invalid 'preprocessing': {exc}")
    tiling = manifest["tiling"]
    if _need(tiling, "size", int, "tiling.", path) <= 0:
        _fail(path, "field 'tiling.size' must be positive")
    if not 0 <= _need(tiling, "overlap", float, "tiling.", path) < 1:
        _fail(path, "field 'tiling.overlap' must be in [0, 1)")
    post = manifest["postprocessing"]
    for key in ("score_threshold", "iou_threshold"):
        if not 0 <= _need(post, key, float, "postprocessing.", path) <= 1:
            _fail(path, f"field 'postprocessing.{key}' must be in [0, 1]")
    if (
        post.get("vote_iou") is not None
        and not 0 < _need(post, "vote_iou", float, "postprocessing.", path) <= 1
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
    if _need(post, "max_detections", int, "postprocessing.", path) <= 0:
        _fail(path, "field 'postprocessing.max_detections' must be positive")
    if not manifest["classes"] or not all(isinstance(c, str) for c in manifest["classes"]):
        _fail(path, "field 'classes' must be a non-empty list of names")
    for k, step in enumerate(manifest["lineage"]):
        if not isinstance(step, dict) or not isinstance(step.get("step"), str):
            _fail(path, f"'lineage[{k}]' must be an object with a 'step' name")
    for name, value in manifest["metrics"].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            _fail(path, f"metric '{name}' must be a number")
    for k, eng in enumerate(manifest.get("engines", [])):
        for key in ("file", "sha256", "tensorrt_version", "gpu"):
            _need(eng, key, str, f"engines[{k}].", path)
    return manifest


def preprocess_of(manifest: dict) -> tuple[SarPreprocess, int]:
    """The manifest's preprocessing parameters and network input size."""
    pre = dict(manifest["preprocessing"])
    size = pre.pop("input_size")
    return SarPreprocess.from_dict(pre), size


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_manifest(manifest: dict, path: str | Path) -> Path:
    """Validate and write a manifest atomically (temporary file, then rename)."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".json":
        path = path / MANIFEST_NAME
    validate(manifest, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


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
        actual = sha256_file(model)
        if actual != manifest["model"]["sha256"]:
            raise ManifestError(
                path,
                f"model file {model.name} does not match the manifest (sha256 {actual[:12]}... "
                f"!= {manifest['model']['sha256'][:12]}...): the model was changed or replaced after export",
            )
    return manifest
