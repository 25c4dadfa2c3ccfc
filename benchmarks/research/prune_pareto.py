"""The pruning + distillation Pareto front of the zoo edge detector on this CPU (issue: pruning
and distillation). The zoo detector is pruned once per MAC ratio (``sarbridge compress --method
prune --epochs 0``); from each pruned model two students are trained with the same schedule
and seed, one distilled from the unpruned parent (``--method distill``), one not (``--method
finetune``). Finished runs (run.json holds ``compare``) are skipped and an interrupted one is
resumed, so the script can be started again until every run exists:

    OMP_NUM_THREADS=1 taskset -c 1 python -m sarbridge.benchmarks.research.prune_pareto --threads 1

The bench of the results (FP32 and INT8 of each, in one run) is benchmarks/bench.py; the table
and plot: `--table` (this script).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

PARENT = "zoo:ssdd_edge_det"
# (MACs kept, distilled, seed, epochs), in the order they are run
PLAN = [
    (0.3, True, 0, 12),
    (0.3, False, 0, 12),
    (0.5, True, 0, 24),
    (0.3, True, 1, 12),
    (0.3, False, 1, 12),
    (0.5, False, 0, 24),
    (0.75, True, 0, 12),
    (0.75, False, 0, 12),
]


def pruned_name(ratio: float) -> str:
    return f"edge_p{round(ratio * 100)}"


def run_name(ratio: float, distilled: bool, seed: int, epochs: int) -> str:
    return f"{pruned_name(ratio)}_{'kd' if distilled else 'ft'}{epochs}_s{seed}"


def _done(out: Path) -> bool:
    record = out / "run.json"
    return record.is_file() and "compare" in json.loads(record.read_text())


def _run(cmd: list[str]) -> int:
    print(" ".join(cmd), flush=True)
    return subprocess.run(cmd, check=False).returncode


def table(runs_dir: Path, names: list[str] | None = None) -> str:
    """The finished runs of the plan (and their pruned starting points), or of ``names``,
    against the parent: test AP (PyTorch, the runtime's decode), MACs, parameters, FP32 ONNX
    Runtime latency as measured by each step (one thread, on the load of its moment)."""
    rows = ["| run | MACs kept | teacher | epochs | seed | AP50 | AP50:95 | AP small | params M "
            "| ORT FP32 ms (step's own) |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    if names is None:
        names = [pruned_name(r) for r in sorted({p[0] for p in PLAN}, reverse=True)]
        names += [run_name(*p) for p in PLAN]
    parent_done = False
    for name in names:
        record = runs_dir / name / "run.json"
        if not _done(runs_dir / name):
            continue
        c = json.loads(record.read_text())["compare"]
        if not parent_done:
            p = c["parent"] if c["method"] == "prune" else None
            if p:
                rows.append(_row(f"{p['name']} (parent)", 1.0, "-", "-", "-", p))
                parent_done = True
        base = c["parent"]["macs"] if c["method"] == "prune" else None
        kept = c["child"]["macs"] / base if base else None
        if kept is None:  # a student: its pruned parent's ratio (unknown if that is unfinished)
            record = runs_dir / c["parent"]["name"] / "run.json"
            pruned = json.loads(record.read_text()).get("compare") if record.is_file() else None
            kept = pruned["child"]["macs"] / pruned["parent"]["macs"] if pruned else None
        teacher = "-" if not c.get("teacher") else c["teacher"]
        rows.append(_row(name, kept, teacher, c["epochs"], c["seed"], c["child"]))
    return "\n".join(rows)


def _row(name, kept, teacher, epochs, seed, m) -> str:
    t = m.get("test", {})

    def f(key):
        return f"{t[key]:.4f}" if key in t else "-"

    return (
        f"| {name} | {'-' if kept is None else f'{kept:.3f}'} | {teacher} | {epochs} | {seed} | {f('AP50')} | {f('AP50_95')} "
        f"| {f('AP_small')} | {m['parameters'] / 1e6:.3f} | {m.get('ort_latency_ms_p50', '-')} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs-dir", type=Path, default=Path("runs"))
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", help="comma-separated run names to run (default: the whole plan)")
    ap.add_argument(
        "--table", action="store_true", help="print the finished runs as a markdown table and exit"
    )
    ap.add_argument("--names", help="--table: comma-separated run names (default: the plan's)")
    args = ap.parse_args()
    if args.table:
        print(table(args.runs_dir, args.names.split(",") if args.names else None))
        return 0
    only = set(args.only.split(",")) if args.only else None
    base = [sys.executable, "-m", "sarbridge", "compress", "--threads", str(args.threads)]
    for ratio, distilled, seed, epochs in PLAN:
        name = run_name(ratio, distilled, seed, epochs)
        if only and name not in only:
            continue
        pruned = args.runs_dir / pruned_name(ratio)
        if not _done(pruned):  # one pruned model per ratio: both students start from it
            code = _run([*base, "--method", "prune", "--from", PARENT, "--ratio", str(ratio),
                         "--epochs", "0", "--out", str(pruned), "--resume"])  # fmt: skip
            if code:
                return code
        out = args.runs_dir / name
        if _done(out):
            print(f"{name}: done")
            continue
        method = ["--method", "distill", "--teacher", PARENT] if distilled else ["--method", "finetune"]
        code = _run([*base, *method, "--from", str(pruned), "--epochs", str(epochs),
                     "--lr", str(args.lr), "--seed", str(seed), "--out", str(out), "--resume"])  # fmt: skip
        if code:
            print(f"{name}: exit code {code}", flush=True)
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
