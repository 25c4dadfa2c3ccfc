"""``sarbridge export engine``: a TensorRT engine built from an artifact's ONNX, on the board.

Engines are not portable between TensorRT versions or GPUs, so this runs on the device that
will run the engine, with the torch-free install plus TensorRT and cuda-python. It follows
NVIDIA's Python API of TensorRT 10.x (JetPack 6) and 11.x as documented for
``trt.Builder``/``IBuilderConfig``/``OnnxParser`` and as the TensorRT samples use it
(``samples/python/efficientdet/build_engine.py``, ``common.py``):

* network from ``trt.OnnxParser.parse_from_file``; every parser error is reported with its
  node, operator and description;
* precision: an int8 engine is the explicit Q/DQ model of ``sarbridge compress --method int8
  --target tensorrt`` built as a strongly typed network with no precision flags (NVIDIA's
  guidance for Q/DQ models); on TensorRT 10, ``fp16`` sets the ``FP16`` builder flag and
  ``best`` builds the Q/DQ model weakly typed with ``INT8`` + ``FP16`` (the rest may run in
  FP16). TensorRT 11 removed those flags: the precision is the ONNX's own (an FP16 engine comes
  from an FP16 model, ``sarbridge compress --method fp16``). Implicit INT8 calibration
  (deprecated in 10.1, removed in 11) is never used;
* an optimisation profile for the dynamic batch (1..max, optimal at the batch you will run);
* workspace limit through ``set_memory_pool_limit``; a timing cache read and written;
* a DLA core with GPU fallback where the board has one (``builder.num_DLA_cores``, Orin);
* the plan written atomically as ``model.<tensorrt>.<device>.<precision>.plan`` and listed in
  the manifest's ``engines`` (file, sha256, versions, device, flags, build time).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.fileio import atomic_write_bytes, sha256_file, writable_dir
from sarbridge.runtime.manifest import (
    ENGINE_PRECISIONS,
    MANIFEST_NAME,
    load_manifest,
    save_manifest,
)
from sarbridge.runtime.trt.engines import (
    add_engine,
    engine_entry,
    engine_file_name,
    existing_engine,
)

DEFAULT_MAX_BATCH = 8
DEFAULT_WORKSPACE_MIB = 1024


@dataclass(frozen=True)
class PrecisionPlan:
    """How an engine of a given precision is built with a given TensorRT major version."""

    precision: str  # the engine's: fp32 | fp16 | int8 | best
    strongly_typed: bool
    flags: tuple[str, ...] = field(default=())  # trt.BuilderFlag names


def _has_qdq(manifest: dict) -> bool:
    return manifest["precision"] in ("int8", "mixed") and bool(manifest.get("quantization"))


def precision_plan(
    manifest: dict, requested: str | None, tensorrt_major: int, dla_core: int | None = None
) -> PrecisionPlan:
    """The builder settings for an engine of ``requested`` precision from this artifact.

    ``requested`` None means int8 for a Q/DQ model, the model's own precision on TensorRT 11,
    fp16 otherwise.

    Raises:
        SarbridgeError: a precision this model cannot give on this TensorRT (an INT8 engine
            without Q/DQ nodes, Q/DQ nodes placed for another target, FP16 flags on TensorRT
            11, FP32 on a DLA), with the command that makes a suitable model.
    """
    if requested is not None and requested not in ENGINE_PRECISIONS:
        raise SarbridgeError(
            f"unknown engine precision {requested!r}; choose one of: {', '.join(ENGINE_PRECISIONS)}"
        )
    qdq = _has_qdq(manifest)
    target = (manifest.get("quantization") or {}).get("target")
    name = manifest.get("name", "this artifact")
    make_int8 = (
        "make one with: sarbridge compress --from <fp32 artifact or run> --method int8 "
        "--target tensorrt --out <dir>"
    )
    if qdq and target != "tensorrt":
        raise SarbridgeError(
            f"{name} was quantized for {target} ({manifest['quantization'].get('scheme')}); "
            f"TensorRT's explicit quantization takes symmetric int8 activations: {make_int8}"
        )
    if requested is None:
        if qdq:
            requested = "int8"
        elif tensorrt_major >= 11:
            requested = (
                manifest["precision"] if manifest["precision"] in ("fp32", "fp16") else "fp32"
            )
        else:
            requested = "fp16"
    if requested in ("int8", "best") and not qdq:
        raise SarbridgeError(
            f"an {requested} engine is built from a Q/DQ INT8 model, and {name} is "
            f"{manifest['precision']} (TensorRT 10 deprecated implicit INT8 calibration and "
            f"TensorRT 11 removed it): {make_int8}"
        )
    if qdq and requested in ("fp32", "fp16"):
        raise SarbridgeError(
            f"{name} is a Q/DQ INT8 model: build it as int8 (Q/DQ layers in INT8, the rest as "
            f"typed) or best (the rest may use FP16), not {requested}"
        )
    if dla_core is not None and requested == "fp32":
        raise SarbridgeError(
            "a DLA runs FP16 and INT8 layers only: choose --precision fp16 or int8"
        )
    fallback = ("GPU_FALLBACK",) if dla_core is not None else ()
    if tensorrt_major >= 11:
        if requested == "best":
            raise SarbridgeError(
                "--precision best mixes precisions through builder flags, which TensorRT 11 "
                "removed; build int8 (the Q/DQ graph as typed)"
            )
        own = "int8" if qdq else manifest["precision"]
        if requested != own:
            hint = (
                " (make an FP16 model first: sarbridge compress --method fp16)"
                if requested == "fp16"
                else ""
            )
            raise SarbridgeError(
                f"TensorRT 11 builds strongly typed networks: the engine's precision is the "
                f"model's own ({own}), not {requested}{hint}"
            )
        return PrecisionPlan(requested, True, fallback)
    if requested == "int8" and dla_core is None:
        # NVIDIA's guidance for Q/DQ models: a strongly typed network, no precision flags
        return PrecisionPlan("int8", True, ())
    # best: the Q/DQ layers in INT8 and the builder free to run the rest in FP16 (TensorRT 10's
    # weakly typed mode); a DLA needs FP16 for what the Q/DQ graph leaves in float
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16"), "best": ("INT8", "FP16")}
    return PrecisionPlan(requested, False, flags[requested] + fallback)


def destination(source: Path, out: Path | None, zoo_root: Path | None = None) -> Path:
    """The artifact folder the engine is written into, checked before anything is built.

    Without ``out`` that is ``source`` itself, unless it is a release model of the zoo
    (read-only: ``--out`` is then required). With ``out``, a new folder that
    :func:`copy_artifact` fills with the source's manifest and model file.

    Raises:
        SarbridgeError: a zoo source without ``--out``, or ``out`` exists and is not empty.
    """
    source = Path(source)
    in_zoo = zoo_root is not None and source.resolve().is_relative_to(Path(zoo_root).resolve())
    if out is None:
        if in_zoo:
            raise SarbridgeError(
                f"{source} is a release model of the zoo (checked against zoo.json): give --out "
                "to build the engine in a copy"
            )
        return source
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SarbridgeError(
            f"{out}: already exists and is not an empty folder; choose a new --out"
        )
    return out


def copy_artifact(source: Path, out: Path) -> Path:
    """Copy the artifact's manifest (without engines) and model file into ``out``."""
    manifest = load_manifest(source)
    writable_dir(out)
    shutil.copy2(Path(source) / manifest["model"]["file"], out / manifest["model"]["file"])
    save_manifest(dict(manifest, engines=[]), out / MANIFEST_NAME)
    return out


