"""Training and evaluating SAR ship detectors on SSDD-style data.

Images go through the runtime's preprocessing, are letterboxed to the input
size and augmented with flips, rot90 and scale jitter (no colour jitter: SAR
intensities carry meaning), optionally as 4-image mosaics and at a random input
side per batch (multi-scale). Large scenes (``data.tile_size``) are trained on
tiles cut by the runtime's tiler and evaluated whole, through the deployed
tiling and cross-tile merge. The official train split is split again (seeded)
into train and a validation share that picks the best checkpoint by AP50:95
(``data.val_fraction: 0`` trains on the whole train split and keeps the last
epoch, for a schedule already fixed on validation); the test split is scored
once, at the end, through the same numpy decode the deployed model uses.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sarbridge.runtime.annotations import ImageRecord, read_dataset
from sarbridge.runtime.decode import letterbox, resize_by
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
    val_fraction: float = 0.1  # of the train split, for checkpoint selection (0: none, last epoch)
    split_seed: int = 0
    input_size: int = 512
    preprocess: dict = field(default_factory=lambda: SarPreprocess().to_dict())
    max_train_images: int | None = None  # a subset for quick runs
    # large scenes (AIR-SARShip style): train on tiles cut by the runtime's tiler, evaluate whole
    # scenes through the deployed tiling and cross-tile merge; None: one image = one input
    tile_size: int | None = None
    tile_overlap: float = 0.5


@dataclass(frozen=True)
class DetAugment:
    flip: bool = True
    rot90: bool = True
    scale_min: float = 0.6
    scale_max: float = 1.2
    mosaic: float = 0.0  # probability that a training sample is a 4-image mosaic
    close_mosaic: int = 0  # last epochs trained without mosaic (the deployed view: one image)
    # (lo, hi): each batch's side a random multiple of 32 in [lo, hi] x data.input_size
    multi_scale: tuple[float, ...] | None = None


@dataclass(frozen=True)
class DetModel:
    name: str = "edge_det"
    backbone: str = "edge"
    width: int = 64
    anchors: str = "kmeans"  # anchor-based detectors: "kmeans" on the training set, or "default"
    box_weight: float | None = None  # anchor-free detectors: box (GIoU) loss weight; None: 2.0
    # edge detector's box regression: 0 one log-distance per side; R > 0 a distribution over R
    # bins per side trained with distribution focal loss (exported as log-distances all the same)
    box_bins: int = 0


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
    # the EMA's decay ramps up as decay * (1 - exp(-step / ema_ramp_steps)); a ramp much longer
    # than the schedule leaves the average at ~0.5 decay, i.e. no averaging at all
    ema_ramp_steps: int = 200
    # mixed precision of the training step: "auto" (bfloat16 on CUDA, float32 elsewhere),
    # "bf16" (bfloat16 autocast on any device; on a CPU with AVX512-BF16 about 1.7x faster
    # than float32, on one without it emulated and many times slower), "fp32" (or "off":
    # float32 steps). Evaluation always runs in float32, as the exported model does.
    amp: str = "auto"
    # channels-last memory layout for model and batches: the same numbers up to float rounding,
    # faster convolutions (about 1.5x per training step on the CPU, benchmarks/results/det_edge_long)
    channels_last: bool = True


@dataclass(frozen=True)
class DetEval:
    score_threshold: float = 0.001  # for AP: keep low-score detections
    operating_threshold: float = 0.3  # precision/recall are reported here
    iou_threshold: float = 0.5
    # box voting after NMS: kept boxes become the score-weighted mean of the candidates that
    # overlap them by this IoU (runtime.boxes.box_vote); None: plain NMS
    vote_iou: float | None = None
    # test-time flips merged with the plain view before NMS ("h", "v", "hv";
    # runtime.decode.decode_views): one more network run per flip; () for none
    tta_flips: tuple[str, ...] = ()
    max_detections: int = 300
    every: int = 1

    def __post_init__(self):
        from sarbridge.runtime.decode import parse_flips
        from sarbridge.train.config import ConfigError

        try:
            parse_flips(self.tta_flips)
        except ValueError as exc:
            raise ConfigError(f"eval.tta_flips: {exc}") from None


@dataclass(frozen=True)
class DetConfig:
    name: str = "det_edge"
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    # "random" | "bnn:<run dir>" | "imagenet:<file>" | "file:<backbone .pt>"
    # | "det:<detector run dir>" (every weight, not just the backbone: a further schedule)
    init: str = "random"
    data: DetData = DetData()
    augment: DetAugment = DetAugment()
    model: DetModel = DetModel()
    optim: DetOptim = DetOptim()
    eval: DetEval = DetEval()


# ---------------------------------------------------------------- models


def build_detector(cfg: DetConfig, num_classes: int) -> torch.nn.Module:
    from sarbridge.train.detectors import build_detector as build

    extra = {}
    if cfg.model.box_bins:
        if cfg.model.name != "edge_det":
            raise SarbridgeError(
                f"model.box_bins applies to the edge detector (edge_det) only, not {cfg.model.name}"
            )
        if cfg.model.box_bins < 2:
            raise SarbridgeError(
                f"model.box_bins must be 0 (log-distance boxes) or at least 2, not {cfg.model.box_bins}"
            )
        extra["box_bins"] = cfg.model.box_bins
    return build(
        cfg.model.name,
        num_classes=num_classes,
        backbone=cfg.model.backbone,
        width=cfg.model.width,
        input_size=cfg.data.input_size,
        **extra,
    )


def initialise_from_detector(
    model: torch.nn.Module, cfg: DetConfig, classes: list[str], run: str | Path
) -> dict:
    """Load every weight of ``model`` from a detector run's best checkpoint (its EMA weights when
    it kept them): a further schedule from a trained detector. The run must hold the same
    detector (name, backbone, width, classes); lineage keeps the parent's own initialisation."""
    run = Path(run)
    ckpt = load_checkpoint(run / "best.pt")
    try:
        parent = from_dict(DetConfig, ckpt["config"])
        parent_classes = list(ckpt["classes"])
        state = ckpt.get("ema", ckpt["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SarbridgeError(f"{run / 'best.pt'}: not a detector checkpoint ({exc})") from exc
    mine = (cfg.model.name, cfg.model.backbone, cfg.model.width, list(classes), cfg.model.box_bins)
    theirs = (
        parent.model.name,
        parent.model.backbone,
        parent.model.width,
        parent_classes,
        parent.model.box_bins,
    )
    if mine != theirs:
        raise SarbridgeError(
            f"{run}: holds detector {theirs[0]} (backbone {theirs[1]}, width {theirs[2]}, "
            f"classes {theirs[3]}, box bins {theirs[4]}), this run builds {mine[0]} (backbone "
            f"{mine[1]}, width {mine[2]}, classes {mine[3]}, box bins {mine[4]})"
        )
    model.load_state_dict(state)
    parent_run = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    parent_lineage = (parent_run.get("final") or {}).get("lineage") or ckpt.get("lineage") or {}
    return {
        "init": "det",
        "run": str(run),
        "epoch": int(ckpt["epoch"]) + 1,
        "parent_config_sha256": config_hash(parent),
        **lineage_origin(parent_lineage),
        "parent_lineage": parent_lineage,
    }


def lineage_origin(parent_lineage: dict) -> dict:
    """Where a chain of detector runs began (``origin``: its first run's initialisation, with
    that run's ``origin_file`` / ``origin_run``), flat for manifests, from the parent's lineage."""
    if isinstance(parent_lineage.get("origin"), str):
        return {k: v for k, v in parent_lineage.items() if k.startswith("origin")}
    if parent_lineage.get("init") == "det":  # a parent from before origins were recorded
        return lineage_origin(parent_lineage.get("parent_lineage") or {})
    return {
        "origin": str(parent_lineage.get("init", "unknown")),
        **{f"origin_{k}": parent_lineage[k] for k in ("file", "run") if k in parent_lineage},
    }


def initialise_backbone(model: torch.nn.Module, init: str) -> dict:
    """Apply ``init`` to ``model.backbone``; return what was done (for lineage)."""
    from sarbridge.train.backbones import load_backbone_weights, load_imagenet_weights

    kind, _, arg = init.partition(":")
    if kind == "det":
        raise SarbridgeError("init det:<run> loads a whole detector: see initialise_from_detector")
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
        f"unknown init {init!r}: use random, bnn:<run dir>, imagenet:<file>, "
        "file:<backbone .pt> or det:<detector run dir>"
    )


# ---------------------------------------------------------------- data


def load_image(rec: ImageRecord, params: SarPreprocess) -> np.ndarray:
    """A record's image decoded and preprocessed as deployed (float32 [1, H, W])."""
    return preprocess(read_image(rec.path), params, path=rec.path)


class DetectionSet:
    """Records with decoded, preprocessed images cached (float32 [1, H, W], in [0, 1] for 8-bit)."""

    def __init__(
        self, records: list[ImageRecord], params: SarPreprocess, cache: dict | None = None
    ):
        self.records = records
        self.params = params
        self._cache: dict[str, np.ndarray] = cache if cache is not None else {}

    def image(self, k: int) -> np.ndarray:
        rec = self.records[k]
        if rec.image_id not in self._cache:
            self._cache[rec.image_id] = load_image(rec, self.params)
        return self._cache[rec.image_id]


def _visible(boxes: np.ndarray, clipped: np.ndarray) -> np.ndarray:
    """Ships that stay labelled after a crop: at least 40 % of the box and more than a pixel left."""

    def area(b):
        return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)

    return (area(clipped) >= 0.4 * np.maximum(area(boxes), 1e-6)) & (area(clipped) > 1)


