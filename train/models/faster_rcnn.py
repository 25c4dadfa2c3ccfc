"""Faster R-CNN with an FPN over our registered backbones (the paper's two-stage detector).

The backbone is ours (so BNN, ImageNet or random weights load the same way as
for every detector); the FPN, RPN and RoI heads are torchvision's. Anchors are
sized for ships in SAR chips (16-128 px at strides 8-32, plus a pooled level),
and the input is taken as it comes (already letterboxed and normalised by the
runtime's preprocessing: no resizing, mean 0 / std 1 inside the model).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from sarbridge.train.models.backbones import build_backbone


class _BackboneFPN(nn.Module):
    """Our backbone's C3, C4, C5 -> FPN levels "0", "1", "2" and a max-pooled "pool"."""

    def __init__(self, backbone: nn.Module, channels: int):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        self.body = backbone
        self.fpn = FeaturePyramidNetwork(
            list(backbone.out_channels), channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict:
        feats = self.body(x)
        return self.fpn(OrderedDict((str(k), f) for k, f in enumerate(feats)))


class FasterRCNNFPN(nn.Module):
    """torchvision FasterRCNN on ``_BackboneFPN``; ``forward(images [B, C, S, S], targets=None)``.

    Training mode returns the loss dict; eval mode returns per-image dicts with
    ``boxes`` (xyxy, input pixels), ``scores`` and ``labels`` (1-based, 0 is background).
    """

    kind = "torchvision"

    def __init__(
        self,
        num_classes: int = 1,
        backbone: str = "resnet50",
        fpn_channels: int = 256,
        input_size: int = 512,
    ):
        super().__init__()
        from torchvision.models.detection import FasterRCNN
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.ops import MultiScaleRoIAlign

        self.backbone = build_backbone(backbone, in_channels=1)
        anchors = AnchorGenerator(
            sizes=((16,), (32,), (64,), (128,)), aspect_ratios=((0.5, 1.0, 2.0),) * 4
        )
        self.detector = FasterRCNN(
            _BackboneFPN(self.backbone, fpn_channels),
            num_classes=num_classes + 1,
            rpn_anchor_generator=anchors,
            box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2),
            min_size=input_size,
            max_size=input_size,
            image_mean=[0.0] * self.backbone_in_channels(),
            image_std=[1.0] * self.backbone_in_channels(),
            box_detections_per_img=300,
        )

    def pruning_scope(self) -> tuple[nn.Module, list[nn.Module]]:
        """What channel pruning may change: the backbone and the FPN's inner convolutions; the
        FPN's output convolutions keep their channels, so the RPN and the RoI heads (shared
        across levels) are untouched."""
        body_fpn = self.detector.backbone
        outputs = [m for m in body_fpn.fpn.layer_blocks.modules() if isinstance(m, nn.Conv2d)]
        return body_fpn, outputs

    def backbone_in_channels(self) -> int:
        from sarbridge.train.models.layers import input_channels

        return input_channels(self.backbone)

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        if self.training:
            targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
            return self.detector(list(images), targets)
        return self.detector(list(images))
