"""What users would pick instead: Ultralytics YOLOv8n and YOLO11n trained on SSDD on this CPU.

Three steps, each resumable (the ``peers`` extra installs Ultralytics):

    python -m sarbridge.benchmarks.research.peers prepare          # SSDD -> Ultralytics layout
    OMP_NUM_THREADS=1 taskset -c 1 python -m sarbridge.benchmarks.research.peers train \\
        --model yolov8n --epochs 60 --threads 1                   # again: resumes from last.pt
    ... train --model yolov8n --epochs 30 --shorten-from 60   # an unfinished 60-epoch run -> 30
    python -m sarbridge.benchmarks.research.peers export --model yolov8n   # ONNX FP32, OpenVINO INT8

``prepare`` converts SSDD through sarbridge's own reader (the official split, every box the
reader keeps, so the counts equal ``sarbridge data check``) into Ultralytics' YOLO layout
(``images/<split>`` links to the JPEGs, ``labels/<split>`` normalised ``class cx cy w h``).
Training uses the train split only; Ultralytics needs a validation set, so a fixed tenth of
the train images is listed as ``val`` (monitoring only: validation during training is off and
the last epoch is kept, as for the zoo detector, which trained on all train images with no
validation). The test split is never read by training. Both peers start from random
weights (no COCO-pretrained file can be downloaded here), at 512 px, batch 16.

``--shorten-from E`` continues an unfinished ``<model>_ssdd_e<E>`` run under a shorter
schedule: its last checkpoint is copied into ``<model>_ssdd_e<epochs>`` with the epoch count
changed (the E-epoch run is kept as it was) and Ultralytics resumes it, rebuilding the
learning-rate schedule and the last-10-epochs mosaic switch for the new count. The epochs
already trained followed the E-epoch schedule; ``schedule.json`` in the new run says which.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

MODELS = ("yolov8n", "yolo11n")
WORK = Path("runs/peers")


def _yolo_lines(rec) -> list[str]:
    lines = []
    for (x1, y1, x2, y2), label in zip(rec.boxes.tolist(), rec.labels.tolist(), strict=True):
        cx, cy = (x1 + x2) / 2 / rec.width, (y1 + y2) / 2 / rec.height
        w, h = (x2 - x1) / rec.width, (y2 - y1) / rec.height
        lines.append(f"{int(label)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def prepare(data: str = "SSDD", work: Path = WORK) -> dict:
    """Write ``work/ssdd_yolo`` (images as links, labels, data.yaml); returns the counts."""
    from sarbridge.runtime.annotations import read_dataset
    from sarbridge.runtime.fileio import atomic_write_text
    from sarbridge.runtime.paths import resolve_data_path

    ds = read_dataset(resolve_data_path(data))
    if ds.problems:
        raise SystemExit(f"{data}: {len(ds.problems)} problems; run sarbridge data check first")
    root = (work / "ssdd_yolo").resolve()
    train = ds.split("train")
    splits = {"train": train, "val": train[::10], "test": ds.split("test")}
    counts = {}
    for split, records in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for rec in records:
            link = root / "images" / split / rec.path.name
            if not link.is_symlink():
                link.symlink_to(rec.path.resolve())
            atomic_write_text(
                root / "labels" / split / f"{rec.path.stem}.txt", "\n".join(_yolo_lines(rec)) + "\n"
            )
        counts[split] = {"images": len(records), "boxes": int(sum(len(r.boxes) for r in records))}
    names = "\n".join(f"  {k}: {n}" for k, n in enumerate(ds.classes))
    atomic_write_text(
        root / "data.yaml",
        f"path: {root}\ntrain: images/train\nval: images/val\ntest: images/test\nnames:\n{names}\n",
    )
    atomic_write_text(root / "counts.json", json.dumps(counts, indent=1) + "\n")
    return counts


def shorten(model: str, epochs: int, longer: int, work: Path = WORK) -> Path:
    """Copy the unfinished ``longer``-epoch run's last checkpoint into an ``epochs``-epoch run."""
    import shutil

    import torch

    from sarbridge.runtime.fileio import atomic_write_text

    src = (work / f"{model}_ssdd_e{longer}").resolve()
    dst = (work / f"{model}_ssdd_e{epochs}").resolve()
    last = dst / "weights" / "last.pt"
    if last.is_file():
        return last
    ckpt = torch.load(src / "weights" / "last.pt", map_location="cpu", weights_only=False)
    done = int(ckpt.get("epoch", -1)) + 1  # Ultralytics counts epochs from 0; -1 = finished
    if done <= 0 or done >= epochs or epochs >= longer:
        raise SystemExit(
            f"{src}: {done} of {longer} epochs trained; cannot shorten it to {epochs} epochs"
        )
    args = ckpt["train_args"]
    args.update(epochs=epochs, name=dst.name, save_dir=str(dst))
    (dst / "weights").mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "results.csv", dst / "results.csv")
    torch.save(ckpt, last.with_suffix(".part"))
    last.with_suffix(".part").replace(last)
    note = {"epochs": epochs, "from": src.name, "epochs_under_previous_schedule": done}
    atomic_write_text(dst / "schedule.json", json.dumps(note, indent=1) + "\n")
    return last


