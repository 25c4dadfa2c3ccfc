"""The TensorRT Python package, imported on demand, and a logger that keeps its errors.

sarbridge follows NVIDIA's documented Python API of TensorRT 10.x (JetPack 6 ships 10.3) and
11.x: the name-based tensor API (``num_io_tensors``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``), ``build_serialized_network``, memory-pool limits,
and no implicit-INT8 calibrators (deprecated in 10.1, removed in 11). TensorRT 8.x is refused.
"""

from __future__ import annotations

import sys

from sarbridge.runtime.errors import SarbridgeError

MIN_MAJOR = 10
INSTALL = (
    "on a Jetson it comes with JetPack 6 (sudo apt install python3-libnvinfer; inside a venv "
    "made with --system-site-packages); on a desktop or server GPU: pip install tensorrt"
)


def import_tensorrt():
    """``import tensorrt``, or a clear error naming how to install it.

    Raises:
        SarbridgeError: TensorRT is not installed, or is older than 10.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise SarbridgeError(
            f"TensorRT's Python package cannot be imported here ({exc}): {INSTALL}"
        ) from None
    major = major_version(trt.__version__)
    if major < MIN_MAJOR:
        raise SarbridgeError(
            f"TensorRT {trt.__version__} is too old: sarbridge uses the TensorRT {MIN_MAJOR}+ API "
            "(JetPack 6.x or newer on a Jetson)"
        )
    return trt


def major_version(version: str) -> int:
    try:
        return int(str(version).split(".", 1)[0])
    except ValueError:
        raise SarbridgeError(f"cannot read the TensorRT version {version!r}") from None


def make_logger(trt, verbose: bool = False):
    """A ``trt.ILogger`` that prints warnings (all messages when ``verbose``) to stderr and
    keeps every error message in ``.errors`` for the exception that follows a failure."""

    severity = trt.ILogger.Severity
    shown = {severity.INTERNAL_ERROR, severity.ERROR, severity.WARNING}
    if verbose:
        shown |= {severity.INFO, severity.VERBOSE}

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, sev, msg):
            if sev in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors.append(str(msg))
            if sev in shown:
                print(f"[TensorRT {getattr(sev, 'name', sev)}] {msg}", file=sys.stderr)

    return Logger()


def logged_errors(logger, limit: int = 10) -> str:
    """The logger's last error messages, one per line (empty when none)."""
    errors = getattr(logger, "errors", [])[-limit:]
    return "".join(f"\n  {e}" for e in errors)
