"""The ``onnxruntime`` backend: an ONNX model run by ONNX Runtime.

Imported only when this backend is chosen (see :mod:`sarbridge.runtime.backends`); the
``import onnxruntime`` below is the real package (absolute imports), not this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sarbridge.runtime.backends import Backend, TensorSpec, fixed_batch
from sarbridge.runtime.errors import SarbridgeError

# ONNX Runtime's tensor type names -> numpy's
_ORT_TYPES = {"float": "float32", "float16": "float16", "double": "float64"}


def ort_cache_dir() -> Path:
    """Where ONNX Runtime's TensorRT provider keeps engines: ``$SARBRIDGE_CACHE/ort-tensorrt``
    (default ``~/.cache/sarbridge/ort-tensorrt``); artifact folders may be read-only."""
    root = os.environ.get("SARBRIDGE_CACHE") or Path.home() / ".cache" / "sarbridge"
    return Path(root) / "ort-tensorrt"


def provider_options(chosen: list[str], manifest: dict, ort_version: str) -> list[dict]:
    """One options dict per chosen provider (ONNX Runtime's TensorRT/CUDA provider options).

    TensorRT: engine and timing caches on (building takes minutes; ONNX Runtime's docs), in a
    folder per model file and ONNX Runtime version, because its cached engines are not
    checked against the TensorRT version or GPU (delete the folder after upgrading either).
    No precision flags: with neither ``trt_fp16_enable`` nor ``trt_int8_enable``, ONNX Runtime
    releases that include microsoft/onnxruntime#24298 build the network strongly typed, so a
    Q/DQ model (``--target tensorrt``) runs its INT8 layers as placed and an FP32 model stays
    FP32; older ones build it weakly typed in FP32 (TensorRT still honours the Q/DQ nodes).
    CUDA and CPU: their defaults.
    """
    out = []
    for provider in chosen:
        if provider == "TensorrtExecutionProvider":
            cache = ort_cache_dir() / f"{manifest['model']['sha256'][:16]}-ort{ort_version}"
            out.append(
                {
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": "True",
                    "trt_timing_cache_path": str(cache),
                }
            )
        else:
            out.append({})
    return out


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
        # the memory pattern is a second, whole-graph block in the CPU arena beside the first
        # run's chunks (+72 MiB resident at batch 8) for no measurable speed-up here
        opts.enable_mem_pattern = chosen[0] != "CPUExecutionProvider"
        options = provider_options(chosen, manifest, ort.__version__)
        try:
            self.session = ort.InferenceSession(
                os.fspath(model_path), opts, providers=chosen, provider_options=options
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise SarbridgeError(f"{model_path}: onnxruntime cannot load the model: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()
        self.threads = threads
        self.max_batch = fixed_batch(manifest)
        self.description = f"onnxruntime {ort.__version__} ({', '.join(self.providers)})"

    def model_io(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        def spec(arg) -> TensorSpec:
            shape = tuple(d if isinstance(d, int) else None for d in (arg.shape or ()))
            kind = arg.type.removeprefix("tensor(").removesuffix(")")
            return TensorSpec(arg.name, shape, _ORT_TYPES.get(kind, kind))

        return [spec(a) for a in self.session.get_inputs()], [
            spec(a) for a in self.session.get_outputs()
        ]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(
            self.output_names, {self.input_name: np.ascontiguousarray(batch, np.float32)}
        )
