"""Re-evaluate a trained detector run at several NMS IoU thresholds (and box-voting IoUs and
test-time flips), on validation and test.

Loads the run's best checkpoint (EMA weights where kept) and its config, rebuilds the
same validation/test sets, and scores each NMS IoU x box-voting IoU with the trainer's
evaluation (the runtime's decode and COCO evaluator). Pick the setting on the validation
rows; the test rows show what that choice gives.

    python -m sarbridge.benchmarks.research.det_nms_sweep runs/det_edge_bnn_512_e60_m1 --iou 0.5 0.6 0.7 \
        --vote-iou off 0.7 --tta-flips off h h,v,hv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def sweep(
    run: Path,
    ious: list[float],
    splits=("val", "test"),
    votes: tuple = (None,),
    flip_sets: tuple = ((),),
) -> list[dict]:
    import torch

    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.data.detection import make_sets
    from sarbridge.train.evaluation import evaluate

    loaded = load_model(run)
    model, cfg = loaded.model, loaded.config
    _, val, test, classes, _ = make_sets(cfg.data)
    sets = {"val": val, "test": test}
    rows = []
    for flips in flip_sets:
        for iou in ious:
            for vote in votes:
                e = dataclasses.replace(
                    cfg.eval, iou_threshold=iou, vote_iou=vote, tta_flips=tuple(flips)
                )
                c = dataclasses.replace(cfg, eval=e)
                for split in splits:
                    if not len(sets[split].records):
                        continue  # a run trained without a validation split
                    m = evaluate(model, sets[split], c, torch.device("cpu"), classes)
                    rows.append(
                        {
                            "split": split,
                            "nms_iou": iou,
                            "vote_iou": vote,
                            "tta_flips": list(flips),
                            **m,
                        }
                    )
                    print(
                        f"{split:5s} NMS IoU {iou:.2f} vote {_vote_text(vote):4s} "
                        f"flips {_flips_text(flips):7s}: "
                        f"AP50 {m['AP50']:.4f}  AP50:95 {m['AP50_95']:.4f}  "
                        f"AP75 {m['AP75']:.4f}  AP small {m['AP_small']:.4f}  AR {m['AR']:.4f}",
                        flush=True,
                    )
    return rows


def _flips_text(flips) -> str:
    return ",".join(flips) if flips else "off"


def _flips_arg(text: str) -> tuple[str, ...]:
    from sarbridge.runtime.decode import parse_flips

    try:
        return parse_flips(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _vote_text(vote: float | None) -> str:
    return "off" if vote is None else f"{vote:.2f}"


def _vote_arg(text: str) -> float | None:
    from sarbridge.runtime.boxes import parse_vote_iou

    try:
        return parse_vote_iou(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--iou", nargs="+", type=float, default=[0.5, 0.6, 0.7])
    ap.add_argument(
        "--vote-iou",
        nargs="+",
        type=_vote_arg,
        default=[None],
        help="box-voting IoUs after NMS ('off': none; default off only)",
    )
    ap.add_argument(
        "--tta-flips",
        nargs="+",
        type=_flips_arg,
        default=[()],
        help="test-time flip sets, each comma-separated among h, v, hv or 'off' (default off only)",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = sweep(args.run, args.iou, votes=tuple(args.vote_iou), flip_sets=tuple(args.tta_flips))
    val = [r for r in rows if r["split"] == "val"]
    if val:
        best = max(val, key=lambda r: r["AP50_95"])
        print(
            f"best on validation (AP50:95): NMS IoU {best['nms_iou']:.2f}, "
            f"box voting {_vote_text(best['vote_iou'])}, flips {_flips_text(best['tta_flips'])}"
        )
    else:
        print("the run has no validation split: nothing to pick a setting on")
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
