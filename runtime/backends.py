"""Inference backends, chosen by name: the model file in, numpy arrays out.

A backend loads one model file and runs a batch ``[B, C, S, S]`` float32 through
it, returning the model's outputs as numpy arrays in manifest order. Backends
register under a name (:func:`register_backend`); ``onnxruntime`` ships here and
a TensorRT engine backend slots in the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sarbridge.runtime.errors import SarbridgeError


class Backend:
    """One loaded model. ``run(batch) -> [outputs]``; ``max_batch`` is None when any batch works."""

    name = "backend"
    max_batch: int | None = None
    description = ""

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


_BACKENDS: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str):
    def wrap(factory):
        _BACKENDS[name] = factory
        return factory

    return wrap


def list_backends() -> list[str]:
    return sorted(_BACKENDS)


def open_backend(name: str, model_path: str | Path, manifest: dict, **options) -> Backend:
    """Load ``model_path`` with the backend called ``name``.

    Raises:
        SarbridgeError: unknown backend (listing the choices) or a backend that cannot load here.
    """
    if name not in _BACKENDS:
        raise SarbridgeError(
            f"unknown backend {name!r}; choose one of: {', '.join(list_backends())}"
        )
    return _BACKENDS[name](Path(model_path), manifest, **options)


def _fixed_batch(manifest: dict) -> int | None:
    dim = manifest["inputs"][0]["shape"][0]
    return dim if isinstance(dim, int) else None


@register_backend("onnxruntime")
class OnnxRuntimeBackend(Backend):
    """ONNX Runtime with the best available execution providers.

    Args:
        providers: provider names in order of preference, or None for every available
            one in the order TensorRT, CUDA, CPU (``onnxruntime.get_available_providers()``).
        threads: intra-op threads (None: ONNX Runtime's default, one per core).
    """

    name = "onnxruntime"
    PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

    def __init__(
        self,
        model_path: Path,
        manifest: dict,
        providers: list[str] | None = None,
        threads: int | None = None,
    ):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise SarbridgeError(
                "the onnxruntime backend needs onnxruntime: pip install 'sarbridge[onnx]' "
                "(on Jetson, NVIDIA's onnxruntime-gpu wheel)"
            ) from exc
        if manifest["model"]["format"] != "onnx":
            raise SarbridgeError(
                f"{model_path}: the onnxruntime backend runs ONNX models, this manifest's model is "
                f"{manifest['model']['format']}"
            )
        available = ort.get_available_providers()
        if providers:
            missing = [p for p in providers if p not in available]
            if missing:
                raise SarbridgeError(
                    f"execution provider(s) {missing} are not available in this onnxruntime; "
                    f"available: {available}"
                )
            chosen = list(providers)
        else:
            chosen = [p for p in self.PREFERENCE if p in available] or available
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(os.fspath(model_path), opts, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise SarbridgeError(f"{model_path}: onnxruntime cannot load the model: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()
        self.threads = threads
        self.max_batch = _fixed_batch(manifest)
        self.description = f"onnxruntime {ort.__version__} ({', '.join(self.providers)})"

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(
            self.output_names, {self.input_name: np.ascontiguousarray(batch, np.float32)}
        )
