"""CUDA memory and streams for the TensorRT backend, behind one small interface.

Two implementations of :class:`Cuda`:

* ``cuda-python`` (:class:`CudaPython`, the default): NVIDIA's own bindings, as the TensorRT
  samples use them (``samples/python/common_runtime.py`` of TensorRT 10.x/11.x). cuda-python
  12.6.1 moved the runtime API to ``cuda.bindings.runtime``; 13.0 removed the old
  ``cuda.cudart``; both are tried, newest first.
* ``pycuda`` (:class:`PyCuda`, ``--cuda pycuda``): for boards whose images carry it. It works in
  the device's primary context, the one TensorRT's runtime API calls use.

Every cuda-python call goes through :func:`cuda_call`, which turns a non-zero ``cudaError_t``
into a :class:`CudaError` naming the call and the error. :class:`DeviceBuffers` holds a
network's buffers: pinned host memory and device memory per tensor, sized once for the largest
shape the engine accepts, copied asynchronously on one stream.

Nothing here is imported by sarbridge until a TensorRT command or backend runs, and
:func:`open_device` checks that a CUDA device answers before anything TensorRT is touched
(deserializing an engine without a device can crash the process instead of raising).
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import numpy as np

from sarbridge.runtime.errors import SarbridgeError

CUDA_KINDS = ("cuda-python", "pycuda")
INSTALL = {
    "cuda-python": "pip install 'sarbridge[trt]' (cuda-python; on JetPack 6 pin cuda-python<13)",
    "pycuda": "pip install pycuda (it builds against the board's CUDA toolkit)",
}


class CudaError(SarbridgeError):
    """A CUDA call failed, or no usable CUDA device is present."""


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU an engine is built for or run on."""

    index: int
    name: str
    compute_capability: str  # "8.7" (Jetson Orin), "9.0" (H100/H200)
    total_memory: int  # bytes

    @property
    def slug(self) -> str:
        """A file-name-safe name, e.g. ``orin-sm87``, ``nvidia-h200-sm90``."""
        safe = "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-")
        while "--" in safe:
            safe = safe.replace("--", "-")
        return f"{safe or 'gpu'}-sm{self.compute_capability.replace('.', '')}"


class Cuda:
    """The CUDA calls a TensorRT backend needs: devices, memory, copies, one stream."""

    name = "cuda"
    version = ""

    def device_count(self) -> int:
        raise NotImplementedError

    def device(self, index: int) -> DeviceInfo:
        raise NotImplementedError

    def set_device(self, index: int) -> None:
        raise NotImplementedError

    def malloc(self, nbytes: int) -> int:
        """Device memory; returns its address."""
        raise NotImplementedError

    def free(self, ptr: int) -> None:
        raise NotImplementedError

    def host_alloc(self, nbytes: int) -> np.ndarray:
        """Pinned (page-locked) host memory as a uint8 array of ``nbytes``."""
        raise NotImplementedError

    def host_free(self, array: np.ndarray) -> None:
        raise NotImplementedError

    def stream_create(self):
        raise NotImplementedError

    def stream_handle(self, stream) -> int:
        """The ``cudaStream_t`` as the integer TensorRT's ``execute_async_v3`` takes."""
        raise NotImplementedError

    def stream_sync(self, stream) -> None:
        raise NotImplementedError

    def stream_destroy(self, stream) -> None:
        raise NotImplementedError

    def htod_async(self, dst: int, src: np.ndarray, stream) -> None:
        raise NotImplementedError

    def dtoh_async(self, dst: np.ndarray, src: int, stream) -> None:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


# --------------------------------------------------------------------------- cuda-python


def _cudart():
    try:  # cuda-python >= 12.6.1 (TensorRT >= 10.14 samples)
        from cuda.bindings import runtime as cudart
    except ImportError:  # older 12.x, the JetPack 6 era (TensorRT 10.3 samples)
        from cuda import cudart
    return cudart


