"""Tiling a scene of any size with overlap, and merging tile detections back.

The grid: tiles of ``size`` x ``size`` at a stride of ``size * (1 - overlap)``;
the last row/column of tiles is moved inward so it ends exactly at the scene
border (no border pixel lost, no tile hanging outside). A scene smaller than a
tile gives one tile, padded with zeros by :func:`read_tile`.

Merging: boxes are shifted into scene coordinates and merged class by class.
A box that touches an *inner* tile border (a border that is not the scene's)
is marked truncated: part of its ship lies in the neighbouring tile. Complete
boxes win over truncated ones; a truncated box that lies mostly inside a kept
box is dropped, and two truncated pieces of one ship are fused into their
union. So a ship cut by a tile border comes back as one box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sarbridge.runtime.boxes import box_area, box_intersection, nms


@dataclass(frozen=True)
class Tile:
    """A tile window in scene pixels: rows [y0, y0+h), cols [x0, x0+w)."""

    y0: int
    x0: int
    h: int
    w: int

    def to_dict(self) -> dict:
        return {"y0": self.y0, "x0": self.x0, "h": self.h, "w": self.w}


def _starts(length: int, size: int, stride: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)  # last tile ends at the border
    return starts


def _count(length: int, size: int, stride: int) -> int:
    if length <= size:
        return 1
    return (length - size) // stride + 1 + ((length - size) % stride != 0)


def tile_count(height: int, width: int, size: int, overlap: float = 0.5) -> int:
    """How many tiles :func:`tile_grid` gives, without making them."""
    stride = max(1, int(round(size * (1 - overlap))))
    return _count(height, size, stride) * _count(width, size, stride)


def tile_grid(height: int, width: int, size: int, overlap: float = 0.5) -> list[Tile]:
    """Tiles covering every pixel of a height x width scene.

    Args:
        size: tile side in pixels.
        overlap: fraction of a tile shared with its neighbour, in [0, 1).

    Returns:
        tiles in row-major order; each h, w = min(size, scene side).
    """
    if size <= 0:
        raise ValueError(f"tile size must be positive, got {size}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if height <= 0 or width <= 0:
        raise ValueError(f"empty scene ({height}x{width})")
    stride = max(1, int(round(size * (1 - overlap))))
    th, tw = min(size, height), min(size, width)
    return [
        Tile(y, x, th, tw)
        for y in _starts(height, size, stride)
        for x in _starts(width, size, stride)
    ]


def read_tile(raster, tile: Tile, size: int | None = None) -> np.ndarray:
    """Read a tile; pad with zeros (bottom/right) to size x size when the scene is smaller."""
    data = raster.read(tile.y0, tile.x0, tile.h, tile.w)
    if size is None or (tile.h == size and tile.w == size):
        return data
    padded = np.zeros((size, size) + data.shape[2:], dtype=data.dtype)
    padded[: tile.h, : tile.w] = data
    return padded


def truncated_mask(
    boxes: np.ndarray, tile: Tile, scene_hw: tuple[int, int], margin: float = 2.0
) -> np.ndarray:
    """[N] bool: box (in scene pixels) touches an inner border of its tile."""
    H, W = scene_hw
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    left = (tile.x0 > 0) & (x1 <= tile.x0 + margin)
    top = (tile.y0 > 0) & (y1 <= tile.y0 + margin)
    right = (tile.x0 + tile.w < W) & (x2 >= tile.x0 + tile.w - margin)
    bottom = (tile.y0 + tile.h < H) & (y2 >= tile.y0 + tile.h - margin)
    return left | top | right | bottom


def merge_tile_detections(
    tiles: list[Tile],
    detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    scene_hw: tuple[int, int],
    iou_threshold: float = 0.5,
    containment_threshold: float = 0.6,
    max_detections: int | None = None,
    pre_merge_top_k: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-tile detections into scene detections.

    Args:
        tiles: the tiles, as from :func:`tile_grid`.
        detections: per tile (boxes [N, 4] in TILE pixels, scores [N], labels [N]).
        scene_hw: (height, width) of the scene.
        iou_threshold: NMS IoU between complete boxes.
        containment_threshold: a truncated box whose area lies this much inside
            a kept box is merged into it.
        max_detections: keep at most this many, by score.
        pre_merge_top_k: merge only the this many highest-scoring boxes (greedy NMS costs
            kept x candidates; a low threshold on a large scene can give 10^5 candidates).

    Returns:
        boxes [K, 4] float32 in scene pixels, scores [K] float32, labels [K] int64.
    """
    H, W = scene_hw
    all_boxes, all_scores, all_labels, all_trunc = [], [], [], []
    for tile, (boxes, scores, labels) in zip(tiles, detections, strict=True):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if boxes.shape[0] == 0:
            continue
        shifted = boxes + np.array([tile.x0, tile.y0, tile.x0, tile.y0], dtype=np.float64)
        shifted = np.clip(shifted, 0, [W, H, W, H])
        all_boxes.append(shifted)
        all_scores.append(np.asarray(scores, dtype=np.float64).reshape(-1))
        all_labels.append(np.asarray(labels, dtype=np.int64).reshape(-1))
        all_trunc.append(truncated_mask(shifted, tile, scene_hw))
    if not all_boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    boxes = np.concatenate(all_boxes)
    scores = np.concatenate(all_scores)
    labels = np.concatenate(all_labels)
    trunc = np.concatenate(all_trunc)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, labels, trunc = boxes[valid], scores[valid], labels[valid], trunc[valid]
    if pre_merge_top_k is not None and len(scores) > pre_merge_top_k:
        top = np.sort(np.argsort(-scores, kind="stable")[:pre_merge_top_k])
        boxes, scores, labels, trunc = boxes[top], scores[top], labels[top], trunc[top]

    out_b, out_s, out_l = [], [], []
    for label in np.unique(labels):
        sel = labels == label
        b, s, t = _merge_one_class(
            boxes[sel], scores[sel], trunc[sel], iou_threshold, containment_threshold
        )
        out_b.append(b)
        out_s.append(s)
        out_l.append(np.full(len(s), label, dtype=np.int64))
    boxes, scores, labels = np.concatenate(out_b), np.concatenate(out_s), np.concatenate(out_l)
    order = np.argsort(-scores, kind="stable")
    if max_detections is not None:
        order = order[:max_detections]
    return boxes[order].astype(np.float32), scores[order].astype(np.float32), labels[order]


