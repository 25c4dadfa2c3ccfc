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
    from sarbridge.train.models.edge_det import EdgeDetector

    return EdgeDetector(num_classes=num_classes, backbone=backbone, width=width, box_bins=box_bins)


@register_detector(
    "yolov3_darknet53", preprocess=SarPreprocess(), input_size=416, default_backbone="darknet53"
)
def yolov3_darknet53(
    num_classes: int = 1, backbone: str = "darknet53", width: int = 512, input_size: int = 416
) -> nn.Module:
    # anchors: DEFAULT_ANCHORS until the trainer re-estimates them by k-means (DetModel.anchors)
    from sarbridge.train.models.yolov3 import YOLOv3

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
    from sarbridge.train.models.faster_rcnn import FasterRCNNFPN

    return FasterRCNNFPN(
        num_classes=num_classes, backbone=backbone, fpn_channels=width, input_size=input_size
    )


def model_kind(model: nn.Module) -> str:
    model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return getattr(model, "kind", "dense")
