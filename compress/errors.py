"""The error of the compress stage, apart from any module that needs numpy, onnx or torch (the
command line reads compress/settings.py while it builds its parser)."""

from __future__ import annotations

from sarbridge.runtime.errors import SarbridgeError


class CompressError(SarbridgeError):
    """Compression refused or failed: the message says what was asked and what was tried."""
