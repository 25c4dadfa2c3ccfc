"""Training and evaluating SAR ship detectors on SSDD-style data.

Images go through the runtime's preprocessing, are letterboxed to the input
size and augmented with flips, rot90 and scale jitter (no colour jitter: SAR
intensities carry meaning). The official train split is split again (seeded)
into train and a validation share that picks the best checkpoint by AP50:95;
the test split is scored once, at the end, through the same numpy decode the
deployed model uses.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sarbridge.runtime.annotations import ImageRecord, read_dataset
from sarbridge.runtime.decode import letterbox
from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.imageio import read_image
from sarbridge.runtime.metrics import Detections, coco_ap, precision_recall_at
from sarbridge.runtime.paths import resolve_data_path
from sarbridge.runtime.preprocess import SarPreprocess, preprocess
from sarbridge.train.config import config_hash, from_dict, to_dict
from sarbridge.train.engine import (
    DistInfo,
    EpochPlan,
    Trainer,
    cleanup_distributed,
    load_checkpoint,
    make_optimizer,
    record_final,
    setup_distributed,
    shard,
    start_run,
    unwrap,
    wrap_ddp,
)

# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class DetData:
    root: str = "SSDD"
    train_split: str = "train"
    test_split: str = "test"
    val_fraction: float = 0.1  # of the train split, for checkpoint selection
    split_seed: int = 0
    input_size: int = 512
    preprocess: dict = field(default_factory=lambda: SarPreprocess().to_dict())
    max_train_images: int | None = None  # a subset for quick runs


@dataclass(frozen=True)
class DetAugment:
    flip: bool = True
    rot90: bool = True
    scale_min: float = 0.6
    scale_max: float = 1.2


@dataclass(frozen=True)
class DetModel:
    name: str = "edge_det"
    backbone: str = "edge"
    width: int = 64
    anchors: str = "kmeans"  # anchor-based detectors: "kmeans" on the training set, or "default"


@dataclass(frozen=True)
class DetOptim:
    name: str = "adamw"
    epochs: int = 40
    batch_size: int = 8
    lr: float = 0.002
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_steps: int = 200
    schedule: str = "cosine"  # "cosine" or "step"
    milestones: tuple[float, ...] = (0.7, 0.9)  # step schedule: fractions of training
    ema: bool = True
    ema_decay: float = 0.999


@dataclass(frozen=True)
class DetEval:
    score_threshold: float = 0.001  # for AP: keep low-score detections
    operating_threshold: float = 0.3  # precision/recall are reported here
    iou_threshold: float = 0.5
    max_detections: int = 300
    every: int = 1


@dataclass(frozen=True)
class DetConfig:
    name: str = "det_edge"
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    init: str = "random"  # "random" | "bnn:<run dir>" | "imagenet:<file>" | "file:<backbone .pt>"
    data: DetData = DetData()
    augment: DetAugment = DetAugment()
    model: DetModel = DetModel()
    optim: DetOptim = DetOptim()
    eval: DetEval = DetEval()


# ---------------------------------------------------------------- models


def build_detector(cfg: DetConfig, num_classes: int) -> torch.nn.Module:
    from sarbridge.train.detectors import build_detector as build

    return build(
        cfg.model.name,
        num_classes=num_classes,
        backbone=cfg.model.backbone,
        width=cfg.model.width,
        input_size=cfg.data.input_size,
    )


def initialise_backbone(model: torch.nn.Module, init: str) -> dict:
    """Apply ``init`` to ``model.backbone``; return what was done (for lineage)."""
    from sarbridge.train.backbones import load_backbone_weights, load_imagenet_weights

    kind, _, arg = init.partition(":")
    if kind == "random":
        return {"init": "random"}
    if kind == "imagenet":
        missing = load_imagenet_weights(model.backbone, arg)
        return {"init": "imagenet", "file": arg, "missing_keys": len(missing)}
    if kind == "bnn":
        from sarbridge.train.bnn_train import export_sar_backbone

        run = Path(arg)
        path = run / "sar_backbone.pt"
        if not path.is_file():
            export_sar_backbone(run, path)
        meta = load_backbone_weights(model.backbone, path)
        return {
            "init": "bnn",
            "file": str(path),
            **{k: v for k, v in meta.items() if isinstance(v, (str, int))},
        }
    if kind == "file":
        meta = load_backbone_weights(model.backbone, arg)
        return {
            "init": "file",
            "file": arg,
            **{k: v for k, v in meta.items() if isinstance(v, (str, int))},
        }
    raise SarbridgeError(
        f"unknown init {init!r}: use random, bnn:<run dir>, imagenet:<file> or file:<backbone .pt>"
    )


# ---------------------------------------------------------------- data


class DetectionSet:
    """Records with decoded, preprocessed images cached (float32 [1, H, W], in [0, 1] for 8-bit)."""

    def __init__(self, records: list[ImageRecord], params: SarPreprocess):
        self.records = records
        self.params = params
        self._cache: dict[str, np.ndarray] = {}

    def image(self, k: int) -> np.ndarray:
        rec = self.records[k]
        if rec.image_id not in self._cache:
            self._cache[rec.image_id] = preprocess(read_image(rec.path), self.params, path=rec.path)
        return self._cache[rec.image_id]


def _augment(img: np.ndarray, boxes: np.ndarray, rng, aug: DetAugment, size: int):
    """Flip/rot90 (image [C, H, W], boxes [M, 4]) then scale jitter into a size x size canvas."""
    from PIL import Image

    _, h, w = img.shape
    boxes = boxes.copy()
    if aug.flip and rng.random() < 0.5:
        img = img[:, :, ::-1]
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    if aug.flip and rng.random() < 0.5:
        img = img[:, ::-1, :]
        boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    if aug.rot90 and rng.random() < 0.5:  # 90 degrees counter-clockwise: (x, y) -> (y, w - x)
        img = np.rot90(img, 1, axes=(1, 2))
        boxes = np.stack([boxes[:, 1], w - boxes[:, 2], boxes[:, 3], w - boxes[:, 0]], 1)
        h, w = w, h
    scale = size / max(h, w) * rng.uniform(aug.scale_min, aug.scale_max)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    img = np.ascontiguousarray(img)
    resized = np.stack(
        [np.asarray(Image.fromarray(c, mode="F").resize((nw, nh), Image.BILINEAR)) for c in img]
    )
    boxes = boxes * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    # place into the canvas at a random offset (crop when larger)
    ox = int(rng.integers(min(0, size - nw), max(0, size - nw) + 1))
    oy = int(rng.integers(min(0, size - nh), max(0, size - nh) + 1))
    canvas = np.zeros((img.shape[0], size, size), np.float32)
    sy0, sx0 = max(0, -oy), max(0, -ox)
    dy0, dx0 = max(0, oy), max(0, ox)
    hh, ww = min(nh - sy0, size - dy0), min(nw - sx0, size - dx0)
    canvas[:, dy0 : dy0 + hh, dx0 : dx0 + ww] = resized[:, sy0 : sy0 + hh, sx0 : sx0 + ww]
    moved = boxes + np.array([ox, oy, ox, oy], np.float32)
    clipped = np.clip(moved, 0, size)
    area = lambda b: np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # noqa: E731
    keep = (area(clipped) >= 0.4 * np.maximum(area(moved), 1e-6)) & (area(clipped) > 1)
    return canvas, clipped[keep], keep


def epoch_batches(cfg: DetConfig, data: DetectionSet, epoch: int, info: DistInfo, device):
    """Global batches of an epoch (a function of seed and epoch); yields this process's share."""
    rng = np.random.default_rng([cfg.seed, epoch])
    order = rng.permutation(len(data.records))
    B = cfg.optim.batch_size
    size = cfg.data.input_size
    for start in range(0, len(order) - B + 1, B):
        seeds = rng.integers(0, 2**31, size=B)
        images, targets = [], []
        for k in shard(list(range(B)), info):
            rec = data.records[order[start + k]]
            img, boxes, keep = _augment(
                data.image(order[start + k]),
                rec.boxes,
                np.random.default_rng(seeds[k]),
                cfg.augment,
                size,
            )
            images.append(img)
            targets.append(
                {
                    "boxes": torch.from_numpy(boxes.astype(np.float32)).to(device),
                    "labels": torch.from_numpy(rec.labels[keep]).to(device),
                }
            )
        yield torch.from_numpy(np.stack(images)).to(device), targets


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(
    model, data: DetectionSet, cfg: DetConfig, device, batch_size: int = 8
) -> list[Detections]:
    """Detections in image pixels for every record (letterbox -> model -> runtime decode -> image)."""
    from sarbridge.train.detectors import detector_predict

    model.eval()
    size, e = cfg.data.input_size, cfg.eval
    out = []
    for start in range(0, len(data.records), batch_size):
        idx = range(start, min(start + batch_size, len(data.records)))
        boxed = [letterbox(data.image(k), size) for k in idx]
        x = torch.from_numpy(np.stack([b[0] for b in boxed])).to(device)
        preds = detector_predict(
            model, x, size, e.score_threshold, e.iou_threshold, e.max_detections
        )
        for k, (boxes, scores, labels), (_, lb) in zip(idx, preds, boxed, strict=True):
            out.append(Detections(data.records[k].image_id, lb.to_image(boxes), scores, labels))
    return out


