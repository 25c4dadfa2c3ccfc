"""Post-training INT8 quantization of an exported (BatchNorm-folded) ONNX detector, per target.

Who places the Q/DQ nodes (the scheme table in :mod:`.targets` names it per target):

* ``onnxruntime`` and ``tensorrt``: ONNX Runtime's ``quantize_static`` (QDQ format). It gives
  exact control of the dtypes, symmetry, per-channel axis, op types and output quantization
  each scheme asks for, and its calibration cache lets the accuracy guard requantize with other
  layers kept in float without calibrating again.
* ``openvino``: NNCF's ONNX backend with its CPU preset (OpenVINO's own choice of placement
  and signedness); the guard passes the float layers as an ``IgnoredScope``.

The accuracy guard (:func:`guarded_quantize`) is written here because neither library searches
on a detection metric through our deployed pipeline: ONNX Runtime has no search, and NNCF's
accuracy control ranks NNCF quantizer groups only (not the ``tensorrt`` and ``onnxruntime``
schemes). The ranking is ONNX Runtime's single-layer quantization error; the search keeps the
most sensitive convolutions in float, 1, 2, 4, ... of them, until the metric drop is within
budget.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CompressError
from .targets import QuantScheme


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantizer logs a warning per call about pre-processing (done here)."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def prepare(fp32_path: Path, out_path: Path) -> Path:
    """ONNX Runtime's quantization pre-processing (graph optimisation, shape inference).
    Symbolic shape inference fails on the detectors' decode-free dense graph and is skipped."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _quiet():
        quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    return out_path


def _load(model):
    """An onnx.ModelProto, loading it when given a path."""
    import onnx

    return onnx.load(str(model)) if isinstance(model, (str, Path)) else model


def conv_names(model) -> list[str]:
    """The convolutions of ``model`` (an onnx.ModelProto or its path)."""
    return [n.name for n in _load(model).graph.node if n.op_type == "Conv"]


def single_channel_convs(model) -> list[str]:
    """Convolutions (not grouped) whose weight reads one input channel."""
    model = _load(model)
    weights = {t.name: t.dims for t in model.graph.initializer}
    names = []
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        dims = (
            weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        )
        if dims is not None and len(dims) == 4 and dims[1] == 1 and group == 1:
            names.append(node.name)
    return names


_ACTIVATIONS = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSwish")


def conv_activations(model) -> dict[str, list[str]]:
    """Each convolution's activation node (its only consumer), which a quantizer would
    otherwise quantize around: a layer kept in float keeps its activation in float too."""
    model = _load(model)
    users: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    follow = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            after = users.get(node.output[0], [])
            follow[node.name] = [
                a.name for a in after if len(after) == 1 and a.op_type in _ACTIVATIONS
            ]
    return follow


class _Reader:
    """An ONNX Runtime CalibrationDataReader over network inputs, one at a time."""

    def __init__(self, inputs: np.ndarray, input_name: str):
        self.inputs, self.input_name, self.k = inputs, input_name, 0

    def get_next(self):
        if self.k >= len(self.inputs):
            return None
        self.k += 1
        return {self.input_name: self.inputs[self.k - 1 : self.k]}


