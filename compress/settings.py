"""What a pruning step is asked to do: :class:`PruneSettings`, its defaults and their checks.

Torch-free, so that the command line, recipes and the compress API read the defaults from this
one place without importing torch (:func:`prune_default`); :mod:`.prune` does the pruning.
Also which options each compress method takes (:data:`STEP_OPTIONS`), for the same readers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import CompressError

# A compress step's fine-tuning schedule, whatever the parent's run used: one cosine decay, an
# EMA of the weights, the best epoch kept. A parent may have ended its own run otherwise (e.g.
# the zoo detector's weight averaging: cyclic, swa_epochs, no EMA), which is not a schedule
# for a few epochs of recovery after pruning or of quantization-aware training.
STEP_SCHEDULE = {"schedule": "cosine", "swa_epochs": 0, "ema": True}

# methods that write a training run (the others write an artifact), and those whose run --resume
# continues (QAT trains in a run of its own before writing its artifact)
TRAINING_METHODS = ("prune", "distill", "finetune")
RESUMABLE_METHODS = (*TRAINING_METHODS, "qat")

# the options each compress method takes (recipe steps' keys; compress() refuses the others)
STEP_OPTIONS = {
    "prune": {"ratio", "ratio_of", "importance", "global", "round_to", "class_evidence",
              "teacher", "teacher_flips", "epochs", "lr", "seed"},  # fmt: skip
    "distill": {"teacher", "teacher_flips", "epochs", "lr", "seed"},
    "finetune": {"epochs", "lr", "seed"},
    "int8": {"target", "calibration_images", "guard_images", "max_ap_drop", "seed"},
    "qat": {"target", "calibration_images", "guard_images", "max_ap_drop", "seed", "epochs", "lr"},
    "fp16": set(),
}
# defaults of the options compress() takes as None when not given (int8 and qat; seed: all)
STEP_DEFAULTS = {
    "target": "onnxruntime",
    "calibration_images": 300,
    "guard_images": 200,
    "max_ap_drop": 0.01,
    "seed": 0,
}
IMPORTANCES = ("l2", "bn", "taylor")
RATIO_OF = ("macs", "channels")


@dataclass(frozen=True)
class PruneSettings:
    """How to prune: ``ratio`` is the fraction of the parent's MACs (or channels) KEPT."""

    ratio: float
    ratio_of: str = "macs"
    importance: str = "l2"
    global_pruning: bool = True
    round_to: int = 16
    max_layer_ratio: float = 0.9  # no layer loses more than this share of its channels
    # channels of each sign kept per class at every class-output convolution (0: rank by
    # importance alone); see _ClassEvidence
    class_evidence: int = 4

    def __post_init__(self):
        if not 0 < self.ratio < 1:
            raise CompressError(
                f"--ratio must be in (0, 1) (the share of the parent's {self.ratio_of} kept), "
                f"not {self.ratio}"
            )
        if self.ratio_of not in RATIO_OF:
            raise CompressError(f"--ratio-of must be one of {RATIO_OF}, not {self.ratio_of!r}")
        if self.importance not in IMPORTANCES:
            raise CompressError(
                f"--importance must be one of {IMPORTANCES}, not {self.importance!r}"
            )
        if self.round_to < 1:
            raise CompressError(f"--round-to must be at least 1, not {self.round_to}")
        if not 0 < self.max_layer_ratio < 1:
            raise CompressError(f"max_layer_ratio must be in (0, 1), not {self.max_layer_ratio}")
        if not isinstance(self.class_evidence, int) or isinstance(self.class_evidence, bool) \
                or self.class_evidence < 0:  # fmt: skip
            raise CompressError(
                f"--class-evidence must be a whole number of channels, 0 or more, not "
                f"{self.class_evidence!r}"
            )


def prune_default(field: str):
    """The default of one :class:`PruneSettings` field (for option defaults and help texts)."""
    return PruneSettings.__dataclass_fields__[field].default


def prune_settings(ratio: float, **options) -> PruneSettings:
    """:class:`PruneSettings` from ``ratio`` and the options given; a None option takes the
    field's default."""
    names = {f.name for f in dataclasses.fields(PruneSettings)}
    unknown = set(options) - names
    if unknown:
        raise CompressError(f"unknown prune settings {sorted(unknown)}")
    return PruneSettings(ratio, **{k: v for k, v in options.items() if v is not None})
