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
from sarbridge.train.backbones import build_backbone, conv_bn_act
from sarbridge.train.edge_detector import _iou_pairwise, giou_loss

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


def _grid(model: YOLOv3, input_size: int, device):
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


def _level_layout(model: YOLOv3, input_size: int) -> tuple[list[int], np.ndarray]:
    """Grid side per level and the first raw-output row of each level (plus the total)."""
    sizes = [int(np.ceil(input_size / s)) for s in model.strides]
    return sizes, np.cumsum([0] + [n * n * model.anchors_per_scale for n in sizes])


def yolo_positives(
    model: YOLOv3, gt: torch.Tensor, input_size: int, match_iou: float = 0.25
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the raw output that predict each ship, and the ship each row predicts.

    A ship goes to every anchor whose shape IoU with it exceeds ``match_iou`` (always at least
    its best anchor, classic YOLOv3), at the cell of that anchor's level holding the ship's
    centre. Several anchors per ship give the objectness many more positives than one,
    which is what lets a short schedule learn where ships are.
    """
    A = model.anchors_per_scale
    sizes, starts = _level_layout(model, input_size)
    offsets = torch.as_tensor(starts[:-1], device=gt.device)
    flat_anchors = model.anchors.view(-1, 2).to(gt.device, gt.dtype)
    wh = (gt[:, 2:] - gt[:, :2]).clamp(min=1e-3)
    inter = torch.min(wh[:, None], flat_anchors[None]).prod(2)
    iou = inter / (wh.prod(1)[:, None] + flat_anchors.prod(1)[None] - inter)  # [M, 3A]
    match = iou > match_iou
    match[torch.arange(len(gt), device=gt.device), iou.argmax(1)] = True
    ship, anchor = match.nonzero(as_tuple=True)
    level, a = anchor // A, anchor % A
    centre = (gt[ship, :2] + gt[ship, 2:]) / 2
    stride = torch.tensor(model.strides, device=gt.device, dtype=gt.dtype)[level]
    n = torch.tensor(sizes, device=gt.device)[level]
    cx = torch.minimum((centre[:, 0] / stride).long().clamp(min=0), n - 1)
    cy = torch.minimum((centre[:, 1] / stride).long().clamp(min=0), n - 1)
    return offsets[level] + (cy * n + cx) * A + a, ship


def yolo_loss(
    model: YOLOv3,
    raw: torch.Tensor,
    targets: list[dict],
    input_size: int,
    box_weight: float = 5.0,
    level_weights=(4.0, 1.0, 0.4),
    ignore_iou: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GIoU + class BCE at the positives (:func:`yolo_positives`); objectness BCE averaged
    separately over positives and over negatives (per level, weighted ``level_weights``), so
    the few positives are not drowned by thousands of background cells; predictions already
    overlapping a ship by IoU > ``ignore_iou`` are not pushed down."""
    cells, strides, anchors = _grid(model, input_size, raw.device)
    boxes = decode_torch(raw, cells, strides, anchors)  # [B, N, 4]
    obj_logit, cls_logit = raw[..., 4], raw[..., 5:]
    positive = torch.zeros_like(obj_logit, dtype=torch.bool)
    negative = torch.ones_like(obj_logit, dtype=torch.bool)
    _, offsets = _level_layout(model, input_size)
    box_l, cls_l = [], []
    for b, t in enumerate(targets):
        gt, labels = t["boxes"], t["labels"]
        if len(gt) == 0:
            continue
        with torch.no_grad():
            negative[b] &= ~(_iou_pairwise(boxes[b], gt).amax(1) > ignore_iou)
            rows, ship = yolo_positives(model, gt, input_size)
        positive[b, rows] = True
        negative[b, rows] = False
        box_l.append(giou_loss(boxes[b, rows], gt[ship]))
        onehot = F.one_hot(labels[ship], model.num_classes).to(cls_logit.dtype)
        cls_l.append(
            F.binary_cross_entropy_with_logits(cls_logit[b, rows], onehot, reduction="none").sum(1)
        )
    bce = F.binary_cross_entropy_with_logits(
        obj_logit, positive.to(obj_logit.dtype), reduction="none"
    )
    obj_loss = bce[positive].mean() if positive.any() else raw.sum() * 0
    for lvl, w in enumerate(level_weights):
        sl = slice(int(offsets[lvl]), int(offsets[lvl + 1]))
        neg = negative[:, sl]
        obj_loss = obj_loss + w * (bce[:, sl] * neg).sum() / neg.sum().clamp(min=1)
    box_loss = torch.cat(box_l).mean() if box_l else raw.sum() * 0
    cls_loss = torch.cat(cls_l).mean() if cls_l else raw.sum() * 0
    loss = box_weight * box_loss + obj_loss + cls_loss
    return loss, {
        "loss": float(loss.detach()),
        "box": float(box_loss.detach()),
        "obj": float(obj_loss.detach()),
        "cls": float(cls_loss.detach()),
    }