def _attach_timing_cache(config, path: Path | None) -> Path | None:
    """Give the builder the timing cache at ``path`` (a new one when the file does not exist);
    returns where to save it after the build, None when it must be left as it is.

    A cache made on another device (TensorRT checks the device's properties) or unreadable is
    not used, and its file is left unchanged: the build goes on with an empty cache."""
    if path is None:
        config.set_timing_cache(config.create_timing_cache(b""), False)
        return None
    if path.is_file():
        try:
            cache = config.create_timing_cache(path.read_bytes())
        except Exception as exc:  # TensorRT raises its own types for a corrupt cache
            print(f"warning: timing cache {path} cannot be read ({exc}); building without it")
            config.set_timing_cache(config.create_timing_cache(b""), False)
            return None
    else:
        cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, False):  # False: no cache of another device
        print(f"warning: timing cache {path} was made on another device; building without it")
        config.set_timing_cache(config.create_timing_cache(b""), False)
        return None
    return path


def _parser_errors(parser) -> str:
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        try:
            where = f"node {err.node()} {err.node_name()!r} ({err.node_operator()})"
            lines.append(f"  {where}: {err.desc()} [{err.code()}]")
        except AttributeError:  # older parsers: str() is the formatted error
            lines.append(f"  {err}")
    return "\n".join(lines)


