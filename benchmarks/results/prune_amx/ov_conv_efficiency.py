"""How fast OpenVINO's INT8 convolutions run against their size, per convolution, for several
models: batch 1, the deployed precision hint, 150 timed runs after 30 warm-up runs. Each
convolution's time is the median of its per-run counters over the last 100 runs; its MACs come
from the compiled model's shapes (output C x H x W x input channels per group x kernel area).

    python benchmarks/results/prune_amx/ov_conv_efficiency.py MODEL.onnx [MODEL.onnx ...]
"""

import statistics
import sys
import time

import numpy as np
import openvino as ov

THREADS = 2


def conv_rows(path: str) -> tuple[float, list[dict]]:
    core = ov.Core()
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",  # as the runtime's openvino backend for int8 models
        "INFERENCE_NUM_THREADS": THREADS,
        "PERF_COUNT": True,
    }
    compiled = core.compile_model(core.read_model(path), "CPU", config)
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).random((1, 1, 512, 512), dtype=np.float32)
    for _ in range(30):
        request.infer({0: x})
    walls, per_layer = [], {}
    for k in range(150):
        t0 = time.perf_counter()
        request.infer({0: x})
        walls.append(time.perf_counter() - t0)
        if k >= 50:
            for info in request.profiling_info:
                if info.node_type == "Convolution":
                    per_layer.setdefault(info.node_name, []).append(info.real_time.total_seconds())
    shapes = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        if op.get_rt_info()["layerType"].astype(str) != "Convolution":
            continue
        out = op.output(0).get_partial_shape().to_shape()  # [1, C, H, W]
        cin = op.input(0).get_partial_shape().to_shape()[1]
        w = op.input(1).get_partial_shape().to_shape() if op.get_input_size() > 1 else None
        kernel = int(w[-1] * w[-2]) if w is not None and len(w) >= 4 else None
        shapes[op.get_friendly_name()] = (int(cin), int(out[1]), int(out[2]), int(out[3]), kernel)
    rows = []
    for name, times in per_layer.items():
        cin, cout, h, w_, kernel = shapes.get(name, (None,) * 5)
        ms = 1e3 * statistics.median(times)
        macs = cout * h * w_ * cin * kernel if kernel else None
        rows.append({"name": name, "ms": ms, "cin": cin, "cout": cout, "hw": (h, w_),
                     "kernel": kernel, "macs": macs})  # fmt: skip
    return 1e3 * statistics.median(walls), rows


for path in sys.argv[1:]:
    wall, rows = conv_rows(path)
    known = [r for r in rows if r["macs"]]
    total_ms = sum(r["ms"] for r in rows)
    total_macs = sum(r["macs"] for r in known)
    print(f"{path}: median {wall:.2f} ms; {len(rows)} convolutions {total_ms:.2f} ms, "
          f"{total_macs / 1e9:.3f} GMAC -> {2 * total_macs / (total_ms * 1e-3) / 1e9:.0f} GOP/s")  # fmt: skip
    bands = {}
    for r in known:
        band = "<32" if r["cin"] < 32 else "32-63" if r["cin"] < 64 else ">=64"
        b = bands.setdefault(band, [0.0, 0])
        b[0] += r["ms"]
        b[1] += r["macs"]
    for band, (ms, macs) in sorted(bands.items()):
        print(f"  input channels {band:>6}: {ms:6.3f} ms, {macs / 1e9:.3f} GMAC, "
              f"{2 * macs / (ms * 1e-3) / 1e9:5.0f} GOP/s")  # fmt: skip
    for r in sorted(rows, key=lambda r: -r["ms"])[:12]:
        gops = 2 * r["macs"] / (r["ms"] * 1e-3) / 1e9 if r["macs"] else float("nan")
        print(f"    {r['ms']:.3f} ms  {r['cin']:>4} -> {r['cout']:>4} k{r['kernel']} "
              f"{r['hw'][0]}x{r['hw'][1]}  {gops:5.0f} GOP/s  {r['name']}")  # fmt: skip
