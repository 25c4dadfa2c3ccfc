"""sarbridge.export: ONNX export with parity checks, QDQ, TensorRT engines."""

from sarbridge._stage_guard import check as _check

_check(__name__, "export")
