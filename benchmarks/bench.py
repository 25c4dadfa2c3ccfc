"""`sarbridge bench`: each model's accuracy next to what it costs, through the deployed path.

For every artifact x backend, in a fresh process (so peak memory is that model's own):

- accuracy: every image of the split through ``Detector.detect`` (tiling, merge and decode
  exactly as ``sarbridge detect``) at a low score threshold; COCO AP50, AP50:95, AP75, AP by
  size and at each IoU threshold 0.50:0.05:0.95; precision/recall at the manifest's operating
  threshold; a PR curve;
- latency: the network alone (``backend.run``, once per view: plain and each test-time flip)
  after a warm-up, p50/p90/p99 per image at batch 1 and throughput for each batch size, best
  marked; and the whole per-image path (read to merged boxes) p50/p90. Host/device copies are
  included (numpy in, numpy out);
- memory: peak RSS of the process, peak device memory where the backend can tell, model file
  size, parameters and MACs from the manifest;
- power and energy: a probe (tegrastats, NVML, RAPL) over the throughput window and each
  scene; "not measured" where none exists;
- large scenes (optional): scenes per minute, tiles per second, energy per scene.

Torch is never needed; the ``pytorch`` backend (a PyTorch row) loads only when asked for.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarbridge.runtime.errors import DataError, SarbridgeError
from sarbridge.runtime.fileio import atomic_write_json, git_sha, tool_versions

SCHEMA = "sarbridge.bench/1"
# the packages whose versions a results file records
BENCH_PACKAGES = (
    "sarbridge",
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "tensorrt",
    "torch",
)
RECORD_KEYS = (
    "model",
    "artifact",
    "backend",
    "backend_description",
    "precision",
    "accuracy",
    "latency",
    "pipeline_latency",
    "memory",
    "size",
    "power",
    "scenes",
)


@dataclass(frozen=True)
class BenchSettings:
    data: str | None  # dataset root (VOC/COCO/YOLO); None: accuracy not measured
    split: str = "test"
    max_images: int | None = None
    scenes: tuple[str, ...] = ()
    threads: int | None = None
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    iterations: int = 50
    warmup: int = 5
    power: str = "auto"
    providers: tuple[str, ...] = ()
    engine: tuple[tuple[str, object], ...] = ()  # tensorrt rows: precision, dla_core, cuda

    def __post_init__(self):
        if isinstance(self.engine, dict):
            object.__setattr__(self, "engine", tuple(sorted(self.engine.items())))


# ---------------------------------------------------------------- environment


def environment(threads: int | None) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            name, driver = (s.strip() for s in out.stdout.splitlines()[0].split(","))
            gpu = {"name": name, "driver": driver}
    except (OSError, subprocess.SubprocessError):
        pass
    jetson = None
    model_file = Path("/proc/device-tree/model")
    if model_file.is_file():
        jetson = model_file.read_text(errors="ignore").strip("\x00\n ")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "gpu": gpu,
        "board": jetson,
        "versions": tool_versions(BENCH_PACKAGES),
        "git_sha": git_sha(),
    }


# ---------------------------------------------------------------- one model


def _percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "n": len(ms),
    }


def _pr_curve(records, dets, thresholds) -> list[dict]:
    from sarbridge.runtime.metrics import precision_recall_at

    return [
        {"threshold": float(t)} | {k: v for k, v in precision_recall_at(records, dets, t).items()}
        for t in thresholds
    ]


def evaluation_set(settings: BenchSettings):
    """(dataset, the records the evaluation scores): the split, cut to ``max_images``."""
    from sarbridge.runtime.annotations import read_dataset
    from sarbridge.runtime.paths import resolve_data_path

    ds = read_dataset(resolve_data_path(settings.data))
    records = ds.split(settings.split) if settings.split else ds.records
    return ds, records[: settings.max_images] if settings.max_images else records


def describe_dataset(settings: BenchSettings) -> dict | None:
    """What the evaluation reads: the dataset, split, image and box counts, every problem met
    reading it (a bad box or annotation file is left out of the AP; it must be seen) and a
    digest of the annotation set (:func:`~sarbridge.runtime.annotations.dataset_digest`)."""
    if not settings.data:
        return None
    from sarbridge.runtime.annotations import dataset_digest

    ds, records = evaluation_set(settings)
    listed = ds.splits.get(settings.split, []) if settings.split else []
    listed = listed[: settings.max_images] if settings.max_images else listed
    # the problems of what this evaluation reads: its images (by id or file stem, so an
    # annotation file that could not be read counts), and those of the dataset as a whole
    wanted = set(listed) | {r.image_id for r in records} | {r.path.stem for r in records}
    scoped = bool(settings.split) and settings.split in ds.splits
    problems = [
        str(p) for p in ds.problems if not scoped or not p.path.suffix or p.path.stem in wanted
    ]
    return {
        "root": str(ds.root),
        "format": ds.format,
        "split": settings.split,
        "max_images": settings.max_images,
        "images": len(records),
        "boxes": int(sum(len(r.boxes) for r in records)),
        "split_source": (
            "split files" if {"train", "test"} & set(ds.splits) else "seeded 80/20 (no split files)"
        ),
        "problems": problems,
        "digest": dataset_digest(records, ds.classes),
    }


def bench_one(artifact: str, backend: str, settings: BenchSettings) -> dict:
    """Measure one artifact on one backend (run this in its own process)."""
    from sarbridge.runtime.decode import flip_inputs
    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.manifest import load_manifest
    from sarbridge.runtime.metrics import Detections, coco_ap, precision_recall_at
    from sarbridge.runtime.power import open_probe

    artifact_path = Path(artifact)
    manifest = load_manifest(artifact_path)
    options = {"threads": settings.threads}  # every backend takes threads; providers: ORT only
    if settings.providers and backend == "onnxruntime":
        options["providers"] = list(settings.providers)
    if backend == "tensorrt":
        options.update(dict(settings.engine))
    # AP needs the low-score tail; precision/recall are read at the manifest's `operating` threshold
    det = Detector(
        manifest,
        artifact_path,
        backend,
        batch_size=max(settings.batch_sizes),
        score_threshold=0.001,
        **options,
    )
    operating = float(manifest["postprocessing"]["score_threshold"])
    probe, probe_note = open_probe(settings.power)
    record: dict = {
        "model": manifest.get("name", artifact_path.name),
        "artifact": str(artifact_path),
        "backend": backend,
        "backend_description": det.backend.description,
        "precision": manifest["precision"],
        "operating_threshold": operating,
        "input_size": det.input_size,
        "tiling": manifest["tiling"],
    }
    engine = getattr(det.backend, "entry", None)  # the tensorrt backend's chosen engine
    if engine:
        keep = ("file", "precision", "tensorrt_version", "device_name", "compute_capability")
        record["engine"] = {k: engine[k] for k in keep} | {"dla_core": engine.get("dla_core")}
        record["precision"] = engine["precision"]

    # accuracy through the deployed path, with per-image pipeline latency
    if settings.data:
        ds, records = evaluation_set(settings)
        if not records:
            raise SarbridgeError(f"{settings.data}: no images in split {settings.split!r}")
        dets, seconds, scored, unreadable, outside = [], [], [], [], []
        for rec in records:
            try:
                if not scored:
                    det.detect(rec.path)  # warm-up
                t0 = time.perf_counter()
                res = det.detect(rec.path)
            except DataError as exc:  # the image is left out of every model's AP alike
                unreadable.append(str(exc))
                print(f"  left out, unreadable: {exc}", flush=True)
                continue
            seconds.append(time.perf_counter() - t0)
            outside.append(1.0 - res.timings.get("model", 0.0) / max(seconds[-1], 1e-12))
            dets.append(Detections(rec.image_id, res.boxes, res.scores, res.labels))
            scored.append(rec)
        if not scored:
            raise SarbridgeError(f"{settings.data}: none of {len(records)} images could be read")
        records = scored
        ap = coco_ap(records, dets, ds.classes, det.max_detections, by_iou=True)
        pr = precision_recall_at(records, dets, operating)
        record["accuracy"] = {
            "dataset": str(ds.root),
            "split": settings.split,
            "images": len(records),
            "left_out_unreadable": unreadable,
            "ships": int(sum(len(r.boxes) for r in records)),
            "AP50": ap["AP50"],
            "AP50_95": ap["AP50_95"],
            "AP75": ap["AP75"],
            "AP_small": ap["AP_small"],
            "AP_medium": ap["AP_medium"],
            "AP_large": ap["AP_large"],
            "AP_by_iou": ap["AP_by_iou"],
            "precision": pr["precision"],
            "recall": pr["recall"],
            "f1": pr["f1"],
            "pr_curve": _pr_curve(records, dets, np.round(np.arange(0.05, 1.0, 0.05), 2)),
        }
        record["pipeline_latency"] = _percentiles(seconds) | {
            # per image: the share of the pipeline spent outside the network (read, preprocess,
            # letterbox, decode, merge), median over the images
            "outside_model_share_p50": float(np.median(outside)),
            "what": "one image: read, preprocess, tile, network, decode, merge"
        }
    else:
        record["accuracy"] = None
        record["pipeline_latency"] = None

    # the network alone: batch 1 percentiles, throughput per batch size, power over the window
    size = det.input_size
    channels = int(manifest["inputs"][0]["shape"][1])
    rng = np.random.default_rng(0)
    throughput = []
    batch1 = None
    cap = det.backend.max_batch
    for b in settings.batch_sizes:
        if cap and b > cap:
            continue
        x = rng.random((b, channels, size, size), dtype=np.float32)
        # every view the deployed path runs per image: plain, then each test-time flip
        views = [x] + [flip_inputs(x, flip) for flip in det.flips]
        for _ in range(settings.warmup):
            for v in views:
                det.backend.run(v)
        n = max(5, settings.iterations // b)
        times: list[float] = []

        def timed(views=views, n=n, times=times):
            for _ in range(n):
                t = time.perf_counter()
                for v in views:
                    det.backend.run(v)
                times.append(time.perf_counter() - t)

        if probe is not None:
            _, reading = probe.measure(timed)
        else:
            timed()
            reading = None
        stats = _percentiles(times)
        row = {
            "batch": b,
            "images_per_s": b * n / float(np.sum(times)),
            **stats,
            "power": reading.to_dict() if reading else None,
            "energy_per_image_j": reading.energy_j / (b * n) if reading else None,
        }
        throughput.append(row)
        if b == 1:
            batch1 = stats
    best = max(throughput, key=lambda r: r["images_per_s"])
    record["latency"] = {
        "batch1": batch1,
        "throughput": throughput,
        "best_batch": best["batch"],
        "best_images_per_s": best["images_per_s"],
        "copies_included": True,
        "views_per_image": len(det.flips) + 1,
        "what": "the network alone on random input of the model's size (backend.run), "
        "once per view the deployed path runs (plain and each test-time flip)",
    }
    record["power"] = {
        "probe": probe_note,
        "mean_w": best["power"]["mean_w"] if best["power"] else None,
        "energy_per_image_j": best["energy_per_image_j"],
        "at_batch": best["batch"] if best["power"] else None,
    }

    # large scenes
    scenes, unreadable_scenes = [], []
    for scene in settings.scenes:
        t0 = time.perf_counter()
        try:
            if probe is not None:
                res, reading = probe.measure(det.detect, scene)
            else:
                res, reading = det.detect(scene), None
        except DataError as exc:
            unreadable_scenes.append(str(exc))
            print(f"  scene left out, unreadable: {exc}", flush=True)
            continue
        wall = time.perf_counter() - t0
        scenes.append(
            {
                "scene": str(scene),
                "height": res.height,
                "width": res.width,
                "tiles": res.tiles,
                "seconds": wall,
                "tiles_per_s": res.tiles / wall,
                "detections_at_operating": int((res.scores >= operating).sum()),
                "outside_model_share": 1 - res.timings["model"] / wall,
                "energy_j": reading.energy_j if reading else None,
            }
        )
    if scenes:
        total = sum(s["seconds"] for s in scenes)
        record["scenes"] = {
            "per_scene": scenes,
            "scenes_per_minute": 60 * len(scenes) / total,
            "tiles_per_s": sum(s["tiles"] for s in scenes) / total,
            "energy_per_scene_j": (
                float(np.mean([s["energy_j"] for s in scenes])) if probe is not None else None
            ),
        }
    else:
        record["scenes"] = None
    record["scenes_unreadable"] = unreadable_scenes

    model_file = artifact_path / manifest["model"]["file"]
    weights = manifest["model"].get("weights")  # an OpenVINO IR's .bin beside its .xml
    model_bytes = model_file.stat().st_size + (
        (artifact_path / weights["file"]).stat().st_size if weights else 0
    )
    metrics = manifest.get("metrics", {})
    record["size"] = {
        "file_mib": model_bytes / 2**20,
        "parameters": metrics.get("parameters"),
        # the network's multiply-adds per input, times the views the deployed path runs
        "gmacs_per_image": (
            None
            if metrics.get("gmacs_per_image") is None
            else metrics["gmacs_per_image"] * (len(det.flips) + 1)
        ),
    }
    device_peak = getattr(det.backend, "peak_device_memory_mib", lambda: None)()
    record["memory"] = {
        "peak_rss_mib": peak_rss_mib(),
        "peak_device_mib": device_peak,
    }
    if probe is not None:
        probe.close()
    return record


def peak_rss_mib() -> float:
    """This process's peak resident memory: VmHWM of /proc/self/status where it exists (its own
    address space, reset by exec), else ``ru_maxrss``. Linux keeps ``ru_maxrss`` across fork and
    exec, so a bench child started from a large parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(artifact: str, backend: str, settings: BenchSettings, out: str) -> None:
    try:
        rec = bench_one(artifact, backend, settings)
        Path(out).write_text(json.dumps({"ok": True, "record": rec}))
    except Exception as exc:  # reported by the parent, which goes on with the next model
        Path(out).write_text(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))


