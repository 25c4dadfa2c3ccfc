"""YOLOv3 (the paper's one-stage detector): Darknet-53, three scales, anchors from k-means.

Backbone C3/C4/C5 (strides 8/16/32) -> YOLOv3's top-down neck (five-conv sets, 1x1 + 2x
upsampling between scales) -> per scale a 1x1 output of A x (5 + C) channels. The raw output
``[B, N, 5 + C]`` (rows: level-major, cell row-major, then anchors) is decoded by the runtime's
numpy :func:`~sarbridge.runtime.decode.decode_yolo`, the same code the deployed model uses.

Anchors are a buffer (saved with the weights): nine (w, h) in input pixels, three per scale,
re-estimated for the training set by k-means with 1 - IoU distance (:func:`kmeans_anchors`).

Loss: each ship goes to every anchor of shape IoU > 0.25 with it (at least its best one,
classic YOLOv3) at the cell holding its centre; GIoU on decoded boxes and BCE on classes at
those positives; BCE objectness averaged separately over positives and negatives (negatives
weighted per scale 4, 1, 0.4), predictions already overlapping a ship by IoU > 0.5 ignored.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sarbridge.runtime.decode import MAX_LOG_DISTANCE, yolo_grid
from sarbridge.train.models.backbones import build_backbone
from sarbridge.train.models.layers import conv_bn_act

# YOLOv3's COCO anchors at 416 px, a starting point until k-means replaces them
DEFAULT_ANCHORS = (
    (10, 13), (16, 30), (33, 23),
    (30, 61), (62, 45), (59, 119),
    (116, 90), (156, 198), (373, 326),
)  # fmt: skip


def _conv_set(c_in: int, c: int) -> nn.Sequential:
    """YOLOv3's five alternating 1x1 / 3x3 convolutions."""
    return nn.Sequential(
        conv_bn_act(c_in, c, 1, act="leaky"),
        conv_bn_act(c, 2 * c, 3, act="leaky"),
        conv_bn_act(2 * c, c, 1, act="leaky"),
        conv_bn_act(c, 2 * c, 3, act="leaky"),
        conv_bn_act(2 * c, c, 1, act="leaky"),
    )


class YOLOv3(nn.Module):
    """``forward(x [B, C, S, S]) -> raw [B, N, 5 + classes]`` (see runtime.decode.decode_yolo)."""

    strides = (8, 16, 32)
    decode = "yolo_anchors"

    def __init__(
        self,
        num_classes: int = 1,
        backbone: str = "darknet53",
        width: int = 512,
        in_channels: int = 1,
        anchors_per_scale: int = 3,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = build_backbone(backbone, in_channels=in_channels)
        c3, c4, c5 = self.backbone.out_channels
        w5, w4, w3 = width, width // 2, width // 4
        self.set5, self.set4, self.set3 = (
            _conv_set(c5, w5),
            _conv_set(c4 + w4, w4),
            _conv_set(c3 + w3, w3),
        )
        self.reduce5, self.reduce4 = (
            conv_bn_act(w5, w4, 1, act="leaky"),
            conv_bn_act(w4, w3, 1, act="leaky"),
        )
        a, out = anchors_per_scale, anchors_per_scale * (5 + num_classes)
        self.anchors_per_scale = a
        self.heads = nn.ModuleList(
            nn.Sequential(conv_bn_act(c, 2 * c, 3, act="leaky"), nn.Conv2d(2 * c, out, 1))
            for c in (w3, w4, w5)
        )
        for head in self.heads:  # objectness starts at 1 %
            bias = head[-1].bias.view(a, 5 + num_classes)
            nn.init.zeros_(bias)
            nn.init.constant_(bias[:, 4], -4.6)
        self.register_buffer(
            "anchors", torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32)[: 3 * a].view(3, a, 2)
        )

    def set_anchors(self, anchors) -> None:
        """Replace the anchors: [3 * A, 2] (w, h) in input pixels, sorted by area."""
        a = torch.as_tensor(np.asarray(anchors, np.float32)).view_as(self.anchors)
        self.anchors.copy_(a)

    def pruning_scope(self) -> tuple[nn.Module, list[nn.Module]]:
        """What channel pruning may change: all but each head's output convolution (anchors
        x (5 + classes) channels)."""
        return self, [head[-1] for head in self.heads]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c3, c4, c5 = self.backbone(x)
        f5 = self.set5(c5)
        f4 = self.set4(torch.cat([F.interpolate(self.reduce5(f5), scale_factor=2.0), c4], 1))
        f3 = self.set3(torch.cat([F.interpolate(self.reduce4(f4), scale_factor=2.0), c3], 1))
        outs = []
        for head, feat in zip(self.heads, (f3, f4, f5), strict=True):
            o = head(feat)  # [B, A * (5 + C), h, w]
            b, _, h, w = o.shape
            o = o.view(b, self.anchors_per_scale, 5 + self.num_classes, h, w)
            outs.append(o.permute(0, 3, 4, 1, 2).reshape(b, h * w * self.anchors_per_scale, -1))
        return torch.cat(outs, 1)


def kmeans_anchors(wh: np.ndarray, k: int = 9, iters: int = 200, seed: int = 0) -> np.ndarray:
    """k anchors (w, h) from box sizes [M, 2] by k-means with 1 - IoU distance, sorted by area."""
    wh = np.asarray(wh, np.float64)
    wh = wh[(wh > 0).all(1)]
    if len(wh) < k:
        raise ValueError(f"k-means needs at least {k} boxes, got {len(wh)}")
    rng = np.random.default_rng(seed)
    centres = wh[rng.choice(len(wh), k, replace=False)]

    def shape_iou(a, b):
        inter = np.minimum(a[:, None, 0], b[None, :, 0]) * np.minimum(a[:, None, 1], b[None, :, 1])
        return inter / (a[:, None].prod(2) + b[None].prod(2) - inter)

    for _ in range(iters):
        assign = shape_iou(wh, centres).argmax(1)
        new = np.array(
            [np.median(wh[assign == j], 0) if (assign == j).any() else centres[j] for j in range(k)]
        )
        if np.allclose(new, centres):
            break
        centres = new
    return centres[np.argsort(centres.prod(1))].astype(np.float32)


def anchor_grid(model: YOLOv3, input_size: int, device):
    cells, strides, anchors = yolo_grid(input_size, model.strides, model.anchors.cpu().numpy())
    return (
        torch.from_numpy(cells).to(device),
        torch.from_numpy(strides).to(device),
        torch.from_numpy(anchors).to(device),
    )


def decode_torch(raw: torch.Tensor, cells, strides, anchors) -> torch.Tensor:
    """raw [..., N, 5 + C] -> boxes [..., N, 4] xyxy (the formula of runtime.decode.decode_yolo)."""
    centre = (cells + raw[..., :2].sigmoid()) * strides[:, None]
    size = anchors * torch.exp(raw[..., 2:4].clamp(max=MAX_LOG_DISTANCE))
    return torch.cat([centre - size / 2, centre + size / 2], -1)


def level_layout(model: YOLOv3, input_size: int) -> tuple[list[int], np.ndarray]:
    """Grid side per level and the first raw-output row of each level (plus the total)."""
    sizes = [int(np.ceil(input_size / s)) for s in model.strides]
    return sizes, np.cumsum([0] + [n * n * model.anchors_per_scale for n in sizes])
