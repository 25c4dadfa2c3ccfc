"""One bench run of the models behind gpu_p30/, each on the backends it is meant for (FP32
students on ONNX Runtime only), each (model, backend) pair in its own process.

    python benchmarks/results/prune_pareto/gpu_p30/bench_pairs.py OUT [--reverse]
"""

import sys

from sarbridge.benchmarks.bench import BenchSettings, run_bench
from sarbridge.runtime.zoo import resolve_artifact

A = "artifacts/"
PAIRS = [
    ("zoo:ssdd_edge_det", "onnxruntime"),
    ("zoo:ssdd_edge_det", "openvino"),
    (A + "ssdd_edge_det_int8_onnxruntime", "onnxruntime"),
    (A + "ssdd_edge_det_int8_openvino", "openvino"),
    (A + "edge_p50_kd24_s0", "onnxruntime"),
    (A + "edge_p50_kd24_s0_int8_onnxruntime", "onnxruntime"),
    (A + "edge_p50_kd24_s0_int8_openvino", "openvino"),
    (A + "edge_p30_kdparent30_s0_gpu", "onnxruntime"),
    (A + "edge_p30_ft30_s0_gpu", "onnxruntime"),
    (A + "edge_p50_p30_kd12_s0", "onnxruntime"),
    (A + "edge_p50_p30_ft12_s0", "onnxruntime"),
]

if __name__ == "__main__":  # the bench's children are spawned: they import this file again
    pairs = [(str(resolve_artifact(m)), b) for m, b in PAIRS]
    if "--reverse" in sys.argv:
        pairs.reverse()
    settings = BenchSettings(data="SSDD", threads=2, batch_sizes=(1,), iterations=50, power="none")
    run_bench([], [], settings, sys.argv[1], pairs=pairs)
