"""One INT8 quantization scheme per deployment target: the single source of truth.

Every INT8 artifact is made for one target and labelled with it in its manifest
(``quantization.target``); the scheme decides the Q/DQ dtypes, symmetry and
per-channel axes, which tool places the Q/DQ nodes, and which op types are quantized.
:func:`scheme_problems` checks a quantized ONNX graph against its target's scheme and
:func:`tensorrt_problems` against TensorRT's explicit-quantization rules (the TensorRT
engine builder runs it before building).

Only ``onnx`` is imported here: the checks run on a board without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import CompressError


@dataclass(frozen=True)
class QuantScheme:
    """How one target wants its INT8 graph."""

    target: str
    activations: str  # "uint8" | "int8"
    activations_symmetric: bool
    weights_symmetric: bool
    per_channel_axis: int | None  # output-channel axis of Conv weights; None: per tensor
    tool: str  # which library places the Q/DQ nodes and calibrates
    op_types: tuple[str, ...] | None  # op types quantized (None: the tool's default set)
    quantize_conv_outputs: bool  # False: Q/DQ only in front of convolutions
    quantize_bias: bool  # int32 bias through a DequantizeLinear
    why: str
    float_op_types: tuple[str, ...] = ()  # op types always left in float (the tool's scope)
    # convolutions reading a single input channel (the stem on a 1-band SAR image) stay float
    float_single_channel_convs: bool = False

    def manifest_block(self) -> dict:
        """The scheme part of the manifest's ``quantization`` object."""
        return {
            "scheme": f"{self.target}-{self.activations}-{'sym' if self.activations_symmetric else 'asym'}"
            f"-int8-{'per-channel' if self.per_channel_axis is not None else 'per-tensor'}",
            "target": self.target,
            "activations": {"dtype": self.activations, "symmetric": self.activations_symmetric},
            "weights": {
                "dtype": "int8",
                "symmetric": self.weights_symmetric,
                "per_channel_axis": self.per_channel_axis,
            },
        }

    def to_dict(self) -> dict:
        return asdict(self)


SCHEMES: dict[str, QuantScheme] = {
    "onnxruntime": QuantScheme(
        target="onnxruntime",
        activations="uint8",
        activations_symmetric=False,
        weights_symmetric=True,
        per_channel_axis=0,
        tool="onnxruntime.quantization (quantize_static, QDQ)",
        op_types=None,
        quantize_conv_outputs=True,
        quantize_bias=True,
        why="x86 VNNI's fast path is uint8 x int8; int8 x int8 runs about 10x slower in ONNX "
        "Runtime here (facts.md). Everything ONNX Runtime can run quantized is quantized, so "
        "consecutive layers stay in INT8 without a float round trip, except a convolution "
        "reading one input channel (the stem on the single SAR band): as QLinearConv it took "
        "4.1 ms of the zoo detector's 22 ms (one thread), against 0.7 ms in float.",
        float_single_channel_convs=True,
    ),
    "openvino": QuantScheme(
        target="openvino",
        activations="uint8",  # NNCF's CPU preset: unsigned after ReLU, signed where negative
        activations_symmetric=True,
        weights_symmetric=True,
        per_channel_axis=0,
        tool="nncf (ONNX backend, QuantizationPreset.PERFORMANCE, TargetDevice.CPU)",
        op_types=None,
        quantize_conv_outputs=True,
        quantize_bias=False,
        why="NNCF's own placement and preset for OpenVINO's CPU plugin (symmetric, per-channel "
        "weights, signedness per tensor); run with the openvino backend. A graph that still "
        "holds a box decode (softmax over distance bins, exported before dense_dfl) keeps it "
        "in float: NNCF quantizes its Exp/Mul/Div inputs by default, which cost the zoo "
        "detector 3.3 points of test AP50:95 (0.504 against 0.537 with them in float).",
        float_op_types=("Exp", "ReduceSum", "ReduceMax", "Sub", "Div", "Mul", "Log", "Clip"),
    ),
    "tensorrt": QuantScheme(
        target="tensorrt",
        activations="int8",
        activations_symmetric=True,
        weights_symmetric=True,
        per_channel_axis=0,
        tool="onnxruntime.quantization (quantize_static, QDQ, symmetric)",
        op_types=("Conv",),
        quantize_conv_outputs=False,
        quantize_bias=False,
        why="TensorRT's explicit quantization: int8 with zero point 0, activations per tensor, "
        "weights per output channel (axis 0); Q/DQ in front of each convolution's input and "
        "weight only, so TensorRT fuses conv + bias + ReLU and propagates the scales itself; "
        "bias stays float (TensorRT quantizes it).",
    ),
}


