"""The ``tensorrt`` backend: the artifact's TensorRT engine for this board, run through CUDA.

Imported only when this backend is chosen (``sarbridge detect --backend tensorrt``, ``sarbridge
bench --backends tensorrt``). In this order, so that nothing TensorRT is touched without a GPU:

1. the CUDA binding (cuda-python, or pycuda with ``cuda="pycuda"``) and a device that answers;
2. ``import tensorrt`` (10.x or 11.x);
3. the manifest's engine for this TensorRT version and compute capability, its sha256 checked
   (:func:`sarbridge.runtime.trt.engines.select_engine` refuses the others with the reason and
   the rebuild command);
4. ``trt.Runtime.deserialize_cuda_engine``, one execution context, pinned host and device
   buffers for the profile's largest batch, and one CUDA stream.

``run`` follows TensorRT's name-based API (10.x and 11.x): ``set_input_shape`` for the batch,
``set_tensor_address`` for every I/O tensor, ``execute_async_v3`` on the stream, copies back on
the same stream, one synchronisation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sarbridge.runtime.backends import Backend, TensorSpec
from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.trt.engines import select_engine


class TensorRTBackend(Backend):
    """A TensorRT engine listed in the artifact's manifest.

    Args:
        precision: the engine precision to run (fp32, fp16, int8, best); None picks the best
            one built for this board.
        dla_core: run the engine built for this DLA core (None: a GPU engine).
        cuda: ``cuda-python`` (default) or ``pycuda``.
        device: the CUDA device index.
        threads: accepted for a uniform interface; the network runs on the GPU.
    """

    name = "tensorrt"

    def __init__(
        self,
        model_path: Path,
        manifest: dict,
        precision: str | None = None,
        dla_core: int | None = None,
        cuda: str = "cuda-python",
        device: int = 0,
        threads: int | None = None,
        verbose: bool = False,
    ):
        from sarbridge.runtime.trt.api import import_tensorrt, logged_errors, make_logger
        from sarbridge.runtime.trt.cuda import DeviceBuffers, open_cuda, open_device

        artifact = Path(model_path).parent
        self.providers = None
        self.device = "GPU" if dla_core is None else f"DLA{dla_core}"
        self._cuda = open_cuda(cuda)
        self._buffers = self._stream = self.context = self.engine = self.runtime = None
        self._logger = None
        try:
            self.gpu = open_device(self._cuda, device)
            trt = import_tensorrt()
            self.entry = select_engine(
                manifest, artifact, trt.__version__, self.gpu, precision, dla_core
            )
            self._trt = trt
            self._logger = make_logger(trt, verbose)
            self.runtime = trt.Runtime(self._logger)
            if dla_core is not None:
                self.runtime.DLA_core = int(dla_core)
            plan = (artifact / self.entry["file"]).read_bytes()
            self.engine = self.runtime.deserialize_cuda_engine(plan)
            if self.engine is None:
                raise SarbridgeError(
                    f"{artifact / self.entry['file']}: TensorRT {trt.__version__} cannot load the "
                    f"engine:{logged_errors(self._logger)}"
                )
            self.context = self.engine.create_execution_context()
            self._inputs, self._outputs = self._io_names(manifest)
            self.input_name = self._inputs[0]
            self._dtypes = {n: self._numpy_dtype(n) for n in self._inputs + self._outputs}
            largest = self._largest_shapes()
            self.max_batch = largest[self.input_name][0]
            self._buffers = DeviceBuffers(
                self._cuda, {n: (largest[n], self._dtypes[n]) for n in largest}
            )
            self._stream = self._cuda.stream_create()
            self._handle = self._cuda.stream_handle(self._stream)
        except BaseException:
            self.close()
            raise
        self.description = (
            f"TensorRT {trt.__version__} {self.entry['precision']} on {self.gpu.name} "
            f"(sm {self.gpu.compute_capability}{'' if dla_core is None else f', DLA {dla_core}'}; "
            f"{self._cuda.name} {self._cuda.version})"
        )

    def _numpy_dtype(self, name: str) -> np.dtype:
        kind = self.engine.get_tensor_dtype(name)
        try:
            return np.dtype(self._trt.nptype(kind))
        except TypeError:  # BF16, FP8, INT4 have no numpy type
            raise SarbridgeError(
                f"the engine's tensor {name!r} is {kind}, which the runtime cannot feed or read; "
                "export the model with float32 inputs and outputs"
            ) from None

    def _io_names(self, manifest: dict) -> tuple[list[str], list[str]]:
        trt, engine = self._trt, self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        order = [t["name"] for t in manifest["outputs"]]  # manifest order, as the other backends
        outputs.sort(key=lambda n: order.index(n) if n in order else len(order))
        if len(inputs) != 1:
            raise SarbridgeError(f"the engine has {len(inputs)} inputs; the runtime feeds one")
        return inputs, outputs

    def _largest_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each tensor's shape at the profile's largest input (the engine's own for a fixed
        batch)."""
        name = self.input_name
        shape = tuple(self.engine.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            shape = tuple(self.engine.get_tensor_profile_shape(name, 0)[2])  # [min, opt, max]
        if not self.context.set_input_shape(name, shape):
            raise SarbridgeError(f"the engine refuses its own largest input shape {list(shape)}")
        out = {name: tuple(int(d) for d in shape)}
        for n in self._outputs:
            out[n] = tuple(int(d) for d in self.context.get_tensor_shape(n))
        return out

    def model_io(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        def spec(n: str) -> TensorSpec:
            shape = tuple(None if d < 0 else int(d) for d in self.engine.get_tensor_shape(n))
            return TensorSpec(n, shape, self._dtypes[n].name)

        return [spec(n) for n in self._inputs], [spec(n) for n in self._outputs]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, self._dtypes[self.input_name])
        if len(batch) > self.max_batch:
            raise SarbridgeError(
                f"batch {len(batch)} is larger than the engine's profile allows ({self.max_batch}); "
                "rebuild with a larger --max-batch"
            )
        ctx, bufs = self.context, self._buffers
        if not ctx.set_input_shape(self.input_name, batch.shape):
            raise SarbridgeError(f"the engine refuses input shape {list(batch.shape)}")
        bufs.upload(self.input_name, batch, self._stream)
        for n in (self.input_name, *self._outputs):
            if not ctx.set_tensor_address(n, bufs.address(n)):
                raise SarbridgeError(f"TensorRT refused the address of tensor {n!r}")
        if self._logger is not None:
            self._logger.errors.clear()
        if not ctx.execute_async_v3(self._handle):
            raise SarbridgeError(f"TensorRT execution failed:{self._errors()}")
        views = [bufs.download(n, ctx.get_tensor_shape(n), self._stream) for n in self._outputs]
        self._cuda.stream_sync(self._stream)
        return [v.copy() for v in views]

    def _errors(self) -> str:
        from sarbridge.runtime.trt.api import logged_errors

        return logged_errors(self._logger)

    def close(self) -> None:
        if getattr(self, "_stream", None) is not None:
            try:  # nothing is freed while a copy or the network may still use it
                self._cuda.stream_sync(self._stream)
            except SarbridgeError as exc:
                print(f"warning: CUDA stream sync at close: {exc}")
        if getattr(self, "_buffers", None) is not None:
            self._buffers.close()
            self._buffers = None
        if getattr(self, "_stream", None) is not None:
            self._cuda.stream_destroy(self._stream)
            self._stream = None
        self.context = self.engine = self.runtime = None  # TensorRT objects before the context
        if getattr(self, "_cuda", None) is not None:
            self._cuda.close()
            self._cuda = None
