"""Backbones shared by the BNN and the detectors, built by name from a registry.

Every backbone maps an image [B, C_in, H, W] to three feature maps at strides
8, 16 and 32 (C3, C4, C5) and declares their channels in ``out_channels``.

* ``resnet18``, ``resnet50``: torchvision ResNets (stem adapted to 1-channel SAR);
* ``darknet53``: the YOLOv3 backbone (our implementation, LeakyReLU 0.1);
* ``edge``: a small CSP-Darknet-style net for Jetson-class boards, plain
  3x3/1x1 convolutions, BatchNorm and ReLU (quantizes cleanly to INT8),
  about 1.2 M parameters; ``edge_s`` and ``edge_m``: the same net wider and deeper
  (``EDGE_SCALES``), distillation teachers.

ImageNet initialisation reads a LOCAL torchvision-style state_dict file (never
downloads); for a 1-channel input the RGB stem filters are summed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.train.models.layers import SPPF, CSPStage, Residual, conv_bn_act

_REGISTRY: dict[str, Callable[..., Backbone]] = {}


class Backbone(nn.Module):
    """Base class: ``forward(x) -> [C3, C4, C5]`` with ``out_channels`` and ``strides``."""

    out_channels: tuple[int, int, int]
    strides: tuple[int, int, int] = (8, 16, 32)
    name: str = ""


def register_backbone(name: str):
    """Register a backbone builder under ``name`` (duplicate names are refused)."""

    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def build_backbone(
    name: str, *, in_channels: int = 1, imagenet_weights: str | Path | None = None
) -> Backbone:
    """Build backbone ``name`` for ``in_channels`` inputs, optionally from local ImageNet weights."""
    if name not in _REGISTRY:
        raise SarbridgeError(f"unknown backbone {name!r}; choose one of {list_backbones()}")
    model = _REGISTRY[name](in_channels=in_channels)
    model.name = name
    if imagenet_weights is not None:
        load_imagenet_weights(model, imagenet_weights)
    return model


# ---------------------------------------------------------------- edge


class EdgeNet(Backbone):
    """Small CSP-Darknet-style backbone: widths (16, 32, 64, 128, 256), ReLU, SPPF on C5."""

    def __init__(self, in_channels: int = 1, widths=(16, 32, 64, 128, 256), depths=(1, 2, 2, 1)):
        super().__init__()
        w = widths
        self.stem = conv_bn_act(in_channels, w[0], 3, 2)  # /2
        self.stage1 = nn.Sequential(
            conv_bn_act(w[0], w[1], 3, 2), CSPStage(w[1], w[1], depths[0])
        )  # /4
        self.stage2 = nn.Sequential(
            conv_bn_act(w[1], w[2], 3, 2), CSPStage(w[2], w[2], depths[1])
        )  # /8
        self.stage3 = nn.Sequential(
            conv_bn_act(w[2], w[3], 3, 2), CSPStage(w[3], w[3], depths[2])
        )  # /16
        self.stage4 = nn.Sequential(
            conv_bn_act(w[3], w[4], 3, 2), CSPStage(w[4], w[4], depths[3]), SPPF(w[4])
        )
        self.out_channels = (w[2], w[3], w[4])

    def forward(self, x):
        x = self.stage1(self.stem(x))
        c3 = self.stage2(x)
        c4 = self.stage3(c3)
        return [c3, c4, self.stage4(c4)]


# Scales of the edge backbone, like the YOLO families' n / s / m: (width, depth) multipliers of
# EdgeNet's widths (16, 32, 64, 128, 256) and CSP depths (1, 2, 2, 1). ``edge`` is the deployed
# board model (n); ``edge_s`` and ``edge_m`` are wider and deeper, mainly as distillation
# teachers (``configs/det_edge_m_512.yaml``; their neck width is the detector's ``model.width``).
EDGE_SCALES = {"edge": (1, 1), "edge_s": (2, 1), "edge_m": (3, 2)}


def _edge_scale(name: str):
    wm, dm = EDGE_SCALES[name]

    def build(in_channels: int = 1) -> Backbone:
        widths = tuple(wm * c for c in (16, 32, 64, 128, 256))
        return EdgeNet(in_channels, widths, tuple(dm * d for d in (1, 2, 2, 1)))

    build.__doc__ = f"EdgeNet at {wm}x the widths and {dm}x the depths of ``edge``."
    return build


for _name in EDGE_SCALES:
    register_backbone(_name)(_edge_scale(_name))


# ---------------------------------------------------------------- darknet53


class Darknet53(Backbone):
    """YOLOv3's Darknet-53: 52 convolutions in residual stages of 1, 2, 8, 8, 4 blocks."""

    def __init__(self, in_channels: int = 1):
        super().__init__()

        def stage(c_in, c_out, n):
            return nn.Sequential(
                conv_bn_act(c_in, c_out, 3, 2, "leaky"),
                *[Residual(c_out, act="leaky") for _ in range(n)],
            )

        self.stem = conv_bn_act(in_channels, 32, 3, 1, "leaky")
        self.stage1 = stage(32, 64, 1)
        self.stage2 = stage(64, 128, 2)
        self.stage3 = stage(128, 256, 8)
        self.stage4 = stage(256, 512, 8)
        self.stage5 = stage(512, 1024, 4)
        self.out_channels = (256, 512, 1024)

    def forward(self, x):
        x = self.stage2(self.stage1(self.stem(x)))
        c3 = self.stage3(x)
        c4 = self.stage4(c3)
        return [c3, c4, self.stage5(c4)]


