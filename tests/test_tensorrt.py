"""TensorRT without TensorRT: what runs on any machine, and what needs a GPU, marked.

TensorRT cannot be installed here (docs/jetson.md, facts): engine selection and refusal, the
manifest's engine entries, the precision rules per TensorRT version, the buffer manager and the
backend's use of TensorRT's name-based API (against small fakes of CUDA and of an engine), and
the commands' messages when TensorRT or a GPU is absent (exit 2, in a subprocess: never a crash)
run everywhere. ``test_engine_matches_onnxruntime_on_ssdd`` builds and runs a real engine and is
skipped unless TensorRT and a CUDA device are present.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sarbridge.runtime.errors import ManifestError, SarbridgeError
from sarbridge.runtime.manifest import load_manifest, save_manifest
from sarbridge.runtime.trt import cuda as trt_cuda
from sarbridge.runtime.trt.build import PrecisionPlan, destination, precision_plan
from sarbridge.runtime.trt.cuda import CudaError, DeviceBuffers, DeviceInfo, cuda_call
from sarbridge.runtime.trt.engines import (
    EngineMismatch,
    add_engine,
    engine_entry,
    engine_file_name,
    select_engine,
)
from sarbridge.runtime.zoo import zoo_artifact

ORIN = DeviceInfo(0, "Orin", "8.7", 32 << 30)
ORIN_NX = DeviceInfo(0, "Orin NX", "8.7", 16 << 30)
H200 = DeviceInfo(0, "NVIDIA H200", "9.0", 141 << 30)


def _has_gpu_tensorrt() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        return trt_cuda.open_cuda().device_count() > 0
    except SarbridgeError:
        return False


@pytest.fixture
def artifact(tmp_path) -> Path:
    """A copy of the zoo detector's artifact (manifest + ONNX) to add engines to."""
    src = zoo_artifact("zoo:ssdd_edge_det")
    out = tmp_path / "edge"
    out.mkdir()
    for name in ("manifest.json", "model.onnx"):
        shutil.copy2(src / name, out / name)
    return out


def _plan(artifact: Path, device: DeviceInfo, precision: str, version: str = "10.3.0", dla=None):
    """Write a plan file and list it in the manifest, as the builder does."""
    name = engine_file_name(version, device, precision, dla)
    (artifact / name).write_bytes(f"plan {version} {device.name} {precision}".encode())
    from sarbridge.runtime.fileio import sha256_file

    entry = engine_entry(
        name, sha256_file(artifact / name), version, device, precision, dla, ["FP16"], 12.5
    )
    add_engine(artifact, entry)
    return entry


# ------------------------------------------------------------------ engine files and selection


def test_engine_file_names_say_version_device_precision_and_dla():
    assert engine_file_name("10.3.0", ORIN, "int8") == "model.10.3.0.orin-sm87.int8.plan"
    assert (
        engine_file_name("10.3.0", ORIN_NX, "fp16", 1) == "model.10.3.0.orin-nx-sm87.fp16.dla1.plan"
    )
    assert H200.slug == "nvidia-h200-sm90"


def test_select_engine_without_engines_says_how_to_build_one(artifact):
    with pytest.raises(
        EngineMismatch, match=r"no TensorRT engine yet.*sarbridge export engine --from"
    ):
        select_engine(load_manifest(artifact), artifact, "10.3.0", ORIN)


def test_select_engine_refuses_another_tensorrt_version(artifact):
    _plan(artifact, ORIN, "fp16", version="10.3.0")
    with pytest.raises(EngineMismatch, match=r"another TensorRT version.*runs TensorRT 10\.7\.0"):
        select_engine(load_manifest(artifact), artifact, "10.7.0", ORIN)


def test_select_engine_refuses_another_compute_capability(artifact):
    _plan(artifact, ORIN, "fp16")
    with pytest.raises(EngineMismatch, match=r"another GPU.*NVIDIA H200 \(sm 9\.0\)"):
        select_engine(load_manifest(artifact), artifact, "10.3.0", H200)


def test_select_engine_refuses_a_changed_or_missing_plan(artifact):
    entry = _plan(artifact, ORIN, "fp16")
    (artifact / entry["file"]).write_bytes(b"replaced")
    with pytest.raises(EngineMismatch, match=r"does not match the manifest \(sha256"):
        select_engine(load_manifest(artifact), artifact, "10.3.0", ORIN)
    (artifact / entry["file"]).unlink()
    with pytest.raises(EngineMismatch, match="missing"):
        select_engine(load_manifest(artifact), artifact, "10.3.0", ORIN)


