"""ONNX Runtime time of the DFL box head's expectation alone: the Softmax-node form against
``EdgeDetector.expected_distance`` written out, over the three scales of a 512 px input, one
thread, alternating runs (results: benchmarks/results/cpu_epyc_2core_dfl/README.md).

    python -m sarbridge.benchmarks.research.dfl_expectation_timing --runs 30
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort
    import torch

    from sarbridge.train.models.registry import build_detector

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="alternating timed runs per form")
    args = ap.parse_args(argv)

    model = build_detector("edge_det", box_bins=16)
    values = model.bin_values.view(1, 1, -1, 1, 1)
    forms = {
        "softmax node": lambda b: (b.softmax(2) * values).sum(2).clamp(min=1e-3),
        "written out": model.expected_distance,
    }
    xs = tuple(torch.randn(1, 4, 16, s, s) * 3 for s in (64, 32, 16))  # [1, 4 sides, bins, s, s]

    class Head(torch.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, *xs):
            return [torch.log(self.fn(x)) for x in xs]

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sessions, times = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for name, fn in forms.items():
            path = str(Path(folder) / f"{name.replace(' ', '_')}.onnx")
            torch.onnx.export(
                Head(fn), xs, path, input_names=["a", "b", "c"], opset_version=17, dynamo=False
            )
            sessions[name] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            times[name] = []
    feed = {k: x.numpy() for k, x in zip("abc", xs, strict=True)}
    for _ in range(args.runs):
        for name, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feed)
            times[name].append(time.perf_counter() - t)
    for name, t in times.items():
        print(f"{name}: median {np.median(t) * 1000:.2f} ms per image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