class TiledSet(DetectionSet):
    """Training tiles of large scenes: each scene is cut by the runtime's :func:`tile_grid`
    (``size``, ``overlap``); a tile is a record of its own (boxes clipped to the tile, a ship
    kept when at least 40 % of it is inside) whose image is a window of the scene's cached
    preprocessed pixels (one clip range per scene, as deployed). Tiles without ships stay:
    open sea is what most of a scene is."""

    def __init__(
        self,
        scenes: list[ImageRecord],
        params: SarPreprocess,
        size: int,
        overlap: float,
        cache: dict | None = None,
    ):
        from sarbridge.runtime.tiling import tile_grid

        super().__init__([], params)
        self.scenes = DetectionSet(scenes, params, cache)
        self.windows: list[tuple[int, object]] = []
        for k, rec in enumerate(scenes):
            for tile in tile_grid(rec.height, rec.width, size, overlap):
                boxes = rec.boxes - np.array([tile.x0, tile.y0, tile.x0, tile.y0], np.float32)
                clipped = np.clip(boxes, 0, [tile.w, tile.h, tile.w, tile.h]).astype(np.float32)
                keep = _visible(boxes, clipped)
                self.records.append(
                    ImageRecord(
                        f"{rec.image_id}@{tile.y0},{tile.x0}",
                        rec.path,
                        tile.h,
                        tile.w,
                        clipped[keep],
                        rec.labels[keep],
                    )
                )
                self.windows.append((k, tile))

    def image(self, k: int) -> np.ndarray:
        scene, tile = self.windows[k]
        pixels = self.scenes.image(scene)
        return pixels[:, tile.y0 : tile.y0 + tile.h, tile.x0 : tile.x0 + tile.w]


