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
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sarbridge.runtime.decode import MAX_LOG_DISTANCE, grid_points
from sarbridge.train.backbones import CSPStage, build_backbone, conv_bn_act


class EdgeDetector(nn.Module):
    """Anchor-free detector; ``forward(x [B, 1, S, S]) -> raw [B, N, 4 + C]`` (see runtime.decode)."""

    strides = (8, 16, 32)

    def __init__(
        self, num_classes: int = 1, backbone: str = "edge", width: int = 64, in_channels: int = 1
    ):
        super().__init__()
        self.num_classes = num_classes
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
        self.reg_out = nn.ModuleList(nn.Conv2d(w, 4, 1) for _ in self.strides)
        prior = -math.log((1 - 0.01) / 0.01)  # start with 1% foreground probability
        for conv in self.cls_out:
            nn.init.constant_(conv.bias, prior)
        for conv in self.reg_out:
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
            reg = self.reg_out[k](self.reg_towers[k](feat))  # [B, 4, h, w]
            cls = self.cls_out[k](self.cls_towers[k](feat))  # [B, C, h, w]
            outs.append(torch.cat([reg, cls], 1).flatten(2))  # [B, 4 + C, h*w]
        return torch.cat(outs, 2).transpose(1, 2)  # [B, N, 4 + C]


def grid(input_size: int, strides, device) -> tuple[torch.Tensor, torch.Tensor]:
    """runtime.decode.grid_points as tensors: centres [N, 2] and strides [N] (one grid layout)."""
    points, per_point = grid_points(input_size, tuple(strides))
    return torch.from_numpy(points).to(device), torch.from_numpy(per_point).to(device)


def decode_boxes(reg: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """reg [..., N, 4] log-distances -> boxes [..., N, 4] xyxy (same formula as runtime.decode)."""
    dist = torch.exp(reg.clamp(max=MAX_LOG_DISTANCE)) * strides[:, None]
    return torch.cat([points - dist[..., :2], points + dist[..., 2:]], -1)


def _iou_pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU [M, N] between a [M, 4] and b [N, 4]."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - GIoU for matched boxes [K, 4]."""
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_p = (pred[:, 2:] - pred[:, :2]).clamp(min=0).prod(-1)
    area_t = (target[:, 2:] - target[:, :2]).clamp(min=0).prod(-1)
    union = area_p + area_t - inter + 1e-9
    enclose = (
        (torch.max(pred[:, 2:], target[:, 2:]) - torch.min(pred[:, :2], target[:, :2]))
        .clamp(min=0)
        .prod(-1)
    )
    return 1 - (inter / union - (enclose - union) / (enclose + 1e-9))


@torch.no_grad()
def task_aligned_assign(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    points: torch.Tensor,
    strides: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    top_k: int = 10,
    alpha: float = 1.0,
    beta: float = 6.0,
    center_radius: float = 2.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Assign grid points of ONE image to ground-truth ships.

    Args:
        scores: [N, C] predicted probabilities; boxes: [N, 4] decoded predictions.
        gt_boxes: [M, 4]; gt_labels: [M].

    Returns:
        (fg [N] bool, matched gt index [N], soft target score [N]).
    """
    n, m = len(points), len(gt_boxes)
    if m == 0:
        return torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.long), torch.zeros(n)
    px, py = points[:, 0], points[:, 1]
    inside = (
        (px[None] > gt_boxes[:, 0:1])
        & (px[None] < gt_boxes[:, 2:3])
        & (py[None] > gt_boxes[:, 1:2])
        & (py[None] < gt_boxes[:, 3:4])
    )  # [M, N]
    cx, cy = (gt_boxes[:, 0] + gt_boxes[:, 2]) / 2, (gt_boxes[:, 1] + gt_boxes[:, 3]) / 2
    radius = center_radius * strides[None]
    near = ((px[None] - cx[:, None]).abs() < radius) & ((py[None] - cy[:, None]).abs() < radius)
    candidate = inside | near  # small ships get candidates even between grid points
    iou = _iou_pairwise(gt_boxes, boxes)  # [M, N]
    cls_score = scores[:, gt_labels].T  # [M, N]
    align = cls_score.pow(alpha) * iou.pow(beta) * candidate
    k = min(top_k, n)
    top_val, top_idx = align.topk(k, dim=1)
    pos = torch.zeros_like(align, dtype=torch.bool)
    pos.scatter_(1, top_idx, top_val > 0)
    pos &= candidate
    # a point claimed by several ships goes to the one it overlaps most
    multi = pos.sum(0) > 1
    if multi.any():
        best = iou.argmax(0)
        pos[:, multi] = False
        pos[best[multi], multi.nonzero().squeeze(1)] = True
    fg = pos.any(0)
    gt_idx = pos.float().argmax(0)
    # soft targets: alignment normalised per ship, scaled to that ship's best IoU
    align_pos = align * pos
    max_align = align_pos.amax(1, keepdim=True).clamp(min=1e-9)
    max_iou = (iou * pos).amax(1, keepdim=True)
    target = (align_pos / max_align * max_iou).amax(0)
    return fg, gt_idx, target


def detection_loss(
    raw: torch.Tensor,
    targets: list[dict],
    input_size: int,
    strides=(8, 16, 32),
    box_weight: float = 2.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of raw outputs [B, N, 4 + C] against targets ({"boxes" [M, 4], "labels" [M]} per image)."""
    points, strd = grid(input_size, strides, raw.device)
    reg, logits = raw[..., :4], raw[..., 4:]
    boxes = decode_boxes(reg, points, strd)  # [B, N, 4]
    scores = logits.sigmoid()
    cls_target = torch.zeros_like(logits)
    box_losses, weights = [], []
    for b, t in enumerate(targets):
        fg, gt_idx, soft = task_aligned_assign(
            scores[b].detach(), boxes[b].detach(), points, strd, t["boxes"], t["labels"]
        )
        if fg.any():
            cls_target[b, fg, t["labels"][gt_idx[fg]]] = soft[fg]
            box_losses.append(giou_loss(boxes[b, fg], t["boxes"][gt_idx[fg]]) * soft[fg])
            weights.append(soft[fg])
    norm = max(float(cls_target.sum()), 1.0)
    cls_loss = F.binary_cross_entropy_with_logits(logits, cls_target, reduction="sum") / norm
    box_loss = torch.cat(box_losses).sum() / norm if box_losses else raw.sum() * 0
    loss = cls_loss + box_weight * box_loss
    return loss, {"loss": loss.item(), "cls": cls_loss.item(), "box": float(box_loss.detach())}
