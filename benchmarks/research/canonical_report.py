"""``make report``: sarbridge's deployable detectors beside Ultralytics' peers, one bench run.

Every model below is scored by the same deployed path (``sarbridge bench``: tiling, decode,
NMS, COCO AP of the faster-coco-eval code) on the SSDD test split, and timed by the same timer
on this CPU, in one run, each model and backend in its own process:

* sarbridge: the zoo detector (FP32 on ONNX Runtime and on OpenVINO), its INT8 per target
  (``sarbridge compress --method int8``, made here when missing: a few minutes each), and the
  pruned + distilled students of ``prune_pareto`` where they exist (hours to make: not made
  here, listed as missing);
* Ultralytics: YOLOv8n / YOLO11n trained on SSDD by ``benchmarks/research/peers.py`` (hours on
  this CPU: not made here), Ultralytics' own ONNX FP32 and OpenVINO INT8 exports, imported with
  ``sarbridge import ultralytics`` (parity-checked against Ultralytics' own predictions when
  Ultralytics is installed), and sarbridge's ONNX Runtime INT8 of their ONNX
  (``sarbridge compress --method int8`` of the imported artifact).

Writes ``results.json``, ``report.md``/``.html`` and the plots (``sarbridge bench``),
``compare_previous.md`` (``sarbridge bench --compare`` against the report it replaces, regressions
first), then ``README.md``: the machine and versions, each model's training schedule, the headline table,
and the two targets of the comparison measured as ratios in this run. What is missing is said.

    python -m sarbridge.benchmarks.research.canonical_report --out benchmarks/results/cpu

Timings on a small shared machine move between runs and with the order of the models: repeat
the report with ``--reverse --out <another folder>`` before trusting a close ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ARTIFACTS = Path("artifacts")
PEERS = Path("runs/peers")


@dataclass(frozen=True)
class Candidate:
    artifact: str  # an artifact folder or zoo:<name>
    backends: tuple[str, ...]
    family: str  # "sarbridge" | "ultralytics"
    make: tuple[str, ...] | None = None  # a command that makes it here, when it is cheap
    source: str | None = None  # what the artifact is made from (for the README)
    missing_hint: str = ""  # how to make it when it is not cheap


def _compress(target: str, out: str) -> tuple[str, ...]:
    return ("sarbridge", "compress", "--method", "int8", "--from", "zoo:ssdd_edge_det",
            "--target", target, "--out", out)  # fmt: skip


def _peer(model: str, epochs: int) -> list[Candidate]:
    run = PEERS / f"{model}_ssdd_e{epochs}" / "weights"
    train = (
        f"python -m sarbridge.benchmarks.research.peers train --model {model} --epochs {epochs} "
        f"&& python -m sarbridge.benchmarks.research.peers export --model {model} --epochs {epochs}"
    )
    onnx, ov_int8 = run / "last.onnx", run / "last_int8_openvino_model"
    name = f"peer_{model}_e{epochs}"
    return [
        Candidate(str(ARTIFACTS / name), ("onnxruntime", "openvino"), "ultralytics",
                  ("sarbridge", "import", "ultralytics", str(onnx), "--out", str(ARTIFACTS / name)),
                  str(onnx), train),
        Candidate(str(ARTIFACTS / f"{name}_openvino_int8"), ("openvino",), "ultralytics",
                  ("sarbridge", "import", "ultralytics", str(ov_int8), "--out",
                   str(ARTIFACTS / f"{name}_openvino_int8")), str(ov_int8), train),
        # sarbridge's own x86 INT8 (QDQ, uint8 x int8, accuracy guard) of Ultralytics' ONNX
        Candidate(str(ARTIFACTS / f"{name}_int8_onnxruntime"), ("onnxruntime",), "ultralytics",
                  ("sarbridge", "compress", "--method", "int8", "--from", str(ARTIFACTS / name),
                   "--target", "onnxruntime", "--out", str(ARTIFACTS / f"{name}_int8_onnxruntime")),
                  str(ARTIFACTS / name), train),
    ]  # fmt: skip


def candidates() -> list[Candidate]:
    ours = [
        Candidate("zoo:ssdd_edge_det", ("onnxruntime", "openvino"), "sarbridge"),
        Candidate(str(ARTIFACTS / "ssdd_edge_det_int8_onnxruntime"), ("onnxruntime",), "sarbridge",
                  _compress("onnxruntime", str(ARTIFACTS / "ssdd_edge_det_int8_onnxruntime"))),
        Candidate(str(ARTIFACTS / "ssdd_edge_det_int8_openvino"), ("openvino",), "sarbridge",
                  _compress("openvino", str(ARTIFACTS / "ssdd_edge_det_int8_openvino"))),
        Candidate(str(ARTIFACTS / "edge_p75_kd12_s0"), ("onnxruntime",), "sarbridge",
                  missing_hint="python -m sarbridge.benchmarks.research.prune_pareto (hours)"),
        Candidate(str(ARTIFACTS / "edge_p50_kd24_s0_int8_onnxruntime"), ("onnxruntime",),
                  "sarbridge",
                  missing_hint="python -m sarbridge.benchmarks.research.prune_pareto (hours)"),
    ]  # fmt: skip
    return ours + _peer("yolov8n", 30) + _peer("yolo11n", 30)


def export_finished_peers(work: Path = PEERS) -> list[str]:
    """Ultralytics' own exports (ONNX FP32, OpenVINO INT8) of every finished peer run that has
    none yet (``peers export``, minutes); returns a line per run it could not export."""
    problems = []
    for run in sorted(work.glob("*_ssdd_e*")):
        last = run / "weights" / "last.pt"
        model, epochs = run.name.split("_ssdd_e")
        if not last.is_file() or (run / "weights" / "last.onnx").is_file():
            continue
        if importlib.util.find_spec("ultralytics") is None:
            problems.append(f"{run}: not exported (Ultralytics is not installed here)")
            continue
        rows = (run / "results.csv").read_text().strip().splitlines()[1:]  # one per epoch done
        if len(rows) < int(epochs):
            continue  # still training (torch is not imported here: the bench children would
            # inherit its memory in ru_maxrss)
        cmd = [sys.executable, "-m", "sarbridge.benchmarks.research.peers", "export",
               "--model", model, "--epochs", epochs]  # fmt: skip
        print(f"exporting {run.name}: {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            problems.append(f"{run}: `{' '.join(cmd[1:])}` failed")
    return problems


def _exists(c: Candidate) -> bool:
    from sarbridge.runtime.zoo import resolve_artifact

    try:
        return (resolve_artifact(c.artifact) / "manifest.json").is_file()
    except Exception:  # an unknown zoo name, a missing folder
        return False


def _zoo_parent(c: Candidate) -> str | None:
    """The zoo model a ``compress --from zoo:<name>`` candidate is made from, else None."""
    if not (c.make and c.make[1] == "compress" and "--from" in c.make):
        return None
    source = c.make[c.make.index("--from") + 1]
    return source if source.startswith("zoo:") else None


def _stale(c: Candidate) -> str | None:
    """Why an artifact no longer matches what it was made from, else None; the artifact is then
    left out, not replaced: an import whose source file changed (a peer retrained or re-exported
    since), or a compressed child of a zoo model made from an earlier export of it (its last
    lineage step names the FP32 graph it was made from)."""
    from sarbridge.runtime.manifest import load_manifest

    zoo = _zoo_parent(c)
    if zoo is not None and _exists(c):
        from sarbridge.runtime.zoo import resolve_artifact

        step = load_manifest(c.artifact, verify_model=False)["lineage"][-1]
        now = load_manifest(resolve_artifact(zoo), verify_model=False)["model"]["sha256"]
        if (step.get("parent") or {}).get("sha256") != now:
            return (
                f"stale: made from an earlier export of {zoo}; remove the folder to make it "
                "again"
            )
        return None
    if not (c.make and c.make[1] == "import" and c.source and _exists(c)):
        return None
    from sarbridge.runtime.fileio import sha256_mismatch

    source = Path(c.source)
    if source.is_dir():
        found = sorted(source.glob("*.xml"))
        source = found[0] if found else source
    if not source.is_file():
        return None
    if sha256_mismatch(source, load_manifest(c.artifact, verify_model=False)["model"]["sha256"]):
        return f"stale: {c.source} changed since it was imported; remove the folder to re-import"
    return None


def prepare(cands: list[Candidate], make: bool) -> tuple[list[Candidate], list[str]]:
    """The candidates that exist (made here when cheap and ``make``), and a line per missing."""
    ready, missing = [], []
    for c in cands:
        makeable = make and c.make is not None and (c.source is None or Path(c.source).exists())
        if makeable and not _exists(c):
            print(f"making {c.artifact}: {' '.join(c.make)}", flush=True)
            cmd = [sys.executable, "-m", "sarbridge.cli", *c.make[1:]]
            if subprocess.run(cmd).returncode != 0:
                missing.append(f"{c.artifact}: `{' '.join(c.make)}` failed")
                continue
        stale = _stale(c)
        if stale:
            missing.append(f"{c.artifact}: {stale}")
        elif _exists(c):
            ready.append(c)
        else:
            how = c.missing_hint or (" ".join(c.make) if c.make else "")
            src = f" (from {c.source}, not found)" if c.source and not Path(c.source).exists() else ""
            missing.append(f"{c.artifact}{src}: {how}")
    return ready, missing


def _peer_schedules() -> list[str]:
    import yaml

    lines = []
    for run in sorted(PEERS.glob("*_ssdd_e*")):
        args = run / "args.yaml"
        if not args.is_file() or not (run / "weights" / "last.onnx").is_file():
            continue  # only the runs whose exports are benched
        try:
            a = yaml.safe_load(args.read_text())
        except yaml.YAMLError as exc:
            lines.append(f"- {run.name}: {args} could not be read ({exc}); schedule unknown")
            continue
        a = a if isinstance(a, dict) else {}

        def value(key: str, a: dict = a) -> str:
            v = a.get(key, "?")
            return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

        line = (
            f"- {run.name}: Ultralytics, {run.name.split('_')[0]}, random init (pretrained "
            f"{value('pretrained')}), {value('epochs')} epochs, imgsz {value('imgsz')}, batch "
            f"{value('batch')}, optimizer {value('optimizer')}, close_mosaic {value('close_mosaic')}, "
            f"seed {value('seed')}, on this CPU"
        )
        note = run / "schedule.json"
        if note.is_file():
            s = json.loads(note.read_text())
            line += (
                f"; the first {s['epochs_under_previous_schedule']} epochs ran under the "
                f"learning-rate schedule of {s['from']} (then shortened to {s['epochs']})"
            )
        lines.append(line)
    return lines


def targets(records: list[dict]) -> list[str]:
    """The issue's two targets, measured as ratios in this run (batch-1 p50 network latency)."""

    lat = _lat

    def ap(r, k):
        return r["accuracy"][k]

    pairs = _compared(records)
    if not pairs:
        return ["- Not measured: the run has no peer (or no sarbridge model) with accuracy."]
    lines = []
    (_, fo, fp), (_, bo, bp) = pairs
    ratio = lat(fp) / lat(fo)
    ok = ratio >= 2 and ap(fo, "AP50") >= ap(fp, "AP50") and ap(fo, "AP50_95") >= ap(fp, "AP50_95")
    lines.append(
        f"- **Fastest vs fastest** (target: ours >= 2x faster at equal or better AP50 and "
        f"AP50:95): {_name(fo)} {lat(fo):.1f} ms, AP50 {ap(fo, 'AP50'):.3f} / AP50:95 "
        f"{ap(fo, 'AP50_95'):.3f} vs {_name(fp)} {lat(fp):.1f} ms, AP50 {ap(fp, 'AP50'):.3f} / "
        f"AP50:95 {ap(fp, 'AP50_95'):.3f}: **{ratio:.2f}x** faster; target "
        f"{'met' if ok else 'MISSED'}"
        + ("" if ok else _missed_by(ratio, fo, fp))
    )
    ok = ap(bo, "AP50_95") >= ap(bp, "AP50_95") and lat(bo) < lat(bp)
    lines.append(
        f"- **Most accurate vs most accurate** (target: ours at or above the peer's AP50:95 at "
        f"lower latency): {_name(bo)} AP50:95 {ap(bo, 'AP50_95'):.3f} at {lat(bo):.1f} ms vs "
        f"{_name(bp)} AP50:95 {ap(bp, 'AP50_95'):.3f} at {lat(bp):.1f} ms: target "
        f"{'met' if ok else 'MISSED'} (AP50:95 {ap(bo, 'AP50_95') - ap(bp, 'AP50_95'):+.3f}, "
        f"latency x{lat(bo) / lat(bp):.2f})"
    )
    sized = []
    for r in (fo, fp, bo, bp):
        if r.get("size", {}).get("parameters") and all(r is not u for u in sized):
            sized.append(r)
    if sized:
        lines.append(
            "- Sizes of the networks compared: "
            + "; ".join(
                f"{_name(r)} {r['size']['parameters'] / 1e6:.2f} M parameters, "
                f"{_num(r['size'].get('gmacs_per_image'), 1, '.2f')} GMACs per 512 px input"
                for r in sized
            )
        )
    return lines