def _geometric(img: np.ndarray, boxes: np.ndarray, rng, aug: DetAugment, size: int):
    """Flip/rot90 (image [C, H, W], boxes [M, 4]) then resize by the letterbox scale to ``size``
    times a scale jitter; returns the resized image and its boxes."""
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
    resized = resize_by(img, size / max(h, w) * rng.uniform(aug.scale_min, aug.scale_max))
    _, nh, nw = resized.shape
    return resized, boxes * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)


def _paste(canvas: np.ndarray, img: np.ndarray, boxes: np.ndarray, ox: int, oy: int, region):
    """Paste ``img`` with its top-left corner at (ox, oy) into ``canvas``, clipped to ``region``
    (x0, y0, x1, y1); returns the boxes moved and clipped, and which of them stay (a ship keeps
    at least 40 % of its area and more than one pixel)."""
    x0, y0, x1, y1 = region
    _, nh, nw = img.shape
    dx0, dy0 = max(x0, ox), max(y0, oy)
    dx1, dy1 = min(x1, ox + nw), min(y1, oy + nh)
    if dx1 > dx0 and dy1 > dy0:
        canvas[:, dy0:dy1, dx0:dx1] = img[:, dy0 - oy : dy1 - oy, dx0 - ox : dx1 - ox]
    moved = boxes + np.array([ox, oy, ox, oy], np.float32)
    clipped = np.clip(moved, [x0, y0, x0, y0], [x1, y1, x1, y1]).astype(np.float32)
    keep = _visible(moved, clipped)
    return clipped[keep], keep