def evaluate(model, data: DetectionSet, cfg: DetConfig, device, classes) -> dict[str, float]:
    dets = predict(model, data, cfg, device)
    ap = coco_ap(data.records, dets, classes, cfg.eval.max_detections)
    pr = precision_recall_at(data.records, dets, cfg.eval.operating_threshold)
    return {**ap, "precision": pr["precision"], "recall": pr["recall"], "f1": pr["f1"]}


# ---------------------------------------------------------------- EMA


class ModelEMA:
    """Exponential moving average of weights (decay ramps up over the first steps)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 2000))
        src = unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])


# ---------------------------------------------------------------- run


def make_sets(cfg: DetConfig):
    ds = read_dataset(resolve_data_path(cfg.data.root))
    if ds.problems:
        print(
            f"{len(ds.problems)} problem(s) in {ds.root}; bad items are left out, e.g. {ds.problems[0]}"
        )
    params = SarPreprocess.from_dict(cfg.data.preprocess)
    train = ds.split(cfg.data.train_split)
    test = ds.split(cfg.data.test_split)
    rng = np.random.default_rng(cfg.data.split_seed)
    order = rng.permutation(len(train))
    n_val = int(round(len(train) * cfg.data.val_fraction))
    val = [train[i] for i in sorted(order[:n_val])]
    train = [train[i] for i in sorted(order[n_val:])]
    if cfg.data.max_train_images:
        train = train[: cfg.data.max_train_images]
    summary = {
        "root": str(ds.root),
        "format": ds.format,
        "classes": list(ds.classes),
        "images": {"train": len(train), "val": len(val), "test": len(test)},
        "boxes": {
            "train": int(sum(len(r.boxes) for r in train)),
            "test": int(sum(len(r.boxes) for r in test)),
        },
    }
    return (
        DetectionSet(train, params),
        DetectionSet(val, params),
        DetectionSet(test, params),
        ds.classes,
        summary,
    )


def training_set_anchors(train: DetectionSet, input_size: int, k: int = 9) -> np.ndarray:
    """k-means anchors of the training boxes as the network sees them (letterboxed)."""
    from sarbridge.train.yolov3 import kmeans_anchors

    wh = [
        (r.boxes[:, 2:] - r.boxes[:, :2]) * (input_size / max(r.height, r.width))
        for r in train.records
        if len(r.boxes)
    ]
    return kmeans_anchors(np.concatenate(wh), k=k)


def train_detector(
    cfg: DetConfig, runs_dir: str | Path = "runs", resume: bool = False, progress: bool = True
) -> dict:
    info = setup_distributed(cfg.device)
    try:
        return _train(cfg, Path(runs_dir) / cfg.name, resume, progress, info)
    finally:
        cleanup_distributed()


def _lr_lambda(o: DetOptim, total_steps: int):
    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / max(o.warmup_steps, 1))
        t = step / max(total_steps, 1)
        if o.schedule == "cosine":
            return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))
        return warm * (0.1 ** sum(t >= m for m in o.milestones))

    return f


def _train(cfg: DetConfig, run_dir: Path, resume: bool, progress: bool, info: DistInfo) -> dict:
    from sarbridge.train.detectors import detector_loss

    start_run(run_dir, resume, cfg.seed, cfg.threads)
    train, val, test, classes, summary = make_sets(cfg)
    model = build_detector(cfg, len(classes))
    lineage = initialise_backbone(model, cfg.init)
    if hasattr(model, "set_anchors") and cfg.model.anchors == "kmeans":
        anchors = training_set_anchors(train, cfg.data.input_size)
        model.set_anchors(anchors)
        lineage["anchors"] = [[round(float(v), 1) for v in a] for a in anchors]
        if info.is_main:
            print("anchors (k-means on the training boxes):", lineage["anchors"])
    model.to(info.device)
    net = wrap_ddp(model, info)
    o = cfg.optim
    optimizer = make_optimizer(net.parameters(), o.name, o.lr, o.weight_decay, o.momentum)
    steps_per_epoch = len(train.records) // o.batch_size
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(o, steps_per_epoch * o.epochs)
    )
    ema = ModelEMA(model, o.ema_decay) if o.ema else None
    eval_model = (lambda: ema.module) if ema else (lambda: model)  # noqa: E731
    extra_state = None
    if ema:
        extra_state = (
            lambda: {"ema": ema.module.state_dict(), "ema_updates": ema.updates},
            lambda s: (
                ema.module.load_state_dict(s["ema"]),
                setattr(ema, "updates", int(s["ema_updates"])),
            ),
        )
    trainer = Trainer(
        run_dir,
        net,
        optimizer,
        scheduler,
        o.epochs,
        to_dict(cfg),
        "val_AP50_95",
        info,
        extra={"lineage": lineage, "classes": list(classes)},
        progress=progress,
        scheduler_per_step=True,
        extra_state=extra_state,
        after_step=(lambda: ema.update(net)) if ema else None,
    )
    if resume and trainer.resume() and info.is_main:
        print(f"resumed {run_dir} at epoch {trainer.start_epoch + 1}/{o.epochs}")
    if info.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"{cfg.model.name} ({n_params / 1e6:.2f} M parameters), init {cfg.init}: "
            f"{summary['images']['train']} train / {summary['images']['val']} val / {summary['images']['test']} test images"
        )
    amp = info.device.type == "cuda"

    def step(batch):
        x, targets = batch
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            return detector_loss(net, x, targets, cfg.data.input_size)

    def evaluate_epoch(epoch: int) -> dict[str, float]:
        if (epoch + 1) % cfg.eval.every and epoch + 1 != o.epochs:
            return {}
        m = evaluate(eval_model(), val, cfg, info.device, classes)
        return {"val_AP50": m["AP50"], "val_AP50_95": m["AP50_95"]}

    plan = EpochPlan(
        batches=lambda epoch: epoch_batches(cfg, train, epoch, info, info.device),
        step=step,
        batch_items=lambda batch: len(batch[0]),
        evaluate=evaluate_epoch,
        steps_per_epoch=steps_per_epoch,
    )
    trainer.fit(plan, summary | {"config_sha256": config_hash(cfg)})

    best = load_checkpoint(run_dir / "best.pt")
    final_model = build_detector(cfg, len(classes)).to(info.device)
    final_model.load_state_dict(best["ema"] if ema else best["model"])
    test_metrics = evaluate(final_model, test, cfg, info.device, classes)
    report = {
        "best_epoch": int(best["epoch"]) + 1,
        "test": test_metrics,
        "lineage": lineage,
        "parameters": sum(p.numel() for p in final_model.parameters()),
    }
    record_final(run_dir, report, info)
    if info.is_main:
        t = test_metrics
        print(
            f"test ({summary['images']['test']} images): AP50 {t['AP50']:.4f}, AP50:95 {t['AP50_95']:.4f}, "
            f"AP small {t['AP_small']:.4f}, precision {t['precision']:.3f} / recall {t['recall']:.3f} "
            f"at score {cfg.eval.operating_threshold}"
        )
    return report


def load_detector(run: str | Path, which: str = "best") -> tuple[torch.nn.Module, DetConfig, dict]:
    """A trained detector (EMA weights when the run kept them) with its config and checkpoint."""
    run = Path(run)
    ckpt = load_checkpoint(run / ("best.pt" if which == "best" else "checkpoint.pt"))
    cfg = from_dict(DetConfig, ckpt["config"])
    model = build_detector(cfg, len(ckpt["classes"]))
    model.load_state_dict(ckpt.get("ema", ckpt["model"]))
    return model.eval(), cfg, ckpt
