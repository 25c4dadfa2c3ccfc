"""PyTorch GPU latency, throughput and energy of a trained detector (NVML power probe).

Times the network alone (input already on the GPU, outputs left there; host/device copies
excluded) at batch 1 and batch 8, FP32 and BF16 autocast, after a warm-up; energy per image
comes from the NVML probe over the same timed window.

    python -m sarbridge.benchmarks.research.torch_gpu_latency --run runs/det_edge_bnn --size 512 --out gpu_latency.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from sarbridge.runtime.power import open_probe
from sarbridge.train.checkpoint import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures GPU latency")
    loaded = load_model(args.run)
    model, cfg = loaded.model, loaded.config
    model = model.cuda().eval()
    probe, probe_note = open_probe("nvml")
    rows = []
    for dtype in ("fp32", "bf16"):
        for batch in (1, 8):
            x = torch.rand(batch, 1, args.size, args.size, device="cuda")
            with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=dtype == "bf16"):
                for _ in range(30):
                    model(x)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                times = []

                def timed(x, times):
                    for _ in range(args.iters):
                        t = time.perf_counter()
                        model(x)
                        torch.cuda.synchronize()
                        times.append(time.perf_counter() - t)

                _, reading = probe.measure(timed, x, times)
            ms = np.array(times) * 1000
            images = batch * args.iters
            rows.append(
                {
                    "dtype": dtype,
                    "batch": batch,
                    "p50_ms": float(np.percentile(ms, 50)),
                    "p90_ms": float(np.percentile(ms, 90)),
                    "p99_ms": float(np.percentile(ms, 99)),
                    "images_per_s": images / float(ms.sum() / 1000),
                    "peak_gpu_mem_mib": torch.cuda.max_memory_allocated() / 2**20,
                    "power": reading.to_dict(),
                    "energy_per_image_mj": 1000 * reading.energy_j / images,
                }
            )
            r = rows[-1]
            print(
                f"{dtype} batch {batch}: p50 {r['p50_ms']:.2f} ms, {r['images_per_s']:.0f} img/s, "
                f"{reading.mean_w:.0f} W mean ({reading.method}), {r['energy_per_image_mj']:.1f} mJ/image"
            )
    out = {
        "run": args.run,
        "model": cfg.model.name,
        "input_size": args.size,
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "power_probe": probe_note,
        "copies_included": False,
        "rows": rows,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