def _augment(img: np.ndarray, boxes: np.ndarray, rng, aug: DetAugment, size: int):
    """One image: geometric augmentation, placed at a random offset in a size x size canvas
    (cropped when larger). Returns (canvas, boxes, keep mask over the input boxes)."""
    resized, boxes = _geometric(img, boxes, rng, aug, size)
    _, nh, nw = resized.shape
    ox = int(rng.integers(min(0, size - nw), max(0, size - nw) + 1))
    oy = int(rng.integers(min(0, size - nh), max(0, size - nh) + 1))
    canvas = np.zeros((img.shape[0], size, size), np.float32)
    kept, keep = _paste(canvas, resized, boxes, ox, oy, (0, 0, size, size))
    return canvas, kept, keep


def _mosaic(items, rng, aug: DetAugment, size: int):
    """Four images around a random centre of a size x size canvas, each at the training scale
    (the letterbox scale times the jitter) with one of its corners at the centre, so each
    quadrant shows the part of its image nearest that corner. ``items``: four (image [C, H, W],
    boxes [M, 4], labels [M]). Returns (canvas, boxes, labels)."""
    cx = int(rng.uniform(0.25, 0.75) * size)
    cy = int(rng.uniform(0.25, 0.75) * size)
    canvas = np.zeros((items[0][0].shape[0], size, size), np.float32)
    all_boxes, all_labels = [], []
    for q, (img, boxes, labels) in enumerate(items):
        resized, moved = _geometric(img, boxes, rng, aug, size)
        _, nh, nw = resized.shape
        right, bottom = q % 2, q // 2  # quadrant: 0 top-left, 1 top-right, 2 bottom-left, 3 ...
        ox = cx if right else cx - nw
        oy = cy if bottom else cy - nh
        region = (
            cx if right else 0,
            cy if bottom else 0,
            size if right else cx,
            size if bottom else cy,
        )
        kept, keep = _paste(canvas, resized, moved, ox, oy, region)
        all_boxes.append(kept)
        all_labels.append(labels[keep])
    return canvas, np.concatenate(all_boxes), np.concatenate(all_labels)


def batch_input_size(cfg: DetConfig, rng) -> int:
    """The input side of one batch: the configured size, or with ``augment.multi_scale``
    (lo, hi) a random multiple of 32 in [lo, hi] x size (YOLOv3's multi-scale training)."""
    size = cfg.data.input_size
    if not cfg.augment.multi_scale:
        return size
    if (
        len(cfg.augment.multi_scale) != 2
        or not 0 < cfg.augment.multi_scale[0] <= cfg.augment.multi_scale[1]
    ):
        raise SarbridgeError(
            f"augment.multi_scale must be [lo, hi] with 0 < lo <= hi, got {list(cfg.augment.multi_scale)}"
        )
    lo, hi = cfg.augment.multi_scale
    choices = list(range(max(32, int(np.ceil(size * lo / 32)) * 32), int(size * hi) + 1, 32))
    return int(rng.choice(choices)) if choices else size


