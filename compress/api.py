"""``sarbridge compress``: one command from a run or zoo model to a deployable compressed artifact.

    compress("int8", "zoo:ssdd_edge_det", "artifacts/ssdd_edge_det_int8", target="onnxruntime")

Each method starts from the FP32 export of the source (BatchNorm folded, parity-checked
against PyTorch: :func:`sarbridge.export.onnx_export.export_run`), makes the compressed graph,
scores parent and child through the deployed torch-free pipeline (the :class:`Detector` the
board runs), and writes an artifact folder (model + manifest v2 + what calibrated it) that
``sarbridge detect`` and ``sarbridge bench`` run without torch. Nothing is written at ``out``
unless every step succeeded, and an existing ``out`` is never replaced unless asked.
"""

from __future__ import annotations

import copy
import datetime
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarbridge.runtime.fileio import sha256_file, tool_versions
from sarbridge.runtime.manifest import load_manifest, save_manifest

from .errors import CompressError
from .targets import SCHEMES, scheme_of

METHODS = ("int8", "qat", "fp16", "prune", "distill", "finetune")
DEFAULT_EPOCHS = {"qat": 2, "prune": 10, "distill": 10, "finetune": 10}
DEFAULT_LR = {"qat": 1e-4, "prune": 1e-3, "distill": 1e-3, "finetune": 1e-3}
TOOL_PACKAGES = (
    "sarbridge",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxslim",
    "nncf",
    "openvino",
    "numpy",
)


def refuse_inapplicable(method: str, given: dict) -> None:
    """Refuse the options in ``given`` (name -> value, None meaning not given) that ``method``
    does not take (settings.STEP_OPTIONS), instead of ignoring them."""
    from .recipe import RECIPE_KWARGS
    from .settings import STEP_OPTIONS

    recipe_key = {arg: key for key, arg in RECIPE_KWARGS.items()}

    def key(option: str) -> str:  # compress()'s argument -> the recipe key
        return recipe_key.get(option, option)

    wrong = [k for k, v in given.items() if v is not None and key(k) not in STEP_OPTIONS[method]]
    if wrong:
        takes = {k: ", ".join(m for m, o in STEP_OPTIONS.items() if key(k) in o) for k in wrong}
        raise CompressError(
            f"--method {method} does not take "
            + "; ".join(f"--{key(k).replace('_', '-')} (taken by {takes[k]})" for k in wrong)
        )


@dataclass
class Scored:
    """AP of one model on one set of images through the deployed pipeline."""

    AP50: float
    AP50_95: float
    AP_small: float
    images: int
    seconds: float

    def as_metrics(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}AP50": self.AP50,
            f"{prefix}AP50_95": self.AP50_95,
            f"{prefix}AP_small": self.AP_small,
        }


def score(
    manifest: dict,
    folder: Path,
    records,
    classes,
    backend: str,
    threads: int | None,
    desc: str = "",
    progress: bool = True,
) -> Scored:
    """COCO AP of the model ``manifest`` describes (its file in ``folder``) on ``records``,
    through :class:`sarbridge.runtime.detector.Detector` at score threshold 0.001."""
    from tqdm import tqdm

    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.errors import DataError
    from sarbridge.runtime.metrics import Detections, coco_ap

    det = Detector(manifest, folder, backend, score_threshold=0.001, threads=threads)
    dets, scored = [], []
    t0 = time.perf_counter()
    try:
        for rec in tqdm(records, desc=desc, unit="image", disable=not progress, leave=False):
            try:
                res = det.detect(rec.path)
            except DataError as exc:
                print(f"  left out, unreadable: {exc}")
                continue
            dets.append(Detections(rec.image_id, res.boxes, res.scores, res.labels))
            scored.append(rec)
    finally:
        det.close()
    if not scored:
        raise CompressError(f"none of the {len(records)} images to score could be read")
    ap = coco_ap(scored, dets, classes, det.max_detections)
    return Scored(ap["AP50"], ap["AP50_95"], ap["AP_small"], len(scored), time.perf_counter() - t0)


