"""The ``onnxruntime`` backend: an ONNX model run by ONNX Runtime.

Imported only when this backend is chosen (see :mod:`sarbridge.runtime.backends`); the
``import onnxruntime`` below is the real package (absolute imports), not this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sarbridge.runtime.backends import Backend, fixed_batch
from sarbridge.runtime.errors import SarbridgeError


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
        self.max_batch = fixed_batch(manifest)
        self.description = f"onnxruntime {ort.__version__} ({', '.join(self.providers)})"

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(
            self.output_names, {self.input_name: np.ascontiguousarray(batch, np.float32)}
        )
