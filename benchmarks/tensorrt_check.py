"""The TensorRT check, for a machine that has TensorRT and a GPU (a Jetson, a GPU server).

One prepared run, resumable, torch-free (except the optional INT8 step, see below):

1. builds an FP16 engine of the zoo detector (``sarbridge export engine --precision fp16`` into a
   copy of its artifact; FP32 on TensorRT 11, which takes the precision from the ONNX) and an
   INT8 engine of its TensorRT-target Q/DQ model;
2. checks each engine's detections against ONNX Runtime on the CPU on real SSDD test images
   (detection agreement: 2 x matched / (|A| + |B|), same label and IoU >= 0.5; the largest box or
   score difference over matched detections);
3. benches both artifacts on the tensorrt and onnxruntime backends through ``sarbridge bench``:
   AP on the SSDD test split, batch-1 latency p50/p99, throughput per batch size, and energy
   per image where NVML (GPU servers) or tegrastats (Jetson) answers;
4. writes ``summary.json`` and ``summary.md`` under ``--out``.

    python -m sarbridge.benchmarks.tensorrt_check --out benchmarks/results/tensorrt_<board>

The INT8 model: ``--int8 DIR`` (an artifact made elsewhere with ``sarbridge compress --method
int8 --target tensorrt``; a Jetson usually has no torch), else the script makes one with that
command when the ``compress`` extra is installed here, else it checks FP16 only and says so.
Exit status 1 when an engine agrees with ONNX Runtime below ``--min-agreement``.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

AGREEMENT = {"fp32": 0.98, "fp16": 0.95, "int8": 0.90}  # rounding grows FP32 -> FP16 -> INT8


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _engine(
    source: Path, work: Path, precision: str, max_batch: int, version: str, device
) -> tuple[Path, dict]:
    """The artifact copy under ``work`` with its ``precision`` engine, built once for this
    TensorRT version and device and reused by a second run."""
    from sarbridge.runtime.manifest import load_manifest
    from sarbridge.runtime.trt.build import build_engine

    folder = work / f"engine_{precision}"
    if (folder / "manifest.json").is_file():
        for entry in load_manifest(folder).get("engines", []):
            if (entry["precision"], entry["tensorrt_version"], entry["device_name"]) == (
                precision, version, device.name,
            ):  # fmt: skip
                _log(f"{precision}: reusing {folder / entry['file']}")
                return folder, entry
        shutil.rmtree(folder)  # an unfinished copy, or one built elsewhere (this script made it)
    _log(f"{precision}: building from {source}")
    return folder, build_engine(source, precision, max_batch=max_batch, out=folder)


def _int8_source(args, work: Path) -> tuple[Path | None, str]:
    if args.int8:
        return Path(args.int8), "given"
    made = work / "int8_qdq_tensorrt"
    if (made / "manifest.json").is_file():
        return made, "made earlier by sarbridge compress --method int8 --target tensorrt"
    if not all(importlib.util.find_spec(m) for m in ("torch", "nncf", "onnx")):
        return None, "skipped: no --int8 artifact and no compress extra here to make one"
    _log("int8: sarbridge compress --method int8 --target tensorrt (calibration on train images)")
    cmd = [sys.executable, "-m", "sarbridge.cli", "compress", "--method", "int8", "--target",
           "tensorrt", "--from", args.fp32, "--out", str(made)]  # fmt: skip
    if subprocess.run(cmd).returncode != 0:
        return None, f"skipped: {' '.join(cmd[2:])} failed"
    return made, "made here by sarbridge compress --method int8 --target tensorrt"


def _parity(folder: Path, precision: str, records) -> dict:
    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.metrics import matched_max_abs, set_agreement

    trt = Detector.from_artifact(folder, "tensorrt", precision=precision)
    ort = Detector.from_artifact(folder, "onnxruntime", providers=["CPUExecutionProvider"])
    pairs = []
    try:
        for rec in records:
            a, b = trt.detect(rec.path), ort.detect(rec.path)
            pairs.append(((a.boxes, a.scores, a.labels), (b.boxes, b.scores, b.labels)))
    finally:
        trt.close()
        ort.close()
    return {
        "images": len(pairs),
        "detections_tensorrt": int(sum(len(a[1]) for a, _ in pairs)),
        "detections_onnxruntime": int(sum(len(b[1]) for _, b in pairs)),
        "agreement": set_agreement(pairs),
        "matched_max_abs": float(max((matched_max_abs(a, b) for a, b in pairs), default=0.0)),
        "engine_description": trt.backend.description,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="results folder")
    ap.add_argument("--fp32", default="zoo:ssdd_edge_det", help="the FP32 artifact")
    ap.add_argument("--int8", help="a Q/DQ artifact made with --target tensorrt")
    ap.add_argument("--work", type=Path, default=Path("runs/tensorrt_check"))
    ap.add_argument("--parity-images", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--power", default="auto")
    ap.add_argument("--min-agreement", type=float, default=None)
    args = ap.parse_args(argv)

    from sarbridge.benchmarks.bench import BenchSettings, run_bench
    from sarbridge.runtime.annotations import read_dataset
    from sarbridge.runtime.fileio import atomic_write_json, atomic_write_text, writable_dir
    from sarbridge.runtime.paths import resolve_data_path
    from sarbridge.runtime.trt.api import import_tensorrt, major_version
    from sarbridge.runtime.trt.cuda import open_cuda, open_device
    from sarbridge.runtime.zoo import resolve_artifact

    out, work = writable_dir(args.out), writable_dir(args.work)
    cuda = open_cuda()
    device = open_device(cuda)
    cuda.close()
    trt = import_tensorrt()
    _log(f"TensorRT {trt.__version__} on {device.name} (sm {device.compute_capability})")
    fp32 = resolve_artifact(args.fp32)
    records = read_dataset(resolve_data_path("SSDD")).split("test")[: args.parity_images]

    summary = {"tensorrt": trt.__version__, "device": asdict(device), "engines": {}}
    folders = []
    int8_source, int8_note = _int8_source(args, work)
    # TensorRT 11 takes the precision from the ONNX: without an FP16 model, the float row is FP32
    float_row = "fp16" if major_version(trt.__version__) < 11 else "fp32"
    for precision, source in ((float_row, fp32), ("int8", int8_source)):
        if source is None:
            summary["engines"][precision] = {"note": int8_note}
            _log(f"{precision}: {int8_note}")
            continue
        folder, entry = _engine(source, work, precision, args.max_batch, trt.__version__, device)
        parity = _parity(folder, precision, records)
        _log(f"{precision}: agreement {parity['agreement']:.4f} with ONNX Runtime on "
             f"{parity['images']} test images, max |diff| {parity['matched_max_abs']:.3g}")  # fmt: skip
        summary["engines"][precision] = {"artifact": str(folder), "engine": entry, "parity": parity}
        if precision == "int8":
            summary["engines"][precision]["source"] = int8_note
        folders.append(str(folder))
        atomic_write_json(summary, out / "summary.json")

    _log("bench: tensorrt and onnxruntime rows, SSDD test split")
    settings = BenchSettings(data="SSDD", iterations=args.iterations, power=args.power)
    results = run_bench(folders, ["tensorrt", "onnxruntime"], settings, out / "bench")
    summary["bench"] = str(out / "bench" / "report.md")
    summary["failures"] = results["failures"]
    atomic_write_json(summary, out / "summary.json")

    lines = [f"# TensorRT {trt.__version__} on {device.name} (sm {device.compute_capability})", "",
             "| engine | built in | agreement with ORT (CPU) | max diff | images |",
             "|---|---|---|---|---|"]  # fmt: skip
    failed = False
    for precision, row in summary["engines"].items():
        if "parity" not in row:
            lines.append(f"| {precision} | {row['note']} | | | |")
            continue
        p, need = row["parity"], args.min_agreement or AGREEMENT[precision]
        failed |= p["agreement"] < need
        lines.append(
            f"| {precision} | {row['engine']['build_seconds']:.0f} s | {p['agreement']:.4f} "
            f"(need {need}) | {p['matched_max_abs']:.3g} | {p['images']} |"
        )
    lines += [
        "",
        "Accuracy, latency, throughput and energy: [bench/report.md](bench/report.md)",
        "",
    ]
    atomic_write_text(out / "summary.md", "\n".join(lines))
    print("\n".join(lines))
    return 1 if failed or results["failures"] else 0


if __name__ == "__main__":
    from sarbridge.runtime.errors import SarbridgeError

    try:
        raise SystemExit(main())
    except SarbridgeError as exc:
        print(f"tensorrt_check: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