def test_select_engine_prefers_this_device_then_precision(artifact):
    _plan(artifact, ORIN_NX, "int8")
    _plan(artifact, ORIN, "fp16")
    _plan(artifact, ORIN, "int8")
    m = load_manifest(artifact)
    assert select_engine(m, artifact, "10.3.0", ORIN)["file"] == "model.10.3.0.orin-sm87.int8.plan"
    assert select_engine(m, artifact, "10.3.0", ORIN, "fp16")["precision"] == "fp16"
    # same compute capability, another board of the family: its engine is the fallback
    assert select_engine(m, artifact, "10.3.0", ORIN_NX)["device_name"] == "Orin NX"
    with pytest.raises(EngineMismatch, match="no engine for fp32"):
        select_engine(m, artifact, "10.3.0", ORIN, "fp32")
    with pytest.raises(EngineMismatch, match="DLA core 0"):
        select_engine(m, artifact, "10.3.0", ORIN, None, dla_core=0)
    dla = _plan(artifact, ORIN, "fp16", dla=0)
    assert select_engine(load_manifest(artifact), artifact, "10.3.0", ORIN, dla_core=0) == dla


def test_add_engine_keeps_others_and_refuses_a_second_for_one_target(artifact):
    first = _plan(artifact, ORIN, "fp16")
    _plan(artifact, ORIN, "int8")
    again = dict(first, build_seconds=99.0)
    with pytest.raises(SarbridgeError, match="already lists .*--force"):
        add_engine(artifact, again)
    add_engine(artifact, again, replace=True)
    engines = load_manifest(artifact)["engines"]
    assert [e["precision"] for e in engines] == ["int8", "fp16"]
    assert engines[1]["build_seconds"] == 99.0


def test_add_engine_validates_before_it_writes(artifact):
    before = (artifact / "manifest.json").read_bytes()
    bad = engine_entry(
        "model.x.plan", "0" * 64, "10.3.0", DeviceInfo(0, "x", "8", 1), "fp16", None, [], 1
    )
    with pytest.raises(ManifestError, match="compute_capability"):
        add_engine(artifact, bad)
    assert (artifact / "manifest.json").read_bytes() == before


# ------------------------------------------------------------------ precision rules


def _int8(manifest: dict, target: str = "tensorrt") -> dict:
    m = copy.deepcopy(manifest)
    m["precision"] = "int8"
    m["quantization"] = {"scheme": f"{target}-qdq", "target": target}
    return m


@pytest.mark.parametrize(
    ("requested", "major", "dla", "expected"),
    [
        (None, 10, None, PrecisionPlan("int8", True, ())),
        ("int8", 10, None, PrecisionPlan("int8", True, ())),
        ("best", 10, None, PrecisionPlan("best", False, ("INT8", "FP16"))),
        ("int8", 10, 0, PrecisionPlan("int8", False, ("INT8", "FP16", "GPU_FALLBACK"))),
        (None, 11, None, PrecisionPlan("int8", True, ())),
    ],
)
def test_precision_plan_for_a_tensorrt_qdq_model(artifact, requested, major, dla, expected):
    assert precision_plan(_int8(load_manifest(artifact)), requested, major, dla) == expected


@pytest.mark.parametrize(
    ("requested", "major", "dla", "expected"),
    [
        (None, 10, None, PrecisionPlan("fp16", False, ("FP16",))),
        ("fp32", 10, None, PrecisionPlan("fp32", False, ())),
        ("fp16", 10, 1, PrecisionPlan("fp16", False, ("FP16", "GPU_FALLBACK"))),
        (None, 11, None, PrecisionPlan("fp32", True, ())),
    ],
)
def test_precision_plan_for_a_float_model(artifact, requested, major, dla, expected):
    assert precision_plan(load_manifest(artifact), requested, major, dla) == expected


@pytest.mark.parametrize(
    ("kind", "requested", "major", "dla", "message"),
    [
        ("fp32", "int8", 10, None, r"built from a Q/DQ INT8 model.*--target tensorrt"),
        ("fp32", "best", 10, None, r"built from a Q/DQ INT8 model"),
        ("onnxruntime", None, 10, None, r"quantized for onnxruntime.*symmetric int8"),
        ("tensorrt", "fp16", 10, None, r"is a Q/DQ INT8 model: build it as int8"),
        ("fp32", "fp16", 11, None, r"TensorRT 11 builds strongly typed.*compress --method fp16"),
        ("tensorrt", "best", 11, None, r"TensorRT 11\s+removed"),
        ("fp32", "fp32", 10, 0, r"DLA runs FP16 and INT8"),
        ("fp32", "fp8", 10, None, r"unknown engine precision"),
    ],
)
def test_precision_plan_refusals(artifact, kind, requested, major, dla, message):
    m = load_manifest(artifact)
    if kind != "fp32":
        m = _int8(m, kind)
    with pytest.raises(SarbridgeError, match=message):
        precision_plan(m, requested, major, dla)