def _lat(r: dict) -> float:
    return r["latency"]["batch1"]["p50_ms"]


def _compared(records: list[dict]) -> list[tuple[str, dict, dict]]:
    """The two targets' (what, ours, peer): fastest of each family, most accurate of each."""
    ours = [r for r in records if r.get("family") == "sarbridge" and r["accuracy"]]
    peers = [r for r in records if r.get("family") == "ultralytics" and r["accuracy"]]
    if not ours or not peers:
        return []

    def best(rs):
        return max(rs, key=lambda r: r["accuracy"]["AP50_95"])

    return [
        ("Fastest vs fastest", min(ours, key=_lat), min(peers, key=_lat)),
        ("Most accurate vs most accurate", best(ours), best(peers)),
    ]


GAP_IOUS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)


def gap_lines(records: list[dict]) -> list[str]:
    """Where each compared pair's AP50:95 differs, measured: AP at IoU thresholds from
    finding a ship (0.50) to fitting its box tightly (0.90), and AP by box size; a line per
    pair (one for both targets when they compare the same two models)."""
    pairs: list[tuple[list[str], dict, dict]] = []
    for what, ours, peer in _compared(records):
        same = [p for p in pairs if p[1] is ours and p[2] is peer]
        if same:
            same[0][0].append(what.lower())
        else:
            pairs.append(([what], ours, peer))
    lines = []
    for whats, ours, peer in pairs:
        a, b = ours["accuracy"], peer["accuracy"]
        if not (a.get("AP_by_iou") and b.get("AP_by_iou")):
            continue
        at_a = {p["iou"]: p["AP"] for p in a["AP_by_iou"]}
        at_b = {p["iou"]: p["AP"] for p in b["AP_by_iou"]}
        sizes = [
            f"{k.removeprefix('AP_')} {a[k] - b[k]:+.3f}"
            for k in ("AP_small", "AP_medium", "AP_large")
            if a.get(k, -1) >= 0 and b.get(k, -1) >= 0
        ]
        line = (
            f"- {' and '.join(whats)}: {_name(ours)} minus {_name(peer)}: AP50:95 "
            f"{a['AP50_95'] - b['AP50_95']:+.3f}; at IoU "
            + ", ".join(f"{t:.2f} {at_a[t] - at_b[t]:+.3f}" for t in GAP_IOUS)
        )
        if sizes:
            line += "; by size " + ", ".join(sizes)
        lines.append(line + ".")
    return lines


