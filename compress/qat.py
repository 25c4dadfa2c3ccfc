"""``sarbridge compress --method qat``: quantization-aware fine-tuning with NNCF, then the
per-target INT8 export.

1. The parent detector's BatchNorm is folded into its convolutions in place (NNCF rejects the
   GraphModule ``torch.fx`` fusion returns), so training sees the deployed arithmetic.
2. NNCF inserts fake quantizers with the target's scheme (``onnxruntime``: the MIXED preset,
   symmetric int8 weights and asymmetric uint8 activations; ``openvino``: its PERFORMANCE preset;
   ``tensorrt``: PERFORMANCE with signed activations), initialised on train inputs made by the
   runtime's pipeline; the in-graph box decode stays in float.
3. The detector trainer fine-tunes it (its own run folder under ``runs/``: checkpoints every
   epoch, ``--resume``, EMA, NaN guard, run.json), float32 (fake quantization under bfloat16
   autocast would round twice), on the deployed single-image view (no mosaic).
4. ``nncf.strip`` turns the quantizers into torch quantize/dequantize ops, the legacy ONNX
   exporter writes them as QuantizeLinear/DequantizeLinear, onnxslim folds the constants.
   NNCF 3.4 leaves the quantizers of a few unified-scale tensors (inputs of one Concat sharing a
   range) as OpenVINO ``FakeQuantize`` nodes, which ONNX Runtime cannot load; each one whose
   range maps exactly onto 8-bit levels with an integer zero point is rewritten here as the
   equivalent QuantizeLinear/DequantizeLinear pair, anything else is refused.
5. The same scheme check, accuracy guard (measured; a QAT model that misses the budget stops
   the command) and once-only test scoring as post-training INT8 (:mod:`.api`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from .errors import CompressError
from .settings import STEP_SCHEDULE

# the decode ops kept in float (torch function names NNCF's torch backend reports)
_DECODE_TYPES = ["exp", "sum", "amax", "sub", "div", "mul", "log", "clamp"]


def fold_batchnorm_inplace(model):
    """Fold every ``Conv2d`` followed by a ``BatchNorm2d`` inside an ``nn.Sequential`` into the
    convolution (the BatchNorm becomes ``nn.Identity``); eval-mode statistics.

    Raises:
        CompressError: BatchNorm layers remain that are not in such a pair.
    """
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(conv, bn)
                    module[i + 1] = nn.Identity()
    left = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise CompressError(
            f"QAT needs BatchNorm folded into convolutions; {len(left)} BatchNorm layer(s) do not "
            f"follow a convolution in a Sequential, e.g. {left[0]}"
        )
    return model


def _nncf_parameters(target: str):
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
        QuantizationParameters,
    )

    if target == "onnxruntime":
        return nncf.QuantizationPreset.MIXED, AdvancedQuantizationParameters(
            overflow_fix=OverflowFix.DISABLE
        )
    signed = QuantizationParameters(signedness_to_force=True) if target == "tensorrt" else None
    return nncf.QuantizationPreset.PERFORMANCE, AdvancedQuantizationParameters(
        overflow_fix=OverflowFix.DISABLE, activations_quantization_params=signed
    )


def quantized_model(loaded, target: str, inputs: np.ndarray):
    """The parent's network, BatchNorm folded, with NNCF's fake quantizers for ``target``
    initialised on ``inputs``."""
    import nncf
    import torch

    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")  # first use compiles (slow CPUs)
    nncf.set_log_level(logging.WARNING)
    model = fold_batchnorm_inplace(loaded.model.cpu())
    preset, advanced = _nncf_parameters(target)
    tensors = [torch.from_numpy(x[None]) for x in inputs]
    return nncf.quantize(
        model,
        nncf.Dataset(tensors),
        preset=preset,
        target_device=nncf.TargetDevice.CPU,
        subset_size=len(tensors),
        ignored_scope=nncf.IgnoredScope(types=_DECODE_TYPES, validate=False),
        advanced_parameters=advanced,
    )


def _fake_quantize_to_qdq(model) -> int:
    """Rewrite exact 8-bit FakeQuantize nodes as QuantizeLinear/DequantizeLinear; the count."""
    import onnx
    from onnx import helper, numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)
    nodes, done, nudges = [], 0, []
    for node in model.graph.node:
        if node.op_type != "FakeQuantize":
            nodes.append(node)
            continue
        levels = next((a.i for a in node.attribute if a.name == "levels"), None)
        lo, hi, out_lo, out_hi = (consts.get(name) for name in node.input[1:5])
        if levels != 256 or any(v is None or v.size != 1 for v in (lo, hi, out_lo, out_hi)):
            raise CompressError(f"{node.name}: a FakeQuantize that is not per-tensor 8-bit")
        lo, hi = float(lo.reshape(())), float(hi.reshape(()))
        if not (
            np.isclose(lo, float(out_lo.reshape(()))) and np.isclose(hi, float(out_hi.reshape(())))
        ):
            raise CompressError(f"{node.name}: FakeQuantize with different input/output ranges")
        scale = (hi - lo) / 255.0
        if scale <= 0:
            raise CompressError(f"{node.name}: FakeQuantize with an empty range [{lo:g}, {hi:g}]")
        zero = -lo / scale
        # ONNX Q/DQ needs an integer zero point: the range is nudged to the nearest one (at
        # most half a level), as every Q/DQ export of an asymmetric range does
        nudges.append(abs(zero - round(zero)))
        zero = min(max(round(zero), 0), 255)
        s_name, z_name = f"{node.name}_scale", f"{node.name}_zero_point"
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(scale, np.float32), s_name),
                numpy_helper.from_array(np.array(zero, np.uint8), z_name),
            ]
        )
        q_out = f"{node.output[0]}_quantized"
        nodes.append(
            helper.make_node(
                "QuantizeLinear", [node.input[0], s_name, z_name], [q_out], name=f"{node.name}_q"
            )
        )
        nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [q_out, s_name, z_name],
                [node.output[0]],
                name=f"{node.name}_dq",
            )
        )
        done += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    kept = [o for o in model.opset_import if o.domain != "org.openvinotoolkit"]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.checker.check_model(model)
    if nudges:
        print(f"    {done} FakeQuantize node(s) rewritten as Q/DQ; zero points nudged by at most "
              f"{max(nudges):.3f} of a level")  # fmt: skip
    return done


def _fold_weight_quantizers(model) -> int:
    """Store each QuantizeLinear of a constant (a weight) as its integer result, read by the
    DequantizeLinear directly: the file holds int8 weights, not float ones quantized at load."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consts = {name: numpy_helper.to_array(t) for name, t in inits.items()}
    keep, folded = [], 0
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in consts:
            keep.append(node)
            continue
        w, scale = consts[node.input[0]], consts.get(node.input[1])
        zp = consts.get(node.input[2]) if len(node.input) > 2 else None
        if scale is None or zp is None:
            keep.append(node)
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[axis] = scale.size
        info = np.iinfo(zp.dtype)
        q = np.round(w / scale.reshape(shape)) + zp.astype(np.int64).reshape(shape)
        q = np.clip(q, info.min, info.max).astype(zp.dtype)
        name = f"{node.output[0]}_int"
        model.graph.initializer.append(numpy_helper.from_array(q, name))
        for other in model.graph.node:
            for k, inp in enumerate(other.input):
                if inp == node.output[0]:
                    other.input[k] = name
        folded += 1
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = {i for n in model.graph.node for i in n.input}
    stale = [t for t in model.graph.initializer if t.name not in used]
    for t in stale:
        model.graph.initializer.remove(t)
    return folded


