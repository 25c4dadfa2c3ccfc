"""sarbridge.train: torch side: backbones, BNN, detectors, losses, loops, checkpoints."""

from sarbridge._stage_guard import check as _check

_check(__name__, "train")