def gap_plot(records: list[dict], out: Path) -> Path | None:
    """``ap_gap.png``: AP at each IoU threshold of the models the two targets compare."""
    from sarbridge.benchmarks.report import ap_vs_iou

    shown = []
    for r in (r for _, ours, peer in _compared(records) for r in (ours, peer)):
        if r["accuracy"].get("AP_by_iou") and all(r is not u for u in shown):
            shown.append(r)
    if not shown:
        return None
    title = "AP at each IoU threshold: the models the targets compare"
    return ap_vs_iou(shown, out / "ap_gap.png", title)


def quantized_sizes(records: list[dict]) -> None:
    """An INT8 peer has its FP32 source's parameters and MACs (an OpenVINO IR is not counted):
    fill them from the source's row, ``<name>`` of ``<name>_openvino_int8`` / ``_int8_*``."""
    by_model = {r["model"]: r for r in records}
    for r in records:
        if r["size"].get("parameters") is not None and r["size"].get("gmacs_per_image"):
            continue
        for suffix in ("_openvino_int8", "_int8_onnxruntime"):
            source = by_model.get(r["model"].removesuffix(suffix))
            if r["model"].endswith(suffix) and source and source["size"].get("parameters"):
                r["size"]["parameters"] = source["size"]["parameters"]
                r["size"]["gmacs_per_image"] = source["size"].get("gmacs_per_image")
                r["size"]["counted_from"] = source["model"]


