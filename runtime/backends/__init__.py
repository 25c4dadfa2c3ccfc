"""Inference backends, chosen by name: the model file in, numpy arrays out.

A backend loads one model file and runs a batch ``[B, C, S, S]`` float32 through
it, returning the model's outputs as numpy arrays in manifest order.

The registry is lazy: a backend registers its name with an import path
(``"module:attr"``) and the extra that installs its package; nothing is imported
until :func:`open_backend` is asked for that name, so listing the backends costs
nothing on a board, and a backend whose package is missing fails only when chosen,
with the ``pip install`` line that fixes it. A new backend is one module in this package plus
one :func:`register_backend` line below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarbridge.runtime.errors import SarbridgeError

# packages whose absence means "install the backend's extra", not a bug in sarbridge
BACKEND_PACKAGES = ("onnxruntime", "openvino", "tensorrt", "torch", "torchvision")


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the model file declares it (None: a dynamic dimension)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str  # numpy dtype name


class Backend:
    """One loaded model. ``run(batch) -> [outputs]``; ``max_batch`` is None when any batch works.

    Subclasses are built as ``cls(model_path, manifest, **options)``.
    """

    name = "backend"
    max_batch: int | None = None
    description = ""

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """The network's outputs on ``batch``, as arrays the backend does not use again: they
        may be decoded on another thread after later runs (a pipelined ``sarbridge detect``
        decodes a scene while the network runs the next one), so a backend whose runtime
        reuses output buffers returns copies."""
        raise NotImplementedError

    def model_io(self) -> tuple[list[TensorSpec], list[TensorSpec]] | None:
        """The loaded model's (inputs, outputs) from the model file itself; None when the
        backend cannot tell (the manifest is then trusted)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


def fixed_batch(manifest: dict) -> int | None:
    """The model's fixed batch size from the manifest's first input, None when it is dynamic."""
    dim = manifest["inputs"][0]["shape"][0]
    return dim if isinstance(dim, int) else None


@dataclass(frozen=True)
class BackendEntry:
    """A registered backend: where its class lives and which extra installs its package."""

    name: str
    target: str  # "module:attr"
    extra: str
    description: str = ""


_REGISTRY: dict[str, BackendEntry] = {}


def register_backend(name: str, target: str, extra: str, description: str = "") -> None:
    """Register the backend class at ``target`` (``"package.module:Class"``) under ``name``.

    Nothing is imported here. ``extra`` is the sarbridge extra that installs the backend's
    package (``pip install 'sarbridge[<extra>]'``).

    Raises:
        ValueError: ``name`` is already registered, or ``target`` is not ``module:attr``.
    """
    if name in _REGISTRY:
        raise ValueError(f"backend {name!r} is already registered ({_REGISTRY[name].target})")
    module, sep, attr = target.partition(":")
    if not (sep and module and attr):
        raise ValueError(f"backend target must be 'module:attr', got {target!r}")
    _REGISTRY[name] = BackendEntry(name, target, extra, description)


def list_backends() -> list[str]:
    """Names of the registered backends (nothing is imported)."""
    return sorted(_REGISTRY)


def backend_entry(name: str) -> BackendEntry:
    """The registry entry of ``name``.

    Raises:
        SarbridgeError: unknown name, listing the choices.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SarbridgeError(
            f"unknown backend {name!r}; choose one of: {', '.join(list_backends())}"
        ) from None


def backend_class(name: str) -> type[Backend]:
    """Import and return the class of backend ``name``.

    Raises:
        SarbridgeError: unknown name, or the backend's package is not installed (naming the
            extra to install).
    """
    entry = backend_entry(name)
    module_name, _, attr = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in BACKEND_PACKAGES:
            raise
        what = f" ({entry.description})" if entry.description else ""
        raise SarbridgeError(
            f"the {name!r} backend{what} needs the {missing!r} package, which cannot be imported "
            f"here: pip install 'sarbridge[{entry.extra}]'"
        ) from exc
    return getattr(module, attr)


def open_backend(name: str, model_path: str | Path, manifest: dict, **options) -> Backend:
    """Load ``model_path`` with the backend called ``name`` (its package is imported now).

    Raises:
        SarbridgeError: unknown backend (listing the choices), a backend whose package is
            missing (naming the extra to install), or one that cannot load the model.
    """
    return backend_class(name)(Path(model_path), manifest, **options)


# The built-in backends
register_backend(
    "onnxruntime",
    "sarbridge.runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "onnx",
    "ONNX Runtime; on Jetson, NVIDIA's onnxruntime-gpu wheel",
)
register_backend(
    "openvino",
    "sarbridge.runtime.backends.openvino:OpenVinoBackend",
    "openvino",
    "OpenVINO on the CPU (device option for others), explicit precision hint",
)
register_backend(
    "tensorrt",
    "sarbridge.runtime.backends.tensorrt:TensorRTBackend",
    "trt",
    "the artifact's TensorRT engine for this GPU (sarbridge export engine builds it on the board)",
)
register_backend(
    "pytorch",
    "sarbridge.benchmarks.torch_backend:TorchBackend",
    "train",
    "the training run in eager PyTorch, a bench row to compare against",
)