def cuda_call(result, call: str):
    """The value(s) of a cuda-python call, whose first element is its ``cudaError_t``.

    Raises:
        CudaError: the error is not ``cudaSuccess``, naming ``call`` and the error.
    """
    err, *values = result
    code = int(getattr(err, "value", err))
    if code:
        name = getattr(err, "name", str(code))
        raise CudaError(f"CUDA {call} failed: {name} ({code})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class CudaPython(Cuda):
    """cuda-python's runtime API (``cudart``)."""

    name = "cuda-python"

    def __init__(self):
        self.rt = _cudart()
        try:
            import cuda.bindings as package  # its version; absent before cuda-python 12.6.1
        except ImportError:
            import cuda as package
        self.version = str(getattr(package, "__version__", ""))
        self._pinned: dict[int, int] = {}  # id(array) -> pointer

    def device_count(self) -> int:
        return int(cuda_call(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount"))

    def device(self, index: int) -> DeviceInfo:
        prop = cuda_call(self.rt.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
        name = prop.name
        if isinstance(name, bytes):
            name = name.split(b"\0", 1)[0].decode(errors="replace")
        return DeviceInfo(index, str(name), f"{prop.major}.{prop.minor}", int(prop.totalGlobalMem))

    def set_device(self, index: int) -> None:
        cuda_call(self.rt.cudaSetDevice(index), "cudaSetDevice")

    def malloc(self, nbytes: int) -> int:
        return int(cuda_call(self.rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))

    def free(self, ptr: int) -> None:
        cuda_call(self.rt.cudaFree(ptr), "cudaFree")

    def host_alloc(self, nbytes: int) -> np.ndarray:
        ptr = int(cuda_call(self.rt.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})"))
        array = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), (nbytes,))
        self._pinned[id(array)] = ptr
        return array

    def host_free(self, array: np.ndarray) -> None:
        ptr = self._pinned.pop(id(array), None)
        if ptr is not None:
            cuda_call(self.rt.cudaFreeHost(ptr), "cudaFreeHost")

    def stream_create(self):
        return cuda_call(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream) -> int:
        try:  # cuda-bindings 13 deprecates int() on its handle objects
            from cuda.bindings.utils import get_cuda_native_handle
        except ImportError:
            return int(stream)
        return int(get_cuda_native_handle(stream))

    def stream_sync(self, stream) -> None:
        cuda_call(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def stream_destroy(self, stream) -> None:
        cuda_call(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def htod_async(self, dst: int, src: np.ndarray, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        cuda_call(
            self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream),
            "cudaMemcpyAsync(host to device)",
        )

    def dtoh_async(self, dst: np.ndarray, src: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call(
            self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream),
            "cudaMemcpyAsync(device to host)",
        )


# --------------------------------------------------------------------------- pycuda


class PyCuda(Cuda):
    """pycuda's driver API, in the device's primary context (shared with TensorRT)."""

    name = "pycuda"

    def __init__(self):
        import pycuda
        import pycuda.driver as drv

        self.drv = drv
        self.version = getattr(pycuda, "VERSION_TEXT", "")
        self._context = None
        self._allocations: dict[int, object] = {}
        try:
            drv.init()
        except drv.Error as exc:
            raise CudaError(f"CUDA cuInit failed: {exc}") from None

    def _checked(self, call: str, fn, *args):
        try:
            return fn(*args)
        except self.drv.Error as exc:
            raise CudaError(f"CUDA {call} failed: {exc}") from None

    def device_count(self) -> int:
        return int(self._checked("cuDeviceGetCount", self.drv.Device.count))

    def device(self, index: int) -> DeviceInfo:
        dev = self._checked("cuDeviceGet", self.drv.Device, index)
        major, minor = dev.compute_capability()
        return DeviceInfo(index, dev.name(), f"{major}.{minor}", int(dev.total_memory()))

    def set_device(self, index: int) -> None:
        if self._context is None:
            dev = self._checked("cuDeviceGet", self.drv.Device, index)
            self._context = self._checked("cuDevicePrimaryCtxRetain", dev.retain_primary_context)
            self._context.push()

    def malloc(self, nbytes: int) -> int:
        alloc = self._checked(f"cuMemAlloc({nbytes})", self.drv.mem_alloc, nbytes)
        self._allocations[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._allocations.pop(ptr, None)
        if alloc is not None:
            alloc.free()

    def host_alloc(self, nbytes: int) -> np.ndarray:
        return self._checked(
            f"cuMemHostAlloc({nbytes})", self.drv.pagelocked_empty, (nbytes,), np.uint8
        )

    def host_free(self, array: np.ndarray) -> None:
        base = getattr(array, "base", None)
        if hasattr(base, "free"):
            base.free()

    def stream_create(self):
        return self._checked("cuStreamCreate", self.drv.Stream)

    def stream_handle(self, stream) -> int:
        return int(stream.handle)

    def stream_sync(self, stream) -> None:
        self._checked("cuStreamSynchronize", stream.synchronize)

    def stream_destroy(self, stream) -> None:
        pass  # pycuda frees the stream with the object

    def htod_async(self, dst: int, src: np.ndarray, stream) -> None:
        self._checked("cuMemcpyHtoDAsync", self.drv.memcpy_htod_async, dst, src, stream)

    def dtoh_async(self, dst: np.ndarray, src: int, stream) -> None:
        self._checked("cuMemcpyDtoHAsync", self.drv.memcpy_dtoh_async, dst, src, stream)

    def close(self) -> None:
        if self._context is not None:
            self._context.pop()
            self._context = None


# --------------------------------------------------------------------------- opening


def open_cuda(kind: str = "cuda-python") -> Cuda:
    """The CUDA binding called ``kind`` (``cuda-python`` or ``pycuda``).

    Raises:
        SarbridgeError: an unknown kind, or its package cannot be imported (with the install
            line).
    """
    if kind not in CUDA_KINDS:
        raise SarbridgeError(
            f"unknown CUDA binding {kind!r}; choose one of: {', '.join(CUDA_KINDS)}"
        )
    try:
        return CudaPython() if kind == "cuda-python" else PyCuda()
    except ImportError as exc:
        raise SarbridgeError(
            f"TensorRT needs the {kind} package for device memory, which cannot be imported "
            f"here ({exc}): {INSTALL[kind]}"
        ) from None


def open_device(cuda: Cuda, index: int = 0) -> DeviceInfo:
    """Check that CUDA device ``index`` answers and make it current; returns what it is.

    Raises:
        CudaError: no driver, no device, or no device ``index``; said before TensorRT is touched.
    """
    try:
        count = cuda.device_count()
    except CudaError as exc:
        hint = ""
        if "InsufficientDriver" in str(exc) and cuda.version.startswith("13"):
            hint = (
                f"; {cuda.name} {cuda.version} needs a CUDA 13 driver: with a CUDA 12 driver "
                "(JetPack 6) pip install 'cuda-python>=12.6.1,<13'"
            )
        raise CudaError(
            f"no usable CUDA device ({exc}); TensorRT needs an NVIDIA GPU and its driver "
            f"(a Jetson board, or a desktop/server GPU){hint}"
        ) from None
    if count < 1 or not 0 <= index < count:
        raise CudaError(
            f"CUDA device {index} does not exist ({count} device(s) visible; check "
            "CUDA_VISIBLE_DEVICES)"
        )
    cuda.set_device(index)
    return cuda.device(index)


# --------------------------------------------------------------------------- buffers


@dataclass
class _Buffer:
    shape: tuple[int, ...]  # the largest shape
    dtype: np.dtype
    nbytes: int
    host: np.ndarray  # pinned uint8
    device: int


class DeviceBuffers:
    """Pinned host and device memory for each named tensor, sized for its largest shape.

    Args:
        cuda: the binding.
        tensors: ``{name: (largest shape, numpy dtype)}``.

    ``upload`` copies an array into its pinned buffer and queues the copy to the device;
    ``download`` queues the copy back and returns the pinned view, valid once the stream is
    synchronised (copy it before the next run). ``close`` frees everything, newest first; a
    failed allocation frees what was allocated before it.
    """

    def __init__(self, cuda: Cuda, tensors: dict[str, tuple[tuple[int, ...], object]]):
        self.cuda = cuda
        self._buffers: dict[str, _Buffer] = {}
        try:
            for name, (shape, dtype) in tensors.items():
                dtype = np.dtype(dtype)
                if any(int(d) < 0 for d in shape):
                    raise SarbridgeError(f"tensor {name!r}: no largest shape known ({shape})")
                nbytes = max(1, math.prod(int(d) for d in shape) * dtype.itemsize)
                host = cuda.host_alloc(nbytes)
                try:
                    device = cuda.malloc(nbytes)
                except Exception:
                    cuda.host_free(host)
                    raise
                self._buffers[name] = _Buffer(
                    tuple(int(d) for d in shape), dtype, nbytes, host, device
                )
        except Exception:
            self.close()
            raise

    def __contains__(self, name: str) -> bool:
        return name in self._buffers

    def address(self, name: str) -> int:
        return self._buffers[name].device

    def _fits(self, buf: _Buffer, name: str, shape: tuple[int, ...]) -> int:
        nbytes = math.prod(shape) * buf.dtype.itemsize
        if len(shape) != len(buf.shape) or any(
            s > m for s, m in zip(shape, buf.shape, strict=True)
        ):
            raise SarbridgeError(
                f"tensor {name!r}: shape {list(shape)} exceeds the engine's largest {list(buf.shape)}"
            )
        return nbytes

    def upload(self, name: str, array: np.ndarray, stream) -> None:
        buf = self._buffers[name]
        nbytes = self._fits(buf, name, tuple(array.shape))
        view = buf.host[:nbytes].view(buf.dtype).reshape(array.shape)
        np.copyto(view, array, casting="same_kind")
        self.cuda.htod_async(buf.device, view, stream)

    def download(self, name: str, shape: tuple[int, ...], stream) -> np.ndarray:
        buf = self._buffers[name]
        shape = tuple(int(d) for d in shape)
        nbytes = self._fits(buf, name, shape)
        view = buf.host[:nbytes].view(buf.dtype).reshape(shape)
        self.cuda.dtoh_async(view, buf.device, stream)
        return view

    def close(self) -> None:
        for name in reversed(list(self._buffers)):
            buf = self._buffers.pop(name)
            try:
                self.cuda.free(buf.device)
            finally:
                self.cuda.host_free(buf.host)