def _merge_one_class(boxes, scores, trunc, iou_threshold, containment_threshold):
    # complete boxes first: greedy NMS among them (vectorised)
    complete_idx = np.where(~trunc)[0]
    kept_c = complete_idx[nms(boxes[complete_idx], scores[complete_idx], iou_threshold)]
    trunc_idx = np.where(trunc)[0]
    trunc_idx = trunc_idx[np.argsort(-scores[trunc_idx], kind="stable")]
    n = len(kept_c) + len(trunc_idx)
    kept_boxes = np.zeros((n, 4), np.float64)
    kept_scores = np.zeros(n, np.float64)
    kept_trunc = np.zeros(n, bool)
    k = len(kept_c)
    kept_boxes[:k], kept_scores[:k] = boxes[kept_c], scores[kept_c]
    # then truncated boxes (by score): dropped when a complete box covers them, fused with an
    # overlapping truncated piece of the same ship, else kept
    for i in trunc_idx:
        box = boxes[i]
        if k:
            kb = kept_boxes[:k]
            inter = box_intersection(box[None], kb)[0]
            touching = np.nonzero(inter > 0)[0]
            if touching.size:
                inter = inter[touching]
                union = box_area(box[None])[0] + box_area(kb[touching]) - inter
                iou = inter / np.maximum(union, 1e-12)
                inside = inter / max(box_area(box[None])[0], 1e-12)
                covered = (iou > iou_threshold) | (inside > containment_threshold)
                complete = ~kept_trunc[touching]
                if (covered & complete).any():
                    continue  # a complete box of the same ship was kept
                pieces = np.where(~complete & (covered | (inside > 0.2)))[0]
                if pieces.size:
                    j = int(touching[pieces[np.argmax(inside[pieces])]])
                    kept_boxes[j] = np.concatenate(
                        [
                            np.minimum(kept_boxes[j, :2], box[:2]),
                            np.maximum(kept_boxes[j, 2:], box[2:]),
                        ]
                    )
                    kept_scores[j] = max(kept_scores[j], float(scores[i]))
                    continue
        kept_boxes[k], kept_scores[k], kept_trunc[k] = box, scores[i], True
        k += 1
    return kept_boxes[:k], kept_scores[:k], kept_trunc[:k]