def test_destination_keeps_the_zoo_read_only_and_never_reuses_a_folder(artifact, tmp_path):
    zoo = zoo_artifact("zoo:ssdd_edge_det")
    with pytest.raises(SarbridgeError, match="release model of the zoo.*--out"):
        destination(zoo, None, zoo.parent)
    assert destination(artifact, None, zoo.parent) == artifact
    assert destination(zoo, tmp_path / "new", zoo.parent) == tmp_path / "new"
    with pytest.raises(SarbridgeError, match="not an empty folder"):
        destination(zoo, artifact, zoo.parent)


# ------------------------------------------------------------------ CUDA side, against fakes


class FakeCuda(trt_cuda.Cuda):
    """Device memory as numpy arrays; copies happen at once; every call is logged."""

    name, version = "fake", "0"

    def __init__(self, fail_malloc_at: int | None = None):
        self.memory: dict[int, np.ndarray] = {}
        self.hosts: list[int] = []
        self.log: list[str] = []
        self.fail_malloc_at = fail_malloc_at
        self._next = 4096

    def device_count(self):
        return 1

    def device(self, index):
        return ORIN

    def set_device(self, index):
        self.log.append(f"set_device {index}")

    def malloc(self, nbytes):
        if self.fail_malloc_at is not None and len(self.memory) == self.fail_malloc_at:
            raise CudaError("CUDA cudaMalloc failed: cudaErrorMemoryAllocation (2)")
        ptr, self._next = self._next, self._next + nbytes + 256
        self.memory[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def free(self, ptr):
        self.log.append(f"free {ptr}")
        del self.memory[ptr]

    def host_alloc(self, nbytes):
        a = np.zeros(nbytes, np.uint8)
        self.hosts.append(id(a))
        return a

    def host_free(self, array):
        self.hosts.remove(id(array))

    def stream_create(self):
        return "stream"

    def stream_handle(self, stream):
        return 77

    def stream_sync(self, stream):
        self.log.append("sync")

    def stream_destroy(self, stream):
        self.log.append("stream_destroy")

    def htod_async(self, dst, src, stream):
        raw = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        self.memory[dst][: raw.size] = raw

    def dtoh_async(self, dst, src, stream):
        flat = dst.reshape(-1).view(np.uint8)
        flat[:] = self.memory[src][: flat.size]


def test_device_buffers_round_trip_and_bounds():
    cuda = FakeCuda()
    bufs = DeviceBuffers(
        cuda, {"images": ((4, 1, 8, 8), np.float32), "raw": ((4, 6, 5), np.float32)}
    )
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    bufs.upload("images", x, "s")
    np.testing.assert_array_equal(bufs.download("images", (3, 1, 8, 8), "s"), x)
    with pytest.raises(SarbridgeError, match=r"exceeds the engine's largest \[4, 1, 8, 8\]"):
        bufs.upload("images", np.zeros((5, 1, 8, 8), np.float32), "s")
    bufs.close()
    assert not cuda.memory and not cuda.hosts
    assert cuda.log[0].startswith("free") and len(cuda.log) == 2


def test_device_buffers_free_what_they_hold_when_an_allocation_fails():
    cuda = FakeCuda(fail_malloc_at=1)
    with pytest.raises(CudaError, match="cudaErrorMemoryAllocation"):
        DeviceBuffers(cuda, {"a": ((2, 2), np.float32), "b": ((2, 2), np.float32)})
    assert not cuda.memory and not cuda.hosts


def test_cuda_call_names_the_failing_call():
    class Err:
        def __init__(self, value, name):
            self.value, self.name = value, name

    assert cuda_call((Err(0, "cudaSuccess"), 5), "cudaGetDeviceCount") == 5
    assert cuda_call((Err(0, "cudaSuccess"),), "cudaFree") is None
    with pytest.raises(
        CudaError, match=r"cudaMalloc\(64\) failed: cudaErrorMemoryAllocation \(2\)"
    ):
        cuda_call((Err(2, "cudaErrorMemoryAllocation"), None), "cudaMalloc(64)")


def test_open_device_without_a_gpu_says_so_before_tensorrt():
    """The real cuda-python on a machine without a GPU (skipped where one is present)."""
    try:
        cuda = trt_cuda.open_cuda("cuda-python")
    except SarbridgeError as exc:
        assert "pip install" in str(exc)
        pytest.skip("cuda-python is not installed here")
    try:
        count = cuda.device_count()
    except CudaError:
        count = 0
    if count:
        pytest.skip("a CUDA device is present")
    with pytest.raises(CudaError, match="no usable CUDA device|does not exist"):
        trt_cuda.open_device(cuda, 0)


def test_unknown_cuda_binding_is_refused():
    with pytest.raises(SarbridgeError, match="unknown CUDA binding 'cupy'"):
        trt_cuda.open_cuda("cupy")


class _Enum:
    def __init__(self, **members):
        self.__dict__.update(members)


class FakeEngine:
    """The engine of a network ``raw[b, k, j] = images[b].mean() * (j + 1)`` with a dynamic batch
    (profile 1..4), behind TensorRT 10's name-based API."""

    num_io_tensors = 2

    def __init__(self, trt):
        self.trt = trt

    def get_tensor_name(self, i):
        return ("raw", "images")[i]  # outputs may come first: the backend must not assume order

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.INPUT if name == "images" else self.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return "float32"

    def get_tensor_shape(self, name):
        return (-1, 1, 8, 8) if name == "images" else (-1, 6, 5)

    def get_tensor_profile_shape(self, name, profile):
        return [(1, 1, 8, 8), (4, 1, 8, 8), (4, 1, 8, 8)]

    def create_execution_context(self):
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine):
        self.engine, self.shape, self.addresses, self.calls = engine, None, {}, []

    def set_input_shape(self, name, shape):
        self.shape = tuple(shape)
        return 1 <= self.shape[0] <= 4

    def get_tensor_shape(self, name):
        assert self.shape is not None, "get_tensor_shape before set_input_shape"
        return self.shape if name == "images" else (self.shape[0], 6, 5)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        assert set(self.addresses) == {"images", "raw"}, "an I/O tensor without an address"
        self.calls.append(stream)
        cuda = FakeCuda.current
        n = self.shape[0]
        x = cuda.memory[self.addresses["images"]][: n * 64 * 4].view(np.float32).reshape(n, 64)
        y = x.mean(axis=1)[:, None, None] * np.arange(1, 6, dtype=np.float32)[None, None, :]
        y = np.broadcast_to(y, (n, 6, 5)).astype(np.float32)
        cuda.memory[self.addresses["raw"]][: y.nbytes] = y.reshape(-1).view(np.uint8)
        return True