def _missed_by(ratio: float, fo: dict, fp: dict) -> str:
    parts = []
    if ratio < 2:
        parts.append(f"speed {ratio:.2f}x of 2x")
    for k in ("AP50", "AP50_95"):
        d = fo["accuracy"][k] - fp["accuracy"][k]
        if d < 0:
            parts.append(f"{k} {d:+.3f}")
    return f" by {', '.join(parts)}"


def _name(r: dict) -> str:
    return f"{r['model']} [{r['backend']}]"


def _num(value, scale: float, spec: str) -> str:
    return "-" if value is None else format(value * scale, spec)


def _small(r: dict) -> str:
    v = r["accuracy"].get("AP_small")
    return "-" if v is None or v < 0 else f"{v:.3f}"  # -1: no small ship in the images


def _parity_lines(records: list[dict]) -> list[str]:
    """Each imported peer's parity with Ultralytics' own predictions, from its manifest."""
    from sarbridge.runtime.manifest import load_manifest

    lines, seen = [], set()
    for r in records:
        if r.get("family") != "ultralytics" or r["artifact"] in seen:
            continue
        seen.add(r["artifact"])
        step = load_manifest(r["artifact"], verify_model=False)["lineage"][-1]
        if "parity" not in step:
            continue  # made from an imported model (its INT8), not imported itself
        parity = step["parity"]
        if isinstance(parity, dict):
            parity = (
                f"agreement {parity['agreement']:.4f} on {parity['images']} SSDD test images "
                f"({parity['detections_sarbridge']} vs {parity['detections_ultralytics']} "
                f"detections), largest matched difference {parity['matched_max_abs']:.3g} "
                f"({parity['checked_with']})"
            )
        lines.append(f"- {r['model']}: {parity}")
    return lines or ["- no imported peer in this run"]