def epoch_batches(cfg: DetConfig, data: DetectionSet, epoch: int, info: DistInfo, device):
    """Global batches of an epoch (a function of seed and epoch); yields this process's share."""
    rng = np.random.default_rng([cfg.seed, epoch])
    order = rng.permutation(len(data.records))
    B = cfg.optim.batch_size
    aug = cfg.augment
    mosaic = aug.mosaic if epoch < cfg.optim.epochs - aug.close_mosaic else 0.0
    for start in range(0, len(order) - B + 1, B):
        size = batch_input_size(cfg, rng)
        seeds = rng.integers(0, 2**31, size=B)
        images, targets = [], []
        for k in shard(list(range(B)), info):
            r = np.random.default_rng(seeds[k])
            i = int(order[start + k])
            if mosaic and r.random() < mosaic:
                picks = [i, *(int(j) for j in r.integers(0, len(data.records), 3))]
                items = [
                    (data.image(j), data.records[j].boxes, data.records[j].labels) for j in picks
                ]
                img, boxes, labels = _mosaic(items, r, aug, size)
            else:
                rec = data.records[i]
                img, boxes, keep = _augment(data.image(i), rec.boxes, r, aug, size)
                labels = rec.labels[keep]
            images.append(img)
            targets.append(
                {
                    "boxes": torch.from_numpy(boxes.astype(np.float32)).to(device),
                    "labels": torch.from_numpy(np.asarray(labels, np.int64)).to(device),
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
            model,
            x,
            size,
            e.score_threshold,
            e.iou_threshold,
            e.max_detections,
            e.vote_iou,
            e.tta_flips,
        )
        for k, (boxes, scores, labels), (_, lb) in zip(idx, preds, boxed, strict=True):
            out.append(Detections(data.records[k].image_id, lb.to_image(boxes), scores, labels))
    return out


def predict_scenes(model, data: DetectionSet, cfg: DetConfig, device) -> list[Detections]:
    """Detections of whole scenes through the deployed path: the runtime's
    :class:`~sarbridge.runtime.detector.ScenePipeline` (one clip range per scene, tiles of
    ``data.tile_size`` with ``data.tile_overlap`` letterboxed into the input, cross-tile merge),
    with the network run here in PyTorch."""
    from sarbridge.runtime.detector import ScenePipeline
    from sarbridge.train.detectors import detector_predict

    e = cfg.eval

    class _TorchScenes(ScenePipeline):
        @torch.no_grad()
        def run_inputs(self, inputs, timings=None):
            x = torch.from_numpy(np.ascontiguousarray(inputs, np.float32)).to(device)
            return detector_predict(
                model,
                x,
                self.input_size,
                e.score_threshold,
                self.iou_threshold,
                self.max_detections,
                self.vote_iou,
                self.flips,
            )

    model.eval()
    pipeline = _TorchScenes(
        data.params,
        cfg.data.input_size,
        cfg.data.tile_size,
        cfg.data.tile_overlap,
        e.iou_threshold,
        e.max_detections,
        vote_iou=e.vote_iou,
        flips=e.tta_flips,
    )
    out = []
    for rec in data.records:
        r = pipeline.detect(read_image(rec.path))
        out.append(Detections(rec.image_id, r.boxes, r.scores, r.labels))
    return out


def evaluate(model, data: DetectionSet, cfg: DetConfig, device, classes) -> dict[str, float]:
    if cfg.data.tile_size:
        dets = predict_scenes(model, data, cfg, device)
    else:
        dets = predict(model, data, cfg, device)
    ap = coco_ap(data.records, dets, classes, cfg.eval.max_detections)
    pr = precision_recall_at(data.records, dets, cfg.eval.operating_threshold)
    return {**ap, "precision": pr["precision"], "recall": pr["recall"], "f1": pr["f1"]}


# ---------------------------------------------------------------- EMA


class ModelEMA:
    """Exponential moving average of weights (decay ramps up over the first steps)."""

    def __init__(self, model: torch.nn.Module, decay: float, ramp_steps: int = 200):
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.ramp_steps, self.updates = decay, max(int(ramp_steps), 1), 0

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.ramp_steps))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        src = unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])


# ---------------------------------------------------------------- run


def leave_out_unreadable(
    records: list[ImageRecord], params: SarPreprocess, split: str, cache: dict | None = None
) -> tuple[list[ImageRecord], list[str]]:
    """Decode and preprocess every record's image once; the records whose image cannot be read
    (corrupt, truncated, NaN, wrong bit depth) are left out and named in the returned lines,
    so a bad file is reported before training rather than ending a run hours in. ``cache``
    (image id -> preprocessed pixels) keeps the decoded images for the split that caches them."""
    kept, bad = [], []
    for rec in records:
        try:
            img = load_image(rec, params)
        except SarbridgeError as exc:
            bad.append(f"{split}: {exc}")
            continue
        if cache is not None:
            cache[rec.image_id] = img
        kept.append(rec)
    return kept, bad


def make_sets(cfg: DetConfig):
    ds = read_dataset(resolve_data_path(cfg.data.root))
    if ds.problems:
        print(
            f"{len(ds.problems)} problem(s) in {ds.root}; bad items are left out, e.g. {ds.problems[0]}"
        )
    params = SarPreprocess.from_dict(cfg.data.preprocess)
    train = ds.split(cfg.data.train_split)
    test = ds.split(cfg.data.test_split)
    if not 0 <= cfg.data.val_fraction < 1:
        raise SarbridgeError(
            f"data.val_fraction must be in [0, 1), not {cfg.data.val_fraction} "
            "(0: no validation split, the last epoch is kept)"
        )
    rng = np.random.default_rng(cfg.data.split_seed)
    order = rng.permutation(len(train))
    n_val = int(round(len(train) * cfg.data.val_fraction))
    val = [train[i] for i in sorted(order[:n_val])]
    train = [train[i] for i in sorted(order[n_val:])]
    if cfg.data.max_train_images:
        train = train[: cfg.data.max_train_images]
    tiled = bool(cfg.data.tile_size)
    # whole validation and test scenes of a tiled dataset are read again at each evaluation
    caches = {"train": {}, "val": None if tiled else {}, "test": None if tiled else {}}
    (train, bad), (val, bad_val), (test, bad_test) = (
        leave_out_unreadable(recs, params, split, caches[split])
        for split, recs in (("train", train), ("val", val), ("test", test))
    )
    left_out = bad + bad_val + bad_test
    for line in left_out:
        print(f"left out, unreadable: {line}")
    if not train:
        raise SarbridgeError(f"no readable training images in {ds.root}")
    train_set = (
        TiledSet(train, params, cfg.data.tile_size, cfg.data.tile_overlap, caches["train"])
        if tiled
        else DetectionSet(train, params, caches["train"])
    )
    val_set = DetectionSet(val, params, caches["val"])
    test_set = DetectionSet(test, params, caches["test"])
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
    if cfg.data.tile_size:
        summary["tiles"] = {
            "size": cfg.data.tile_size,
            "overlap": cfg.data.tile_overlap,
            "train_tiles": len(train_set.records),
            "train_tiles_with_ships": sum(1 for r in train_set.records if len(r.boxes)),
        }
    if left_out:
        summary["left_out_unreadable"] = left_out
    return train_set, val_set, test_set, ds.classes, summary


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


