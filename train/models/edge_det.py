"""The edge detector: a small anchor-free one-stage SAR ship detector for Jetson-class boards.

Backbone (``edge`` by default) -> PAN neck (top-down and bottom-up, CSP blocks)
-> per-level decoupled heads (classification / box) at strides 8, 16, 32.
Plain 3x3/1x1 convolutions, BatchNorm and ReLU only: it folds, exports and
quantizes cleanly. Decode and NMS stay outside the graph, in the runtime's
numpy :func:`~sarbridge.runtime.decode.decode_dense`.

Training uses task-aligned assignment (TOOD/YOLOv8 style): for each ship, the
top-k grid points (inside the box or near its centre) by
``score^alpha * IoU^beta`` become positives, with soft classification targets
scaled to the best IoU; losses are BCE for classes and GIoU for boxes.

Box regression, two forms (``box_bins``):
- 0: one log-distance per side (distance = exp(reg) * stride);
- R > 0: distribution focal loss (GFL / YOLOv8 style): each side's distance in strides is a
  softmax over R bins 0 .. R-1, its expectation the distance, trained with the DFL term beside
  GIoU. The forward pass outputs the expectation's logarithm, so the training evaluation
  decodes both forms alike; the exported graph outputs the bin logits instead
  (:func:`box_distributions`), and the runtime's ``dense_dfl`` decode computes the
  expectation for the candidate grid points only.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from sarbridge.runtime.decode import MAX_LOG_DISTANCE, grid_points
from sarbridge.train.models.backbones import build_backbone
from sarbridge.train.models.layers import CSPStage, conv_bn_act


class EdgeDetector(nn.Module):
    """Anchor-free detector; ``forward(x [B, 1, S, S]) -> raw [B, N, 4 + C]`` (see runtime.decode)."""

    strides = (8, 16, 32)

    def __init__(
        self,
        num_classes: int = 1,
        backbone: str = "edge",
        width: int = 64,
        in_channels: int = 1,
        box_bins: int = 0,
    ):
        super().__init__()
        if box_bins == 1 or box_bins < 0:
            raise ValueError(
                f"box_bins must be 0 (log-distance boxes) or at least 2, not {box_bins}"
            )
        self.num_classes = num_classes
        self.box_bins = box_bins
        self.emit_box_bins = False  # set by box_distributions()
        self.emit_features = False  # set by neck_features()
        self.backbone = build_backbone(backbone, in_channels=in_channels)
        c3, c4, c5 = self.backbone.out_channels
        w = width
        self.lat5, self.lat4, self.lat3 = (
            conv_bn_act(c5, w, 1),
            conv_bn_act(c4, w, 1),
            conv_bn_act(c3, w, 1),
        )
        self.td4, self.td3 = CSPStage(2 * w, w, 1), CSPStage(2 * w, w, 1)
        self.down3, self.bu4 = conv_bn_act(w, w, 3, 2), CSPStage(2 * w, w, 1)
        self.down4, self.bu5 = conv_bn_act(w, w, 3, 2), CSPStage(2 * w, w, 1)
        self.cls_towers = nn.ModuleList(
            nn.Sequential(conv_bn_act(w, w), conv_bn_act(w, w)) for _ in self.strides
        )
        self.reg_towers = nn.ModuleList(
            nn.Sequential(conv_bn_act(w, w), conv_bn_act(w, w)) for _ in self.strides
        )
        self.cls_out = nn.ModuleList(nn.Conv2d(w, num_classes, 1) for _ in self.strides)
        self.reg_out = nn.ModuleList(nn.Conv2d(w, 4 * max(box_bins, 1), 1) for _ in self.strides)
        # bin values 0 .. R-1 (in strides) for the expectation; a buffer so it moves with the model
        self.register_buffer(
            "bin_values", torch.arange(max(box_bins, 1), dtype=torch.float32), persistent=False
        )
        prior = -math.log((1 - 0.01) / 0.01)  # start with 1% foreground probability
        for conv in self.cls_out:
            nn.init.constant_(conv.bias, prior)
        for conv in self.reg_out:
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """raw [B, N, 4 + C]: per grid point 4 log-distances (left, top, right, bottom, in strides)
        and C class logits; inside :func:`box_distributions` (training with box_bins) the
        4 * R bin logits instead of the log-distances, [B, N, 4 * R + C]. (A flag, not an
        argument: the graph stays traceable and DDP's forward is the one that runs.) Inside
        :func:`neck_features`, ``(raw, [P3, N4, N5])``: the neck levels the heads read, for
        feature distillation."""
        c3, c4, c5 = self.backbone(x)
        p5 = self.lat5(c5)
        p4 = self.td4(
            torch.cat([self.lat4(c4), F.interpolate(p5, scale_factor=2.0, mode="nearest")], 1)
        )
        p3 = self.td3(
            torch.cat([self.lat3(c3), F.interpolate(p4, scale_factor=2.0, mode="nearest")], 1)
        )
        n4 = self.bu4(torch.cat([self.down3(p3), p4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        outs = []
        for k, feat in enumerate((p3, n4, n5)):
            reg = self.reg_out[k](self.reg_towers[k](feat))  # [B, 4 * max(R, 1), h, w]
            if self.box_bins and not self.emit_box_bins:
                reg = torch.log(self.expected_distance(reg.unflatten(1, (4, self.box_bins))))
            cls = self.cls_out[k](self.cls_towers[k](feat))  # [B, C, h, w]
            outs.append(torch.cat([reg, cls], 1).flatten(2))  # [B, 4 + C, h*w]
        raw = torch.cat(outs, 2).transpose(1, 2)  # [B, N, 4 + C]
        return (raw, [p3, n4, n5]) if self.emit_features else raw

    def pruning_scope(self) -> tuple[nn.Module, list[nn.Module]]:
        """What channel pruning may change: the whole detector, except the output convolutions
        of the heads (class logits, box sides or DFL bins keep their count)."""
        return self, [*self.cls_out, *self.reg_out]

    def expected_distance(self, bin_logits: torch.Tensor) -> torch.Tensor:
        """Distance [B, 4, h, w] in strides from bin logits [B, 4, R, h, w], kept above 1e-3
        strides so that its logarithm stays finite (see :func:`bin_expectation`)."""
        values = self.bin_values.view(1, 1, -1, 1, 1)
        return bin_expectation(bin_logits, values, 2).clamp(min=1e-3)


def bin_expectation(bin_logits: torch.Tensor, values: torch.Tensor, dim: int) -> torch.Tensor:
    """Expected bin value (``values``: 0 .. R-1, shaped to broadcast along ``dim``) under the
    softmax of the logits: the DFL head's box-side distance in strides, for the exported graph
    and the loss alike. (``values`` comes in shaped, from a buffer: traced graphs hold a
    constant and no shape arithmetic.)

    The softmax is written out (exp of the logits less their maximum, weighted sum over
    plain sum): the same numbers, but ONNX Runtime's Softmax on a middle axis of a 5-D
    tensor is several times slower on the CPU than these reductions, a noticeable share of the
    model's time (measured in benchmarks/results/cpu_epyc_2core_dfl).
    The exponentials stay at or below 1, so FP16 engines do not overflow."""
    values = values.to(bin_logits.dtype)
    weights = torch.exp(bin_logits - bin_logits.amax(dim, keepdim=True))
    return (weights * values).sum(dim) / weights.sum(dim)


@contextmanager
def _switched_on(model: nn.Module, flag: str):
    setattr(model, flag, True)
    try:
        yield model
    finally:
        setattr(model, flag, False)


def box_distributions(model: nn.Module):
    """Within the block, a box_bins EdgeDetector outputs its bin logits (what the loss needs)."""
    return _switched_on(model, "emit_box_bins")


def neck_features(model: nn.Module):
    """Within the block, an EdgeDetector returns ``(raw, [P3, N4, N5])`` (distillation)."""
    return _switched_on(model, "emit_features")


def grid(input_size: int, strides, device) -> tuple[torch.Tensor, torch.Tensor]:
    """runtime.decode.grid_points as tensors: centres [N, 2] and strides [N] (one grid layout)."""
    points, per_point = grid_points(input_size, tuple(strides))
    return torch.from_numpy(points).to(device), torch.from_numpy(per_point).to(device)


def decode_boxes(reg: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """reg [..., N, 4] log-distances -> boxes [..., N, 4] xyxy (same formula as runtime.decode)."""
    dist = torch.exp(reg.clamp(max=MAX_LOG_DISTANCE)) * strides[:, None]
    return torch.cat([points - dist[..., :2], points + dist[..., 2:]], -1)
