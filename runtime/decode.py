"""Decoding detector outputs, and letterboxing, in numpy.

ONE implementation: the PyTorch evaluation and the deployed ONNX/TensorRT
model both hand their raw output to :func:`decode_views` with
:func:`dense_candidates` (or :func:`yolo_candidates`); :func:`decode_dense` is its
single-view form (no test-time flips).

Which decode a model needs is its manifest's ``postprocessing.decode``, a name in the
decoder registry (:func:`get_decoder`): ``dense_ltrb`` (the default), ``dense_dfl`` (bin
logits per box edge, :func:`dense_dfl_candidates`), ``yolo_anchors``, ``ultralytics`` and
``boxes`` (the graph returns final boxes after its own NMS).

Raw output layout ``[N, 4 + C]`` per image, one row per grid point of every
level (level-major, then row-major): ``reg[4]`` are log-distances from the
point to the box's left, top, right and bottom edges in units of the level's
stride, ``cls[C]`` are class logits. The box is::

    (px - exp(l) * s, py - exp(t) * s, px + exp(r) * s, py + exp(b) * s)

``dense_dfl`` is channels first, ``[4 * R + C, N]`` per image: R bin logits per edge, whose
softmax expectation is the distance in strides (``exp(l)`` above), then the class logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

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
    candidates = dense_candidates(raw, points, strides, score_threshold, pre_nms_top_k)
    return _nms_top(*candidates, iou_threshold, max_detections, vote_iou)


def dense_candidates(
    raw: np.ndarray,
    points: np.ndarray,
    strides: np.ndarray,
    score_threshold: float = 0.05,
    pre_nms_top_k: int = 2000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boxes, scores and labels :func:`decode_dense` hands to NMS (input pixels)."""
    raw = np.asarray(raw, dtype=np.float32)
    keep, scores, labels = _dense_rows(raw[:, 4:], score_threshold, pre_nms_top_k)
    dist = np.exp(np.minimum(raw[keep, :4], MAX_LOG_DISTANCE)) * strides[keep, None]  # [K, 4]
    return _ltrb_boxes(points[keep], dist), scores, labels


