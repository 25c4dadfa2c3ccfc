"""The bridge neural network (BNN): matching SAR and optical patches of the same ground.

Two SEPARATE branches (no shared weights), one per modality::

    x -> backbone -> C5 -> 1x1 conv -> 4x4 average pooling -> flatten -> linear -> sigmoid -> z in (0,1)^n

and the output ``d = ||z_s - z_o||_2 / sqrt(n)`` in [0, 1]. Loss with
positives P (co-registered pairs) and negatives N (SAR i with optical j != i)::

    l = (mean_P d^2 + alpha * mean_N (d - 1)^2) / (1 + alpha)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sarbridge.train.models.backbones import Backbone, build_backbone


class BranchHead(nn.Module):
    """1x1 conv -> 4x4 average pooling -> flatten -> linear -> sigmoid."""

    def __init__(
        self,
        in_channels: int,
        feature_hw: int,
        reduce_channels: int = 64,
        embed_dim: int = 50,
        pool: int = 4,
    ):
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, reduce_channels, 1)
        pooled = max(feature_hw // pool, 1)
        self.pool = nn.AvgPool2d(pool) if feature_hw >= pool else nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(reduce_channels * pooled * pooled, embed_dim)

    def forward(self, c5: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.reduce(c5))  # [B, R, h, w]
        return torch.sigmoid(self.fc(torch.flatten(x, 1)))  # [B, n]


class Branch(nn.Module):
    """One modality: backbone + head, ``forward(x) -> z [B, n]``."""

    def __init__(
        self, backbone: Backbone, patch_size: int, reduce_channels: int, embed_dim: int, pool: int
    ):
        super().__init__()
        self.backbone = backbone
        self.head = BranchHead(
            backbone.out_channels[-1],
            patch_size // backbone.strides[-1],
            reduce_channels,
            embed_dim,
            pool,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)[-1])


class BridgeNet(nn.Module):
    """SAR branch f_s and optical branch f_o, separate weights.

    Args:
        backbone: registered backbone name for both branches.
        patch_size: input side (fixes the head's linear layer).
        embed_dim: n, the embedding size (paper: 50).
        imagenet_weights: optional local file initialising the OPTICAL branch
            (and the SAR branch when ``imagenet_sar`` is set).
        freeze_bn: BatchNorm layers use running statistics in training too
            (small per-process batches; identical results across process counts).
    """

    def __init__(
        self,
        backbone: str = "edge",
        patch_size: int = 256,
        embed_dim: int = 50,
        reduce_channels: int = 64,
        pool: int = 4,
        imagenet_weights: str | None = None,
        imagenet_sar: bool = False,
        freeze_bn: bool = False,
    ):
        super().__init__()
        self.freeze_bn = freeze_bn
        sar_bb = build_backbone(
            backbone, in_channels=1, imagenet_weights=imagenet_weights if imagenet_sar else None
        )
        opt_bb = build_backbone(backbone, in_channels=3, imagenet_weights=imagenet_weights)
        self.sar = Branch(sar_bb, patch_size, reduce_channels, embed_dim, pool)
        self.optical = Branch(opt_bb, patch_size, reduce_channels, embed_dim, pool)
        self.embed_dim = embed_dim

    def pruning_scope(self) -> tuple[nn.Module, list[nn.Module]]:
        """What channel pruning may change: the SAR branch's backbone (the part that initialises
        detectors); its head keeps the 50-d embedding and the channels its linear layer reads."""
        return self.sar, [self.sar.head.reduce, self.sar.head.fc]

    def train(self, mode: bool = True) -> BridgeNet:
        """Train mode; with ``freeze_bn`` BatchNorm keeps using (and not updating) its running statistics."""
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(
        self, sar: torch.Tensor, optical: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (z_s [B, n], z_o [B, n]) of aligned batches."""
        return self.sar(sar), self.optical(optical)


def bnn_distance(z_s: torch.Tensor, z_o: torch.Tensor) -> torch.Tensor:
    """d = ||z_s - z_o|| / sqrt(n), in [0, 1] for z in (0, 1)^n. Shapes [B, n] -> [B]."""
    return torch.linalg.vector_norm(z_s - z_o, dim=-1) / math.sqrt(z_s.shape[-1])