def readme(results: dict, missing: list[str], schedules: list[str]) -> str:
    from sarbridge.runtime.fileio import tool_versions

    env = results["environment"]
    recs = sorted(
        [r for r in results["records"] if r["accuracy"]],
        key=lambda r: r["latency"]["batch1"]["p50_ms"],
    )
    rows = [
        f"| {r['family']} | {r['model']} | {r['backend']} | {r['precision']} | "
        f"{r['accuracy']['AP50']:.3f} | {r['accuracy']['AP50_95']:.3f} | "
        f"{_small(r)} | {r['latency']['batch1']['p50_ms']:.1f} | "
        f"{r['latency']['best_images_per_s']:.1f} | {r['size']['file_mib']:.2f} | "
        f"{_num(r['size']['parameters'], 1e-6, '.2f')} | {_num(r['size']['gmacs_per_image'], 1, '.2f')} |"
        for r in recs
    ]
    found = {**env.get("versions", {}), **tool_versions(["ultralytics", "nncf"])}
    versions = ", ".join(f"{k} {v}" for k, v in sorted(found.items()))
    measured = [r for r in results["records"] if r["power"]["energy_per_image_j"] is not None]
    energy = (
        f"Energy per image is in report.md for the {len(measured)} rows a power probe measured."
        if measured
        else "Energy is not measured here: no power probe answers on this machine."
    )
    failed = [f"- {f['model']} [{f['backend']}]: {f['error']}" for f in results["failures"]]
    gaps = gap_lines(results["records"])
    return "\n".join(
        [
            "# sarbridge against Ultralytics on SSDD, on this CPU",
            "",
            "Made by `make report` (`python -m sarbridge.benchmarks.research.canonical_report "
            "--out benchmarks/results/cpu`): one `sarbridge bench` run, every model through the "
            "same deployed path and metric code on the SSDD official test split "
            f"({results['dataset']['images'] if results.get('dataset') else '?'} images), "
            "each model and backend in its own process"
            + (", in the reverse order of `make report`'s." if results["settings"].get("order") == "reversed" else "."),
            "",
            f"Machine: {env.get('cpu', '?')}, {results['settings'].get('threads') or env.get('threads', '?')} "
            f"threads. Versions: {versions or 'see results.json'}.",
            "",
            "## Headline (fastest first; latency: the network alone, batch 1, p50)",
            "",
            "| family | model | backend | precision | AP50 | AP50:95 | AP small | batch-1 p50 ms "
            "| best img/s | MiB | M params | GMACs |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Plots: [AP50:95 vs latency](ap_vs_latency.png), [AP vs size](ap_vs_size.png), "
            "[AP small vs latency](ap_small_vs_latency.png), [PR curves](pr_curves.png); every "
            f"figure in [report.md](report.md). {energy}",
            "",
            "OpenVINO rows of both families run with the precision hint sarbridge sets (f32 for "
            "fp32/int8/mixed models, so the non-quantized layers stay float32); OpenVINO's own "
            "CPU default on this machine would be bf16 (AMX), faster for both. Peers exported by "
            "Ultralytics have a fixed batch of 1: their best img/s is at batch 1.",
            "",
            "## Targets, measured in this run",
            "",
            *targets(results["records"]),
            "",
            "## Where the AP50:95 differs, measured in this run",
            "",
            *(
                [
                    "Ours minus the peer it is compared with, AP at IoU thresholds from finding "
                    "a ship (0.50) to fitting its box tightly (0.90), and by box size (COCO "
                    "areas: small under 32² px², large over 96² px²); a gap that grows with the "
                    "threshold lies in how tightly the boxes fit, not in which ships are found. "
                    "Plot: [AP at each IoU threshold 0.50-0.95](ap_gap.png) of the compared "
                    "models.",
                    "",
                    *gaps,
                ]
                if gaps
                else ["- not measured: the records have no AP by IoU threshold"]
            ),
            "",
            "## Imported peers against Ultralytics' own predictions",
            "",
            *_parity_lines(results["records"]),
            "",
            "## Training schedules",
            "",
            "- sarbridge zoo detector `ssdd_edge_det`: 60 epochs on all SSDD train images, BNN "
            "SAR-backbone start, 512 px (zoo/README.md has the command); its INT8s by `sarbridge "
            "compress --method int8` (300 train inputs calibrate, accuracy guard).",
            "- sarbridge students: `edge_p75_kd12_s0` (Torch-Pruning to 75 % of the MACs, "
            "distilled from the zoo detector 12 epochs), `edge_p50_kd24_s0` (50 %, 24 epochs), "
            "then INT8 ([prune_pareto](../prune_pareto/README.md)).",
            *(schedules or ["- no Ultralytics peer was trained here"]),
            "",
            "## Not in this run",
            "",
            *([f"- {m}" for m in missing] or ["- nothing"]),
            *(["", "## Failed", "", *failed] if failed else []),
            "",
        ]
    )


