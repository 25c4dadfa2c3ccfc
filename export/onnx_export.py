"""ONNX export of trained detectors and BNN SAR encoders, checked against PyTorch.

``export_run`` turns a run folder, a checkpoint or ``zoo:<name>`` into an artifact folder::

    artifacts/<name>/model.onnx      single file, opset 17, dynamic batch (dense detectors),
                                     BatchNorm folded, simplified with onnxslim; a DFL head
                                     outputs its bin logits (the runtime decodes candidates)
    artifacts/<name>/manifest.json   preprocessing, input/tile size, classes, thresholds,
                                     output meaning, lineage, metrics, sha256, tool versions

Parity is measured on real images of the run's own test split, through the
runtime's preprocessing and letterbox: the largest absolute difference between
PyTorch and ONNX Runtime outputs, and the agreement of the final detections as
sets (IoU matching at the operating threshold). Both go into the manifest, and
the export fails (writes nothing) when either is off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sarbridge.runtime.decode import letterbox, parse_flips
from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.fileio import sha256_file, tool_versions
from sarbridge.runtime.manifest import SCHEMA_VERSION, TILE_SIZE_RANGE, save_manifest
from sarbridge.runtime.metrics import (  # noqa: F401 - parity helpers, importable from here too
    match_detections,
    matched_max_abs,
    matched_pairs,
    set_agreement,
)
from sarbridge.runtime.preprocess import preprocess
from sarbridge.train.checkpoint import lineage_step, parent_ref
from sarbridge.train.evaluation import decode_raw

OPSET = 17
MODEL_FILE = "model.onnx"


class ExportError(SarbridgeError):
    """Export refused: the ONNX model does not match PyTorch, or the run cannot be exported."""


# ---------------------------------------------------------------- graph preparation


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of an eval-mode module with every Conv2d -> BatchNorm2d pair folded into the conv."""
    from torch.fx.experimental.optimization import fuse

    return fuse(module.eval(), inplace=False)


