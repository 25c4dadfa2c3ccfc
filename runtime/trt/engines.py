"""TensorRT engine files beside an artifact's ONNX, and the choice of the one this board can run.

A TensorRT engine (a serialized "plan") runs only with the TensorRT version that built it and
on GPUs of the compute capability it was built for (NVIDIA's support matrix: serialized engines
are not portable across platforms or TensorRT versions). So an engine is built on the board that
runs it (``sarbridge export engine``), written as ``model.<tensorrt>.<device>.<precision>.plan``
beside ``model.onnx``, and listed in the manifest's ``engines`` with what it was built by and
for. :func:`select_engine` picks the entry that matches this TensorRT and GPU and refuses,
before anything is deserialized, an engine of another TensorRT version, another compute
capability, or whose file changed, saying which and how to rebuild.

Plain Python: nothing here needs TensorRT or a GPU.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.fileio import sha256_mismatch
from sarbridge.runtime.manifest import (
    ENGINE_PRECISIONS,
    MANIFEST_NAME,
    load_manifest,
    save_manifest,
)
from sarbridge.runtime.trt.cuda import DeviceInfo

# an engine's precision preference when several match and none is asked for
PREFERENCE = ("best", "int8", "fp16", "fp32")


class EngineMismatch(SarbridgeError):
    """No engine in the manifest can run here; the message says why and how to rebuild."""


def engine_file_name(
    tensorrt_version: str, device: DeviceInfo, precision: str, dla_core: int | None = None
) -> str:
    """``model.<tensorrt>.<device>.<precision>[.dla<N>].plan``, e.g.
    ``model.10.3.0.orin-sm87.int8.plan``."""
    dla = "" if dla_core is None else f".dla{dla_core}"
    return f"model.{tensorrt_version}.{device.slug}.{precision}{dla}.plan"


def rebuild_hint(artifact: Path, precision: str | None = None, dla_core: int | None = None) -> str:
    cmd = f"sarbridge export engine --from {artifact}"
    if precision:
        cmd += f" --precision {precision}"
    if dla_core is not None:
        cmd += f" --dla {dla_core}"
    return f"build one on this board: {cmd}"


def _describe(eng: dict) -> str:
    dla = "" if eng.get("dla_core") is None else f", DLA core {eng['dla_core']}"
    return (
        f"{eng['file']} ({eng['precision']}, TensorRT {eng['tensorrt_version']}, "
        f"{eng['device_name']} sm {eng['compute_capability']}{dla})"
    )


def select_engine(
    manifest: dict,
    artifact: str | Path,
    tensorrt_version: str,
    device: DeviceInfo,
    precision: str | None = None,
    dla_core: int | None = None,
    verify: bool = True,
) -> dict:
    """The manifest's engine for this TensorRT version and GPU.

    Candidates are the entries of ``precision`` (any when None) and ``dla_core`` (GPU engines
    when None). Among those built by this exact TensorRT version for this compute capability,
    one built on a device of the same name wins, then the precision order best, int8, fp16,
    fp32. The chosen file must exist and match its sha256 when ``verify``.

    Raises:
        EngineMismatch: no engine, or none for this TensorRT version / compute capability /
            precision / DLA core, or the chosen file is missing or changed; the message lists
            what the manifest holds and the command that builds a matching engine.
    """
    artifact = Path(artifact)
    if precision is not None and precision not in ENGINE_PRECISIONS:
        raise SarbridgeError(
            f"unknown engine precision {precision!r}; choose one of: {', '.join(ENGINE_PRECISIONS)}"
        )
    engines = manifest.get("engines", [])
    hint = rebuild_hint(artifact, precision, dla_core)
    if not engines:
        raise EngineMismatch(f"{artifact / MANIFEST_NAME}: no TensorRT engine yet; {hint}")
    wanted = [
        e
        for e in engines
        if (precision is None or e["precision"] == precision) and e.get("dla_core") == dla_core
    ]
    listing = "; ".join(_describe(e) for e in engines)
    here = f"TensorRT {tensorrt_version} on {device.name} (sm {device.compute_capability})"
    if not wanted:
        what = f"{precision or 'any precision'} on " + (
            "the GPU" if dla_core is None else f"DLA core {dla_core}"
        )
        raise EngineMismatch(
            f"{artifact / MANIFEST_NAME}: no engine for {what} (the manifest has: {listing}); {hint}"
        )
    same_version = [e for e in wanted if e["tensorrt_version"] == tensorrt_version]
    if not same_version:
        raise EngineMismatch(
            f"{artifact / MANIFEST_NAME}: the engines were built with another TensorRT version "
            f"({listing}) and this board runs TensorRT {tensorrt_version}; engines do not move "
            f"between TensorRT versions: {hint}"
        )
    same_arch = [e for e in same_version if e["compute_capability"] == device.compute_capability]
    if not same_arch:
        raise EngineMismatch(
            f"{artifact / MANIFEST_NAME}: the engines were built for another GPU ({listing}) and "
            f"this is {here}; engines do not move between compute capabilities: {hint}"
        )
    same_arch.sort(
        key=lambda e: (e["device_name"] != device.name, PREFERENCE.index(e["precision"]))
    )
    chosen = same_arch[0]
    source = chosen.get("onnx_sha256")
    if source is not None and source != manifest["model"]["sha256"]:
        raise EngineMismatch(
            f"{artifact / chosen['file']}: built from another model file (sha256 {source[:12]}...) "
            f"than the artifact's {manifest['model']['file']} "
            f"({manifest['model']['sha256'][:12]}...); {hint}"
        )
    if chosen["device_name"] != device.name:
        print(
            f"warning: {chosen['file']} was built on {chosen['device_name']}, this is "
            f"{device.name} (same compute capability {device.compute_capability}); NVIDIA advises "
            f"building on the device that runs it ({hint})",
            file=sys.stderr,
        )
    if verify:
        path = artifact / chosen["file"]
        if not path.is_file():
            raise EngineMismatch(
                f"{path}: the engine file listed in the manifest is missing; {hint}"
            )
        bad = sha256_mismatch(path, chosen["sha256"])
        if bad:
            raise EngineMismatch(
                f"{path}: the engine file does not match the manifest ({bad}): it was changed or "
                f"replaced after it was built; {hint}"
            )
    return chosen


def engine_entry(
    file: str,
    sha256: str,
    tensorrt_version: str,
    device: DeviceInfo,
    precision: str,
    dla_core: int | None,
    build_flags: list[str],
    build_seconds: float,
    onnx_sha256: str | None = None,
) -> dict:
    """A manifest ``engines`` entry (schema 2)."""
    extra = {} if onnx_sha256 is None else {"onnx_sha256": onnx_sha256}
    return extra | {
        "file": file,
        "sha256": sha256,
        "tensorrt_version": tensorrt_version,
        "device_name": device.name,
        "compute_capability": device.compute_capability,
        "dla_core": dla_core,
        "precision": precision,
        "build_flags": list(build_flags),
        "build_seconds": round(float(build_seconds), 3),
    }


def same_target(a: dict, b: dict) -> bool:
    """Two entries for the same TensorRT version, GPU, precision and DLA core."""
    keys = ("tensorrt_version", "device_name", "compute_capability", "precision", "dla_core")
    return all(a.get(k) == b.get(k) for k in keys)


def existing_engine(manifest: dict, entry: dict) -> dict | None:
    """The manifest's engine for ``entry``'s target, if there is one."""
    return next((e for e in manifest.get("engines", []) if same_target(e, entry)), None)


def add_engine(artifact: str | Path, entry: dict, replace: bool = False) -> dict:
    """Add ``entry`` to the artifact's manifest, atomically; returns the new manifest.

    An entry for the same target (TensorRT version, device, precision, DLA core) is replaced
    only when ``replace``; other engines stay. The manifest is validated before it is written.

    Raises:
        SarbridgeError: an engine for this target exists and ``replace`` is False.
        ManifestError: the manifest on disk or the result is invalid.
    """
    artifact = Path(artifact)
    manifest = load_manifest(artifact, verify_model=False)
    old = existing_engine(manifest, entry)
    if old is not None and not replace:
        raise SarbridgeError(
            f"{artifact / MANIFEST_NAME}: already lists {_describe(old)}; pass --force to rebuild it"
        )
    updated = copy.deepcopy(manifest)
    updated["engines"] = [e for e in manifest.get("engines", []) if not same_target(e, entry)]
    updated["engines"].append(entry)
    save_manifest(updated, artifact / MANIFEST_NAME)
    return updated
