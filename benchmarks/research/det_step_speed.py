"""Detector training-step time by memory layout and precision, side by side in one run.

Times full training steps (forward, loss with assignment, backward, AdamW step) of a
registered detector on one real SSDD training batch (the trainer's own augmentation)
in four settings: float32 / bfloat16 autocast, each in the contiguous (NCHW) and the
channels-last layout, i.e. the trainer's ``optim.amp`` and ``optim.channels_last``.
It also prints the first-step loss of each setting so a precision that changes the
numbers shows up next to its speed.

    python -m sarbridge.benchmarks.research.det_step_speed --size 512 --batch 16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

SETTINGS = (("float32", False), ("float32", True), ("bf16", False), ("bf16", True))


def measure(model_name: str, batch, size: int, amp: str, channels_last: bool, steps: int) -> dict:
    import torch

    from sarbridge.train.losses import detector_loss
    from sarbridge.train.models.registry import build_detector

    torch.manual_seed(0)
    model = build_detector(model_name).train()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, targets = batch
    x = x.contiguous(memory_format=layout)
    times, first_loss = [], None
    for k in range(steps + 1):  # the first step warms up (oneDNN picks its kernels)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss, _ = detector_loss(model, x, targets, size)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k == 0:
            first_loss = loss.item()
        else:
            times.append(time.perf_counter() - t0)
    step = sorted(times)[len(times) // 2]
    return {
        "amp": amp,
        "channels_last": channels_last,
        "median_step_s": step,
        "images_per_s": len(x) / step,
        "first_loss": first_loss,
    }


def main(argv=None) -> int:
    import torch

    from sarbridge.runtime.paths import data_root
    from sarbridge.train.config import from_dict
    from sarbridge.train.data.augment import epoch_batches
    from sarbridge.train.data.detection import make_sets
    from sarbridge.train.engine import DistInfo
    from sarbridge.train.recipes.detect import DetConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="edge_det")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = from_dict(
        DetConfig,
        {
            "data": {"input_size": args.size, "max_train_images": args.batch * 2},
            "augment": {"mosaic": 1.0},
            "optim": {"batch_size": args.batch},
        },
    )
    train, *_ = make_sets(cfg.data)
    batch = next(epoch_batches(cfg, train, 0, DistInfo(), "cpu"))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, AVX512-BF16 "
        f"{torch.cpu._is_avx512_bf16_supported()}; {args.model}, batch {args.batch} x "
        f"{args.size} px (SSDD under {data_root()})"
    )
    print(
        f"{'precision':9s} {'layout':13s} {'step s':>7s} {'images/s':>9s} {'speed-up':>9s} {'loss':>8s}"
    )
    rows = []
    for amp, cl in SETTINGS:
        r = measure(args.model, batch, args.size, amp, cl, args.steps)
        rows.append(r)
        r["speedup"] = rows[0]["median_step_s"] / r["median_step_s"]
        print(
            f"{amp:9s} {'channels-last' if cl else 'contiguous':13s} {r['median_step_s']:7.2f} "
            f"{r['images_per_s']:9.1f} {r['speedup']:8.2f}x {r['first_loss']:8.3f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"threads": torch.get_num_threads(), "size": args.size, "rows": rows}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
