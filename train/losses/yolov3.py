"""YOLOv3 loss: each ship is assigned to the anchor (of nine, over three levels) whose shape
matches it best; objectness and class BCE, GIoU on the decoded boxes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sarbridge.train.losses.edge_det import giou_loss, pairwise_iou
from sarbridge.train.models.yolov3 import YOLOv3, anchor_grid, decode_torch, level_layout


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
    sizes, starts = level_layout(model, input_size)
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
    cells, strides, anchors = anchor_grid(model, input_size, raw.device)
    boxes = decode_torch(raw, cells, strides, anchors)  # [B, N, 4]
    obj_logit, cls_logit = raw[..., 4], raw[..., 5:]
    positive = torch.zeros_like(obj_logit, dtype=torch.bool)
    negative = torch.ones_like(obj_logit, dtype=torch.bool)
    _, offsets = level_layout(model, input_size)
    box_l, cls_l = [], []
    for b, t in enumerate(targets):
        gt, labels = t["boxes"], t["labels"]
        if len(gt) == 0:
            continue
        with torch.no_grad():
            negative[b] &= ~(pairwise_iou(boxes[b], gt).amax(1) > ignore_iou)
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
