"""Box utilities and NMS in numpy (boxes are [N, 4] x1, y1, x2, y2 in pixels)."""

from __future__ import annotations

import numpy as np


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas [N] of boxes [N, 4]."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas [N, M] of boxes a [N, 4] and b [M, 4]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # [N, M, 2]
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])  # [N, M, 2]
    wh = np.clip(rb - lt, 0, None)
    return wh[..., 0] * wh[..., 1]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU [N, M]."""
    inter = box_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Returns:
        indices [K] of kept boxes, by decreasing score.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores), kind="stable")
    areas = box_area(boxes)
    if order.size <= _NMS_MATRIX_MAX:
        return _nms_matrix(boxes[order], areas[order], iou_threshold, order)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        wh = np.clip(rb - lt, 0, None)
        inter = wh[:, 0] * wh[:, 1]
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


# up to this many candidates NMS computes all pairwise IoUs at once (cheaper than the loop
# for a few boxes; the loop wins from about fifty on)
_NMS_MATRIX_MAX = 48


def _nms_matrix(boxes, areas, iou_threshold, order):
    """:func:`nms` on boxes already sorted by score, from one matrix of pairwise IoUs: the same
    arithmetic per pair as the loop (so the same kept set), a handful of numpy calls instead of a
    dozen per kept box."""
    n = len(boxes)
    if n <= 1:
        return order.astype(np.int64)
    lt = np.maximum(boxes[:, None, :2], boxes[None, :, :2])  # [n, n, 2]
    rb = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / np.maximum(areas[:, None] + areas[None, :] - inter, 1e-12)
    suppress = ~(iou <= iou_threshold)  # as the loop: a NaN overlap suppresses too
    alive = np.ones(n, bool)
    keep = []
    for i in range(n):
        if alive[i]:
            keep.append(i)
            alive &= ~suppress[i]
    return order[keep].astype(np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """Class-aware NMS: boxes of different labels never suppress each other."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    # offset each class far apart so one NMS pass handles all classes
    offset = (boxes.max() + 1.0) * np.asarray(labels, dtype=np.float64)
    return nms(boxes + offset[:, None], scores, iou_threshold)


def parse_vote_iou(text: str) -> float | None:
    """A box-voting IoU given as text: ``off`` / ``none`` -> None (plain NMS), else a number in
    (0, 1]; ValueError otherwise."""
    if text.strip().lower() in ("off", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise ValueError(f"a box-voting IoU is in (0, 1] or 'off', not {text!r}")
    return value


def box_vote(
    kept: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    vote_iou: float,
) -> np.ndarray:
    """Box voting after NMS: each kept box becomes the score-weighted mean of every candidate of
    its label that overlaps it by IoU >= ``vote_iou`` (itself included), so the boxes NMS
    suppressed still refine the one it kept. Scores and the kept set do not change.

    Args:
        kept: indices [K] into the candidates ``boxes`` [N, 4], ``scores`` [N], ``labels`` [N].

    Returns:
        boxes [K, 4] float64.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    kept = np.asarray(kept, dtype=np.int64)
    if kept.size == 0:
        return np.zeros((0, 4))
    labels = np.asarray(labels)
    iou = box_iou(boxes[kept], boxes)  # [K, N]
    weights = (iou >= vote_iou) & (labels[kept][:, None] == labels[None, :])
    weights = weights * np.asarray(scores, dtype=np.float64)[None, :]
    weights[np.arange(kept.size), kept] = np.maximum(weights[np.arange(kept.size), kept], 1e-12)
    return (weights @ boxes) / weights.sum(axis=1, keepdims=True)