def scheme_of(target: str) -> QuantScheme:
    """The scheme of ``target``.

    Raises:
        CompressError: unknown target, listing the choices.
    """
    try:
        return SCHEMES[target]
    except KeyError:
        raise CompressError(
            f"unknown INT8 target {target!r}; choose one of: {', '.join(SCHEMES)}"
        ) from None


# ---------------------------------------------------------------- graph checks


def _graph_index(model):
    """(initializers by name, producer node by output name, consumers by input name)."""
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer, consumers = {}, {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    inits[node.output[0]] = numpy_helper.to_array(attr.t)
        for out in node.output:
            producer[out] = node
        for inp in node.input:
            consumers.setdefault(inp, []).append(node)
    return inits, producer, consumers


def _axis(node) -> int:
    for attr in node.attribute:
        if attr.name == "axis":
            return int(attr.i)
    return 1  # the ONNX default


_WEIGHT_SLOTS = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0, "MatMul": 1}  # op -> out-channel axis


class _Graph:
    """Producers, consumers and constants of a graph, and what each Q/DQ node quantizes."""

    def __init__(self, model):
        self.inits, self.producer, self.consumers = _graph_index(model)

    def weight_user(self, tensor: str):
        """The op (Conv, ConvTranspose, Gemm, MatMul) taking ``tensor`` as its weight, or None."""
        for c in self.consumers.get(tensor, []):
            if c.op_type in _WEIGHT_SLOTS and len(c.input) > 1 and c.input[1] == tensor:
                return c
        return None

    def constant_source(self, node):
        """The constant a Q/DQ node quantizes (a Q on a constant, a DQ on an integer constant or
        on such a Q), else None."""
        src = node.input[0]
        if src in self.inits:
            return self.inits[src]
        q = self.producer.get(src)
        if node.op_type == "DequantizeLinear" and q is not None and q.op_type == "QuantizeLinear":
            return self.inits.get(q.input[0])
        return None

    def kind(self, node) -> tuple[str, object]:
        """("bias" | "weight" | "constant" | "activation", the op using the weight)."""
        const = self.constant_source(node)
        if const is None:
            return "activation", None
        if node.op_type == "DequantizeLinear" and const.dtype == np.int32:
            return "bias", None
        out = node.output[0]
        if node.op_type == "QuantizeLinear":  # its DequantizeLinear feeds the op
            dqs = self.consumers.get(out, [])
            out = dqs[0].output[0] if dqs else out
        user = self.weight_user(out)
        return ("weight", user) if user is not None else ("constant", None)

    def zero_point(self, node):
        return self.inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None

    def weight_scale_problem(self, node, user, weight) -> str | None:
        """None when the weight scale is per tensor or one per output channel on the right axis."""
        scale = self.inits.get(node.input[1])
        if scale is None:
            return f"{node.name}: the weight scale is not a constant"
        axis = _WEIGHT_SLOTS[user.op_type]
        channels = weight.shape[axis] if weight.ndim > axis else 1
        if scale.size == 1:
            return None
        if scale.ndim == 1 and scale.size == channels and _axis(node) == axis:
            return None
        return (
            f"{node.name}: weight scale of shape {list(scale.shape)} on axis {_axis(node)}; "
            f"one per output channel ({channels},) on axis {axis} or one per tensor is wanted"
        )