def build_engine(
    artifact: str | Path,
    precision: str | None = None,
    dla_core: int | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    opt_batch: int | None = None,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    timing_cache: str | Path | None = None,
    force: bool = False,
    cuda: str = "cuda-python",
    device_index: int = 0,
    verbose: bool = False,
    out: str | Path | None = None,
    zoo_root: str | Path | None = None,
) -> dict:
    """Build a TensorRT engine for this board from ``artifact``'s ONNX; returns its manifest entry.

    With ``out`` the artifact is copied there first (see :func:`destination`); a copy made for
    a build that fails is removed again.

    Raises:
        SarbridgeError: no CUDA device or TensorRT (said before TensorRT is touched), a
            precision the model cannot give, an engine for this target already listed (pass
            ``force``), parser errors (node by node), or a failed build (TensorRT's messages).
    """
    from sarbridge.runtime.trt.api import import_tensorrt, major_version
    from sarbridge.runtime.trt.cuda import open_cuda, open_device

    source = Path(artifact)
    manifest = load_manifest(source)
    if manifest["model"]["format"] != "onnx":
        raise SarbridgeError(
            f"{source}: engines are built from an ONNX model, this is {manifest['model']['format']}"
        )
    if max_batch < 1 or (opt_batch is not None and not 1 <= opt_batch <= max_batch):
        raise SarbridgeError(f"need 1 <= --opt-batch <= --max-batch (got {opt_batch}, {max_batch})")
    folder = destination(source, None if out is None else Path(out), zoo_root)
    binding = open_cuda(cuda)
    device = open_device(binding, device_index)  # before TensorRT: no device, no TensorRT call
    trt = import_tensorrt()
    version = trt.__version__
    plan = precision_plan(manifest, precision, major_version(version), dla_core)
    name = engine_file_name(version, device, plan.precision, dla_core)
    copied = folder != source
    target = {"tensorrt_version": version, "device_name": device.name, "precision": plan.precision,
              "compute_capability": device.compute_capability, "dla_core": dla_core}  # fmt: skip
    if not force and not copied and (
        existing_engine(manifest, target) is not None or (folder / name).exists()
    ):
        raise SarbridgeError(
            f"{folder / name}: an engine for TensorRT {version} on {device.name} "
            f"({plan.precision}{'' if dla_core is None else f', DLA {dla_core}'}) is already "
            "there; pass --force to rebuild it"
        )
    if copied:
        copy_artifact(source, folder)
        manifest = load_manifest(folder)
    try:
        return _build(trt, folder, manifest, plan, device, name, dla_core, max_batch, opt_batch,
                      workspace_mib, timing_cache, force, verbose)  # fmt: skip
    except BaseException:
        if copied:  # a copy made for a build that failed is removed again
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _build(trt, artifact, manifest, plan, device, name, dla_core, max_batch, opt_batch,
           workspace_mib, timing_cache, force, verbose) -> dict:  # fmt: skip
    from sarbridge.runtime.trt.api import logged_errors, make_logger

    version = trt.__version__
    logger = make_logger(trt, verbose)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    onnx_path = artifact / manifest["model"]["file"]
    print(
        f"parsing {onnx_path} (TensorRT {version}, {device.name}, sm {device.compute_capability})"
    )
    if not parser.parse_from_file(str(onnx_path)):
        raise SarbridgeError(
            f"{onnx_path}: TensorRT's ONNX parser refused the model:\n{_parser_errors(parser)}"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    build_flags = [f"workspace={int(workspace_mib)}MiB"]
    if plan.strongly_typed:
        build_flags.append("STRONGLY_TYPED")
    for flag in plan.flags:
        member = getattr(trt.BuilderFlag, flag, None)
        if member is None:
            raise SarbridgeError(f"TensorRT {version} has no builder flag {flag}")
        config.set_flag(member)
        build_flags.append(flag)
    if "FP16" in plan.flags and getattr(builder, "platform_has_fast_fp16", True) is False:
        print(f"warning: {device.name} has no fast FP16; the engine may not be faster than FP32")
    if dla_core is not None:
        cores = int(getattr(builder, "num_DLA_cores", 0))
        if not hasattr(trt.DeviceType, "DLA") or dla_core >= cores:
            raise SarbridgeError(
                f"DLA core {dla_core} is not on this device ({cores} DLA core(s) with TensorRT "
                f"{version}; Orin AGX/NX have them, Orin Nano does not)"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        build_flags.append(f"DLA_core={dla_core}")

    inp = network.get_input(0)
    shape = tuple(int(d) for d in inp.shape)
    if len(shape) != 4:
        raise SarbridgeError(
            f"{artifact}: the model's input {inp.name} has shape {list(shape)}, not [B, C, H, W]"
        )
    size = int(manifest["preprocessing"]["input_size"])
    known = (int(manifest["preprocessing"].get("channels", 1)), size, size)
    rest = tuple(d if d > 0 else k for d, k in zip(shape[1:], known, strict=True))
    if shape[0] < 0 or any(d < 0 for d in shape[1:]):
        opt = opt_batch or max_batch
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (1, *rest), (opt, *rest), (max_batch, *rest))
        config.add_optimization_profile(profile)
        build_flags.append(f"profile={inp.name}:1/{opt}/{max_batch}x{'x'.join(map(str, rest))}")
    else:
        build_flags.append(f"fixed_batch={shape[0]}")

    cache_path = Path(timing_cache) if timing_cache else None
    cache_path = _attach_timing_cache(config, cache_path)

    print(f"building {plan.precision} engine ({', '.join(build_flags)}); this takes minutes")
    start = time.perf_counter()
    logger.errors.clear()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise SarbridgeError(
            f"{onnx_path}: TensorRT could not build the engine:{logged_errors(logger)}"
        )
    data = bytes(memoryview(serialized))
    runtime = trt.Runtime(logger)  # the plan must load here before the manifest lists it
    if dla_core is not None:
        runtime.DLA_core = int(dla_core)
    if runtime.deserialize_cuda_engine(data) is None:
        raise SarbridgeError(
            f"the engine built from {onnx_path} does not load:{logged_errors(logger)}"
        )
    plan_path = atomic_write_bytes(artifact / name, data)
    entry = engine_entry(
        name, sha256_file(plan_path), version, device, plan.precision, dla_core, build_flags, seconds,
        onnx_sha256=manifest["model"]["sha256"],
    )  # fmt: skip
    try:
        add_engine(artifact, entry, replace=force)
    except BaseException:
        plan_path.unlink(missing_ok=True)  # a plan is on disk only when the manifest lists it
        raise
    if cache_path is not None:
        try:
            atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
        except Exception as exc:  # the engine is built and listed; the cache is an aid
            print(f"warning: the timing cache could not be written to {cache_path}: {exc}")
    print(
        f"{plan_path} ({len(data) / 2**20:.1f} MiB) built in {seconds:.0f} s; listed in {artifact / MANIFEST_NAME}"
    )
    return entry