def export_qdq(model, example, path: Path, box_bins_out: bool = False) -> Path:
    """The fine-tuned fake-quantized model -> a Q/DQ ONNX graph at ``path``; with
    ``box_bins_out`` a DFL head outputs its bin logits, as its FP32 parent's graph does
    (``dense_dfl``)."""
    import nncf
    import onnx
    import onnxslim
    import torch

    stripped = nncf.strip(model.eval(), do_copy=True, example_input=example)
    if box_bins_out:
        from sarbridge.export.onnx_export import ChannelsFirst

        stripped.emit_box_bins = True
        stripped = ChannelsFirst(stripped).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            stripped,
            (example,),
            str(path),
            opset_version=17,
            input_names=["images"],
            output_names=["raw"],
            dynamic_axes={"images": {0: "batch"}, "raw": {0: "batch"}},
            dynamo=False,
        )
    graph = onnx.load(str(path))
    converted = _fake_quantize_to_qdq(graph)
    slim = onnxslim.slim(graph)
    graph = slim if slim is not None else graph
    _fold_weight_quantizers(graph)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    print(
        f"    Q/DQ graph written ({converted} unified-scale FakeQuantize node(s) rewritten as Q/DQ)"
    )
    return path


def prepare_qat_run(
    out: Path,
    *,
    target: str,
    epochs: int,
    name: str | None,
    runs_dir: str | Path,
    resume: bool,
    overwrite: bool,
) -> Path:
    """Check a QAT request before any work; the fine-tuning run's folder (an earlier one is
    removed only with ``overwrite`` and without ``resume``)."""
    if epochs < 1:
        raise CompressError(f"--epochs must be at least 1, not {epochs}")
    if target == "tensorrt":
        raise CompressError(
            "--method qat --target tensorrt is not supported yet: NNCF 3.4 refuses signed "
            "(TensorRT) activation quantizers on this graph for every hardware config; use "
            "--method int8 --target tensorrt (post-training, within budget on the zoo detector)"
        )
    from .finetune import check_run_out

    run_dir = Path(runs_dir) / f"{name or out.name}_qat"
    check_run_out(run_dir, resume, overwrite)
    return run_dir


