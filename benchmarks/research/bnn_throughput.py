"""BNN training throughput (pairs/s) per backbone on this machine.

Times full training steps (both branches forward, loss with in-batch
negatives, backward, SGD step) on random inputs after warm-up, for every
registered backbone, side by side in one run.

    python -m sarbridge.benchmarks.research.bnn_throughput --sizes 128 256 --batch 20 --steps 3
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def measure(backbone: str, size: int, batch: int, steps: int, warmup: int) -> dict:
    import numpy as np
    import torch

    from sarbridge.train.data.pairs import derangement
    from sarbridge.train.losses.bnn import bnn_loss
    from sarbridge.train.models.bnn import BridgeNet, bnn_distance

    torch.manual_seed(0)
    net = BridgeNet(backbone, patch_size=size)
    opt = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    sar, optical = torch.rand(batch, 1, size, size), torch.rand(batch, 3, size, size)
    perm = derangement(batch, np.random.default_rng(0))
    times = []
    for k in range(warmup + steps):
        t0 = time.perf_counter()
        z_s, z_o = net(sar, optical)
        loss, _, _ = bnn_loss(bnn_distance(z_s, z_o), bnn_distance(z_s, z_o[perm]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    step = sorted(times)[len(times) // 2]
    params = sum(p.numel() for p in net.parameters()) / 2
    return {
        "backbone": backbone,
        "input": size,
        "batch": batch,
        "median_step_s": step,
        "pairs_per_s": batch / step,
        "params_per_branch_M": params / 1e6,
    }


def main(argv=None) -> int:
    import torch

    from sarbridge.train.models.backbones import list_backbones

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", nargs="+", default=list_backbones())
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(
        f"{'backbone':10s} {'input':>5s} {'batch':>5s} {'step s':>8s} {'pairs/s':>8s} {'M params/branch':>16s}"
    )
    rows = []
    for size in args.sizes:
        for name in args.backbones:
            r = measure(name, size, args.batch, args.steps, args.warmup)
            rows.append(r)
            print(
                f"{name:10s} {size:5d} {args.batch:5d} {r['median_step_s']:8.2f} {r['pairs_per_s']:8.1f} "
                f"{r['params_per_branch_M']:16.2f}",
                flush=True,
            )
    if args.json:
        args.json.write_text(
            json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
