"""Decoding dense anchor-free detector outputs, and letterboxing, in numpy.

ONE implementation: the PyTorch evaluation and the deployed ONNX/TensorRT
model both hand their raw output to :func:`decode_dense`.

Raw output layout ``[N, 4 + C]`` per image, one row per grid point of every
level (level-major, then row-major): ``reg[4]`` are log-distances from the
point to the box's left, top, right and bottom edges in units of the level's
stride, ``cls[C]`` are class logits. The box is::

    (px - exp(l) * s, py - exp(t) * s, px + exp(r) * s, py + exp(b) * s)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sarbridge.runtime.boxes import batched_nms, box_vote

MAX_LOG_DISTANCE = 8.0  # exp(8) * stride is far beyond any tile


def grid_points(
    input_size: int, strides: tuple[int, ...] = (8, 16, 32)
) -> tuple[np.ndarray, np.ndarray]:
    """Centres [N, 2] (x, y) of every grid cell of every level, and their strides [N]."""
    pts, strd = [], []
    for s in strides:
        n = int(np.ceil(input_size / s))
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        pts.append(np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * s + s / 2)
        strd.append(np.full(n * n, s, np.float32))
    return np.concatenate(pts), np.concatenate(strd)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def decode_dense(
    raw: np.ndarray,
    points: np.ndarray,
    strides: np.ndarray,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    max_detections: int = 300,
    pre_nms_top_k: int = 2000,
    vote_iou: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, scores and labels of one image from its raw dense output.

    Args:
        raw: [N, 4 + C] raw network output for one image.
        points, strides: from :func:`grid_points` for the network input size.
        vote_iou: box voting after NMS (:func:`~sarbridge.runtime.boxes.box_vote`); None: off.

    Returns:
        boxes [K, 4] xyxy in network-input pixels, scores [K], labels [K] int64.
    """
    raw = np.asarray(raw, dtype=np.float32)
    keep, scores, labels = _candidates(sigmoid(raw[:, 4:]), score_threshold, pre_nms_top_k)
    dist = np.exp(np.minimum(raw[keep, :4], MAX_LOG_DISTANCE)) * strides[keep, None]  # [K, 4]
    p = points[keep]
    boxes = np.concatenate([p - dist[:, :2], p + dist[:, 2:]], axis=1)
    return _nms_top(boxes, scores, labels, iou_threshold, max_detections, vote_iou)


def _candidates(scores_all: np.ndarray, score_threshold: float, top_k: int):
    """Rows whose best class beats the threshold (at most ``top_k``, best first kept), with that
    class's score and label per kept row."""
    labels = scores_all.argmax(axis=1)
    scores = scores_all[np.arange(len(labels)), labels]
    keep = np.where(scores > score_threshold)[0]
    if keep.size > top_k:
        keep = keep[np.argsort(-scores[keep], kind="stable")[:top_k]]
    return keep, scores[keep], labels[keep]


def _nms_top(
    boxes, scores, labels, iou_threshold: float, max_detections: int, vote_iou: float | None
):
    kept = batched_nms(boxes, scores, labels, iou_threshold)[:max_detections]
    out = boxes[kept] if vote_iou is None else box_vote(kept, boxes, scores, labels, vote_iou)
    return (
        out.astype(np.float32),
        scores[kept].astype(np.float32),
        labels[kept].astype(np.int64),
    )


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into a square network input: resized to ``resized_width`` x
    ``resized_height`` (the long side the input size), then padded bottom/right.

    The two sides are rounded to whole pixels, so the short side's factor differs slightly from
    the long side's (350 -> 358 px is 1.0229 where 500 -> 512 is 1.024); boxes go back by each
    axis's own factor, as training scales its boxes."""

    height: int
    width: int
    resized_height: int
    resized_width: int

    @property
    def scale(self) -> float:
        """The long side's factor (input size / long side)."""
        return max(self.resized_height, self.resized_width) / max(self.height, self.width)

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes from network-input pixels back to image pixels, clipped to the image."""
        sx, sy = self.resized_width / self.width, self.resized_height / self.height
        out = np.asarray(boxes, np.float32).reshape(-1, 4) / np.array([sx, sy, sx, sy], np.float32)
        return np.clip(out, 0, [self.width, self.height, self.width, self.height]).astype(
            np.float32
        )


def resize_by(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize [C, H, W] float input by ``scale`` (bilinear), each side rounded to whole pixels
    (at least one); the input is returned as it is (made contiguous) when neither side changes."""
    from PIL import Image

    _, h, w = image.shape
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) == (h, w):
        return np.ascontiguousarray(image)
    return np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(c), mode="F").resize((nw, nh), Image.BILINEAR)
            )
            for c in image
        ]
    )


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize [C, H, W] float input so its long side is ``size`` and pad bottom/right with zeros."""
    c, h, w = image.shape
    resized = resize_by(image, size / max(h, w))
    _, nh, nw = resized.shape
    out = np.zeros((c, size, size), np.float32)
    out[:, :nh, :nw] = resized
    return out, Letterbox(h, w, nh, nw)


# ---------------------------------------------------------------- anchor-based (YOLOv3)


def yolo_grid(
    input_size: int, strides: tuple[int, ...], anchors: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output row of an anchor-based head: cell corner (x, y) [N, 2], stride [N], anchor (w, h) [N, 2].

    Rows are level-major (strides in order), then row-major cells, then the level's anchors
    (``anchors`` [L, A, 2] in input pixels).
    """
    anchors = np.asarray(anchors, np.float32).reshape(len(strides), -1, 2)
    corners, strd, wh = [], [], []
    for s, level in zip(strides, anchors, strict=True):
        n = int(np.ceil(input_size / s))
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)  # [n*n, 2]
        a = len(level)
        corners.append(np.repeat(cells, a, axis=0))
        strd.append(np.full(n * n * a, s, np.float32))
        wh.append(np.tile(level, (n * n, 1)))
    return np.concatenate(corners), np.concatenate(strd), np.concatenate(wh)


def decode_yolo(
    raw: np.ndarray,
    cells: np.ndarray,
    strides: np.ndarray,
    anchors: np.ndarray,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    max_detections: int = 300,
    pre_nms_top_k: int = 2000,
    vote_iou: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, scores and labels of one image from a YOLOv3 head's raw output [N, 5 + C].

    Row layout: tx, ty, tw, th, objectness logit, class logits. The box is centred at
    ``(cell + sigmoid(t_xy)) * stride`` with size ``anchor * exp(t_wh)``; the score is
    ``sigmoid(obj) * sigmoid(cls)``.
    """
    raw = np.asarray(raw, dtype=np.float32)
    keep, scores, labels = _candidates(
        sigmoid(raw[:, 4:5]) * sigmoid(raw[:, 5:]), score_threshold, pre_nms_top_k
    )
    r = raw[keep]
    centre = (cells[keep] + sigmoid(r[:, :2])) * strides[keep, None]
    size = anchors[keep] * np.exp(np.minimum(r[:, 2:4], MAX_LOG_DISTANCE))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    return _nms_top(boxes, scores, labels, iou_threshold, max_detections, vote_iou)