@register_backbone("darknet53")
def darknet53(in_channels: int = 1) -> Backbone:
    return Darknet53(in_channels)


# ---------------------------------------------------------------- resnets


class TorchvisionResNet(Backbone):
    """A torchvision ResNet body (no pooling/fc) returning layer2/3/4 outputs."""

    def __init__(self, arch: str, in_channels: int = 1):
        super().__init__()
        import torchvision

        body = getattr(torchvision.models, arch)(weights=None)
        if in_channels != 3:
            body.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        del body.fc
        self.body = body
        expansion = 4 if arch in ("resnet50", "resnet101") else 1
        self.out_channels = (128 * expansion, 256 * expansion, 512 * expansion)

    def forward(self, x):
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        c3 = b.layer2(b.layer1(x))
        c4 = b.layer3(c3)
        return [c3, c4, b.layer4(c4)]


@register_backbone("resnet18")
def resnet18(in_channels: int = 1) -> Backbone:
    return TorchvisionResNet("resnet18", in_channels)


@register_backbone("resnet50")
def resnet50(in_channels: int = 1) -> Backbone:
    return TorchvisionResNet("resnet50", in_channels)


# ---------------------------------------------------------------- weights


def load_imagenet_weights(model: Backbone, path: str | Path) -> list[str]:
    """Load a local torchvision-style ImageNet state_dict into a backbone.

    Keys may carry a ``body.`` prefix or none (torchvision's own files); the
    classifier (``fc.*``) is ignored; RGB stem filters are summed for 1-channel
    input. Returns the backbone keys left at their initial values.
    """
    path = Path(path)
    if not path.is_file():
        raise SarbridgeError(
            f"{path}: ImageNet weights file not found (weights are never downloaded)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SarbridgeError(f"{path}: cannot read weights ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.state_dict()
    prefix = "body." if any(k.startswith("body.") for k in own) else ""
    mapped = {}
    for k, v in state.items():
        if k.startswith("fc."):
            continue
        key = k if k in own else prefix + k
        if key not in own:
            continue
        if v.shape != own[key].shape and v.ndim == 4 and own[key].shape[1] == 1 and v.shape[1] == 3:
            v = v.sum(dim=1, keepdim=True)  # RGB stem -> single-channel SAR stem
        if v.shape != own[key].shape:
            raise SarbridgeError(
                f"{path}: '{k}' has shape {tuple(v.shape)}, the backbone needs {tuple(own[key].shape)}"
            )
        mapped[key] = v
    if not mapped:
        raise SarbridgeError(
            f"{path}: no key matches backbone '{model.name}' (is it the right architecture?)"
        )
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    model.load_state_dict(mapped, strict=False)
    return missing


def save_backbone_weights(model: Backbone, path: str | Path, **meta) -> Path:
    """Write backbone weights in the form detectors load: {backbone, in_channels, state_dict, ...}."""
    from sarbridge.train.checkpoint import atomic_torch_save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    payload = {
        "backbone": model.name,
        "in_channels": stem.in_channels,
        "state_dict": model.state_dict(),
        **meta,
    }
    atomic_torch_save(payload, path)
    return path


def load_backbone_weights(model: Backbone, path: str | Path) -> dict:
    """Load weights written by :func:`save_backbone_weights` (e.g. the BNN SAR branch) into ``model``."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise SarbridgeError(f"{path}: backbone weights file not found") from exc
    except Exception as exc:
        raise SarbridgeError(f"{path}: cannot read backbone weights ({exc})") from exc
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise SarbridgeError(f"{path}: not a sarbridge backbone file (no 'state_dict')")
    if payload.get("backbone") != model.name:
        raise SarbridgeError(
            f"{path}: weights are for backbone {payload.get('backbone')!r}, not {model.name!r}"
        )
    model.load_state_dict(payload["state_dict"])
    return {k: v for k, v in payload.items() if k != "state_dict"}
