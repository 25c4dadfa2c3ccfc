"""Tables of BNN matching results from finished runs (run.json), as Markdown and JSON.

    python -m sarbridge.benchmarks.research.bnn_tables runs/bnn_edge runs/bnn_resnet50_cpu \\
        --curve runs/bnn_edge_frac25 runs/bnn_edge_frac50 runs/bnn_edge --out benchmarks/results/bnn
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sarbridge.benchmarks.research.run_records import load_finished_run
from sarbridge.runtime.fileio import atomic_write_json, atomic_write_text


def table1(runs: list[Path]) -> tuple[str, list[dict]]:
    head = (
        "| run | backbone | input px | epochs | optimizer | train/val/test pairs | threshold (from) | "
        "accuracy | precision | recall | ROC AUC | top-1 | top-5 |\n|" + "---|" * 13
    )
    lines, rows = [head], []
    for run in runs:
        rec = load_finished_run(run)
        c, f = rec["config"], rec["final"]
        t, p = f["test"], f["patches"]
        row = {
            "run": run.name,
            "backbone": c["model"]["backbone"],
            "input": c["data"]["input_size"],
            "epochs": c["optim"]["epochs"],
            "optimizer": c["optim"]["name"],
            "pairs": p,
            "threshold": f["threshold"],
            "threshold_source": f["threshold_source"],
            **{
                k: t[k]
                for k in (
                    "accuracy",
                    "precision",
                    "recall",
                    "auc",
                    "retrieval_top1",
                    "retrieval_top5",
                )
            },
            "retrieval_candidates": t["retrieval_candidates"],
            "best_epoch": f["best_epoch"],
        }
        rows.append(row)
        lines.append(
            f"| {run.name} | {row['backbone']} | {row['input']} | {row['epochs']} | {row['optimizer']} | "
            f"{p['train']}/{p['val']}/{p['test']} | {f['threshold']:.3f} ({f['threshold_source']}) | "
            f"{t['accuracy']:.3f} | {t['precision']:.3f} | {t['recall']:.3f} | {t['auc']:.3f} | "
            f"{t['retrieval_top1']:.3f} | {t['retrieval_top5']:.3f} |"
        )
    return "\n".join(lines), rows


def table2(runs: list[Path]) -> tuple[str, list[dict]]:
    head = "| train fraction | train pairs | accuracy | ROC AUC | top-1 |\n|---|---|---|---|---|"
    lines, rows = [head], []
    for run in runs:
        rec = load_finished_run(run)
        frac = rec["config"]["data"]["train_fraction"]
        t = rec["final"]["test"]
        rows.append(
            {
                "run": run.name,
                "train_fraction": frac,
                "train_pairs": rec["final"]["patches"]["train"],
                "accuracy": t["accuracy"],
                "auc": t["auc"],
                "retrieval_top1": t["retrieval_top1"],
            }
        )
        lines.append(
            f"| {frac:.2f} | {rec['final']['patches']['train']} | {t['accuracy']:.3f} | {t['auc']:.3f} | "
            f"{t['retrieval_top1']:.3f} |"
        )
    return "\n".join(lines), sorted(rows, key=lambda r: r["train_fraction"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="runs for the matching table")
    ap.add_argument(
        "--curve",
        nargs="*",
        type=Path,
        default=[],
        help="runs of one backbone at several train fractions",
    )
    ap.add_argument("--out", type=Path, help="folder for tables.md and tables.json")
    args = ap.parse_args(argv)
    t1, rows1 = table1(args.runs)
    text = "## Matching on held-out real pairs (test scenes)\n\n" + t1 + "\n"
    rows2 = []
    if args.curve:
        t2, rows2 = table2(args.curve)
        text += "\n## Accuracy against the number of training pairs\n\n" + t2 + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out / "tables.md", text)
        atomic_write_json({"matching": rows1, "curve": rows2}, args.out / "tables.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