def dense_dfl_candidates(
    raw: np.ndarray,
    points: np.ndarray,
    strides: np.ndarray,
    box_bins: int,
    score_threshold: float = 0.05,
    pre_nms_top_k: int = 2000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NMS candidates (input pixels) from a distribution (DFL) head's raw output
    [4 * R + C, N], channels first (the graph's natural layout: no transpose in it): per grid
    point, R bin logits for each side (left, top, right, bottom), then class logits.

    Each side's distance in strides is the expectation of bin values 0 .. R-1 under the
    softmax of its logits (at least 1e-3, as the training evaluation's log-distance form), so
    the boxes equal :func:`dense_candidates` on that form. It is computed for the candidate
    rows only: in the graph it ran on every grid point (28 % of the INT8 zoo
    detector's OpenVINO layer time, benchmarks/results/dfl_decode)."""
    raw = np.asarray(raw, dtype=np.float32)
    width = 4 * int(box_bins)
    if raw.ndim != 2 or raw.shape[0] <= width or raw.shape[1] != len(points):
        raise ValueError(
            f"a raw output of shape {raw.shape} is not [4 x {box_bins} bins + classes, "
            f"{len(points)} points] (a dense_dfl output is channels first)"
        )
    keep, scores, labels = _dense_rows(raw[width:].T, score_threshold, pre_nms_top_k)
    dist = bin_expectation(raw[:width, keep].T.reshape(-1, 4, int(box_bins)))
    return _ltrb_boxes(points[keep], np.maximum(dist, 1e-3) * strides[keep, None]), scores, labels


def bin_expectation(bin_logits: np.ndarray) -> np.ndarray:
    """Expected bin value (0 .. R-1) under the softmax of the last axis's R logits, float32."""
    logits = np.asarray(bin_logits, np.float32)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    values = np.arange(logits.shape[-1], dtype=np.float32)
    return ((weights @ values) / weights.sum(axis=-1)).astype(np.float32)


def _dense_rows(logits: np.ndarray, score_threshold: float, top_k: int):
    """Rows of a dense head's class logits [N, C] whose best class beats the threshold
    (at most ``top_k``), with that class's score and label (see :func:`_candidates`)."""
    rows = _rows_above(logits, score_threshold)
    keep, scores, labels = _candidates(
        sigmoid(logits if rows is None else logits[rows]), score_threshold, top_k
    )
    return (keep if rows is None else rows[keep]), scores, labels


def _ltrb_boxes(points: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """xyxy boxes [K, 4] from grid points [K, 2] and distances [K, 4] to the left, top, right and
    bottom edges (input pixels)."""
    return np.concatenate([points - dist[:, :2], points + dist[:, 2:]], axis=1)


# A row's score is a float32 sigmoid, off from the exact value by far less than this
_SIGMOID_SLACK = 1e-4


def _rows_above(logits: np.ndarray, score_threshold: float) -> np.ndarray | None:
    """Rows [R] (ascending) whose largest logit may give a score above ``score_threshold``: a
    superset of the rows :func:`_candidates` keeps, found on the logits before any sigmoid (most
    grid points are background). The bound is the logit of the threshold less a slack far larger
    than the float32 sigmoid's error, so no row that passes the exact test is dropped; the exact
    test still runs on these rows. None: no useful bound (every row is a candidate)."""
    low = float(score_threshold) - _SIGMOID_SLACK
    if not 1e-20 < low < 1.0:
        return None
    best = logits[:, 0] if logits.shape[1] == 1 else logits.max(axis=1)
    return np.flatnonzero(best > math.log(low / (1.0 - low)))


def _candidates(scores_all: np.ndarray, score_threshold: float, top_k: int):
    """Rows whose best class beats the threshold (at most ``top_k``, best first kept), with that
    class's score and label per kept row."""
    if scores_all.shape[1] == 1:  # one class: argmax is 0 everywhere
        scores = scores_all[:, 0]
        labels = np.zeros(len(scores), np.intp)
    else:
        labels = scores_all.argmax(axis=1)
        scores = scores_all[np.arange(len(labels)), labels]
    keep = np.flatnonzero(scores > score_threshold)
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
    ``resized_height`` (the long side the input size), placed at row ``top``, column ``left``
    (0, 0: the corner, as sarbridge trains; centred for models trained that way, such as
    Ultralytics'), the rest filled with ``fill``.

    The two sides are rounded to whole pixels, so the short side's factor differs slightly from
    the long side's (350 -> 358 px is 1.0229 where 500 -> 512 is 1.024); boxes go back by each
    axis's own factor, as training scales its boxes."""

    height: int
    width: int
    resized_height: int
    resized_width: int
    top: int = 0
    left: int = 0
    fill: float = 0.0

    @property
    def scale(self) -> float:
        """The long side's factor (input size / long side)."""
        return max(self.resized_height, self.resized_width) / max(self.height, self.width)

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes from network-input pixels back to image pixels, clipped to the image."""
        sx, sy = self.resized_width / self.width, self.resized_height / self.height
        out = np.asarray(boxes, np.float32).reshape(-1, 4)
        if self.top or self.left:
            out = out - np.array([self.left, self.top, self.left, self.top], np.float32)
        out = out / np.array([sx, sy, sx, sy], np.float32)
        return np.clip(out, 0, [self.width, self.height, self.width, self.height]).astype(
            np.float32
        )


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) resized by ``scale``, each side rounded to whole pixels (at least one)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resize_channel(channel: np.ndarray, nh: int, nw: int) -> np.ndarray:
    """One float32 [H, W] channel resized to [nh, nw] (PIL bilinear)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(channel), mode="F")
    return np.asarray(img.resize((nw, nh), Image.BILINEAR))


def resize_by(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize [C, H, W] float input by ``scale`` (bilinear), each side rounded to whole pixels
    (at least one); the input is returned as it is (made contiguous) when neither side changes."""
    _, h, w = image.shape
    nh, nw = scaled_size(h, w, scale)
    if (nh, nw) == (h, w):
        return np.ascontiguousarray(image)
    return np.stack([_resize_channel(c, nh, nw) for c in image])


LETTERBOX_ALIGNS = ("corner", "center")


def letterbox_shape(
    height: int, width: int, size: int, align: str = "corner", fill: float = 0.0
) -> Letterbox:
    """How a height x width image is fitted into a ``size`` square (see :func:`letterbox`).

    ``align="center"`` splits the padding as Ultralytics' LetterBox does (the odd pixel goes
    below and right)."""
    nh, nw = scaled_size(height, width, size / max(height, width))
    if align == "corner":
        return Letterbox(height, width, nh, nw, 0, 0, float(fill))
    if align == "center":
        top, left = round((size - nh) / 2 - 0.1), round((size - nw) / 2 - 0.1)
        return Letterbox(height, width, nh, nw, int(top), int(left), float(fill))
    raise ValueError(f"letterbox align must be one of {list(LETTERBOX_ALIGNS)}, got {align!r}")


def letterbox(
    image: np.ndarray,
    size: int,
    out: np.ndarray | None = None,
    align: str = "corner",
    fill: float = 0.0,
) -> tuple[np.ndarray, Letterbox]:
    """Resize [C, H, W] float input so its long side is ``size``; place it in the corner (or
    the centre) of the ``size`` square and fill the rest with ``fill`` (zeros by default).

    Args:
        out: float32 [C, size, size] to write the network input into (e.g. one slot of a reused
            batch); a new array when None.
    """
    c, h, w = image.shape
    box = letterbox_shape(h, w, size, align, fill)
    if out is None:
        out = np.empty((c, size, size), np.float32)
    nh, nw, top, left = box.resized_height, box.resized_width, box.top, box.left
    if (nh, nw) == (h, w):
        out[:, top : top + h, left : left + w] = image
    else:
        for k in range(c):
            out[k, top : top + nh, left : left + nw] = _resize_channel(image[k], nh, nw)
    pad_letterbox(out, box)
    return out, box


def pad_letterbox(out: np.ndarray, box: Letterbox) -> None:
    """Fill the padding around the resized image of a network input [C, S, S] with
    ``box.fill``."""
    top, left, h, w, v = box.top, box.left, box.resized_height, box.resized_width, box.fill
    out[:, :top, :] = v
    out[:, top + h :, :] = v
    out[:, top : top + h, :left] = v
    out[:, top : top + h, left + w :] = v


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
    candidates = yolo_candidates(raw, cells, strides, anchors, score_threshold, pre_nms_top_k)
    return _nms_top(*candidates, iou_threshold, max_detections, vote_iou)


def yolo_candidates(
    raw: np.ndarray,
    cells: np.ndarray,
    strides: np.ndarray,
    anchors: np.ndarray,
    score_threshold: float = 0.05,
    pre_nms_top_k: int = 2000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boxes, scores and labels :func:`decode_yolo` hands to NMS (input pixels)."""
    raw = np.asarray(raw, dtype=np.float32)
    # a score is sigmoid(obj) * sigmoid(cls) <= sigmoid(obj): rows are found on the objectness
    rows = _rows_above(raw[:, 4:5], score_threshold)
    sub = raw if rows is None else raw[rows]
    keep, scores, labels = _candidates(
        sigmoid(sub[:, 4:5]) * sigmoid(sub[:, 5:]), score_threshold, pre_nms_top_k
    )
    if rows is not None:
        keep = rows[keep]
    r = raw[keep]
    centre = (cells[keep] + sigmoid(r[:, :2])) * strides[keep, None]
    size = anchors[keep] * np.exp(np.minimum(r[:, 2:4], MAX_LOG_DISTANCE))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    return boxes, scores, labels


def ultralytics_candidates(
    raw: np.ndarray, score_threshold: float = 0.05, pre_nms_top_k: int = 2000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NMS candidates of one image from an Ultralytics detection export (YOLOv8, YOLO11).

    Ultralytics' ONNX graph ends before NMS with one output [B, 4 + C, N]: per anchor point,
    the box centre x, y, width and height in network-input pixels, then the C class
    probabilities (the sigmoid is in the graph). ``raw`` is one image's [4 + C, N].
    """
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 2 or raw.shape[0] < 5:
        raise ValueError(
            f"an Ultralytics detection output per image is [4 + classes, anchors], got {raw.shape}"
        )
    keep, scores, labels = _candidates(raw[4:].T, score_threshold, pre_nms_top_k)
    centre, size = raw[:2, keep].T, raw[2:4, keep].T
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    return boxes, scores, labels


# ---------------------------------------------------------------- test-time flips

# the flips of test-time augmentation and the image axes ([..., H, W]) each reverses
FLIP_AXES = {"h": (-1,), "v": (-2,), "hv": (-2, -1)}


def parse_flips(value) -> tuple[str, ...]:
    """Test-time flips as a tuple of :data:`FLIP_AXES` names, from a list or from text
    (``"h,v,hv"``; ``"off"``, ``"none"``, empty, or False as YAML reads a bare ``off``: none);
    ValueError on anything else."""
    if value is None or value is False:
        return ()
    if isinstance(value, str):
        text = value.strip().lower()
        value = () if text in ("", "off", "none") else [t.strip() for t in text.split(",")]
    try:
        flips = tuple(value)
    except TypeError:
        flips = (value,)
    bad = [f for f in flips if f not in FLIP_AXES]
    if bad or len(set(flips)) != len(flips):
        raise ValueError(
            f"test-time flips are distinct names among {sorted(FLIP_AXES)} ('h' mirrors left-"
            f"right, 'v' top-bottom, 'hv' both), not {value!r}"
        )
    return flips


def flip_inputs(inputs: np.ndarray, flip: str) -> np.ndarray:
    """Network inputs [..., S, S] seen under ``flip`` (a contiguous copy)."""
    return np.ascontiguousarray(np.flip(inputs, FLIP_AXES[flip]))


def unflip_boxes(boxes: np.ndarray, flip: str, input_size: int) -> np.ndarray:
    """Boxes [K, 4] xyxy found in the ``flip`` view of a square input, back in the input's frame."""
    out = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    if "h" in flip:
        out[:, [0, 2]] = input_size - out[:, [2, 0]]
    if "v" in flip:
        out[:, [1, 3]] = input_size - out[:, [3, 1]]
    return out


def decode_views(
    raws,
    candidates,
    flips: tuple[str, ...],
    input_size: int,
    iou_threshold: float = 0.5,
    max_detections: int = 300,
    vote_iou: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image seen plain and under each of ``flips`` (test-time augmentation): every view's
    NMS candidates, boxes mapped back to the plain view, then one NMS (and box voting) over them
    all. With no flips this is the plain decode.

    Args:
        raws: the 1 + len(flips) raw outputs of the image: the plain view's, then one per flip.
        candidates: ``candidates(raw) -> (boxes, scores, labels)``, e.g. :func:`dense_candidates`
            with its grid bound.
    """
    if len(raws) != 1 + len(flips):
        raise ValueError(f"{len(raws)} raw outputs for {1 + len(flips)} views")
    if not flips:  # the plain decode, without copying the candidates
        return _nms_top(*candidates(raws[0]), iou_threshold, max_detections, vote_iou)
    parts = [candidates(r) for r in raws]
    boxes = np.concatenate(
        [parts[0][0]]
        + [unflip_boxes(p[0], f, input_size) for p, f in zip(parts[1:], flips, strict=True)]
    ).astype(np.float32)
    scores = np.concatenate([p[1] for p in parts])
    labels = np.concatenate([p[2] for p in parts])
    return _nms_top(boxes, scores, labels, iou_threshold, max_detections, vote_iou)


# ---------------------------------------------------------------- decoder registry

# boxes, scores, labels of one image's raw output, in network-input pixels, before NMS
Candidates = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]

DEFAULT_DECODE = "dense_ltrb"  # a manifest without postprocessing.decode
DEFAULT_STRIDES = (8, 16, 32)  # a manifest without postprocessing.strides


@dataclass(frozen=True)
class Decoder:
    """One ``postprocessing.decode`` of the manifest.

    Attributes:
        name: the manifest's ``postprocessing.decode`` value.
        build: ``build(postprocessing, input_size, score_threshold) -> candidates`` (see
            :data:`Candidates`), the per-image function :func:`decode_views` takes; None for a
            decode whose graph already returns final detections.
        runtime_nms: the runtime runs NMS on the candidates (so box voting and test-time
            flips are possible); False when the graph runs its own.
        requires: ``postprocessing`` keys this decode cannot work without.
        description: one line for errors and docs.
    """

    name: str
    build: Callable[[dict, int, float], Candidates] | None
    runtime_nms: bool
    requires: tuple[str, ...] = ()
    description: str = ""


_DECODERS: dict[str, Decoder] = {}


def register_decoder(
    name: str,
    build: Callable[[dict, int, float], Candidates] | None,
    *,
    runtime_nms: bool,
    requires: tuple[str, ...] = (),
    description: str = "",
) -> Decoder:
    """Register a decode under ``name``; ValueError when the name is taken."""
    if name in _DECODERS:
        raise ValueError(f"decoder {name!r} is already registered")
    if runtime_nms and build is None:
        raise ValueError(
            f"decoder {name!r}: a decode with the runtime's NMS needs a build function"
        )
    decoder = Decoder(name, build, runtime_nms, tuple(requires), description)
    _DECODERS[name] = decoder
    return decoder


def list_decoders() -> list[str]:
    """Names of the registered decodes (the values ``postprocessing.decode`` may take)."""
    return sorted(_DECODERS)


def get_decoder(name: str) -> Decoder:
    """The decode called ``name``; ValueError naming the choices when there is none."""
    try:
        return _DECODERS[name]
    except KeyError:
        raise ValueError(
            f"unknown decode {name!r}; choose one of: {', '.join(list_decoders())}"
        ) from None


def manifest_strides(post: dict) -> tuple[int, ...]:
    """``postprocessing.strides`` as ints (the default levels when absent)."""
    return tuple(int(s) for s in post.get("strides", DEFAULT_STRIDES))


def _build_dense(post: dict, input_size: int, score_threshold: float) -> Candidates:
    points, strides = grid_points(input_size, manifest_strides(post))
    return partial(
        dense_candidates, points=points, strides=strides, score_threshold=score_threshold
    )


def _build_dense_dfl(post: dict, input_size: int, score_threshold: float) -> Candidates:
    points, strides = grid_points(input_size, manifest_strides(post))
    return partial(
        dense_dfl_candidates,
        points=points,
        strides=strides,
        box_bins=int(post["box_bins"]),
        score_threshold=score_threshold,
    )


def _build_yolo(post: dict, input_size: int, score_threshold: float) -> Candidates:
    cells, strides, anchors = yolo_grid(
        input_size, manifest_strides(post), np.asarray(post["anchors"], np.float32)
    )
    return partial(
        yolo_candidates,
        cells=cells,
        strides=strides,
        anchors=anchors,
        score_threshold=score_threshold,
    )


register_decoder(
    "dense_ltrb",
    _build_dense,
    runtime_nms=True,
    description="anchor-free grid points: log-distances to the box edges, class logits",
)
register_decoder(
    "dense_dfl",
    _build_dense_dfl,
    runtime_nms=True,
    requires=("box_bins",),
    description="anchor-free grid points: box_bins logits per box edge (the distance in "
    "strides is their softmax expectation), class logits",
)
register_decoder(
    "yolo_anchors",
    _build_yolo,
    runtime_nms=True,
    requires=("anchors",),
    description="YOLOv3 anchors per level: tx, ty, tw, th, objectness, class logits",
)
register_decoder(
    "ultralytics",
    lambda post, input_size, score_threshold: partial(
        ultralytics_candidates, score_threshold=score_threshold
    ),
    runtime_nms=True,
    description="Ultralytics YOLOv8/YOLO11 export: centre x, y, width, height, class "
    "probabilities per anchor point ([4 + C, N] per image)",
)
register_decoder(
    "boxes",
    None,
    runtime_nms=False,
    description="the graph's own NMS: boxes, scores, labels outputs (batch 1)",
)
