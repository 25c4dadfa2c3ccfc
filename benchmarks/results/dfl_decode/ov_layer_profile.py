"""OpenVINO's per-layer counters (PERF_COUNT) for one model, batch 1, summed by layer type after
150 timed runs: where the time goes.

    python benchmarks/results/dfl_decode/ov_layer_profile.py MODEL.onnx [threads]
"""

import collections
import sys
import time

import numpy as np
import openvino as ov

core = ov.Core()
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
config = {
    "PERFORMANCE_HINT": "LATENCY",
    "INFERENCE_PRECISION_HINT": "f32",  # as the runtime's openvino backend for int8 models
    "INFERENCE_NUM_THREADS": threads,
    "PERF_COUNT": True,
}
request = core.compile_model(core.read_model(sys.argv[1]), "CPU", config).create_infer_request()
x = np.random.default_rng(0).random((1, 1, 512, 512), dtype=np.float32)
for _ in range(30):
    request.infer({0: x})
times = []
for _ in range(150):
    t0 = time.perf_counter()
    request.infer({0: x})
    times.append(time.perf_counter() - t0)
total, count = collections.Counter(), collections.Counter()
for layer in request.get_profiling_info():  # the last run's counters
    if layer.status.name == "EXECUTED":
        key = (layer.node_type, layer.exec_type)
        total[key] += layer.real_time.total_seconds() * 1e3
        count[key] += 1
print(
    f"{sys.argv[1]}: median {np.median(times) * 1e3:.2f} ms over 150 runs, {threads} threads; "
    f"the last run's layers sum to {sum(total.values()):.2f} ms"
)
for (node, kernel), ms in total.most_common(16):
    print(f"  {ms:6.3f} ms  {count[(node, kernel)]:3d} x {node} ({kernel})")