def qat_config(cfg, run_name: str, epochs: int, lr: float):
    """The QAT fine-tuning config: the parent's data, model and loss; ``epochs`` at ``lr``
    without warm-up, float32 steps in the contiguous layout, no mosaic, and a compress step's
    schedule (``STEP_SCHEDULE``) whatever the parent's run used."""
    return dataclasses.replace(
        cfg,
        name=run_name,
        init="random",  # the weights come with the model handed in
        optim=dataclasses.replace(
            cfg.optim, epochs=int(epochs), lr=float(lr), warmup_steps=0, amp="fp32",
            channels_last=False, **STEP_SCHEDULE,
        ),
        augment=dataclasses.replace(cfg.augment, close_mosaic=int(epochs)),
    )  # fmt: skip


def compress_qat(
    loaded,
    parent: dict,
    parent_dir: Path,
    work: Path,
    out: Path,
    run_dir: Path,
    *,
    target: str,
    calibration_images: int,
    guard_images: int,
    seed: int,
    max_ap_drop: float,
    threads: int | None,
    name: str | None,
    progress: bool,
    epochs: int,
    lr: float,
    resume: bool,
) -> dict:
    """QAT of ``loaded`` (its FP32 export ``parent`` in ``parent_dir``) in ``run_dir``, then the
    INT8 artifact at ``out``; see the module docstring. Returns the artifact's manifest."""
    import torch

    from sarbridge.runtime.fileio import sha256_file
    from sarbridge.train.checkpoint import deployed_weights, load_checkpoint, parent_ref
    from sarbridge.train.recipes.detect import train_detector

    from .api import _finish_int8, _sets
    from .calibration import collect_inputs

    cfg = loaded.config
    run_name = run_dir.name
    ds, train, val, test = _sets(loaded)
    print(
        f"[2] NNCF fake quantizers for {target}, initialised on {calibration_images} train inputs"
    )
    cal = collect_inputs(parent, train, calibration_images, seed, "train", ds.root,
                         progress=progress)  # fmt: skip
    qmodel = quantized_model(loaded, target, cal.inputs)
    qat_cfg = qat_config(cfg, run_name, epochs, lr)
    print(f"[3] quantization-aware fine-tuning: {epochs} epoch(s) at lr {lr:g} -> {run_dir}")
    report = train_detector(
        qat_cfg, run_dir.parent, resume=resume, progress=progress, model=qmodel,
        lineage=list(loaded.lineage),
    )  # fmt: skip
    best = load_checkpoint(run_dir / "best.pt")
    qmodel.load_state_dict(deployed_weights(best))
    bins_out = parent["postprocessing"].get("decode") == "dense_dfl"
    path = export_qdq(
        qmodel, torch.from_numpy(cal.inputs[:1]), work / "model_int8.onnx", bins_out
    )
    trained = {k: float(v) for k, v in (report.get("test") or {}).items()
               if isinstance(v, (int, float))}  # fmt: skip
    qat_step = {
        "kind": "qat",
        "name": run_name,
        "parent": parent_ref(loaded.name, loaded.path),
        "config_sha256": None,
        "metrics": {f"torch_test_{k}": v for k, v in trained.items()},
        "run": str(run_dir),
        "epochs": int(epochs),
        "lr": float(lr),
        "tool": "nncf (torch, fake quantization) + sarbridge detector trainer",
    }
    return _finish_int8(
        parent, parent_dir, path, out, ds, train, val, test, cal, target=target,
        guard_images=guard_images, seed=seed, max_ap_drop=max_ap_drop, threads=threads,
        name=name, progress=progress, kind="qat", lineage_extra=[qat_step],
        method_note="NNCF quantization-aware fine-tuning",
        step_parent={"name": run_name, "sha256": sha256_file(run_dir / "best.pt")},
    )  # fmt: skip


__all__ = [
    "compress_qat",
    "export_qdq",
    "fold_batchnorm_inplace",
    "prepare_qat_run",
    "quantized_model",
]
