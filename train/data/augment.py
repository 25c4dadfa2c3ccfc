"""Training augmentation of detection samples: flips, rot90 and scale jitter (no colour
jitter: SAR intensities carry meaning), 4-image mosaics, multi-scale batch sides, and the
seeded global batches of an epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from sarbridge.runtime.decode import resize_by
from sarbridge.runtime.errors import SarbridgeError
from sarbridge.train.data.detection import DetectionSet, visible
from sarbridge.train.engine import DistInfo, shard

if TYPE_CHECKING:
    from sarbridge.train.recipes.detect import DetAugment, DetConfig


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
    keep = visible(moved, clipped)
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