class ChannelsFirst(nn.Module):
    """``net(x)`` [B, N, K] as [B, K, N]: the layout of a ``dense_dfl`` graph's output."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).transpose(1, 2)


class DenseExport(nn.Module):
    """A dense detector with folded BatchNorm: images [B, C, S, S] -> raw [B, N, 4 + C], or
    with ``channels_first`` [B, K, N] (a DFL head's bin logits: the model's final transpose
    and this one cancel, so the graph writes its natural layout and carries no transpose)."""

    def __init__(self, model: nn.Module, channels_first: bool = False):
        super().__init__()
        folded = fold_batchnorm(model)
        self.net = ChannelsFirst(folded) if channels_first else folded

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class BoxesExport(nn.Module):
    """A torchvision detector, batch 1: images [1, C, S, S] -> boxes [K, 4], scores [K], labels [K].

    NMS runs in the graph with the manifest's IoU threshold; the score threshold in the graph is
    low (``graph_score_threshold``) so the runtime can still choose its operating point.
    """

    def __init__(self, model: nn.Module, iou: float, max_det: int, graph_score_threshold: float):
        super().__init__()
        model = model.eval()
        model.backbone = fold_batchnorm(model.backbone)
        model.detector.backbone.body = model.backbone
        heads = model.detector.roi_heads
        heads.score_thresh, heads.nms_thresh, heads.detections_per_img = (
            graph_score_threshold,
            iou,
            max_det,
        )
        self.model = model

    def forward(self, images: torch.Tensor):
        out = self.model.detector(list(images))[0]
        return out["boxes"], out["scores"], out["labels"] - 1


def complexity(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Parameters and multiply-accumulates (conv and linear layers) of one forward pass of ``x``."""
    macs = [0]

    def conv_hook(m, _inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        macs[0] += out.numel() * k

    def linear_hook(m, _inp, out):
        macs[0] += out.numel() * m.in_features

    hooks = [
        m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return {
        "parameters": float(sum(p.numel() for p in model.parameters())),
        "gmacs_per_image": macs[0] / len(x) / 1e9,
    }


# ---------------------------------------------------------------- ONNX


def _onnx_export(module, example, path: Path, inputs, outputs, dynamic_axes) -> None:
    import warnings

    import onnx
    import onnxslim

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notes on traced control flow
        torch.onnx.export(
            module,
            (example,),
            str(path),
            opset_version=OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            dynamo=False,
        )
    model = onnx.load(str(path))
    try:
        slim = onnxslim.slim(model)
        if slim is not None:
            model = slim
    except Exception as exc:  # keep the unsimplified (valid) graph; say so
        print(f"onnxslim could not simplify the graph ({exc}); keeping it as exported")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    bn = [n.op_type for n in model.graph.node if n.op_type == "BatchNormalization"]
    if bn:
        raise ExportError(f"{len(bn)} BatchNormalization node(s) left in the exported graph")


def _session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


TOOL_PACKAGES = ("sarbridge", "torch", "torchvision", "onnx", "onnxruntime", "onnxslim", "numpy")


def _export_step(step: dict | None, name: str, metrics: dict) -> dict:
    """The export's own lineage step (parity figures as its metrics)."""
    step = dict(step or {})
    return lineage_step(
        "export",
        step.pop("name", name),
        step.pop("parent", None),
        step.pop("config_sha256", None),
        metrics,
        **{"format": "onnx", "opset": OPSET, "batchnorm_folded": True, **step},
    )


# ---------------------------------------------------------------- parity


def parity_inputs(records, params, input_size: int, count: int) -> np.ndarray:
    """Network inputs of the first ``count`` records: runtime preprocessing + letterbox."""
    from sarbridge.runtime.imageio import read_image

    xs = [
        letterbox(preprocess(read_image(r.path), params, path=r.path), input_size)[0]
        for r in records[:count]
    ]
    return np.stack(xs).astype(np.float32)


# ---------------------------------------------------------------- detectors


def export_detector(
    source: str | Path,
    out: str | Path,
    *,
    parity_images: int = 8,
    tile_size: int | None = None,
    overlap: float = 0.5,
    atol: float = 1e-3,
    min_agreement: float = 0.98,
    name: str | None = None,
    nms_iou: float | None = None,
    vote_iou: float | str | None = None,
    tta_flips=None,
    source_label: str | None = None,
    whole_scene_max: int | str | None = None,
) -> dict:
    """Export a detector (a run folder, a checkpoint or ``zoo:<name>``) to ``out`` (model.onnx +
    manifest.json); returns the manifest.

    ``whole_scene_max``: scenes up to this long side are letterboxed whole into the network
    input, longer ones tiled (default: for a detector trained on whole images,
    :func:`training_whole_scene_max`, so that scenes like the ones it learned from are seen as
    it learned them; for one trained on tiles, none; ``"off"``: none).

    ``nms_iou`` sets the deployed NMS IoU (default: the run's ``eval.iou_threshold``),
    ``vote_iou`` the deployed box voting after NMS (default: the run's ``eval.vote_iou``;
    ``"off"`` for none) and ``tta_flips`` the deployed test-time flips (default: the run's
    ``eval.tta_flips``; ``"off"`` or ``()`` for none), e.g. settings picked on validation with
    ``python -m sarbridge.benchmarks.research.det_nms_sweep``."""
    from sarbridge.runtime.annotations import read_dataset
    from sarbridge.runtime.paths import resolve_data_path
    from sarbridge.runtime.preprocess import SarPreprocess
    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.evaluation import detector_predict
    from sarbridge.train.models.registry import detector_spec

    if nms_iou is not None and not 0.0 < nms_iou <= 1.0:
        raise ExportError(f"NMS IoU must be in (0, 1], not {nms_iou}")
    if vote_iou not in (None, "off") and not 0.0 < float(vote_iou) <= 1.0:
        raise ExportError(f"box-voting IoU must be in (0, 1] or 'off', not {vote_iou}")
    try:
        flips = None if tta_flips is None else parse_flips(tta_flips)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    loaded = load_model(source)
    if loaded.task != "detect":
        raise ExportError(f"{source}: holds a {loaded.task} model, not a detector")
    model, cfg = loaded.model, loaded.config
    flips = cfg.eval.tta_flips if flips is None else flips
    iou = cfg.eval.iou_threshold if nms_iou is None else float(nms_iou)
    vote = {None: cfg.eval.vote_iou, "off": None}.get(vote_iou, vote_iou)
    vote = None if vote is None else float(vote)
    classes = loaded.classes
    params = SarPreprocess.from_dict(cfg.data.preprocess)
    ds = read_dataset(resolve_data_path(cfg.data.root))
    records = ds.split(cfg.data.test_split) or ds.records
    x = parity_inputs(records, params, cfg.data.input_size, parity_images)
    train_records = ds.split(cfg.data.train_split) or ds.records
    if tile_size is None:  # the tiles training saw, else the scale training saw
        tile_size = cfg.data.tile_size or training_scale_tile(train_records)
    if whole_scene_max is None and not cfg.data.tile_size:  # trained on whole images
        whole_scene_max = training_whole_scene_max(train_records, cfg.augment.scale_min)
    if whole_scene_max == "off":
        whole_scene_max = None
    if whole_scene_max is not None and int(whole_scene_max) <= int(tile_size):
        whole_scene_max = None  # a scene no larger than a tile is one tile anyway
    trained = loaded.lineage[-1] if loaded.lineage else {}
    export_step = {
        "name": name or Path(out).name,
        "parent": parent_ref(loaded.name, loaded.path),
        "source": source_label or str(source),
        "config_sha256": trained.get("config_sha256"),
        "format": "onnx",
        "opset": OPSET,
        "batchnorm_folded": True,
        "simplified": "onnxslim",
        "model": cfg.model.name,
        "backbone": cfg.model.backbone,
        "best_epoch": int(loaded.checkpoint.get("epoch", -1)) + 1,
        # the settings of the run's test metrics (postprocessing holds the deployed ones)
        "test_metrics_nms_iou": float(cfg.eval.iou_threshold),
        "test_metrics_vote_iou": cfg.eval.vote_iou,
        "test_metrics_tta_flips": list(cfg.eval.tta_flips),
    }
    manifest = export_detector_model(
        model,
        out,
        model_name=cfg.model.name,
        classes=classes,
        params=params,
        input_size=cfg.data.input_size,
        parity_x=x,
        predict=lambda m, t: detector_predict(
            m, t, cfg.data.input_size, cfg.eval.operating_threshold, iou, 300, vote
        ),
        tile_size=tile_size,
        overlap=overlap,
        whole_scene_max=whole_scene_max,
        score_threshold=cfg.eval.operating_threshold,
        iou_threshold=iou,
        vote_iou=vote,
        tta_flips=flips,
        lineage=loaded.lineage,
        export_step=export_step,
        metrics=dict(trained.get("metrics") or {}),
        atol=atol,
        min_agreement=min_agreement,
        name=name or loaded.name,
        kind=detector_spec(cfg.model.name).kind,
    )
    return manifest


def _dense_manifest_fields(model) -> tuple[dict, str]:
    """The manifest's postprocessing decode fields and output meaning for a dense model."""
    strides = [int(s) for s in model.strides]
    if getattr(model, "decode", "dense_ltrb") == "yolo_anchors":
        anchors = model.anchors.cpu().numpy()
        post = {
            "decode": "yolo_anchors",
            "strides": strides,
            "anchors": [[[round(float(v), 4) for v in a] for a in level] for level in anchors],
        }
        meaning = (
            "per (grid cell, anchor) of strides 8/16/32, level-major, row-major, anchors last: "
            "tx, ty, tw, th, objectness logit, class logits; decoded by "
            "sarbridge.runtime.decode.decode_yolo with postprocessing.anchors"
        )
        return post, meaning
    bins = graph_box_bins(model)
    if bins:
        meaning = (
            f"channels first, [4 x {bins} + classes, points]: for each grid point (strides "
            f"8/16/32, level-major, row-major) {bins} bin logits for each of the box's "
            "left/top/right/bottom edges (the distance in strides is their softmax "
            "expectation), then class logits; decoded by "
            "sarbridge.runtime.decode.dense_dfl_candidates"
        )
        return {"decode": "dense_dfl", "strides": strides, "box_bins": bins}, meaning
    meaning = (
        "per grid point (strides 8/16/32, level-major, row-major): log-distances to the box's "
        "left/top/right/bottom edges in strides, then class logits; decoded by "
        "sarbridge.runtime.decode.decode_dense"
    )
    return {"decode": "dense_ltrb", "strides": strides}, meaning


def graph_box_bins(model) -> int:
    """Bins per box edge the exported graph outputs: a distribution (DFL) head's R, whose
    softmax expectation the runtime computes for the candidate rows only (``dense_dfl``);
    0 for a head whose graph outputs log-distances."""
    return int(getattr(model, "box_bins", 0) or 0) if hasattr(model, "emit_box_bins") else 0


@contextlib.contextmanager
def graph_outputs(model):
    """Within the block ``model`` computes what its exported graph outputs (a DFL head's bin
    logits, see :func:`graph_box_bins`); the training evaluation's form outside it."""
    if not graph_box_bins(model):
        yield model
        return
    from sarbridge.train.models.edge_det import box_distributions

    with box_distributions(model):
        yield model


def training_scale_tile(records, multiple: int = 32) -> int:
    """The scene tile size that shows ships at the scale training saw them.

    Training letterboxes each image into the network input, so an image's long side L becomes
    the input size; a scene tile of the median L, letterboxed the same way, keeps the objects'
    scale. (Rounded to a multiple of 32.)
    """
    sides = [max(r.height, r.width) for r in records]
    if not sides:
        raise ExportError("no training images to derive the tile size from; pass --tile-size")
    return max(multiple, int(round(float(np.median(sides)) / multiple)) * multiple)


def training_whole_scene_max(
    records, scale_min: float, limit: int = TILE_SIZE_RANGE[1]
) -> int:
    """The longest scene that, letterboxed whole into the network input, shrinks its ships no
    more than training shrank them.

    Training letterboxes each image whole and then jitters its scale down to ``scale_min``, so
    its smallest scale was ``input / L_max * scale_min`` (L_max: the long side of its largest
    image); a scene of long side ``L_max / scale_min`` letterboxed whole is at that scale.
    Longer scenes are tiled instead. (At most ``limit``, the manifest's bound.)
    """
    sides = [max(r.height, r.width) for r in records]
    if not sides:
        raise ExportError("no training images to derive whole_scene_max from; pass --whole-scene-max")
    return min(limit, int(max(sides) / min(1.0, float(scale_min))))


def _publish(manifest: dict, tmp: Path, out: Path) -> dict:
    """Validate and write the manifest into the finished temporary folder, then move it to ``out``."""
    save_manifest(manifest, tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.chmod(0o755)
    tmp.rename(out)
    return manifest


def export_detector_model(
    model: nn.Module,
    out: str | Path,
    *,
    model_name: str,
    classes: list[str],
    params,
    input_size: int,
    parity_x: np.ndarray,
    predict,
    tile_size: int | None = None,
    overlap: float = 0.5,
    whole_scene_max: int | None = None,
    score_threshold: float = 0.3,
    iou_threshold: float = 0.5,
    max_detections: int = 300,
    vote_iou: float | None = None,
    tta_flips: tuple[str, ...] = (),
    lineage: list[dict] | None = None,
    export_step: dict | None = None,
    metrics: dict | None = None,
    atol: float = 1e-3,
    min_agreement: float = 0.98,
    name: str | None = None,
    kind: str = "dense",
) -> dict:
    """Export an in-memory detector (see :func:`export_detector`), check parity, write the artifact.

    Args:
        vote_iou: box voting after the runtime's NMS (dense heads only); None: off.
        tta_flips: test-time flips the runtime merges before its NMS (dense heads only); the
            parity check compares the graph and the decode of the plain view.
        parity_x: real network inputs [B, C, S, S] (runtime preprocessing + letterbox).
        predict: ``predict(model, images) -> [(boxes, scores, labels)]`` in input pixels, the
            training evaluation's own prediction path at the operating threshold.
    """
    if (vote_iou is not None or tta_flips) and kind != "dense":
        raise ExportError(
            f"box voting (vote_iou {vote_iou}) and test-time flips ({list(tta_flips)}) need the "
            f"runtime's NMS; a {kind!r} detector's graph runs its own"
        )
    model = model.eval().cpu()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        onnx_path = tmp / MODEL_FILE
        xt = torch.from_numpy(parity_x)
        C = parity_x.shape[1]
        with torch.no_grad():
            if kind == "dense":
                channels_first = bool(graph_box_bins(model))
                with graph_outputs(model):  # traced now: the flag is baked into the graph
                    wrapper = DenseExport(model, channels_first).eval()
                    # the reference is the unfolded model, so a folding error shows as a difference
                    torch_raw = (ChannelsFirst(model) if channels_first else model)(xt)
                torch_raw = torch_raw.float().numpy()
                _onnx_export(
                    wrapper,
                    xt[:1],
                    onnx_path,
                    ["images"],
                    ["raw"],
                    {"images": {0: "batch"}, "raw": {0: "batch"}},
                )
                sess = _session(onnx_path)
                ort_raw = sess.run(None, {"images": parity_x})[0]
                max_abs = float(np.abs(torch_raw - ort_raw).max())
                scale = max(
                    1.0, float(np.abs(torch_raw).max())
                )  # atol is relative to the output range
                post_extra, meaning = _dense_manifest_fields(model)
                # the training evaluation's own path against the graph through the runtime's decode
                torch_dets = predict(model, xt)
                ort_dets = decode_raw(
                    model,
                    ort_raw,
                    input_size,
                    score_threshold,
                    iou_threshold,
                    max_detections,
                    vote_iou,
                    post=post_extra,
                )
                inputs = [
                    {
                        "name": "images",
                        "shape": ["batch", C, input_size, input_size],
                        "dtype": "float32",
                    }
                ]
                outputs = [
                    {
                        "name": "raw",
                        "shape": ["batch", int(torch_raw.shape[1]), int(torch_raw.shape[2])],
                        "dtype": "float32",
                        "meaning": meaning,
                    }
                ]
            elif kind == "torchvision":
                wrapper = BoxesExport(model, iou_threshold, max_detections, 0.001).eval()
                _onnx_export(
                    wrapper, xt[:1], onnx_path, ["images"], ["boxes", "scores", "labels"], None
                )
                sess = _session(onnx_path)
                torch_dets, ort_dets, diffs = [], [], []
                for k in range(len(parity_x)):
                    tb, ts, tl = (t.numpy() for t in wrapper(xt[k : k + 1]))
                    ob, os_, ol = sess.run(None, {"images": parity_x[k : k + 1]})
                    diffs.append(matched_max_abs((tb, ts, tl), (ob, os_, ol)))
                    keep_t, keep_o = ts > score_threshold, os_ > score_threshold
                    torch_dets.append((tb[keep_t], ts[keep_t], tl[keep_t]))
                    ort_dets.append((ob[keep_o], os_[keep_o], ol[keep_o]))
                max_abs = float(max(diffs))
                scale = float(input_size)  # box coordinates: atol is relative to the input side
                inputs = [
                    {"name": "images", "shape": [1, C, input_size, input_size], "dtype": "float32"}
                ]
                outputs = [
                    {
                        "name": "boxes",
                        "shape": ["detections", 4],
                        "dtype": "float32",
                        "meaning": "xyxy in network-input pixels, after NMS",
                    },
                    {
                        "name": "scores",
                        "shape": ["detections"],
                        "dtype": "float32",
                        "meaning": "class score",
                    },
                    {
                        "name": "labels",
                        "shape": ["detections"],
                        "dtype": "int64",
                        "meaning": "class index",
                    },
                ]
                post_extra = {"decode": "boxes"}
            else:
                raise ExportError(f"no ONNX export for detector kind {kind!r}")
        agreement = set_agreement(zip(torch_dets, ort_dets, strict=True))
        n_dets = sum(len(d[1]) for d in torch_dets)
        print(
            f"parity on {len(parity_x)} test images: max |PyTorch - ONNX Runtime| {max_abs:.2e}, "
            f"detection agreement {agreement:.4f} ({n_dets} PyTorch detections at score {score_threshold})"
        )
        if not max_abs <= atol * scale or agreement < min_agreement:
            raise ExportError(
                f"ONNX export of {model_name} does not match PyTorch: max abs difference {max_abs:.3g} "
                f"(allowed {atol * scale:.3g}), detection agreement {agreement:.4f} (needed {min_agreement}); "
                "nothing was written"
            )
        parity = {
            "parity_max_abs_diff": max_abs,
            "parity_output_scale": scale,
            "parity_detection_agreement": agreement,
            "parity_images": len(parity_x),
        }
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": name or out.name,
            "task": "detect",
            "model": {"file": MODEL_FILE, "sha256": sha256_file(onnx_path), "format": "onnx"},
            "inputs": inputs,
            "outputs": outputs,
            "preprocessing": {**dataclasses.asdict(params), "input_size": int(input_size)},
            "tiling": {
                "size": int(tile_size or input_size),
                "overlap": float(overlap),
                **({} if whole_scene_max is None else {"whole_scene_max": int(whole_scene_max)}),
            },
            "postprocessing": {
                "score_threshold": float(score_threshold),
                "iou_threshold": float(iou_threshold),
                "max_detections": int(max_detections),
                **({} if vote_iou is None else {"vote_iou": float(vote_iou)}),
                **({"tta_flips": list(tta_flips)} if tta_flips else {}),
                **post_extra,
            },
            "classes": list(classes),
            "precision": "fp32",
            "lineage": [*(lineage or []), _export_step(export_step, name or out.name, parity)],
            "metrics": {**(metrics or {}), **parity, **complexity(model, xt[:1])},
            "tool_versions": tool_versions(TOOL_PACKAGES),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        return _publish(manifest, tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- BNN encoder


def export_embedder(
    source: str | Path,
    out: str | Path,
    *,
    parity_patches: int = 16,
    atol: float = 1e-4,
    name: str | None = None,
    source_label: str | None = None,
) -> dict:
    """Export a BNN's SAR branch (backbone + head) as an ``embed`` artifact; ``source`` is a BNN
    run folder, checkpoint or ``zoo:<name>``."""
    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.data.pairs import PatchTensors, make_splits

    out = Path(out)
    loaded = load_model(source)
    if loaded.task != "bnn":
        raise ExportError(f"{source}: holds a {loaded.task} model, not a BNN")
    cfg, net = loaded.config, loaded.model
    sar = net.sar.eval()
    splits = make_splits(cfg)
    patches = (splits.test or splits.val or splits.train)[:parity_patches]
    x, _ = PatchTensors(cfg).batch(patches)
    xn = x.numpy().astype(np.float32)
    S = cfg.data.input_size
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        path = tmp / MODEL_FILE
        wrapper = fold_batchnorm(sar)
        with torch.no_grad():
            _onnx_export(
                wrapper,
                x[:1],
                path,
                ["sar"],
                ["embedding"],
                {"sar": {0: "batch"}, "embedding": {0: "batch"}},
            )
            ref = sar(x).numpy()
        got = _session(path).run(None, {"sar": xn})[0]
        max_abs = float(np.abs(ref - got).max())
        print(f"parity on {len(xn)} test SAR patches: max |PyTorch - ONNX Runtime| {max_abs:.2e}")
        if not max_abs <= atol:
            raise ExportError(
                f"ONNX export of the SAR encoder does not match PyTorch: max abs difference "
                f"{max_abs:.3g} (allowed {atol:g}); nothing was written"
            )
        trained = loaded.lineage[-1] if loaded.lineage else {}
        test = dict(trained.get("metrics") or {})
        parity = {"parity_max_abs_diff": max_abs, "parity_patches": len(xn)}
        step = {
            "name": name or out.name,
            "parent": parent_ref(loaded.name, loaded.path),
            "source": source_label or str(source),
            "config_sha256": trained.get("config_sha256"),
            "backbone": cfg.model.backbone,
            "best_epoch": int(loaded.checkpoint.get("epoch", -1)) + 1,
        }
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": name or out.name,
            "task": "embed",
            "model": {"file": MODEL_FILE, "sha256": sha256_file(path), "format": "onnx"},
            "inputs": [{"name": "sar", "shape": ["batch", 1, S, S], "dtype": "float32"}],
            "outputs": [
                {
                    "name": "embedding",
                    "shape": ["batch", int(ref.shape[1])],
                    "dtype": "float32",
                    "meaning": "BNN SAR embedding in (0, 1); a SAR/optical pair matches when "
                    "||z_s - z_o|| / sqrt(n) is below the threshold in metrics",
                }
            ],
            "preprocessing": {**cfg.data.sar_preprocess, "input_size": int(S)},
            "tiling": {"size": int(cfg.data.patch_size), "overlap": 0.0},
            "postprocessing": {
                "score_threshold": float(test.get("test_threshold", 0.5)),
                "iou_threshold": 0.5,
                "max_detections": 1,
            },
            "classes": ["match"],
            "precision": "fp32",
            "lineage": [*loaded.lineage, _export_step(step, out.name, parity)],
            "metrics": {**test, **parity},
            "tool_versions": tool_versions(TOOL_PACKAGES),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        return _publish(manifest, tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def export_run(
    source: str | Path,
    out: str | Path,
    *,
    parity_images: int = 16,
    tile_size: int | None = None,
    overlap: float = 0.5,
    nms_iou: float | None = None,
    vote_iou: float | str | None = None,
    tta_flips=None,
    name: str | None = None,
    source_label: str | None = None,
    whole_scene_max: int | str | None = None,
) -> dict:
    """Export whichever model ``source`` holds (a run folder, a checkpoint or ``zoo:<name>``):
    a BNN (its SAR encoder) or a detector, told by the checkpoint's task. ``source_label``
    names the source in the lineage when its path is not where it will be found (a release)."""
    from sarbridge.runtime.zoo import is_zoo_ref
    from sarbridge.train.checkpoint import checkpoint_task, load_checkpoint, resolve_checkpoint

    path = resolve_checkpoint(source)
    task = checkpoint_task(load_checkpoint(path), path)
    if name is None and is_zoo_ref(source):  # a zoo model keeps its zoo name
        name = str(source).split(":", 1)[1]
    if task == "bnn":
        if (
            nms_iou is not None
            or vote_iou is not None
            or tta_flips is not None
            or whole_scene_max is not None
        ):
            raise ExportError(
                f"{source} is a BNN (an embedder): NMS, box voting, test-time flips and whole "
                "scenes do not apply"
            )
        return export_embedder(
            source, out, parity_patches=parity_images, name=name, source_label=source_label
        )
    return export_detector(
        source,
        out,
        name=name,
        source_label=source_label,
        parity_images=parity_images,
        tile_size=tile_size,
        overlap=overlap,
        nms_iou=nms_iou,
        vote_iou=vote_iou,
        tta_flips=tta_flips,
        whole_scene_max=whole_scene_max,
    )
