"""Losses of the anchor-free edge detector: task-aligned assignment (TOOD/YOLOv8 style: the
top-k grid points of each ship by ``score^alpha * IoU^beta`` become positives, with soft
classification targets scaled to the best IoU), BCE for classes, GIoU for boxes and, for the
distribution box head, distribution focal loss (GFL / YOLOv8 style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sarbridge.train.models.edge_det import bin_expectation, decode_boxes, grid


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
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
    iou = pairwise_iou(gt_boxes, boxes)  # [M, N]
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