class FixedBatchEngine(FakeEngine):
    def get_tensor_shape(self, name):
        return (2, 1, 8, 8) if name == "images" else (2, 6, 5)

    def get_tensor_profile_shape(self, name, profile):
        raise AssertionError("a fixed-shape engine has no profile to read")


def _fake_tensorrt(version="10.3.0", engine_class=None):
    trt = _Enum(__version__=version, TensorIOMode=_Enum(INPUT="in", OUTPUT="out"))
    trt.nptype = np.dtype
    trt.ILogger = FakeBuilderTRT().ILogger  # the real make_logger subclasses it
    engine = {"value": None}

    class Runtime:
        def __init__(self, logger):
            self.DLA_core = None

        def deserialize_cuda_engine(self, data):
            engine["value"] = (engine_class or FakeEngine)(trt)
            return engine["value"]

    trt.Runtime = Runtime
    return trt


def test_tensorrt_backend_runs_the_name_based_api(artifact, monkeypatch):
    from sarbridge.runtime.backends import open_backend
    from sarbridge.runtime.trt import api

    _plan(artifact, ORIN, "fp16")  # the backend takes the I/O from the engine, names in order
    cuda = FakeCuda()
    FakeCuda.current = cuda
    monkeypatch.setattr(trt_cuda, "open_cuda", lambda kind="cuda-python": cuda)
    monkeypatch.setattr(api, "import_tensorrt", lambda: _fake_tensorrt())
    backend = open_backend("tensorrt", artifact / "model.onnx", load_manifest(artifact))
    assert backend.max_batch == 4 and backend.entry["precision"] == "fp16"
    assert "TensorRT 10.3.0 fp16 on Orin" in backend.description
    inputs, outputs = backend.model_io()
    assert (inputs[0].name, inputs[0].shape, outputs[0].name) == ("images", (None, 1, 8, 8), "raw")
    x = np.random.default_rng(1).random((3, 1, 8, 8), dtype=np.float32)
    (raw,) = backend.run(x)
    assert raw.shape == (3, 6, 5)
    np.testing.assert_allclose(raw[:, 0, 2], x.reshape(3, -1).mean(axis=1) * 3, rtol=1e-6)
    assert backend.context.calls == [77]  # the stream's handle, as the binding gives it
    (again,) = backend.run(x[:1] * 2)  # the first result is a copy, not the pinned buffer
    np.testing.assert_allclose(raw[0, 0, 0], x[0].mean(), rtol=1e-6)
    np.testing.assert_allclose(again[0, 0, 0], 2 * x[0].mean(), rtol=1e-6)
    with pytest.raises(SarbridgeError, match="larger than the engine's profile allows"):
        backend.run(np.zeros((5, 1, 8, 8), np.float32))
    backend.close()
    assert not cuda.memory and not cuda.hosts and "stream_destroy" in cuda.log