def _qdq_nodes(model):
    return [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


def quantized_convs(model) -> list[str]:
    """Names of the convolutions whose weights come through a DequantizeLinear."""
    g = _Graph(model)
    names = []
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1:
            dq = g.producer.get(node.input[1])
            if (
                dq is not None
                and dq.op_type == "DequantizeLinear"
                and g.constant_source(dq) is not None
            ):
                names.append(node.name)
    return names


def scheme_problems(model, scheme: QuantScheme) -> list[str]:
    """What in ``model`` (an onnx.ModelProto with Q/DQ nodes) differs from ``scheme``: weight
    dtype, symmetry and per-channel axis; activation dtype and symmetry (not for ``openvino``,
    whose preset picks the signedness per tensor). Empty: it follows."""
    g = _Graph(model)
    problems = []
    if not _qdq_nodes(model):
        return ["the graph has no QuantizeLinear/DequantizeLinear nodes"]
    for node in _qdq_nodes(model):
        kind, user = g.kind(node)
        zp = g.zero_point(node)
        dtype = "uint8" if zp is None else str(zp.dtype)  # ONNX: no zero point means uint8
        if kind == "bias":
            continue
        if kind == "weight":
            if node.op_type == "QuantizeLinear" and g.consumers.get(node.output[0]):
                continue  # checked at its DequantizeLinear
            weight = g.constant_source(node)
            if dtype != "int8":
                problems.append(f"{node.name}: weights are {dtype}, the scheme wants int8")
            if scheme.weights_symmetric and zp is not None and np.any(zp != 0):
                problems.append(f"{node.name}: weight zero point not 0 (the scheme is symmetric)")
            scale = g.inits.get(node.input[1])
            axis = _WEIGHT_SLOTS[user.op_type]
            channels = weight.shape[axis] if weight.ndim > axis else 1
            if scheme.per_channel_axis is not None and weight.ndim == 4 and channels > 1:
                if scale is None or scale.ndim != 1 or scale.size != channels:
                    problems.append(f"{node.name}: conv weights quantized per tensor")
                elif _axis(node) != axis:
                    problems.append(
                        f"{node.name}: per-channel axis {_axis(node)}, the output channels are "
                        f"on axis {axis}"
                    )
            continue
        if node.op_type != "QuantizeLinear" or scheme.target == "openvino":
            continue
        what = "a constant operand" if kind == "constant" else "activations"
        if dtype != scheme.activations:
            problems.append(
                f"{node.name}: {what} quantized as {dtype}, the {scheme.target} scheme wants "
                f"{scheme.activations}"
            )
        if scheme.activations_symmetric and zp is not None and dtype == "int8" and np.any(zp != 0):
            problems.append(f"{node.name}: activation zero point not 0 (the scheme is symmetric)")
    return problems


# TensorRT fuses these after a convolution; a Q/DQ pair between them breaks the fusion
_FUSED_AFTER_CONV = ("Relu", "LeakyRelu", "Sigmoid", "Clip", "HardSigmoid", "HardSwish")


def tensorrt_problems(model, float_layers=()) -> list[str]:
    """Where ``model`` breaks TensorRT's explicit-quantization (Q/DQ) rules; empty: it follows.
    Written for the TensorRT engine builder to check a model before building.

    The rules checked (TensorRT developer guide, "Explicit quantization"): every Q/DQ is int8
    with zero point 0; activation scales are per tensor; weights (a DequantizeLinear on an int8
    constant, or a Q/DQ pair on a float one) are quantized per tensor or per output channel
    (axis 0 for Conv, 1 for ConvTranspose); the bias is not quantized; each QuantizeLinear feeds
    only DequantizeLinear nodes; every convolution not in ``float_layers`` takes its input and
    its weight through a DequantizeLinear; no Q/DQ sits between a convolution and the
    activation TensorRT fuses into it.
    """
    g = _Graph(model)
    problems = []
    qdq = _qdq_nodes(model)
    if not qdq:
        return ["the graph has no QuantizeLinear/DequantizeLinear nodes: not an INT8 model"]
    for node in qdq:
        kind, user = g.kind(node)
        if kind == "bias":
            problems.append(
                f"{node.name}: an int32 quantized bias; TensorRT wants the bias in float"
            )
            continue
        zp = g.zero_point(node)
        if zp is None:
            problems.append(
                f"{node.name}: no zero point (ONNX reads that as uint8); TensorRT needs int8"
            )
        elif zp.dtype != np.int8:
            problems.append(f"{node.name}: zero point is {zp.dtype}; TensorRT needs int8")
        elif np.any(zp != 0):
            problems.append(f"{node.name}: zero point not 0; TensorRT quantization is symmetric")
        scale = g.inits.get(node.input[1])
        if scale is None:
            problems.append(f"{node.name}: scale is not a constant")
            continue
        if kind == "weight":
            problem = g.weight_scale_problem(node, user, g.constant_source(node))
            if problem:
                problems.append(problem)
        elif scale.size != 1:
            problems.append(
                f"{node.name}: activation scale of shape {list(scale.shape)}; TensorRT wants one "
                "scale per tensor"
            )
        if node.op_type == "QuantizeLinear":
            users = [c.op_type for c in g.consumers.get(node.output[0], [])]
            if any(u != "DequantizeLinear" for u in users):
                problems.append(
                    f"{node.name}: a QuantizeLinear feeding {users}, not only DequantizeLinear"
                )
            src = g.producer.get(node.input[0])
            if src is not None and src.op_type == "Conv":
                fused = [
                    c.op_type
                    for c in g.consumers.get(src.output[0], [])
                    if c.op_type in _FUSED_AFTER_CONV
                ]
                if fused:
                    problems.append(
                        f"{node.name}: quantizes {src.name}'s output ahead of its {fused[0]}; "
                        "TensorRT fuses conv + activation, quantize after the activation"
                    )
    skip = set(float_layers)
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name in skip:
            continue
        x, w = (g.producer.get(node.input[i]) for i in (0, 1))
        if x is None or x.op_type != "DequantizeLinear":
            problems.append(
                f"{node.name}: its input is not dequantized from INT8 (no Q/DQ in front)"
            )
        if w is None or w.op_type != "DequantizeLinear":
            problems.append(f"{node.name}: its weight is not quantized (no DequantizeLinear)")
    return problems
