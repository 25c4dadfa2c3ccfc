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
  GIoU. The exported graph computes the expectation itself and outputs its logarithm, so the
  runtime's decode (and the manifest's head) is the same for both forms.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from sarbridge.runtime.decode import MAX_LOG_DISTANCE, grid_points
from sarbridge.train.backbones import CSPStage, build_backbone, conv_bn_act


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
        argument: the graph stays traceable and DDP's forward is the one that runs.)"""
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
        return torch.cat(outs, 2).transpose(1, 2)  # [B, N, 4 + C]

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
    tensor cost 3-5 ms per 512 x 512 image on one CPU thread against 0.5-0.8 ms for these
    reductions, roughly a tenth of the model's time (benchmarks/results/cpu_epyc_2core_dfl).
    The exponentials stay at or below 1, so FP16 engines do not overflow."""
    values = values.to(bin_logits.dtype)
    weights = torch.exp(bin_logits - bin_logits.amax(dim, keepdim=True))
    return (weights * values).sum(dim) / weights.sum(dim)


@contextmanager
def box_distributions(model: nn.Module):
    """Within the block, a box_bins EdgeDetector outputs its bin logits (what the loss needs)."""
    model.emit_box_bins = True
    try:
        yield model
    finally:
        model.emit_box_bins = False


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


def dfl_loss(bin_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss [K] of bin logits [K, 4, R] against distances [K, 4] in strides:
    cross-entropy towards the two bins either side of each distance, weighted by nearness."""
    r = bin_logits.shape[-1]
    target = target.clamp(0, r - 1 - 1e-3)
    left = target.floor().long()
    w_right = target - left
    flat = bin_logits.reshape(-1, r)
    ce_left = F.cross_entropy(flat, left.reshape(-1), reduction="none").view_as(target)
    ce_right = F.cross_entropy(flat, (left + 1).reshape(-1), reduction="none").view_as(target)
    return (ce_left * (1 - w_right) + ce_right * w_right).mean(-1)


def detection_loss(
    raw: torch.Tensor,
    targets: list[dict],
    input_size: int,
    strides=(8, 16, 32),
    box_weight: float = 2.0,
    box_bins: int = 0,
    dfl_weight: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of raw outputs against targets ({"boxes" [M, 4], "labels" [M]} per image).

    raw: [B, N, 4 + C] log-distances and class logits, or with ``box_bins`` R the bin logits
    [B, N, 4 * R + C] (the model run inside ``box_distributions``); then the DFL term joins."""
    points, strd = grid(input_size, strides, raw.device)
    if box_bins:
        bins = raw[..., : 4 * box_bins].unflatten(-1, (4, box_bins))  # [B, N, 4, R]
        logits = raw[..., 4 * box_bins :]
        values = torch.arange(box_bins, dtype=raw.dtype, device=raw.device)
        dist = bin_expectation(bins, values, -1) * strd[:, None]
        boxes = torch.cat([points - dist[..., :2], points + dist[..., 2:]], -1)
    else:
        logits = raw[..., 4:]
        boxes = decode_boxes(raw[..., :4], points, strd)  # [B, N, 4]
    scores = logits.sigmoid()
    cls_target = torch.zeros_like(logits)
    box_losses, dfl_losses = [], []
    for b, t in enumerate(targets):
        fg, gt_idx, soft = task_aligned_assign(
            scores[b].detach(), boxes[b].detach(), points, strd, t["boxes"], t["labels"]
        )
        if fg.any():
            gt = t["boxes"][gt_idx[fg]]
            cls_target[b, fg, t["labels"][gt_idx[fg]]] = soft[fg]
            box_losses.append(giou_loss(boxes[b, fg], gt) * soft[fg])
            if box_bins:
                p = points[fg]
                ltrb = torch.cat([p - gt[:, :2], gt[:, 2:] - p], -1) / strd[fg, None]
                dfl_losses.append(dfl_loss(bins[b, fg], ltrb) * soft[fg])
    norm = max(float(cls_target.sum()), 1.0)
    cls_loss = F.binary_cross_entropy_with_logits(logits, cls_target, reduction="sum") / norm
    box_loss = torch.cat(box_losses).sum() / norm if box_losses else raw.sum() * 0
    loss = cls_loss + box_weight * box_loss
    logs = {"cls": cls_loss.item(), "box": float(box_loss.detach())}
    if box_bins:
        dfl = torch.cat(dfl_losses).sum() / norm if dfl_losses else raw.sum() * 0
        loss = loss + dfl_weight * dfl
        logs["dfl"] = float(dfl.detach())
    return loss, {"loss": loss.item(), **logs}
