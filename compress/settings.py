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
              "teacher", "teacher_flips", "epochs", "lr", "seed", "set"},  # fmt: skip
    "distill": {"teacher", "teacher_flips", "epochs", "lr", "seed", "set"},
    "finetune": {"epochs", "lr", "seed", "set"},
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

# config keys a training step's --set may not change: each has its own option, or describes what
# the step does not choose (the model comes from the parent; its structure is the parent's or
# the pruning's)
SET_REFUSED = {
    "name": "the run is named by its folder (--out)",
    "seed": "use --seed (seed: in a recipe step)",
    "init": "the weights are the parent's (--from)",
    "optim.epochs": "use --epochs (epochs: in a recipe step)",
    "optim.lr": "use --lr (lr: in a recipe step)",
    "distill.teacher": "use --teacher (teacher: in a recipe step)",
    "distill.teacher_flips": "use --teacher-flips (teacher_flips: in a recipe step)",
    "model": "the model is the parent's (--from), its channels the pruning's",
    "data.preprocess": "the parent was trained on its preprocessing",
}
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


def step_overrides(given) -> list[str]:
    """A training step's config overrides as ``key=value`` strings (the form of ``train
    detect --set``), from the command line's list or a recipe's mapping (``{optim.ema: false}``)
    or list; keys of :data:`SET_REFUSED` (or a section holding one, e.g. ``optim``) are refused
    with the option to use instead. The values are checked against the config schema by the
    step itself (``_finetune_config``), which also refuses a whole section."""
    import yaml

    def as_yaml(value) -> str:  # read back by yaml.safe_load as the same value (1e-05 too)
        try:
            text = yaml.safe_dump(value, default_flow_style=True)
        except yaml.YAMLError as exc:
            raise CompressError(f"set: {value!r} is not a config value ({exc})") from None
        return text.removesuffix("\n...\n").strip()

    if given is None:
        return []
    if isinstance(given, dict):
        items = [f"{k}={as_yaml(v)}" for k, v in given.items()]
    elif isinstance(given, (list, tuple)) and all(isinstance(v, str) for v in given):
        items = list(given)
    else:
        raise CompressError(
            f"set: a mapping of config keys to values or a list of key=value, not {given!r}"
        )
    for item in items:
        key = item.split("=", 1)[0].strip()
        if "=" not in item or not key:
            raise CompressError(f"--set {item!r}: must look like section.key=value")
        for refused, why in SET_REFUSED.items():
            if key == refused or key.startswith(refused + "."):
                raise CompressError(f"--set {key}: not settable in a compress step: {why}")
            if refused.startswith(key + "."):
                raise CompressError(
                    f"--set {key}: a whole section (it holds {refused}: {why}); set its keys "
                    "one by one"
                )
    return items


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
