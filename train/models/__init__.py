"""Models apart from the loops: the detector registry (``edge_det``, ``yolov3_darknet53``,
``faster_rcnn_r50_fpn``), the backbone registry (``edge``, ``darknet53``, ``resnet18``,
``resnet50``), shared layers, and the BNN. Build a detector by name with
:func:`build_detector`, or from a recipe's config with
:func:`sarbridge.train.recipes.detect.model_from_config`."""

from sarbridge.train.models.backbones import build_backbone, list_backbones, register_backbone
from sarbridge.train.models.registry import (
    build_detector,
    detector_spec,
    list_detectors,
    register_detector,
)

__all__ = [
    "build_backbone",
    "build_detector",
    "detector_spec",
    "list_backbones",
    "list_detectors",
    "register_backbone",
    "register_detector",
]
