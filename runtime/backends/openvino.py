"""The ``openvino`` backend: an artifact's ONNX model compiled by OpenVINO (CPU by default).

Imported only when this backend is chosen (see :mod:`sarbridge.runtime.backends`); the
``import openvino`` below is the real package (absolute imports), not this module.

The precision hint is always set: on CPUs with AVX512-BF16/AMX, OpenVINO otherwise runs an
"FP32" model in bf16. The default follows the manifest: ``f16`` for an fp16 model, ``f32`` for
fp32, int8 and mixed ones (the Q/DQ layers of an INT8 model run in int8 whatever the hint; the
hint sets the precision of the rest). The hint OpenVINO actually applied is read back into
:attr:`description`.

The model is compiled once with its dynamic batch dimension: on the zoo detector (2-core Xeon,
one thread) that ran batch 1 and 8 within a few percent of models reshaped to a static batch,
so no per-batch compiled models are kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov

from sarbridge.runtime.backends import Backend, TensorSpec, fixed_batch
from sarbridge.runtime.errors import SarbridgeError

# manifest precision -> OpenVINO INFERENCE_PRECISION_HINT
DEFAULT_HINTS = {"fp32": "f32", "int8": "f32", "mixed": "f32", "fp16": "f16"}
HINTS = ("f32", "f16", "bf16")


def port_name(port, index: int, kind: str) -> str:
    """A port's name: its first name, or ``<kind><index>`` for a port without one (an IR
    converted from a traced PyTorch module, as Ultralytics' OpenVINO export, names no output)."""
    names = port.get_names()
    return min(names) if names else f"{kind}{index}"


class OpenVinoBackend(Backend):
    """OpenVINO with the latency hint and an explicit precision hint.

    Args:
        device: OpenVINO device name (``"CPU"``; ``"GPU"``, ``"NPU"`` where installed).
        threads: inference threads (``INFERENCE_NUM_THREADS``; None: OpenVINO's default).
        precision: ``"f32"``, ``"f16"`` or ``"bf16"``; None: from the manifest's precision
            (``f16`` for fp16, else ``f32``).
    """

    name = "openvino"

    def __init__(
        self,
        model_path: Path,
        manifest: dict,
        device: str = "CPU",
        threads: int | None = None,
        precision: str | None = None,
    ):
        if manifest["model"]["format"] not in ("onnx", "openvino"):
            raise SarbridgeError(
                f"{model_path}: the openvino backend runs ONNX models and OpenVINO IR, this "
                f"manifest's model is {manifest['model']['format']}"
            )
        hint = DEFAULT_HINTS[manifest["precision"]] if precision is None else precision
        if hint not in HINTS:
            raise SarbridgeError(
                f"openvino precision hint must be one of {list(HINTS)}, got {precision!r}"
            )
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        weights = manifest["model"].get("weights")  # an IR's .bin: the file the manifest checked
        try:
            if weights:
                model = core.read_model(str(model_path), str(Path(model_path).parent / weights["file"]))
            else:
                model = core.read_model(str(model_path))
        except Exception as exc:  # OpenVINO raises RuntimeError with its own text
            raise SarbridgeError(f"{model_path}: openvino cannot read the model: {exc}") from exc
        try:
            self.compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise SarbridgeError(
                f"{model_path}: openvino cannot compile the model for {device} with {config}: {exc}"
            ) from exc
        self.request = self.compiled.create_infer_request()
        self._input_names = [t["name"] for t in manifest["inputs"]]
        self._output_names = [t["name"] for t in manifest["outputs"]]
        self.input_dtype = self.compiled.inputs[0].get_element_type().to_dtype()
        # manifest order by name; the model's own order when the names do not all match
        ports = list(self.compiled.outputs)
        by_name = {
            name: port
            for k, port in enumerate(ports)
            for name in (port.get_names() or {port_name(port, k, "output")})
        }
        wanted = [t["name"] for t in manifest["outputs"]]
        self.outputs = [by_name[n] for n in wanted] if all(n in by_name for n in wanted) else ports
        self.device, self.threads = device, threads
        self.precision_hint = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.max_batch = fixed_batch(manifest)
        self.description = (
            f"openvino {ov.__version__.split('-')[0]} ({device}, precision hint "
            f"{self.precision_hint})"
        )

    def model_io(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        def specs(ports, wanted: list[str], kind: str) -> list[TensorSpec]:
            out = []
            for k, port in enumerate(ports):
                shape = tuple(
                    d.get_length() if d.is_static else None for d in port.get_partial_shape()
                )
                names = port.get_names()  # a port may have several: the manifest's if there
                name = next((w for w in wanted if w in names), port_name(port, k, kind))
                dtype = np.dtype(port.get_element_type().to_dtype()).name
                out.append(TensorSpec(name, shape, dtype))
            return out

        return specs(self.compiled.inputs, self._input_names, "input"), specs(
            self.compiled.outputs, self._output_names, "output"
        )

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(batch, self.input_dtype)
        # share_outputs=False: the arrays are copies, not views the next run overwrites
        result = self.request.infer({0: x}, share_inputs=True, share_outputs=False)
        return [result[port] for port in self.outputs]

    def close(self) -> None:
        self.request = self.compiled = None