# ---------------------------------------------------------------- the run


# model formats each backend runs (an OpenVINO IR runs on openvino only)
BACKEND_FORMATS = {
    "onnxruntime": ("onnx",),
    "openvino": ("onnx", "openvino"),
    "tensorrt": ("onnx",),
    "pytorch": ("onnx",),
}


def bench_pairs(models: list[str], backends: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Every (model, backend) whose model format the backend runs, and a line per pair left out."""
    from sarbridge.runtime.manifest import load_manifest

    pairs, skipped = [], []
    for model in models:
        fmt = load_manifest(model, verify_model=False)["model"]["format"]
        for backend in backends:
            if fmt in BACKEND_FORMATS.get(backend, (fmt,)):
                pairs.append((model, backend))
            else:
                skipped.append(
                    f"{model} on {backend}: its model format is {fmt}, which {backend} does not run"
                )
    return pairs, skipped


def run_bench(
    models: list[str],
    backends: list[str],
    settings: BenchSettings,
    out: str | Path,
    pairs: list[tuple[str, str]] | None = None,
) -> dict:
    """Every model x backend in its own process (or the given ``(model, backend)`` pairs); a
    pair whose model format the backend does not run is left out and listed. Writes
    results.json, report.md/.html and plots."""
    import multiprocessing as mp
    import tempfile

    from sarbridge.benchmarks.report import write_report
    from sarbridge.runtime.fileio import writable_dir

    out = writable_dir(out, "report folder")
    dataset = describe_dataset(settings)
    if dataset and dataset["problems"]:
        print(
            f"{len(dataset['problems'])} problem(s) in {settings.data}: the items are left out "
            "of the evaluation and listed in the report",
            flush=True,
        )
        for line in dataset["problems"][:20]:
            print(f"  {line}", flush=True)
    ctx = mp.get_context("spawn")
    records, failures, skipped = [], [], []
    if pairs is None:
        pairs, skipped = bench_pairs(models, backends)
        for line in skipped:
            print(f"left out: {line}", flush=True)
    for model, backend in pairs:
        print(f"bench {model} on {backend} ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            result_file = Path(tmp) / "record.json"
            proc = ctx.Process(target=_child, args=(model, backend, settings, str(result_file)))
            proc.start()
            try:
                proc.join()
            finally:  # interrupted or terminated: the child goes too
                if proc.is_alive():
                    proc.terminate()
                    proc.join()
            if not result_file.is_file():
                failures.append(
                    {"model": model, "backend": backend, "error": f"exit code {proc.exitcode}"}
                )
                continue
            result = json.loads(result_file.read_text())
        if result["ok"]:
            records.append(result["record"])
            print(summary_line(result["record"]), flush=True)
        else:
            failures.append({"model": model, "backend": backend, "error": result["error"]})
            print(f"  FAILED: {result['error']}", flush=True)
    results = {
        "schema": SCHEMA,
        "environment": environment(settings.threads),
        "settings": {
            "data": settings.data,
            "split": settings.split,
            "max_images": settings.max_images,
            "scenes": list(settings.scenes),
            "batch_sizes": list(settings.batch_sizes),
            "iterations": settings.iterations,
            "power": settings.power,
        },
        "dataset": dataset,
        "records": records,
        "failures": failures,
        "skipped": skipped,
    }
    save_results(results, out / "results.json")
    write_report(results, out)
    return results


def summary_line(r: dict) -> str:
    acc = r["accuracy"]
    lat = r["latency"]
    parts = [f"  {r['model']} [{r['backend']}]"]
    if acc:
        parts.append(f"AP50 {acc['AP50']:.3f}, AP50:95 {acc['AP50_95']:.3f}")
    if lat["batch1"]:
        parts.append(f"batch-1 p50 {lat['batch1']['p50_ms']:.1f} ms")
    parts.append(f"{lat['best_images_per_s']:.1f} img/s at batch {lat['best_batch']}")
    parts.append(f"peak RSS {r['memory']['peak_rss_mib']:.0f} MiB")
    e = r["power"]["energy_per_image_j"]
    parts.append(f"{e * 1000:.1f} mJ/image" if e is not None else "energy not measured")
    return ", ".join(parts)


# ---------------------------------------------------------------- results file


def validate_results(results: dict, path: str | Path = "<results>") -> dict:
    if not isinstance(results, dict) or results.get("schema") != SCHEMA:
        raise SarbridgeError(f"{path}: not a sarbridge bench results file (schema {SCHEMA})")
    for key in ("environment", "settings", "records", "failures"):
        if key not in results:
            raise SarbridgeError(f"{path}: missing field {key!r}")
    for k, rec in enumerate(results["records"]):
        missing = [key for key in RECORD_KEYS if key not in rec]
        if missing:
            raise SarbridgeError(f"{path}: records[{k}] misses {missing}")
    return results


def save_results(results: dict, path: str | Path) -> Path:
    path = Path(path)
    validate_results(results, path)
    return atomic_write_json(results, path, indent=1)


def load_results(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise SarbridgeError(f"{path}: no bench results here")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SarbridgeError(f"{path}: not valid JSON ({exc})") from exc
    return validate_results(results, path)


# ---------------------------------------------------------------- compare

COMPARED = (  # (label, getter, higher is better)
    ("AP50", lambda r: (r["accuracy"] or {}).get("AP50"), True),
    ("AP50:95", lambda r: (r["accuracy"] or {}).get("AP50_95"), True),
    ("batch-1 p50 ms", lambda r: (r["latency"]["batch1"] or {}).get("p50_ms"), False),
    ("best images/s", lambda r: r["latency"]["best_images_per_s"], True),
    ("peak RSS MiB", lambda r: r["memory"]["peak_rss_mib"], False),
    ("model MiB", lambda r: r["size"]["file_mib"], False),
    ("mJ/image", lambda r: millijoules(r["power"]["energy_per_image_j"]), False),
)


def millijoules(v):
    """Joules -> millijoules (None stays None: not measured)."""
    return None if v is None else v * 1000


def _settings_key(results: dict) -> dict:
    st = results["settings"]
    return {k: st.get(k) for k in ("data", "split", "max_images")}


def _dataset_keys(ra: dict, rb: dict) -> tuple[dict, dict, str | None]:
    """What must be equal for two reports' accuracy to be comparable: the annotation digest
    when both recorded one, else (a report from before the digest) the data settings, with a
    warning that the annotations themselves could not be compared."""
    da, db = ra.get("dataset") or {}, rb.get("dataset") or {}
    if da.get("digest") and db.get("digest"):
        keys = ("digest", "images", "boxes")
        return {k: da.get(k) for k in keys}, {k: db.get(k) for k in keys}, None
    note = "WARNING a report has no dataset digest: only the data settings were compared"
    return _settings_key(ra), _settings_key(rb), note


def compare(
    a: str | Path, b: str | Path, tolerance: float = 0.02, force: bool = False
) -> list[str]:
    """Lines describing B against A per (model, backend); regressions first.

    Raises:
        SarbridgeError: the two reports scored different datasets (another annotation
            digest, split or image count), unless ``force``.
    """
    ra, rb = load_results(a), load_results(b)
    ka, kb, note = _dataset_keys(ra, rb)
    warning = [note] if note else []
    if ka != kb:
        text = f"{a} and {b} scored different datasets ({ka} vs {kb})"
        if not force:
            raise SarbridgeError(f"{text}: their accuracy is not comparable (--force to compare)")
        warning.append(f"WARNING {text}; compared because of --force")
    index = {(r["model"], r["backend"]): r for r in ra["records"]}
    regress, better, same, lines = [], [], [], []
    for rec in rb["records"]:
        key = (rec["model"], rec["backend"])
        old = index.get(key)
        if old is None:
            lines.append(f"new     {key[0]} [{key[1]}]: not in {a}")
            continue
        for label, get, higher in COMPARED:
            va, vb = get(old), get(rec)
            if va is None or vb is None:
                continue
            rel = (vb - va) / abs(va) if va else (0.0 if vb == va else float("inf"))
            text = f"{key[0]} [{key[1]}] {label}: {va:.4g} -> {vb:.4g} ({100 * rel:+.1f} %)"
            if abs(rel) <= tolerance:
                same.append(f"same    {text}")
            elif (rel > 0) == higher:
                better.append(f"better  {text}")
            else:
                regress.append(f"WORSE   {text}")
    for key in set(index) - {(r["model"], r["backend"]) for r in rb["records"]}:
        lines.append(f"gone    {key[0]} [{key[1]}]: in {a} only")
    return warning + regress + better + same + lines
