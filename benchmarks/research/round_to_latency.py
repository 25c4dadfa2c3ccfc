"""FP32 ONNX Runtime latency of the zoo edge detector pruned to half its MACs with each
``round_to`` (what the default of ``sarbridge compress --method prune --round-to`` rests on):

    OMP_NUM_THREADS=1 python -m sarbridge.benchmarks.research.round_to_latency --threads 1

Network alone, batch 1, median of 20 runs after 5, every model in this one process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def latency_ms(model, x, threads: int, folder: Path) -> float:
    import onnxruntime as ort
    import torch

    path = folder / "model.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), opset_version=17, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    times = []
    for k in range(25):
        t0 = time.perf_counter()
        sess.run(None, feed)
        if k >= 5:
            times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000


def main() -> int:
    import torch

    from sarbridge.compress.prune import PruneSettings, prune
    from sarbridge.train.checkpoint import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ratio", type=float, default=0.5)
    args = ap.parse_args()
    parent = load_model("zoo:ssdd_edge_det").model
    x = torch.zeros(1, 1, 512, 512)
    with tempfile.TemporaryDirectory() as tmp:
        base = latency_ms(parent, x, args.threads, Path(tmp))
        print(f"| round_to | MACs kept | ms | x parent |\n|---|---|---|---|\n| parent | 1.000 | "
              f"{base:.1f} | 1.00 |")  # fmt: skip
        for round_to in (8, 16, 32):
            pruned, r = prune(parent, x, PruneSettings(args.ratio, round_to=round_to), progress=False)
            ms = latency_ms(pruned, x, args.threads, Path(tmp))
            print(f"| {round_to} | {r.macs_kept:.3f} | {ms:.1f} | {base / ms:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