def write_readme(results: dict, out: Path) -> None:
    """``ap_gap.png`` and ``README.md`` of a report folder from its results."""
    from sarbridge.runtime.fileio import atomic_write_text

    gap_plot(results["records"], out)
    atomic_write_text(
        out / "README.md", readme(results, results.get("missing", []), _peer_schedules())
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--max-images", type=int, default=None, help="a quick look, not the report")
    ap.add_argument("--no-make", action="store_true", help="bench only what exists")
    ap.add_argument(
        "--reverse",
        action="store_true",
        help="bench the models in the reverse order (a second run to check the timings' order "
        "effects: repeat a report reversed before trusting a small difference)",
    )
    ap.add_argument(
        "--readme-only", action="store_true", help="rewrite README.md from --out's results.json"
    )
    args = ap.parse_args(argv)
    if args.readme_only:
        from sarbridge.benchmarks.bench import load_results

        results = load_results(args.out / "results.json")
        quantized_sizes(results["records"])
        write_readme(results, args.out)
        return 0

    from sarbridge.benchmarks.bench import BenchSettings, run_bench, save_results
    from sarbridge.runtime.fileio import atomic_write_text
    from sarbridge.runtime.zoo import resolve_artifact

    os.environ.setdefault("YOLO_OFFLINE", "1")
    if importlib.util.find_spec("ultralytics") is None:
        print("Ultralytics is not installed: imported peers are not parity-checked", flush=True)
    exported = [] if args.no_make else export_finished_peers()
    ready, missing = prepare(candidates(), make=not args.no_make)
    missing = exported + missing
    family = {str(resolve_artifact(c.artifact)): c.family for c in ready}
    pairs = [(str(resolve_artifact(c.artifact)), b) for c in ready for b in c.backends]
    if args.reverse:
        pairs.reverse()
    settings = BenchSettings(
        data="SSDD", threads=args.threads, batch_sizes=(1, 8), iterations=args.iterations,
        max_images=args.max_images,
    )  # fmt: skip
    previous = None
    if (args.out / "results.json").is_file():  # the last canonical report, to compare against
        previous = Path(tempfile.mkdtemp()) / "previous_results.json"
        shutil.copy2(args.out / "results.json", previous)
    results = run_bench([], [], settings, args.out, pairs=pairs)
    for r in results["records"]:
        r["family"] = family.get(r["artifact"], "?")
    quantized_sizes(results["records"])
    results["settings"]["threads"] = args.threads
    results["settings"]["order"] = "reversed" if args.reverse else "as listed"
    results["missing"] = missing
    save_results(results, args.out / "results.json")
    write_readme(results, args.out)
    if previous is not None:
        from sarbridge.benchmarks.bench import compare
        from sarbridge.runtime.errors import SarbridgeError

        try:
            lines = compare(previous, args.out / "results.json")
        except SarbridgeError as exc:
            lines = [f"not compared: {exc}"]
        text = "# Against the previous canonical report (regressions first)\n\n```\n"
        atomic_write_text(args.out / "compare_previous.md", text + "\n".join(lines) + "\n```\n")
        print("\n".join(lines))
    print(f"report: {args.out / 'README.md'}")
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