def test_tensorrt_backend_with_a_fixed_batch_engine(artifact, monkeypatch):
    from sarbridge.runtime.backends import open_backend
    from sarbridge.runtime.trt import api

    _plan(artifact, ORIN, "int8")
    FakeCuda.current = cuda = FakeCuda()
    monkeypatch.setattr(trt_cuda, "open_cuda", lambda kind="cuda-python": cuda)
    monkeypatch.setattr(
        api, "import_tensorrt", lambda: _fake_tensorrt(engine_class=FixedBatchEngine)
    )
    backend = open_backend("tensorrt", artifact / "model.onnx", load_manifest(artifact))
    assert backend.max_batch == 2 and backend.model_io()[0][0].shape == (2, 1, 8, 8)
    (raw,) = backend.run(np.ones((2, 1, 8, 8), np.float32))
    np.testing.assert_allclose(raw[:, 0, 4], 5.0)
    backend.close()


def test_tensorrt_backend_refuses_an_engine_of_another_version(artifact, monkeypatch):
    from sarbridge.runtime.backends import open_backend
    from sarbridge.runtime.trt import api

    _plan(artifact, ORIN, "fp16", version="10.3.0")
    cuda = FakeCuda()
    monkeypatch.setattr(trt_cuda, "open_cuda", lambda kind="cuda-python": cuda)
    monkeypatch.setattr(api, "import_tensorrt", lambda: _fake_tensorrt("10.7.0"))
    with pytest.raises(EngineMismatch, match="another TensorRT version"):
        open_backend("tensorrt", artifact / "model.onnx", load_manifest(artifact))
    assert not cuda.memory and not cuda.hosts


def test_onnxruntime_tensorrt_provider_gets_its_caches(monkeypatch, tmp_path, artifact):
    from sarbridge.runtime.backends.onnxruntime import provider_options

    monkeypatch.setenv("SARBRIDGE_CACHE", str(tmp_path))
    m = load_manifest(artifact)
    trt, cuda_opts, cpu = provider_options(
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], m, "1.23.2"
    )
    assert trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == str(
        tmp_path / "ort-tensorrt" / f"{m['model']['sha256'][:16]}-ort1.23.2"
    )
    assert "trt_fp16_enable" not in trt and "trt_int8_enable" not in trt
    assert cuda_opts == {} and cpu == {}


# ------------------------------------------------------------------ the commands, in a subprocess


def _cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sarbridge.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.skipif(_has_gpu_tensorrt(), reason="TensorRT and a GPU are present")
def test_export_engine_without_gpu_or_tensorrt_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "engine_copy"
    proc = _cli("export", "engine", "--from", "zoo:ssdd_edge_det", "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert re.search(r"no usable CUDA device|cuda-python|TensorRT's Python package", proc.stderr)
    assert not out.exists()


@pytest.mark.skipif(_has_gpu_tensorrt(), reason="TensorRT and a GPU are present")
def test_detect_with_tensorrt_without_gpu_exits_2(tmp_path, data):
    scene = data / "SSDD" / "JPEGImages" / "000001.jpg"
    proc = _cli("detect", str(scene), "--model", "zoo:ssdd_edge_det", "--out", str(tmp_path / "o"),
                "--backend", "tensorrt")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert re.search(r"no usable CUDA device|cuda-python|TensorRT's Python package", proc.stderr)
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "o").glob("*.json"))


def test_engine_commands_refuse_bad_arguments(tmp_path):
    proc = _cli("export", "engine", "--from", "zoo:ssdd_edge_det")
    assert proc.returncode == 2 and "release model of the zoo" in proc.stderr
    for bad in (["--precision", "fp8"], ["--max-batch", "0"], ["--workspace", "x"]):
        proc = _cli(
            "export", "engine", "--from", "zoo:ssdd_edge_det", "--out", str(tmp_path / "e"), *bad
        )
        assert proc.returncode == 2, (bad, proc.stderr)
    proc = _cli("detect", "x.png", "--model", "zoo:ssdd_edge_det", "--out", str(tmp_path / "o"),
                "--engine-precision", "fp16")  # fmt: skip
    assert proc.returncode == 2 and "for the tensorrt backend" in proc.stderr


