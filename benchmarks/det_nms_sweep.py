"""Re-evaluate a trained detector run at several NMS IoU thresholds, on validation and test.

Loads the run's best checkpoint (EMA weights where kept) and its config, rebuilds the
same validation/test sets, and scores each NMS IoU with the trainer's evaluation (the
runtime's decode and COCO evaluator). Pick the threshold on the validation rows; the
test rows show what that choice gives.

    python -m sarbridge.benchmarks.det_nms_sweep runs/det_edge_bnn_512_e60_m1 --iou 0.5 0.6 0.7
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def sweep(run: Path, ious: list[float], splits=("val", "test")) -> list[dict]:
    import torch

    from sarbridge.train.detect_train import evaluate, load_detector, make_sets

    model, cfg, _ = load_detector(run)
    _, val, test, classes, _ = make_sets(cfg)
    sets = {"val": val, "test": test}
    rows = []
    for iou in ious:
        c = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, iou_threshold=iou))
        for split in splits:
            m = evaluate(model, sets[split], c, torch.device("cpu"), classes)
            rows.append({"split": split, "nms_iou": iou, **m})
            print(
                f"{split:5s} NMS IoU {iou:.2f}: AP50 {m['AP50']:.4f}  AP50:95 {m['AP50_95']:.4f}  "
                f"AP small {m['AP_small']:.4f}  AR {m['AR']:.4f}",
                flush=True,
            )
    return rows


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--iou", nargs="+", type=float, default=[0.5, 0.6, 0.7])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = sweep(args.run, args.iou)
    val = [r for r in rows if r["split"] == "val"]
    best = max(val, key=lambda r: r["AP50_95"])
    print(f"best on validation (AP50:95): NMS IoU {best['nms_iou']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
