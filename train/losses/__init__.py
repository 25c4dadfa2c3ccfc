"""Training losses, one module per detector family (edge_det, yolov3) and the BNN's;
:func:`detector_loss` picks the family's loss from the model's head."""

from __future__ import annotations

from contextlib import nullcontext

from torch import nn

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.train.models.registry import model_kind


def detector_loss(
    model: nn.Module, images, targets: list[dict], input_size: int, box_weight: float | None = None
):
    """(loss, logs) of a batch: images [B, 1, S, S], targets {"boxes" [M, 4], "labels" [M]} per image.

    ``box_weight`` sets the anchor-free detectors' box loss weight (None: their default)."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    head = (
        "torchvision" if model_kind(model) == "torchvision" else getattr(inner, "decode", "dense_ltrb")
    )
    if box_weight is not None and head != "dense_ltrb":
        raise SarbridgeError(
            f"model.box_weight applies to the anchor-free detectors only, not {type(inner).__name__}"
        )
    if head == "torchvision":
        losses = model(images, targets)
        loss = sum(losses.values())
        return loss, {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}}
    if head == "yolo_anchors":
        from sarbridge.train.losses.yolov3 import yolo_loss

        return yolo_loss(inner, model(images).float(), targets, input_size)
    from sarbridge.train.losses.edge_det import detection_loss
    from sarbridge.train.models.edge_det import box_distributions

    weights = {} if box_weight is None else {"box_weight": box_weight}
    bins = getattr(inner, "box_bins", 0)
    with box_distributions(inner) if bins else nullcontext():
        raw = model(images)
    return detection_loss(
        raw.float(), targets, input_size, tuple(inner.strides), box_bins=bins, **weights
    )
