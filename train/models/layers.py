"""Building blocks shared by the backbones and detector necks: conv-BN-activation, residual,
cross-stage partial (CSP) stage, SPPF."""

from __future__ import annotations

import torch
from torch import nn


def input_channels(model: nn.Module) -> int:
    """The channels a network reads: those of its first convolution."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels


def conv_bn_act(c_in: int, c_out: int, k: int = 3, s: int = 1, act: str = "relu") -> nn.Sequential:
    acts = {
        "relu": nn.ReLU(inplace=True),
        "leaky": nn.LeakyReLU(0.1, inplace=True),
        "silu": nn.SiLU(inplace=True),
    }
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False), nn.BatchNorm2d(c_out), acts[act]
    )


class Residual(nn.Module):
    """1x1 reduce -> 3x3 expand, plus the input."""

    def __init__(self, c: int, hidden: int | None = None, act: str = "relu"):
        super().__init__()
        hidden = hidden or c // 2
        self.block = nn.Sequential(
            conv_bn_act(c, hidden, 1, act=act), conv_bn_act(hidden, c, 3, act=act)
        )

    def forward(self, x):
        return x + self.block(x)


class CSPStage(nn.Module):
    """Cross-stage partial block: half the channels go through n residuals, then both halves merge."""

    def __init__(self, c_in: int, c_out: int, n: int, act: str = "relu"):
        super().__init__()
        h = c_out // 2
        self.split_a = conv_bn_act(c_in, h, 1, act=act)
        self.split_b = conv_bn_act(c_in, h, 1, act=act)
        self.blocks = nn.Sequential(*[Residual(h, h, act) for _ in range(n)])
        self.merge = conv_bn_act(2 * h, c_out, 1, act=act)

    def forward(self, x):
        return self.merge(torch.cat([self.blocks(self.split_a(x)), self.split_b(x)], dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max-pools, concatenated."""

    def __init__(self, c: int, act: str = "relu"):
        super().__init__()
        self.reduce = conv_bn_act(c, c // 2, 1, act=act)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.merge = conv_bn_act(c * 2, c, 1, act=act)

    def forward(self, x):
        x = self.reduce(x)
        p1 = self.pool(x)
        p2 = self.pool(p1)
        return self.merge(torch.cat([x, p1, p2, self.pool(p2)], dim=1))
