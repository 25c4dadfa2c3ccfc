"""sarbridge.compress: pruning, quantization (PTQ/QAT), distillation, FP16."""

from sarbridge._stage_guard import check as _check

_check(__name__, "compress")