def autocast_dtype(amp: str, device: torch.device, warn: bool = True) -> torch.dtype | None:
    """The autocast dtype of the training step for ``optim.amp`` on ``device`` (None: float32);
    ``warn``: say so when bfloat16 would be emulated (one process of a DDP job says it)."""
    if amp not in ("auto", "bf16", "fp32", "off"):
        raise SarbridgeError(f"optim.amp must be 'auto', 'bf16' or 'fp32' ('off'), not {amp!r}")
    if amp in ("fp32", "off") or (amp == "auto" and device.type != "cuda"):
        return None
    if warn and device.type == "cpu" and not torch.cpu._is_avx512_bf16_supported():
        print(
            "warning: optim.amp=bf16 on a CPU without AVX512-BF16: bfloat16 is emulated and "
            "many times slower than float32 (--set optim.amp=fp32 trains in float32)"
        )
    return torch.bfloat16


def _train(cfg: DetConfig, run_dir: Path, resume: bool, progress: bool, info: DistInfo) -> dict:
    from sarbridge.train.detectors import detector_loss

    start_run(run_dir, resume, cfg.seed, cfg.threads)
    train, val, test, classes, summary = make_sets(cfg)
    model = build_detector(cfg, len(classes))
    continued = cfg.init.startswith("det:")  # a trained detector: anchors come with it
    if continued:
        lineage = initialise_from_detector(model, cfg, list(classes), cfg.init[4:])
    else:
        lineage = initialise_backbone(model, cfg.init)
    if hasattr(model, "set_anchors") and cfg.model.anchors == "kmeans" and not continued:
        anchors = training_set_anchors(train, cfg.data.input_size)
        model.set_anchors(anchors)
        lineage["anchors"] = [[round(float(v), 1) for v in a] for a in anchors]
        if info.is_main:
            print("anchors (k-means on the training boxes):", lineage["anchors"])
    model.to(info.device)
    o = cfg.optim
    layout = torch.channels_last if o.channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    amp_dtype = autocast_dtype(o.amp, info.device, warn=info.is_main)
    net = wrap_ddp(model, info)
    optimizer = make_optimizer(net.parameters(), o.name, o.lr, o.weight_decay, o.momentum)
    steps_per_epoch = len(train.records) // o.batch_size
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(o, steps_per_epoch * o.epochs)
    )
    ema = ModelEMA(model, o.ema_decay, o.ema_ramp_steps) if o.ema else None
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
        if not len(val.records):
            print(
                f"no validation images (data.val_fraction {cfg.data.val_fraction:g}): "
                "the last epoch is the one kept"
            )

    def step(batch):
        x, targets = batch
        x = x.contiguous(memory_format=layout)
        with torch.autocast(
            info.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            return detector_loss(net, x, targets, x.shape[-1], box_weight=cfg.model.box_weight)

    def evaluate_epoch(epoch: int) -> dict[str, float]:
        if (epoch + 1) % cfg.eval.every and epoch + 1 != o.epochs:
            return {}
        m = evaluate(eval_model(), val, cfg, info.device, classes)
        return {"val_AP50": m["AP50"], "val_AP50_95": m["AP50_95"]}

    plan = EpochPlan(
        batches=lambda epoch: epoch_batches(cfg, train, epoch, info, info.device),
        step=step,
        batch_items=lambda batch: len(batch[0]),
        evaluate=evaluate_epoch if len(val.records) else None,
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