# ------------------------------------------------------------------ where TensorRT and a GPU exist


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu_tensorrt(), reason="needs TensorRT and a CUDA GPU")
def test_engine_matches_onnxruntime_on_ssdd(tmp_path, data):
    """Build an FP32 engine of the zoo detector here and compare its detections with ONNX
    Runtime's on real SSDD test images (FP16/INT8 and timing: benchmarks/tensorrt_check.py)."""
    from sarbridge.runtime.annotations import read_dataset
    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.metrics import matched_max_abs, set_agreement
    from sarbridge.runtime.trt.build import build_engine

    out = tmp_path / "edge"
    entry = build_engine(zoo_artifact("zoo:ssdd_edge_det"), "fp32", out=out, max_batch=4)
    assert json.loads((out / "manifest.json").read_text())["engines"] == [entry]
    images = read_dataset(data / "SSDD").split("test")[:8]
    a = Detector.from_artifact(out, "onnxruntime", providers=["CPUExecutionProvider"])
    b = Detector.from_artifact(out, "tensorrt", precision="fp32")
    pairs = []
    for rec in images:
        ra, rb = a.detect(rec.path), b.detect(rec.path)
        pairs.append(((ra.boxes, ra.scores, ra.labels), (rb.boxes, rb.scores, rb.labels)))
    a.close()
    b.close()
    assert sum(len(p[0][1]) for p in pairs) >= 10  # enough ships to say something
    assert set_agreement(pairs) >= 0.98
    assert max(matched_max_abs(x, y) for x, y in pairs) < 1.0


# ------------------------------------------------------------------ the builder against a fake TensorRT


class FakeBuilderTRT:
    """Enough of TensorRT 10's builder API to run build.py's calls and record them."""

    def __init__(self, version="10.3.0", parse_ok=True, build_ok=True, cache_device="orin", dla=2):
        self.__version__ = version
        self.calls: list = []
        fake = self

        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = "ie", "e", "w", "i", "v"

        class ILogger:
            def __init__(self):
                pass

        ILogger.Severity = Severity
        self.ILogger = ILogger
        self.NetworkDefinitionCreationFlag = _Enum(STRONGLY_TYPED=3)
        self.BuilderFlag = _Enum(FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK")
        self.MemoryPoolType = _Enum(WORKSPACE="WORKSPACE")
        self.DeviceType = _Enum(DLA="DLA", GPU="GPU")

        class Cache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return b"timing cache of orin"

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("pool", pool, size))

            def set_flag(self, flag):
                fake.calls.append(("flag", flag))

            def create_timing_cache(self, data):
                if data == b"corrupt":
                    raise RuntimeError("invalid timing cache")
                return Cache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                ok = cache.data in (b"", f"timing cache of {cache_device}".encode())
                fake.calls.append(("timing_cache", cache.data, ok))
                self.cache = cache
                return ok

            def get_timing_cache(self):
                return self.cache

            def add_optimization_profile(self, profile):
                fake.calls.append(("profile", profile.shapes))

        class Profile:
            def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's keyword names
                self.shapes = (name, tuple(min), tuple(opt), tuple(max))

        class Error:
            def node(self):
                return 3

            def node_name(self):
                return "Conv_3"

            def node_operator(self):
                return "Conv"

            def desc(self):
                return "unsupported auto_pad"

            def code(self):
                return "UNSUPPORTED_NODE"

        class Network:
            def __init__(self, flags):
                fake.calls.append(("network_flags", flags))

            def get_input(self, i):
                return _Enum(name="images", shape=(-1, 1, 512, 512))

        class OnnxParser:
            def __init__(self, network, logger):
                self.num_errors = 0 if parse_ok else 1

            def parse_from_file(self, path):
                fake.calls.append(("parse", Path(path).name))
                return parse_ok

            def get_error(self, i):
                return Error()

        class Builder:
            num_DLA_cores = dla
            platform_has_fast_fp16 = True

            def __init__(self, logger):
                self.logger = logger

            def create_network(self, flags):
                return Network(flags)

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                if not build_ok:
                    self.logger.log(Severity.ERROR, "out of device memory for tactic 7")
                    return None
                return b"serialized plan"

        class Runtime:
            def __init__(self, logger):
                self.DLA_core = None

            def deserialize_cuda_engine(self, data):
                return object()

        self.Builder, self.OnnxParser, self.Runtime = Builder, OnnxParser, Runtime


