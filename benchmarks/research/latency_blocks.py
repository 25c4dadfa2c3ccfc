"""Batch-1 network latency of several artifacts, measured in alternating blocks in one process.

On the 2-core VMs behind benchmarks/results, a model's batch-1 latency moves by tens of percent
from one process to the next, so two rows of one ``sarbridge bench`` run (each model in its own
process) can disagree on which of two models is faster. Here every (artifact, backend) pair is
opened once, through the runtime's own backends (the deployed precision hints), and measured in
``--rounds`` rounds: in each round every pair runs ``--warmup`` untimed and ``--iterations``
timed inferences of the same real input, one pair after the other (sequential blocks, never
interleaved run by run: facts.md). A pair's figure is the median of its round medians, with
the lowest and highest round median beside it, so a drift of the machine during the run shows
as spread and hits every pair alike.

    python -m sarbridge.benchmarks.research.latency_blocks \\
        zoo:ssdd_edge_det@onnxruntime artifacts/ssdd_edge_det_int8_openvino@openvino \\
        --threads 2 --rounds 7 --json latency.json

The input is the first SSDD test image as the deployed pipeline prepares it (its first tile).
Only the network is timed (``backend.run``), not reading, preprocessing or decoding.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def parse_pair(text: str) -> tuple[str, str]:
    """``ARTIFACT@BACKEND`` -> (artifact, backend); ValueError on any other form."""
    artifact, sep, backend = text.rpartition("@")
    if not sep or not artifact or not backend:
        raise ValueError(
            f"expected ARTIFACT@BACKEND (e.g. zoo:ssdd_edge_det@onnxruntime), got {text!r}"
        )
    return artifact, backend


def first_test_image(data: Path) -> Path:
    """The first image of the SSDD test split."""
    first = (data / "SSDD" / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    return data / "SSDD" / "JPEGImages" / f"{first}.jpg"


def _rounds(opened, medians, rounds: int, warmup: int, iterations: int) -> None:
    """``rounds`` rounds of one block per opened pair; each block's median onto ``medians``."""
    for r in range(rounds):
        for k, (_, _, be, x) in enumerate(opened):
            for _ in range(warmup):
                be.run(x)
            times = []
            for _ in range(iterations):
                t0 = time.perf_counter()
                be.run(x)
                times.append(time.perf_counter() - t0)
            medians[k].append(1000 * statistics.median(times))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{m[-1]:.2f}" for m in medians), flush=True)


def measure(pairs, threads: int, rounds: int, warmup: int, iterations: int, data: Path) -> list:
    from sarbridge.runtime.detector import Detector

    image, opened = first_test_image(data), []
    for artifact, backend in pairs:
        det = Detector.from_artifact(artifact, backend=backend, threads=threads)
        # the network input the deployed pipeline makes of the image (its first tile)
        begun = det.begin(image, fresh_inputs=True)
        begun.close()
        opened.append((artifact, backend, det.backend, begun.first[0][:1]))
    medians = [[] for _ in opened]
    try:
        _rounds(opened, medians, rounds, warmup, iterations)
    finally:
        for _, _, be, _ in opened:
            be.close()
    return [
        {
            "artifact": artifact,
            "backend": backend,
            "backend_description": getattr(be, "description", backend),
            "median_ms": statistics.median(m),
            "min_round_ms": min(m),
            "max_round_ms": max(m),
            "round_medians_ms": m,
        }
        for (artifact, backend, be, _), m in zip(opened, medians, strict=True)
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("pairs", nargs="+", help="ARTIFACT@BACKEND (artifact folder or zoo:<name>)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--data", type=Path, help="the data folder (default: $SARBRIDGE_DATA)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    try:
        pairs = [parse_pair(p) for p in args.pairs]
    except ValueError as exc:
        ap.error(str(exc))
    from sarbridge.runtime.paths import data_root

    data = args.data or data_root()
    rows = measure(pairs, args.threads, args.rounds, args.warmup, args.iterations, data)
    first = rows[0]["median_ms"]
    print(f"\nbatch-1 network latency, {args.threads} threads, median of {args.rounds} round "
          f"medians ({args.iterations} runs each); ratio: the first row's time / the row's")  # fmt: skip
    for row in rows:
        print(f"  {row['artifact']:58s} {row['backend']:12s} {row['median_ms']:7.2f} ms "
              f"[{row['min_round_ms']:.2f}-{row['max_round_ms']:.2f}]  {first / row['median_ms']:5.2f}x")  # fmt: skip
    if args.json:
        settings = {k: getattr(args, k) for k in ("threads", "rounds", "warmup", "iterations")}
        args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