def _with_model(manifest: dict, model_path: Path, precision: str) -> dict:
    """A copy of ``manifest`` describing the model file ``model_path`` (same folder)."""
    m = copy.deepcopy(manifest)
    m["model"] = {"file": model_path.name, "sha256": sha256_file(model_path), "format": "onnx"}
    m["precision"] = precision
    m.pop("quantization", None)
    return m


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise CompressError(
            f"{out} already exists; pass --overwrite to replace it (nothing was written)"
        )


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out`` (replacing it only after it is complete)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
    tmp.chmod(0o755)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _load_detector_source(source):
    from sarbridge.train.checkpoint import load_model

    try:
        loaded = load_model(source)
    except FileNotFoundError as exc:
        raise CompressError(f"{source}: {exc}") from None
    if loaded.task != "detect":
        raise CompressError(
            f"{source} holds a {loaded.task} model (nothing to detect); compress takes a "
            "detector run, checkpoint or zoo:<name>"
        )
    return loaded


def _artifact_source(source) -> Path | None:
    """``source`` as an exported artifact folder (manifest.json, no checkpoint or run), else
    None (a run, a checkpoint or ``zoo:<name>``: loaded with its training config)."""
    path = Path(str(source))
    if str(source).startswith("zoo:") or not (path / "manifest.json").is_file():
        return None
    if any((path / f).exists() for f in ("run.json", "best.pt", "checkpoint.pt")):
        return None
    return path


