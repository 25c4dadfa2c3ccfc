"""Initialisation comparison for detectors (Table-3 style): test AP per run, mean and spread per
initialisation, training recipe and schedule (input size, epochs).

A run started from a trained detector (``--init det:<run>``) counts under its first ancestor's
initialisation, with the schedules joined ("60+40" epochs); the evaluation's NMS IoU and box
voting join the recipe where they differ from plain NMS at 0.5 (test AP depends on them).

    python -m sarbridge.benchmarks.research.det_tables runs/det_edge_bnn_s0 runs/det_edge_bnn_s1 \\
        runs/det_edge_random_s0 runs/det_edge_random_s1 --out benchmarks/results/det_edge_ssdd
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from sarbridge.benchmarks.research.run_records import load_finished_run
from sarbridge.runtime.fileio import atomic_write_json, atomic_write_text

METRICS = ("AP50", "AP50_95", "AP_small", "precision", "recall")


def _init_kind(init: str) -> str:
    return init.split(":", 1)[0]


def _origin(rec: dict) -> tuple[str, str]:
    """(initialisation kind, epochs) of a run, through the detector runs it continued."""
    c = rec["config"]
    epochs = str(c["optim"]["epochs"])
    if _init_kind(c["init"]) != "det":
        return _init_kind(c["init"]), epochs
    parent = Path(c["init"].split(":", 1)[1])
    if not (parent / "run.json").is_file():  # the parent is not here: say what is known
        kind = rec["final"].get("lineage", {}).get("origin", "det")
        return f"{kind} (via {parent.name})", f"?+{epochs}"
    kind, parent_epochs = _origin(load_finished_run(parent))
    return kind, f"{parent_epochs}+{epochs}"


def _recipe(config: dict) -> str:
    """The run's training recipe beyond flips/rot90 and 0.6-1.2 scale jitter, in words ("base"
    when none): other scale jitter, mosaic, multi-scale, a box loss weight, a distribution (DFL)
    box head, the EMA's decay
    and ramp (runs made before the ramp was a setting used 2000 steps), and bfloat16 training
    steps where ``optim.amp`` asked for them on any device; a run with no validation split
    (trained on every train image, last epoch kept)."""
    a, o, m = config.get("augment", {}), config.get("optim", {}), config.get("model", {})
    parts = []
    scale = (a.get("scale_min", 0.6), a.get("scale_max", 1.2))
    if scale != (0.6, 1.2):  # the trainer's default scale jitter
        parts.append(f"scale {scale[0]:g}-{scale[1]:g}")
    if a.get("mosaic"):
        parts.append(f"mosaic {a['mosaic']:g}")
    if a.get("multi_scale"):
        lo, hi = a["multi_scale"]
        parts.append(f"multi-scale {lo:g}-{hi:g}")
    if m.get("box_weight") is not None:
        parts.append(f"box weight {m['box_weight']:g}")
    if m.get("box_bins"):
        parts.append(f"DFL boxes {m['box_bins']} bins")
    if o.get("ema"):
        parts.append(f"EMA {o.get('ema_decay', 0.999):g} ramp {o.get('ema_ramp_steps', 2000)}")
    if o.get("amp") == "bf16":
        parts.append("bf16 steps")
    if config.get("data", {}).get("val_fraction", 0.1) == 0:
        parts.append("all train images, last epoch")
    e = config.get("eval", {})
    if e.get("iou_threshold", 0.5) != 0.5:
        parts.append(f"NMS {e['iou_threshold']:g}")
    if e.get("vote_iou") is not None:
        parts.append(f"vote {e['vote_iou']:g}")
    if e.get("tta_flips"):
        parts.append(f"flips {','.join(e['tta_flips'])}")
    return ", ".join(parts) or "base"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = []
    for run in args.runs:
        rec = load_finished_run(run)
        c = rec["config"]
        kind, epochs = _origin(rec)
        rows.append(
            {
                "run": run.name,
                "init": kind,
                "recipe": _recipe(c),
                "seed": c["seed"],
                "model": c["model"]["name"],
                "input": c["data"]["input_size"],
                "epochs": epochs,
                "best_epoch": rec["final"]["best_epoch"],
                **{m: rec["final"]["test"][m] for m in METRICS},
            }
        )
    lines = [
        "| run | init | recipe | seed | input px | epochs | AP50 | AP50:95 | AP small | precision | recall |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {_init_kind(r['init'])} | {r['recipe']} | {r['seed']} | {r['input']} | {r['epochs']} | "
            + " | ".join(f"{r[m]:.4f}" for m in METRICS)
            + " |"
        )
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = f"{_init_kind(r['init'])} | {r['recipe']} | {r['input']} px, {r['epochs']} ep"
        groups.setdefault(key, []).append(r)
    summary = [
        "| init | recipe | schedule | runs | AP50 mean (spread) | AP50:95 mean (spread) |",
        "|---|---|---|---|---|---|",
    ]
    agg = {}
    for kind, rs in groups.items():
        cell = {}
        for m in ("AP50", "AP50_95"):
            vals = [r[m] for r in rs]
            cell[m] = {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals)}
        agg[kind] = {"runs": len(rs), **cell}
        summary.append(
            f"| {kind} | {len(rs)} | "
            + " | ".join(
                f"{cell[m]['mean']:.4f} ({cell[m]['min']:.4f}-{cell[m]['max']:.4f})"
                for m in ("AP50", "AP50_95")
            )
            + " |"
        )
    text = (
        "## Test-split AP per run\n\n"
        + "\n".join(lines)
        + "\n\n## By initialisation, recipe and schedule (mean, min-max over seeds)\n\n"
        + "\n".join(summary)
        + "\n"
    )
    print(text)
    if args.out:
        atomic_write_text(args.out / "tables.md", text)
        atomic_write_json({"runs": rows, "by_init_recipe": agg}, args.out / "tables.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