def train(
    model: str, epochs: int, threads: int, batch: int = 16, work: Path = WORK,
    shorten_from: int | None = None,
) -> Path:  # fmt: skip
    """Train (or resume) ``model`` from random weights; returns the last checkpoint."""
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(threads)
    data = (work / "ssdd_yolo" / "data.yaml").resolve()
    if not data.is_file():
        raise SystemExit(f"{data} is missing: run `peers prepare` first")
    name = f"{model}_ssdd_e{epochs}"
    if shorten_from is not None:
        shorten(model, epochs, shorten_from, work)
    last = (work / name / "weights" / "last.pt").resolve()
    if last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        if ckpt.get("epoch", -1) == -1:  # Ultralytics marks a finished run's last.pt with -1
            print(f"{name}: finished ({last})")
            return last
        print(f"{name}: resuming from {last}")
        YOLO(str(last)).train(resume=True, workers=1)
        return last
    YOLO(f"{model}.yaml").train(
        data=str(data), epochs=epochs, imgsz=512, batch=batch, device="cpu", workers=1,
        project=str(work.resolve()), name=name, exist_ok=True, pretrained=False, seed=0,
        deterministic=True, amp=False, plots=False, val=False, save_period=1,
    )  # fmt: skip
    return last


def export(model: str, epochs: int, work: Path = WORK) -> dict:
    """Ultralytics' own exports of the trained peer: ONNX FP32 and OpenVINO INT8 (its NNCF)."""
    from ultralytics import YOLO

    weights = (work / f"{model}_ssdd_e{epochs}" / "weights" / "last.pt").resolve()
    data = (work / "ssdd_yolo" / "data.yaml").resolve()
    onnx = YOLO(str(weights)).export(format="onnx", imgsz=512, opset=17, simplify=True)
    openvino = YOLO(str(weights)).export(format="openvino", imgsz=512, int8=True, data=str(data))
    return {"onnx": str(onnx), "openvino_int8": str(openvino)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--data", default="SSDD")
    for step in ("train", "export"):
        s = sub.add_parser(step)
        s.add_argument("--model", choices=MODELS, required=True)
        s.add_argument("--epochs", type=int, default=60)
        if step == "train":
            s.add_argument("--threads", type=int, default=os.cpu_count())
            s.add_argument("--batch", type=int, default=16)
            s.add_argument("--shorten-from", type=int, metavar="E", default=None,
                           help="continue the unfinished E-epoch run under --epochs")
    args = ap.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no downloads, no hub calls
    if args.step == "prepare":
        print(json.dumps(prepare(args.data), indent=1))
    elif args.step == "train":
        print(train(args.model, args.epochs, args.threads, args.batch, shorten_from=args.shorten_from))
    else:
        print(json.dumps(export(args.model, args.epochs), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
