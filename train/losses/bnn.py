"""The BNN loss: positives pulled to distance 0, negatives pushed to 1."""

from __future__ import annotations

import torch


def bnn_loss(
    d_pos: torch.Tensor, d_neg: torch.Tensor, alpha: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(l_p + alpha * l_n) / (1 + alpha), with l_p = mean d_pos^2, l_n = mean (d_neg - 1)^2.

    Returns:
        (loss, l_p, l_n).
    """
    l_p = (d_pos**2).mean()
    l_n = ((d_neg - 1) ** 2).mean()
    return (l_p + alpha * l_n) / (1 + alpha), l_p, l_n