@pytest.fixture
def fake_builder(monkeypatch):
    from sarbridge.runtime.trt import api

    def install(**kwargs):
        trt = FakeBuilderTRT(**kwargs)
        monkeypatch.setattr(trt_cuda, "open_cuda", lambda kind="cuda-python": FakeCuda())
        monkeypatch.setattr(api, "import_tensorrt", lambda: trt)
        return trt

    return install


def test_build_fp16_on_tensorrt_10(artifact, fake_builder, tmp_path, capsys):
    from sarbridge.runtime.trt.build import build_engine

    trt = fake_builder()
    cache = tmp_path / "orin.timing"
    entry = build_engine(
        artifact, "fp16", max_batch=4, opt_batch=2, workspace_mib=512, timing_cache=cache
    )
    assert ("network_flags", 0) in trt.calls and ("flag", "FP16") in trt.calls
    assert ("pool", "WORKSPACE", 512 << 20) in trt.calls
    assert (
        "profile",
        ("images", (1, 1, 512, 512), (2, 1, 512, 512), (4, 1, 512, 512)),
    ) in trt.calls
    m = load_manifest(artifact)
    assert m["engines"] == [entry] and entry["file"] == "model.10.3.0.orin-sm87.fp16.plan"
    assert entry["onnx_sha256"] == m["model"]["sha256"] and entry["precision"] == "fp16"
    assert (artifact / entry["file"]).read_bytes() == b"serialized plan"
    assert cache.read_bytes() == b"timing cache of orin"
    with pytest.raises(SarbridgeError, match="already there; pass --force"):
        build_engine(artifact, "fp16", timing_cache=cache)
    assert build_engine(artifact, "fp16", force=True)["file"] == entry["file"]
    assert len(load_manifest(artifact)["engines"]) == 1


def test_build_int8_is_strongly_typed_and_a_foreign_timing_cache_is_left_alone(
    artifact, fake_builder, tmp_path, capsys
):
    from sarbridge.runtime.trt.build import build_engine

    m = load_manifest(artifact)
    m["precision"] = "int8"
    m["quantization"] = {
        "scheme": "tensorrt-int8-symmetric", "target": "tensorrt",
        "activations": {"dtype": "int8", "symmetric": True},
        "weights": {"dtype": "int8", "symmetric": True, "per_channel_axis": 0},
        "calibration": {"split": "train", "images": 8, "list_sha256": "0" * 64, "method": "minmax"},
    }  # fmt: skip
    save_manifest(m, artifact)
    trt = fake_builder()
    cache = tmp_path / "agx.timing"
    cache.write_bytes(b"timing cache of agx")
    entry = build_engine(artifact, timing_cache=cache)
    assert entry["precision"] == "int8" and "STRONGLY_TYPED" in entry["build_flags"]
    assert ("network_flags", 1 << 3) in trt.calls
    assert not [c for c in trt.calls if c[0] == "flag"]
    assert "made on another device" in capsys.readouterr().out
    assert cache.read_bytes() == b"timing cache of agx"
    cache.write_bytes(b"corrupt")
    build_engine(artifact, timing_cache=cache, force=True)
    assert "cannot be read" in capsys.readouterr().out and cache.read_bytes() == b"corrupt"


def test_build_reports_parser_errors_node_by_node(artifact, fake_builder):
    from sarbridge.runtime.trt.build import build_engine

    fake_builder(parse_ok=False)
    before = (artifact / "manifest.json").read_bytes()
    with pytest.raises(SarbridgeError, match=r"node 3 'Conv_3' \(Conv\): unsupported auto_pad"):
        build_engine(artifact, "fp16")
    assert (artifact / "manifest.json").read_bytes() == before
    assert not list(artifact.glob("*.plan"))


def test_a_failed_build_says_why_and_removes_its_copy(fake_builder, tmp_path):
    from sarbridge.runtime.trt.build import build_engine

    fake_builder(build_ok=False)
    zoo = zoo_artifact("zoo:ssdd_edge_det")
    with pytest.raises(SarbridgeError, match="could not build the engine:\n  out of device memory"):
        build_engine(zoo, "fp16", out=tmp_path / "copy", zoo_root=zoo.parent)
    assert not (tmp_path / "copy").exists()


def test_build_for_a_dla_the_device_lacks(artifact, fake_builder):
    from sarbridge.runtime.trt.build import build_engine

    fake_builder(dla=0)
    with pytest.raises(SarbridgeError, match="DLA core 0 is not on this device"):
        build_engine(artifact, "fp16", dla_core=0)


