"""Detector registry: builders by name, each declaring its default preprocessing.

``build_detector(name, num_classes=..., backbone=..., width=...)`` returns a
model whose ``forward(images [B, 1, S, S])`` gives the raw dense output
decoded by :func:`sarbridge.runtime.decode.decode_dense`, with ``strides``.
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


_DETECTORS: dict[str, DetectorSpec] = {}


def register_detector(
    name: str, *, preprocess: SarPreprocess, input_size: int, default_backbone: str
):
    def wrap(fn):
        if name in _DETECTORS:
            raise ValueError(f"detector {name!r} is already registered")
        _DETECTORS[name] = DetectorSpec(fn, preprocess, input_size, default_backbone)
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
def edge_det(num_classes: int = 1, backbone: str = "edge", width: int = 64) -> nn.Module:
    from sarbridge.train.edge_detector import EdgeDetector

    return EdgeDetector(num_classes=num_classes, backbone=backbone, width=width)
