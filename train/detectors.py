"""Detector registry: builders by name, each declaring its default preprocessing.

Two kinds of model sit behind one training/evaluation interface
(:func:`detector_loss`, :func:`detector_predict`):

* ``dense`` (``edge_det``): ``forward(images [B, 1, S, S])`` gives the raw dense
  output decoded by :func:`sarbridge.runtime.decode.decode_dense` (the same
  numpy code the deployed model uses), with ``strides``;
* ``torchvision`` (``faster_rcnn_r50_fpn``): a torchvision detection model
  (losses in training mode, boxes in eval mode).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

from torch import nn

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.preprocess import SarPreprocess


@dataclass(frozen=True)
class DetectorSpec:
    """A registered detector: its builder and the preprocessing the manifest carries."""

    build: Callable[..., nn.Module]
    preprocess: SarPreprocess
    input_size: int
    default_backbone: str
    kind: str = "dense"


_DETECTORS: dict[str, DetectorSpec] = {}


def register_detector(
    name: str,
    *,
    preprocess: SarPreprocess,
    input_size: int,
    default_backbone: str,
    kind: str = "dense",
):
    def wrap(fn):
        if name in _DETECTORS:
            raise ValueError(f"detector {name!r} is already registered")
        _DETECTORS[name] = DetectorSpec(fn, preprocess, input_size, default_backbone, kind)
        return fn

    return wrap


def list_detectors() -> list[str]:
    return sorted(_DETECTORS)


def detector_spec(name: str) -> DetectorSpec:
    if name not in _DETECTORS:
        raise SarbridgeError(f"unknown detector {name!r}; choose one of {list_detectors()}")
    return _DETECTORS[name]


def build_detector(
    name: str, *, num_classes: int = 1, backbone: str | None = None, **kwargs
) -> nn.Module:
    spec = detector_spec(name)
    return spec.build(num_classes=num_classes, backbone=backbone or spec.default_backbone, **kwargs)


@register_detector("edge_det", preprocess=SarPreprocess(), input_size=512, default_backbone="edge")
def edge_det(
    num_classes: int = 1,
    backbone: str = "edge",
    width: int = 64,
    input_size: int = 512,
    box_bins: int = 0,
) -> nn.Module:
    # input_size: any multiple of 32 works; the graph does not depend on it
    # box_bins: 0 log-distance boxes, R > 0 distribution (DFL) boxes over R bins
    from sarbridge.train.edge_detector import EdgeDetector

    return EdgeDetector(num_classes=num_classes, backbone=backbone, width=width, box_bins=box_bins)


@register_detector(
    "yolov3_darknet53", preprocess=SarPreprocess(), input_size=416, default_backbone="darknet53"
)
def yolov3_darknet53(
    num_classes: int = 1, backbone: str = "darknet53", width: int = 512, input_size: int = 416
) -> nn.Module:
    # anchors: DEFAULT_ANCHORS until the trainer re-estimates them by k-means (DetModel.anchors)
    from sarbridge.train.yolov3 import YOLOv3

    return YOLOv3(num_classes=num_classes, backbone=backbone, width=width)


@register_detector(
    "faster_rcnn_r50_fpn",
    preprocess=SarPreprocess(),
    input_size=512,
    default_backbone="resnet50",
    kind="torchvision",
)
def faster_rcnn_r50_fpn(
    num_classes: int = 1, backbone: str = "resnet50", width: int = 256, input_size: int = 512
) -> nn.Module:
    from sarbridge.train.two_stage import FasterRCNNFPN

    return FasterRCNNFPN(
        num_classes=num_classes, backbone=backbone, fpn_channels=width, input_size=input_size
    )


def _kind(model: nn.Module) -> str:
    model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return getattr(model, "kind", "dense")


def detector_loss(
    model: nn.Module, images, targets: list[dict], input_size: int, box_weight: float | None = None
):
    """(loss, logs) of a batch: images [B, 1, S, S], targets {"boxes" [M, 4], "labels" [M]} per image.

    ``box_weight`` sets the anchor-free detectors' box loss weight (None: their default)."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    head = (
        "torchvision" if _kind(model) == "torchvision" else getattr(inner, "decode", "dense_ltrb")
    )
    if box_weight is not None and head != "dense_ltrb":
        raise SarbridgeError(
            f"model.box_weight applies to the anchor-free detectors only, not {type(inner).__name__}"
        )
    if head == "torchvision":
        losses = model(images, targets)
        loss = sum(losses.values())
        return loss, {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}}
    if head == "yolo_anchors":
        from sarbridge.train.yolov3 import yolo_loss

        return yolo_loss(inner, model(images).float(), targets, input_size)
    from sarbridge.train.edge_detector import box_distributions, detection_loss

    weights = {} if box_weight is None else {"box_weight": box_weight}
    bins = getattr(inner, "box_bins", 0)
    with box_distributions(inner) if bins else nullcontext():
        raw = model(images)
    return detection_loss(
        raw.float(), targets, input_size, tuple(inner.strides), box_bins=bins, **weights
    )