def test_make_logger_keeps_errors_and_prints_warnings(capsys):
    from sarbridge.runtime.trt.api import logged_errors, make_logger

    trt = FakeBuilderTRT()
    logger = make_logger(trt)
    sev = trt.ILogger.Severity
    logger.log(sev.ERROR, "engine plan is from TensorRT 10.3")
    logger.log(sev.WARNING, "using an engine plan across device models")
    logger.log(sev.INFO, "quiet")
    err = capsys.readouterr().err
    assert "10.3" in err and "across device models" in err and "quiet" not in err
    assert logged_errors(logger) == "\n  engine plan is from TensorRT 10.3"


def test_cuda_python_of_the_jetpack_6_layout(monkeypatch):
    """cuda-python before 12.6.1 has ``cuda.cudart`` and no ``cuda.bindings``."""
    import types

    class Err:
        def __init__(self, value, name="cudaSuccess"):
            self.value, self.name = value, name

    cudart = types.SimpleNamespace(
        cudaGetDeviceCount=lambda: (Err(0), 1),
        cudaGetDeviceProperties=lambda i: (
            Err(0), types.SimpleNamespace(name=b"Orin\0\0", major=8, minor=7, totalGlobalMem=7 << 30)
        ),
        cudaSetDevice=lambda i: (Err(0),),
        cudaMalloc=lambda n: (Err(2, "cudaErrorMemoryAllocation"), None),
    )  # fmt: skip
    package = types.ModuleType("cuda")
    package.cudart, package.__version__ = cudart, "12.2.0"
    monkeypatch.setitem(sys.modules, "cuda", package)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    cuda = trt_cuda.CudaPython()
    assert cuda.version == "12.2.0"
    assert trt_cuda.open_device(cuda) == DeviceInfo(0, "Orin", "8.7", 7 << 30)
    with pytest.raises(CudaError, match=r"cudaMalloc\(64\) failed: cudaErrorMemoryAllocation"):
        cuda.malloc(64)


def test_export_engine_passes_its_arguments(monkeypatch, artifact, tmp_path, capsys):
    from sarbridge.cli import main
    from sarbridge.runtime.trt import build

    seen = {}

    def fake_build(source, **kwargs):
        seen.update(kwargs, source=source)
        return {"precision": "fp16", "dla_core": kwargs["dla_core"]}

    monkeypatch.setattr(build, "build_engine", fake_build)
    args = ["export", "engine", "--from", str(artifact), "--precision", "fp16", "--dla", "1",
            "--max-batch", "4", "--opt-batch", "2", "--workspace", "512", "--timing-cache",
            str(tmp_path / "t.cache"), "--cuda", "pycuda", "--device", "1", "--force"]  # fmt: skip
    assert main(args) == 0
    assert seen == {
        "source": artifact, "precision": "fp16", "dla_core": 1, "max_batch": 4, "opt_batch": 2,
        "workspace_mib": 512, "timing_cache": tmp_path / "t.cache", "force": True,
        "cuda": "pycuda", "device_index": 1, "verbose": False, "out": None,
        "zoo_root": seen["zoo_root"],
    }  # fmt: skip
    assert "--backend tensorrt --engine-precision fp16 --dla 1" in capsys.readouterr().out


def test_bench_settings_carry_the_engine_choice(tmp_path):
    from sarbridge.benchmarks.bench import BenchSettings

    settings = BenchSettings(data=None, engine={"precision": "int8", "dla_core": 0})
    assert dict(settings.engine) == {"precision": "int8", "dla_core": 0}
    proc = _cli("bench", "--models", "zoo:ssdd_edge_det", "--out", str(tmp_path / "b"),
                "--engine-precision", "int8")  # fmt: skip
    assert proc.returncode == 2 and "for the tensorrt backend" in proc.stderr


@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "TensorrtExecutionProvider"])
def test_onnxruntime_gpu_providers_where_present(provider, tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    if provider not in ort.get_available_providers():
        pytest.skip(f"{provider} is not in this onnxruntime ({ort.get_available_providers()})")
    from sarbridge.runtime.backends import open_backend

    monkeypatch.setenv("SARBRIDGE_CACHE", str(tmp_path))
    art = zoo_artifact("zoo:ssdd_edge_det")
    m = load_manifest(art)
    gpu = open_backend(
        "onnxruntime", art / "model.onnx", m, providers=[provider, "CPUExecutionProvider"]
    )
    cpu = open_backend("onnxruntime", art / "model.onnx", m, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 1, 512, 512), dtype=np.float32)
    assert gpu.providers[0] == provider
    np.testing.assert_allclose(gpu.run(x)[0], cpu.run(x)[0], atol=1e-2)