class Quantizer:
    """Quantizes one prepared FP32 graph for one scheme; ``quantize(out, exclude)`` may be
    called many times (calibration runs once)."""

    def __init__(
        self,
        prepared: Path,
        scheme: QuantScheme,
        inputs: np.ndarray,
        input_name: str,
        workdir: Path | None = None,
    ):
        self.prepared, self.scheme = Path(prepared), scheme
        self.inputs, self.input_name = inputs, input_name
        # the caller's work folder (removed with it), else a temporary one under it
        self.workdir = Path(tempfile.mkdtemp(prefix="ptq-", dir=workdir or self.prepared.parent))
        self.cache = self.workdir / "calibration_ranges.json"
        graph = _load(self.prepared)  # read once for the facts below
        self.convs = conv_names(graph)
        self.activations = conv_activations(graph)
        # layers the scheme keeps in float for speed, whatever the guard finds
        self.speed_float = single_channel_convs(graph) if scheme.float_single_channel_convs else []
        self.method = (
            "nncf MinMax statistics + fast bias correction"
            if scheme.target == "openvino"
            else "onnxruntime MinMax"
        )

    def quantize(self, out: Path, exclude: Sequence[str] = (), only: Sequence[str] = ()) -> Path:
        """Write the INT8 graph to ``out`` with the convolutions in ``exclude`` kept in float
        (``only``: quantize just these nodes, for the sensitivity ranking)."""
        exclude = [*self.speed_float, *[n for n in exclude if n not in self.speed_float]]
        exclude = [a for name in exclude for a in (name, *self.activations.get(name, ()))]
        try:
            if self.scheme.tool.startswith("nncf"):
                return self._nncf(out, exclude)
            return self._onnxruntime(out, exclude, only)
        except ImportError as exc:
            raise CompressError(
                f"INT8 for {self.scheme.target} needs the {exc.name!r} package: "
                "pip install 'sarbridge[compress]'"
            ) from exc
        except (RuntimeError, ValueError, TypeError, KeyError, OSError) as exc:
            raise CompressError(
                f"{self.prepared}: {self.scheme.tool} failed to quantize the model "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def _onnxruntime(self, out: Path, exclude, only) -> Path:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        s = self.scheme
        # MinMax calibration keeps only per-tensor ReduceMin/ReduceMax outputs per input, so
        # memory stays small. (CalibMaxIntermediateOutputs is not used: in onnxruntime 1.32 it
        # drops the collected ranges instead of merging them.)
        extra = {
            "ActivationSymmetric": s.activations_symmetric,
            "WeightSymmetric": s.weights_symmetric,
            "QuantizeBias": s.quantize_bias,
        }
        if not s.quantize_conv_outputs:
            extra["OpTypesToExcludeOutputQuantization"] = ["Conv"]
        with _quiet():
            quantize_static(
                str(self.prepared),
                str(out),
                _Reader(self.inputs, self.input_name),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(s.op_types) if s.op_types else None,
                per_channel=s.per_channel_axis is not None,
                activation_type=QuantType.QUInt8 if s.activations == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=list(only) or None,
                nodes_to_exclude=list(exclude) or None,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options=extra,
                calibration_cache_path=self.cache,
            )
        return out

    def _nncf(self, out: Path, exclude) -> Path:
        import nncf
        import onnx

        nncf.set_log_level(logging.WARNING)
        model = onnx.load(str(self.prepared))
        dataset = nncf.Dataset(list(self.inputs), lambda x: {self.input_name: x[None]})
        scope = nncf.IgnoredScope(
            names=list(exclude), types=list(self.scheme.float_op_types), validate=False
        )
        quantized = nncf.quantize(
            model,
            dataset,
            preset=nncf.QuantizationPreset.PERFORMANCE,
            target_device=nncf.TargetDevice.CPU,
            subset_size=len(self.inputs),
            ignored_scope=scope,
        )
        onnx.save(quantized, str(out))
        return out


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run(session, name: str, x: np.ndarray) -> np.ndarray:
    """The first output for ``x``, in chunks of the model's batch when it is fixed (an
    Ultralytics export takes batch 1)."""
    batch = session.get_inputs()[0].shape[0]
    step = batch if isinstance(batch, int) and batch > 0 else len(x)
    return np.concatenate(
        [session.run(None, {name: x[k : k + step]})[0] for k in range(0, len(x), step)]
    )


def layer_sensitivity(
    quantizer: Quantizer,
    probe: np.ndarray,
    threads: int | None = None,
    progress: bool = True,
) -> list[tuple[str, float]]:
    """Each convolution quantized alone (its input, weights and output), the relative squared
    error of the whole network's output against FP32 on ``probe`` inputs; worst first.

    For the ``openvino`` scheme (NNCF places its own nodes) the ranking uses ONNX Runtime's
    quantizer with the ``onnxruntime`` scheme: which layers cannot stand 8 bits is a property
    of the network and its data, not of the tool."""
    from tqdm import tqdm

    from .targets import SCHEMES

    ranker = quantizer
    if quantizer.scheme.tool.startswith("nncf"):
        ranker = Quantizer(
            quantizer.prepared, SCHEMES["onnxruntime"], quantizer.inputs, quantizer.input_name
        )
    name = quantizer.input_name
    reference = _run(_session(ranker.prepared, threads), name, probe)
    power = float(np.mean(reference.astype(np.float64) ** 2)) or 1.0
    scores = []
    path = ranker.workdir / "single_layer.onnx"
    for conv in tqdm(ranker.convs, desc="layer sensitivity", disable=not progress):
        ranker.quantize(path, only=[conv])
        got = _run(_session(path, threads), name, probe)
        scores.append((conv, float(np.mean((got - reference).astype(np.float64) ** 2)) / power))
    return sorted(scores, key=lambda s: -s[1])


@dataclass
class GuardResult:
    """What the guard tried (float layers -> metric) and what it kept."""

    model: Path
    float_layers: list[str]
    baseline: float
    metric: float
    tried: list[dict] = field(default_factory=list)
    ranking: list[tuple[str, float]] | None = None


def guarded_quantize(
    quantizer: Quantizer,
    evaluate: Callable[[Path], float],
    baseline: float,
    max_drop: float,
    out: Path,
    probe: np.ndarray,
    threads: int | None = None,
    max_float_fraction: float = 0.5,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> GuardResult:
    """Quantize everything; if ``baseline - evaluate(model) > max_drop``, rank the convolutions
    by :func:`layer_sensitivity` and keep the worst 1, 2, 4, ... in float (at most
    ``max_float_fraction`` of them) until the drop is within budget.

    Raises:
        CompressError: the budget is not met with that many layers in float (the message lists
            every attempt).
    """
    tried = []

    def attempt(excluded: list[str]) -> tuple[Path, float]:
        path = out.with_name(f"{out.stem}.float{len(excluded)}{out.suffix}")
        quantizer.quantize(path, exclude=excluded)
        value = evaluate(path)
        tried.append({"float_layers": len(excluded), "metric": value, "drop": baseline - value})
        log(
            f"  INT8 with {len(excluded):2d} layer(s) in float: {value:.4f} "
            f"(drop {baseline - value:+.4f}, budget {max_drop})"
        )
        return path, value

    excluded: list[str] = []
    try:
        path, value = attempt([])
        ranking = None
        if baseline - value > max_drop:
            ranking = layer_sensitivity(quantizer, probe, threads, progress)
            limit = max(1, math.ceil(len(ranking) * max_float_fraction))
            k = 1
            while baseline - value > max_drop:
                if k > limit and len(excluded) < limit:
                    k = limit  # the last attempt: exactly the limit
                if k > limit:
                    steps = ", ".join(
                        f"{t['float_layers']} float: drop {t['drop']:.4f}" for t in tried
                    )
                    raise CompressError(
                        f"INT8 misses the accuracy budget (drop <= {max_drop}) with up to {limit} of "
                        f"{len(ranking)} convolutions kept in float ({steps}); nothing was written. "
                        "Try --method qat, more calibration images, or a larger --max-ap-drop"
                    )
                excluded = [name for name, _ in ranking[:k]]
                path, value = attempt(excluded)
                k *= 2
        os.replace(path, out)
    finally:
        for stale in out.parent.glob(f"{out.stem}.float*{out.suffix}"):
            stale.unlink()
    return GuardResult(out, excluded, baseline, value, tried, ranking)