def detector_predict(
    model: nn.Module,
    images,
    input_size: int,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    vote_iou: float | None = None,
    flips: tuple[str, ...] = (),
):
    """Per image (boxes [K, 4], scores [K], labels [K]) in network-input pixels, as numpy.
    ``vote_iou``: box voting after NMS; ``flips``: test-time flips merged before NMS
    (:func:`~sarbridge.runtime.decode.decode_views`). Both need the runtime's NMS, so dense heads
    only (torchvision's detector runs its own)."""
    if _kind(model) == "torchvision":
        if vote_iou is not None or flips:
            raise SarbridgeError(
                "box voting (vote_iou) and test-time flips need the runtime's NMS; the two-stage "
                "detector runs torchvision's: leave eval.vote_iou and eval.tta_flips unset"
            )
        heads = model.detector.roi_heads
        heads.score_thresh, heads.nms_thresh, heads.detections_per_img = (
            score_threshold,
            iou_threshold,
            max_detections,
        )
        return [
            (
                o["boxes"].float().cpu().numpy(),
                o["scores"].float().cpu().numpy(),
                o["labels"].cpu().numpy() - 1,
            )
            for o in model(images)
        ]
    from sarbridge.runtime.decode import FLIP_AXES

    views = [images] + [images.flip(FLIP_AXES[f]) for f in flips]
    raw = [model(v).float().cpu().numpy() for v in views]  # each [B, N, 4 + C] or [B, N, 5 + C]
    return decode_raw(
        model, raw, input_size, score_threshold, iou_threshold, max_detections, vote_iou, flips
    )


def decode_raw(
    model: nn.Module,
    raw,
    input_size: int,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    vote_iou: float | None = None,
    flips: tuple[str, ...] = (),
):
    """A dense model's raw numpy output [B, N, K] -> per image (boxes, scores, labels), through the
    runtime's decode for the model's head (anchor-free ``dense_candidates`` or YOLOv3
    ``yolo_candidates``, then NMS). ``raw`` may also be a list of the 1 + len(flips) views'
    outputs (plain first, then one per test-time flip), each [B, N, K]."""
    from functools import partial

    from sarbridge.runtime.decode import (
        decode_views,
        dense_candidates,
        grid_points,
        yolo_candidates,
        yolo_grid,
    )

    views = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    if getattr(model, "decode", "dense_ltrb") == "yolo_anchors":
        cells, strides, anchors = yolo_grid(
            input_size, tuple(model.strides), model.anchors.cpu().numpy()
        )
        candidates = partial(
            yolo_candidates,
            cells=cells,
            strides=strides,
            anchors=anchors,
            score_threshold=score_threshold,
        )
    else:
        points, strides = grid_points(input_size, tuple(model.strides))
        candidates = partial(
            dense_candidates, points=points, strides=strides, score_threshold=score_threshold
        )
    return [
        decode_views(
            per_image, candidates, flips, input_size, iou_threshold, max_detections, vote_iou
        )
        for per_image in zip(*views, strict=True)
    ]