def _int8_of_artifact(
    method, artifact: Path, out: Path, *, data, target, calibration_images, guard_images, seed,
    max_ap_drop, threads, name, progress,
) -> dict:  # fmt: skip
    """INT8 of an FP32 artifact that has no training run: the dataset's official train split
    calibrates (and, having no validation split, guards on train images the calibration did
    not read), its test split scores parent and result."""
    from sarbridge.runtime.annotations import read_dataset
    from sarbridge.runtime.paths import resolve_data_path

    if method != "int8":
        raise CompressError(
            f"{artifact} is an exported artifact without its training run: only --method int8 "
            f"takes one, not {method}"
        )
    parent = load_manifest(artifact)
    if parent["task"] != "detect" or parent["precision"] != "fp32" or parent["model"]["format"] != "onnx":
        raise CompressError(
            f"{artifact}: --method int8 takes an FP32 ONNX detector, this is a "
            f"{parent['precision']} {parent['model']['format']} {parent['task']} model"
        )
    ds = read_dataset(resolve_data_path(data or "SSDD"))
    train, test = ds.split("train"), ds.split("test")
    if not train or not test:
        raise CompressError(f"{ds.root}: needs a train and a test split (official or listed)")
    print(f"[1] FP32 parent: {artifact} ({parent.get('name', artifact.name)}); data {ds.root}")
    work = Path(tempfile.mkdtemp(prefix=f"sarbridge-{method}-"))
    try:
        return _int8(
            (ds, train, [], test), parent, artifact, work, out, target=target,
            calibration_images=calibration_images, guard_images=guard_images, seed=seed,
            max_ap_drop=max_ap_drop, threads=threads, name=name, progress=progress,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _guard_records(train, val, calibration_items, count: int, seed: int, root):
    """The run's validation records; a run without validation (trained on every train
    image) is guarded on train images the calibration did not read."""
    if val:
        order = np.random.default_rng(seed + 1).permutation(len(val))[:count]
        return [val[i] for i in sorted(order)], "val"
    from .calibration import _relative

    used = {item.rsplit("#", 1)[0] for item in calibration_items}
    rest = [r for r in train if _relative(r.path, root) not in used]
    if not rest:
        raise CompressError(
            "the run has no validation split and every train image was used to calibrate: "
            "lower --calibration-images so some are left to guard the accuracy"
        )
    order = np.random.default_rng(seed + 1).permutation(len(rest))[:count]
    return [rest[i] for i in sorted(order)], "train-not-calibrated"


def compress(
    method: str,
    source,
    out,
    *,
    target: str | None = None,
    calibration_images: int | None = None,
    guard_images: int | None = None,
    seed: int | None = None,
    max_ap_drop: float | None = None,
    threads: int | None = None,
    name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    epochs: int | None = None,
    lr: float | None = None,
    runs_dir: str | Path = "runs",
    resume: bool = False,
    ratio: float | None = None,
    ratio_of: str | None = None,
    importance: str | None = None,
    global_pruning: bool | None = None,
    round_to: int | None = None,
    class_evidence: int | None = None,
    teacher=None,
    teacher_flips=None,
    data: str | None = None,
    overrides=None,
) -> dict:
    """Compress the detector ``source`` (a run folder, checkpoint or ``zoo:<name>``) with
    ``method`` into the artifact folder ``out``; returns its manifest. An exported FP32
    artifact (a folder with manifest.json and no checkpoint, e.g. a model brought in with
    ``sarbridge import ultralytics``) takes ``--method int8`` only, calibrated on the train
    split of ``data`` (default SSDD) and scored on its test split. ``prune``,
    ``distill`` and ``finetune`` write a run folder at ``out`` instead (:mod:`.finetune`) and return its
    comparison with the parent; ``epochs`` and ``lr`` default per method (DEFAULT_EPOCHS,
    DEFAULT_LR), the prune options left None take PruneSettings' defaults (compress/settings.py),
    ``teacher_flips`` (h, v, hv) shows the teacher each batch flipped too, its targets
    averaged over the views, and ``overrides`` (``--set key=value``; a recipe's ``set``
    mapping) change a training step's config (settings.step_overrides).

    Raises:
        CompressError: unknown method or target, an option the method does not take
            (settings.STEP_OPTIONS) or would ignore (``resume`` with int8 or fp16, ``name``
            with a training method, ``data`` with any source but an artifact), a source that
            is not a detector, an empty or unreadable calibration set, an accuracy budget that cannot be met, an existing
            ``out`` without ``overwrite``. Nothing is written in any of these cases.
    """
    if method not in METHODS:
        raise CompressError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    from .settings import RESUMABLE_METHODS, STEP_DEFAULTS, TRAINING_METHODS

    quantizing = {"target": target, "calibration_images": calibration_images,
                  "guard_images": guard_images, "max_ap_drop": max_ap_drop, "seed": seed}  # fmt: skip
    refuse_inapplicable(
        method,
        {
            "epochs": epochs, "lr": lr, "ratio": ratio, "ratio_of": ratio_of,
            "importance": importance, "global_pruning": global_pruning, "round_to": round_to,
            "class_evidence": class_evidence, "teacher": teacher, "teacher_flips": teacher_flips,
            "overrides": overrides, **quantizing,
        },
    )  # fmt: skip
    target, calibration_images, guard_images, max_ap_drop, seed = (
        STEP_DEFAULTS[k] if v is None else v for k, v in quantizing.items()
    )
    training = method in TRAINING_METHODS
    if resume and method not in RESUMABLE_METHODS:
        raise CompressError(
            f"--resume continues a training run ({', '.join(RESUMABLE_METHODS)}); --method "
            f"{method} writes its artifact in one go (run it again, --overwrite to replace --out)"
        )
    if training and name is not None:
        raise CompressError(f"--method {method} does not take --name: a run is named by its folder (--out)")
    if data is not None and (training or _artifact_source(source) is None):
        raise CompressError(
            f"--data names the dataset of an exported artifact source (--method int8 of a model "
            f"without its run); {source} is scored on the dataset its training config names"
        )
    epochs = DEFAULT_EPOCHS.get(method, 0) if epochs is None else int(epochs)
    lr = DEFAULT_LR.get(method, 0.0) if lr is None else float(lr)
    if training:
        from .finetune import compress_train_step
        from .settings import prune_settings

        if ratio is None and method == "prune":
            raise CompressError("--method prune needs --ratio (the share of the MACs kept)")
        settings = None
        if method == "prune":
            settings = prune_settings(
                ratio, ratio_of=ratio_of, importance=importance, global_pruning=global_pruning,
                round_to=round_to, class_evidence=class_evidence,
            )  # fmt: skip
        return compress_train_step(
            method, source, Path(out), settings=settings, teacher=teacher,
            teacher_flips=teacher_flips, epochs=epochs, lr=lr, seed=seed, threads=threads,
            resume=resume, overwrite=overwrite, progress=progress,
            overrides=overrides,
        )  # fmt: skip
    if method in ("int8", "qat"):
        scheme_of(target)
    if not 0 <= max_ap_drop < 1:
        raise CompressError(f"--max-ap-drop must be in [0, 1), not {max_ap_drop}")
    if calibration_images < 1 or guard_images < 1:
        raise CompressError("--calibration-images and --guard-images must be at least 1")
    out = Path(out)
    _check_out(out, overwrite)
    _require_packages(method, target)
    artifact = _artifact_source(source)
    if artifact is not None:
        return _int8_of_artifact(
            method, artifact, out, data=data, target=target,
            calibration_images=calibration_images, guard_images=guard_images, seed=seed,
            max_ap_drop=max_ap_drop, threads=threads, name=name, progress=progress,
        )  # fmt: skip
    run_dir = None
    if method == "qat":
        from .qat import prepare_qat_run

        run_dir = prepare_qat_run(
            out, target=target, epochs=epochs, name=name, runs_dir=runs_dir, resume=resume,
            overwrite=overwrite,
        )  # fmt: skip
    loaded = _load_detector_source(source)
    work = Path(tempfile.mkdtemp(prefix=f"sarbridge-{method}-"))
    try:
        from sarbridge.export.onnx_export import export_run
        from sarbridge.runtime.zoo import is_zoo_ref

        print(f"[1] FP32 parent: ONNX export of {source} (BatchNorm folded, parity-checked)")
        parent_dir = work / "fp32"
        parent_name = str(source).split(":", 1)[1] if is_zoo_ref(source) else loaded.name
        export_run(source, parent_dir, name=parent_name)
        parent = load_manifest(parent_dir)
        if method == "fp16":
            return _fp16(loaded, parent, parent_dir, work, out, name, threads, progress)
        if method == "qat":
            from .qat import compress_qat

            return compress_qat(
                loaded, parent, parent_dir, work, out, run_dir, target=target,
                calibration_images=calibration_images, guard_images=guard_images, seed=seed,
                max_ap_drop=max_ap_drop, threads=threads, name=name, progress=progress,
                epochs=epochs, lr=lr, resume=resume,
            )  # fmt: skip
        return _int8(
            _sets(loaded),
            parent,
            parent_dir,
            work,
            out,
            target=target,
            calibration_images=calibration_images,
            guard_images=guard_images,
            seed=seed,
            max_ap_drop=max_ap_drop,
            threads=threads,
            name=name,
            progress=progress,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _require_packages(method: str, target: str) -> None:
    """Fail before any work when a package the method or target needs is missing."""
    import importlib.util

    needed = ["torch", "onnx", "onnxruntime", "onnxslim"]
    if method == "qat" or (method == "int8" and target == "openvino"):
        needed.append("nncf")
    if method in ("int8", "qat") and target == "openvino":
        needed.append("openvino")
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise CompressError(
            f"--method {method} --target {target} needs {', '.join(missing)}: "
            "pip install 'sarbridge[train,export,compress]'"
        )


def _sets(loaded):
    from sarbridge.train.data.detection import split_records

    ds, train, val, test = split_records(loaded.config.data, quiet=True)
    if not test:
        raise CompressError(f"{ds.root}: no images in the test split to score the result on")
    return ds, train, val, test


def _int8(
    sets,
    parent,
    parent_dir,
    work,
    out,
    *,
    target,
    calibration_images,
    guard_images,
    seed,
    max_ap_drop,
    threads,
    name,
    progress,
) -> dict:
    from .calibration import collect_inputs
    from .ptq import Quantizer, guarded_quantize, prepare

    scheme = SCHEMES[target]
    backend = "openvino" if target == "openvino" else "onnxruntime"
    ds, train, val, test = sets
    if parent["postprocessing"].get("decode") == "ultralytics" and scheme.op_types is None:
        # Ultralytics' graph ends in its decode: box pixels (0..S) and class probabilities
        # (0..1) concatenated in one output, which one 8-bit scale cannot hold; only the
        # convolutions are quantized, as Ultralytics' own INT8 export leaves its head in float
        import dataclasses

        scheme = dataclasses.replace(scheme, op_types=("Conv",))
        print("    Ultralytics graph: convolutions quantized, its decode head left in float")
    print(
        f"[2] calibration: {calibration_images} inputs of the train split ({len(train)} images) "
        "through the runtime's preprocessing, tiling and letterbox"
    )
    cal = collect_inputs(
        parent, train, calibration_images, seed, "train", ds.root, progress=progress
    )
    guard, guard_split = _guard_records(train, val, cal.items, guard_images, seed, ds.root)
    print(
        f"    {len(cal.items)} calibration inputs; the guard scores {len(guard)} "
        f"{guard_split} images ({backend})"
    )

    fp32_path = parent_dir / parent["model"]["file"]
    prepared = prepare(fp32_path, work / "prepared.onnx")
    input_name = parent["inputs"][0]["name"]
    quantizer = Quantizer(prepared, scheme, cal.inputs, input_name)

    def guard_ap(path: Path) -> float:
        m = _with_model(parent, path, "int8")
        return score(m, path.parent, guard, ds.classes, backend, threads, "guard", progress).AP50

    baseline = score(
        parent, parent_dir, guard, ds.classes, backend, threads, "guard", progress
    ).AP50
    print(f"[3] INT8 for {target} ({scheme.tool}); guard AP50 of the FP32 parent {baseline:.4f}")
    probe = cal.inputs[np.random.default_rng(seed).permutation(len(cal.inputs))[:16]]
    # the quantizer's files are in ``work``, which compress() removes
    result = guarded_quantize(
        quantizer, guard_ap, baseline, max_ap_drop, work / "model_int8.onnx", probe, threads,
        progress=progress,
    )  # fmt: skip

    # the layers the scheme keeps in float for speed come first in the manifest's list
    result.float_layers = [*quantizer.speed_float, *result.float_layers]
    return _finish_int8(
        parent, parent_dir, result.model, out, ds, train, val, test, cal, target=target,
        guard_images=guard_images, seed=seed, max_ap_drop=max_ap_drop, threads=threads,
        name=name, progress=progress, kind="ptq", lineage_extra=[],
        method_note=quantizer.method, guard_result=(guard, guard_split, baseline, result),
    )  # fmt: skip


def _finish_int8(
    parent, parent_dir, model_path, out, ds, train, val, test, cal, *, target, guard_images,
    seed, max_ap_drop, threads, name, progress, kind, lineage_extra, method_note,
    guard_result=None, step_parent=None,
) -> dict:  # fmt: skip
    """Scheme check, guard (measured here when ``guard_result`` is None: a QAT model), the test
    split once, manifest and artifact; shared by post-training INT8 and QAT."""
    import onnx

    from .targets import scheme_problems, tensorrt_problems

    scheme = SCHEMES[target]
    backend = "openvino" if target == "openvino" else "onnxruntime"
    if guard_result is None:
        guard, guard_split = _guard_records(train, val, cal.items, guard_images, seed, ds.root)
        baseline = score(parent, parent_dir, guard, ds.classes, backend, threads, "guard",
                         progress).AP50  # fmt: skip
        metric = score(_with_model(parent, model_path, "int8"), model_path.parent, guard,
                       ds.classes, backend, threads, "guard", progress).AP50  # fmt: skip
        print(f"    guard ({len(guard)} {guard_split} images, {backend}): AP50 FP32 "
              f"{baseline:.4f}, INT8 {metric:.4f} (drop {baseline - metric:+.4f}, budget "
              f"{max_ap_drop})")  # fmt: skip
        if baseline - metric > max_ap_drop:
            raise CompressError(
                f"the {kind.upper()} model misses the accuracy budget: guard AP50 drop "
                f"{baseline - metric:.4f} > {max_ap_drop}; nothing was written (train longer, "
                "or try --method int8, whose guard can keep layers in float)"
            )
        float_layers, tried = [], [{"float_layers": 0, "metric": metric, "drop": baseline - metric}]
    else:
        guard, guard_split, baseline, result = guard_result
        metric, float_layers, tried = result.metric, result.float_layers, result.tried

    model = onnx.load(str(model_path))
    problems = scheme_problems(model, scheme)
    from .targets import quantized_convs

    still = sorted(set(float_layers) & set(quantized_convs(model)))
    if still:
        problems.append(f"layers meant to stay in float are quantized: {still}")
    if target == "tensorrt":
        problems += tensorrt_problems(model, float_layers)
    if problems:
        raise CompressError(
            f"the INT8 graph does not follow the {target} scheme ({len(problems)} problem(s), "
            f"e.g. {problems[0]}); nothing was written"
        )

    fp32_path = parent_dir / parent["model"]["file"]
    print(f"[4] the test split, scored once: {len(test)} images, FP32 parent and INT8 ({backend})")
    child = _with_model(parent, model_path, "int8")
    before = score(parent, parent_dir, test, ds.classes, backend, threads, "test FP32", progress)
    after = score(
        child, model_path.parent, test, ds.classes, backend, threads, "test INT8", progress
    )
    size_before, size_after = fp32_path.stat().st_size, model_path.stat().st_size
    quantization = {
        **scheme.manifest_block(),
        "tool": scheme.tool if kind == "ptq" else "nncf (torch QAT) + Q/DQ export",
        "calibration": {
            "split": cal.split,
            "images": len(cal.items),
            "list_sha256": cal.list_sha256,
            "method": method_note,
        },
        "float_layers": list(float_layers),
        "guard": {
            "metric": "AP50",
            "split": guard_split,
            "images": len(guard),
            "max_drop": float(max_ap_drop),
            "parent": float(baseline),
            "quantized": float(metric),
            "tried": tried,
        },
    }
    metrics = {
        **after.as_metrics("test_"),
        **before.as_metrics("parent_test_"),
        "guard_AP50": float(metric),
        "parent_guard_AP50": float(baseline),
        "model_bytes": float(size_after),
        "parent_model_bytes": float(size_before),
        "float_layers": float(len(float_layers)),
    }
    accuracy_note = (
        "INT8 for TensorRT, scored by running its Q/DQ graph in ONNX Runtime on the CPU "
        "(quantize-dequantize around float convolutions; TensorRT, not installable here, "
        "fuses the same Q/DQ into INT8 kernels that may round slightly differently)"
        if target == "tensorrt"
        else f"scored with the {backend} backend through the deployed pipeline"
    )
    step = {
        "target": target,
        "scheme": quantization["scheme"],
        "tool": quantization["tool"],
        "calibration_images": len(cal.items),
        "calibration_list_sha256": cal.list_sha256,
        "seed": int(seed),
        "float_layers": list(float_layers),
        "accuracy_note": accuracy_note,
    }
    manifest = _child_manifest(
        parent,
        parent_dir,
        model_path,
        "mixed" if float_layers else "int8",
        name or out.name,
        "export" if kind == "qat" else kind,
        metrics,
        step,
        quantization=quantization,
        extra_lineage=lineage_extra,
        step_parent=step_parent,
    )
    tmp = _write_artifact(manifest, {"model.onnx": model_path}, out, cal)
    _publish(tmp, out)
    _print_summary(out, manifest, before, after, size_before, size_after, accuracy_note)
    return manifest


def _child_manifest(
    parent,
    parent_dir,
    model_path,
    precision,
    name,
    kind,
    metrics,
    step,
    quantization=None,
    extra_lineage=(),
    step_parent=None,
) -> dict:
    from sarbridge.runtime.manifest import SCHEMA_VERSION
    from sarbridge.train.checkpoint import lineage_step

    m = copy.deepcopy(parent)
    m["schema_version"] = SCHEMA_VERSION
    m["name"] = name
    m["model"] = {"file": "model.onnx", "sha256": sha256_file(model_path), "format": "onnx"}
    m["precision"] = precision
    if quantization is not None:
        m["quantization"] = quantization
    parent_ref = step_parent or {"name": parent["name"], "sha256": parent["model"]["sha256"]}
    m["lineage"] = [
        *parent["lineage"],
        *extra_lineage,
        lineage_step(kind, name, parent_ref, None, metrics, **step),
    ]
    keep = {k: v for k, v in parent["metrics"].items() if k in ("parameters", "gmacs_per_image")}
    m["metrics"] = {**keep, **metrics}
    m["tool_versions"] = tool_versions(TOOL_PACKAGES)
    m["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return m


def _write_artifact(manifest: dict, files: dict[str, Path], out: Path, cal=None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for fname, src in files.items():
            shutil.copyfile(src, tmp / fname)
        if cal is not None:
            cal.write_list(tmp / "calibration.txt")
        save_manifest(manifest, tmp)
        load_manifest(tmp)  # the hashes as written
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _print_summary(out, manifest, before, after, size_before, size_after, note) -> None:
    mib = 1024 * 1024
    print(f"\n{manifest['name']} ({manifest['precision']}) -> {out}")
    print(f"  {note}")
    print(f"  {'':14s}{'parent':>10s}{'result':>10s}{'change':>10s}")
    for key in ("AP50", "AP50_95", "AP_small"):
        a, b = getattr(before, key), getattr(after, key)
        print(f"  test {key:9s}{a:10.4f}{b:10.4f}{b - a:+10.4f}")
    print(
        f"  size (MiB)    {size_before / mib:10.2f}{size_after / mib:10.2f}"
        f"{size_after / size_before:9.2f}x"
    )
    print(
        f"  run it: sarbridge detect <scenes> --model {out}"
        f"{' --backend openvino' if manifest.get('quantization', {}).get('target') == 'openvino' else ''}"
    )


def _fp16(loaded, parent, parent_dir, work, out, name, threads, progress) -> dict:
    """FP16 weights and activations inside the graph, float32 inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from sarbridge.export.onnx_export import parity_inputs, set_agreement
    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.preprocess import SarPreprocess

    ds, train, val, test = _sets(loaded)
    cfg = loaded.config
    fp32_path = parent_dir / parent["model"]["file"]
    print("[2] FP16 conversion (onnxruntime.transformers.float16, float32 inputs and outputs)")
    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    path = work / "model_fp16.onnx"
    onnx.save(model, str(path))
    child = _with_model(parent, path, "fp16")
    x = parity_inputs(test, SarPreprocess.from_dict(cfg.data.preprocess), cfg.data.input_size, 16)
    a = Detector(parent, parent_dir, "onnxruntime", threads=threads)
    b = Detector(child, work, "onnxruntime", threads=threads)
    raw_a, raw_b = a.backend.run(x)[0], b.backend.run(x)[0]
    agreement = set_agreement(zip(a.run_inputs(x), b.run_inputs(x), strict=True))
    a.close()
    b.close()
    max_abs = float(np.abs(raw_a - raw_b).max())
    print(
        f"    parity on {len(x)} test images: max |FP32 - FP16| {max_abs:.3g}, "
        f"detection agreement {agreement:.4f}"
    )
    print(f"[3] the test split: {len(test)} images, FP32 parent and FP16 (onnxruntime, CPU)")
    before = score(
        parent, parent_dir, test, ds.classes, "onnxruntime", threads, "test FP32", progress
    )
    after = score(child, work, test, ds.classes, "onnxruntime", threads, "test FP16", progress)
    size_before, size_after = fp32_path.stat().st_size, path.stat().st_size
    metrics = {
        **after.as_metrics("test_"),
        **before.as_metrics("parent_test_"),
        "parity_max_abs_diff": max_abs,
        "parity_detection_agreement": agreement,
        "model_bytes": float(size_after),
        "parent_model_bytes": float(size_before),
    }
    note = (
        "FP16 is for GPU targets (Jetson, TensorRT, CUDA); on an x86 CPU ONNX Runtime has "
        "few FP16 kernels and inserts casts, so it is not faster here"
    )
    manifest = _child_manifest(
        parent,
        parent_dir,
        path,
        "fp16",
        name or out.name,
        "fp16",
        metrics,
        {"tool": "onnxruntime.transformers.float16", "keep_io_types": True, "note": note},
    )
    tmp = _write_artifact(manifest, {"model.onnx": path}, out)
    _publish(tmp, out)
    _print_summary(out, manifest, before, after, size_before, size_after, note)
    return manifest


def describe_targets() -> str:
    """The scheme table as text (``sarbridge compress --list-targets``)."""
    lines = []
    for s in SCHEMES.values():
        m = s.manifest_block()
        lines.append(f"{s.target:12s} {m['scheme']}\n{'':12s} tool: {s.tool}\n{'':12s} {s.why}")
    return "\n".join(lines)


__all__ = ["METHODS", "CompressError", "compress", "describe_targets", "score"]
