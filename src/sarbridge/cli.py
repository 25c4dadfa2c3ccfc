"""The ``sarbridge`` command line.

Subcommands are registered here with their arguments only; each one's
implementation is imported after parsing, so ``sarbridge --help`` and
``sarbridge data ...`` never import torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sarbridge import __version__

EXIT_CODES = (
    "exit codes: 0 done; 1 done, but bad items were found (each listed, the others processed); "
    "2 could not run (bad arguments, manifest, model or output folder: nothing was processed); "
    "130 interrupted (SIGINT), 143 terminated (SIGTERM): no partial file is left"
)


def _fraction(text: str) -> float:
    """A number in [0, 1] (thresholds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def _overlap(text: str) -> float:
    """A tile overlap in [0, 0.9]."""
    value = _fraction(text)
    if value > 0.9:
        raise argparse.ArgumentTypeError(f"{text} is over 0.9 (tiles would barely move)")
    return value


def _int_at_least(low: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{text} must be at least {low}")
    return value


def _positive(text: str) -> int:
    """An integer >= 1."""
    return _int_at_least(1, text)


def _nonnegative(text: str) -> int:
    """An integer >= 0 (a DLA core, a device index)."""
    return _int_at_least(0, text)


def _positive_list(text: str) -> tuple[int, ...]:
    """Comma-separated integers >= 1."""
    values = tuple(_positive(v.strip()) for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError("give at least one value")
    return values


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="check, tile and synthesise SAR data (torch-free)")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    check = dsub.add_parser(
        "check",
        help="check a dataset or scene and list every bad item",
        description="Detects the format (VOC, COCO, YOLO, optical/SAR pairs, single scene), prints counts "
        "per split and box statistics, and lists every bad item with its file.",
        epilog=EXIT_CODES,
    )
    check.add_argument(
        "path", type=Path, help="dataset folder, COCO JSON file, pair folder or scene file"
    )
    check.add_argument(
        "--decode",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="decode every image fully (finds truncated files); --no-decode reads headers only",
    )
    check.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    check.set_defaults(func=_run_data_check)

    tile = dsub.add_parser(
        "tile", help="cut a scene into overlapping tiles with a tiles.json index"
    , epilog=EXIT_CODES)
    tile.add_argument("scene", type=Path)
    tile.add_argument(
        "--size", type=_positive, default=512, help="tile side in pixels (default 512)"
    )
    tile.add_argument(
        "--overlap", type=_overlap, default=0.5, help="overlap fraction in [0, 0.9] (default 0.5)"
    )
    tile.add_argument("--out", type=Path, required=True, help="output folder")
    tile.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    tile.set_defaults(func=_run_data_tile)

    synth = dsub.add_parser(
        "synth", help="write synthetic SAR scenes, optical renderings and COCO boxes"
    , epilog=EXIT_CODES)
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--n", type=_positive, default=8, help="number of scenes")
    synth.add_argument("--size", type=_positive, default=512, help="scene side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--bits", type=int, choices=(8, 16), default=16, help="SAR sample depth")
    synth.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    synth.set_defaults(func=_run_data_synth)


def _run_data_check(args) -> int:
    from sarbridge.runtime.datatools import check_path

    report = check_path(args.path, progress=args.progress, decode=args.decode)
    print(report.render())
    return 0 if report.ok else 1


def _run_data_tile(args) -> int:
    from sarbridge.runtime.datatools import tile_scene_to_dir

    index = tile_scene_to_dir(args.scene, args.out, args.size, args.overlap, progress=args.progress)
    print(f"tiles and index written: {index}")
    return 0


def _run_data_synth(args) -> int:
    from sarbridge.runtime.datatools import write_synthetic

    path = write_synthetic(
        args.out, args.n, args.size, args.seed, args.bits, progress=args.progress
    )
    print(f"{args.n} synthetic scenes written to {args.out} (annotations: {path})")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train", help="BNN pretraining and detector training (needs the 'train' extra)"
    )
    tsub = train.add_subparsers(dest="train_command", required=True, metavar="COMMAND")

    bnn = tsub.add_parser(
        "bnn",
        help="pretrain a bridge neural network on optical/SAR pairs",
        description="Two separate backbones (SAR, optical) -> 50-d embeddings; matched pairs pulled together, "
        "unmatched pushed apart. Multi-process: torchrun --nproc_per_node N -m sarbridge train bnn ...",
     epilog=EXIT_CODES)
    bnn.add_argument(
        "--config", type=Path, help="YAML config (configs/bnn_*.yaml); defaults when omitted"
    )
    bnn.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.epochs=5 (repeatable)",
    )
    bnn.add_argument("--name", help="run name (default: the config's name)")
    bnn.add_argument("--runs-dir", type=Path, default=Path("runs"))
    bnn.add_argument(
        "--resume", action="store_true", help="continue runs/<name> from its last checkpoint"
    )
    bnn.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    bnn.set_defaults(func=_run_train_bnn)

    det = tsub.add_parser(
        "detect",
        help="train a SAR ship detector (edge_det) from BNN, ImageNet or random initialisation",
        description="Trains on the official train split (a seeded share held out for validation picks the best "
        "checkpoint by AP50:95; --set data.val_fraction=0 trains on all of it and keeps the last "
        "epoch) and scores the test split once at the end.",
     epilog=EXIT_CODES)
    det.add_argument("--config", type=Path, help="YAML config (configs/det_*.yaml)")
    det.add_argument(
        "--init",
        help="random | bnn:runs/<bnn-run> | imagenet:<local file> | file:<backbone .pt> "
        "| det:runs/<detector-run> (all weights: a further schedule) | zoo:<name> (a zoo "
        "detector: all weights; a zoo BNN: its SAR backbone)",
    )
    det.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    det.add_argument("--name", help="run name (default: the config's name)")
    det.add_argument("--runs-dir", type=Path, default=Path("runs"))
    det.add_argument("--resume", action="store_true")
    det.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    det.set_defaults(func=_run_train_detect)

    exp = tsub.add_parser(
        "bnn-export-backbone", help="write a BNN run's SAR backbone in the form detectors load"
    , epilog=EXIT_CODES)
    exp.add_argument(
        "--from", dest="run", required=True, help="the BNN run directory, checkpoint or zoo:<name>"
    )
    exp.add_argument("--which", choices=("best", "last"), default="best")
    exp.add_argument("--out", type=Path, help="output file (default: <run>/sar_backbone.pt)")
    exp.set_defaults(func=_run_bnn_export)


def _run_train_bnn(args) -> int:
    import dataclasses

    from sarbridge.train.config import load_config
    from sarbridge.train.recipes.bnn import BNNConfig, train_bnn

    cfg = load_config(BNNConfig, args.config, args.overrides)
    if args.name:
        cfg = dataclasses.replace(cfg, name=args.name)
    train_bnn(cfg, args.runs_dir, resume=args.resume, progress=args.progress)
    return 0


def _run_train_detect(args) -> int:
    import dataclasses

    from sarbridge.train.config import load_config
    from sarbridge.train.recipes.detect import DetConfig, train_detector

    cfg = load_config(DetConfig, args.config, args.overrides)
    if args.init:
        cfg = dataclasses.replace(cfg, init=args.init)
    if args.name:
        cfg = dataclasses.replace(cfg, name=args.name)
    train_detector(cfg, args.runs_dir, resume=args.resume, progress=args.progress)
    return 0


def _run_bnn_export(args) -> int:
    from sarbridge.train.recipes.bnn import export_sar_backbone

    path = export_sar_backbone(args.run, args.out, args.which)
    print(f"SAR backbone written: {path}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser(
        "export",
        help="export trained models: onnx (needs the 'train' and 'export' extras); engine "
        "(a TensorRT engine of an artifact, built on the board, torch-free)",
    )
    esub = exp.add_subparsers(dest="export_command", required=True, metavar="FORMAT")
    eng = esub.add_parser(
        "engine",
        help="an artifact's ONNX -> a TensorRT engine for this GPU, listed in its manifest",
        description="Builds on the device that will run it (engines do not move between TensorRT "
        "versions or GPUs) with TensorRT 10.x/11.x and cuda-python, no torch. Writes "
        "model.<tensorrt>.<device>.<precision>.plan beside model.onnx and adds an 'engines' entry "
        "(sha256, versions, device, compute capability, DLA core, flags, build time) to "
        "manifest.json. INT8 engines come from Q/DQ models: sarbridge compress --method int8 "
        "--target tensorrt.",
        epilog=EXIT_CODES,
    )
    eng.add_argument(
        "--from", dest="artifact", required=True, help="artifact directory or zoo:<name>"
    )
    eng.add_argument(
        "--out",
        type=Path,
        help="copy the artifact (manifest, ONNX) into this new folder and build there (needed "
        "for zoo: models)",
    )
    eng.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8", "best"),
        help="default: int8 for a Q/DQ model, else fp16 (TensorRT 11: the model's own)",
    )
    eng.add_argument(
        "--dla", type=_nonnegative, metavar="N", help="build for DLA core N, GPU fallback on"
    )
    eng.add_argument(
        "--max-batch", type=_positive, default=8, help="largest batch of the profile (default 8)"
    )
    eng.add_argument(
        "--opt-batch", type=_positive, help="the batch to optimise for (default: --max-batch)"
    )
    eng.add_argument(
        "--workspace", type=_positive, default=1024, metavar="MiB", help="builder workspace"
    )
    eng.add_argument("--timing-cache", type=Path, help="read and update this timing cache file")
    eng.add_argument("--cuda", choices=("cuda-python", "pycuda"), default="cuda-python")
    eng.add_argument(
        "--device", type=_nonnegative, default=0, help="CUDA device index (default 0)"
    )
    eng.add_argument("--force", action="store_true", help="rebuild an engine already listed")
    eng.add_argument("--verbose", action="store_true", help="print TensorRT's info messages")
    eng.set_defaults(func=_run_export_engine)
    onnx = esub.add_parser(
        "onnx",
        help="a run, checkpoint or zoo model -> artifacts/<name>/ (model.onnx + manifest.json), "
        "checked against PyTorch",
        description="Exports a detector run (task detect) or a BNN run (its SAR encoder, task embed) "
        "to ONNX opset 17 with BatchNorm folded, simplified with onnxslim and checked with "
        "onnx.checker; compares ONNX Runtime with PyTorch on real test images and refuses to write "
        "the artifact when they disagree.",
     epilog=EXIT_CODES)
    onnx.add_argument(
        "--from",
        dest="run",
        required=True,
        help="run directory (runs/<name>), checkpoint file, or zoo:<name>",
    )
    onnx.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    onnx.add_argument(
        "--tile-size",
        type=_positive,
        help="scene tile side in pixels (default: the median long side of the training images, "
        "so ships keep the scale training saw; each tile is letterboxed into the network input)",
    )
    onnx.add_argument(
        "--overlap", type=_overlap, default=0.5, help="tile overlap fraction (default 0.5)"
    )
    onnx.add_argument(
        "--whole-scene-max",
        type=_whole_scene_max_arg,
        help="scenes up to this long side (pixels) are letterboxed whole into the network input, "
        "longer ones tiled; or 'off' (default: for a detector trained on whole images, the "
        "longest scene that letterboxed whole shrinks ships no more than training did: its "
        "largest training image's long side / augment.scale_min; for one trained on tiles, none)",
    )
    onnx.add_argument(
        "--parity-images", type=_positive, default=16, help="real test images for the check"
    )
    onnx.add_argument(
        "--nms-iou",
        type=_fraction,
        help="NMS IoU of the deployed detector (default: the run's eval.iou_threshold; pick one on "
        "validation with python -m sarbridge.benchmarks.research.det_nms_sweep)",
    )
    onnx.add_argument(
        "--vote-iou",
        help="box voting after NMS at this IoU, or 'off' (default: the run's eval.vote_iou; "
        "pick on validation with det_nms_sweep --vote-iou)",
    )
    onnx.add_argument(
        "--tta-flips",
        help="test-time flips the runtime merges before NMS, comma-separated among h, v, hv, or "
        "'off' (default: the run's eval.tta_flips); each flip is one more network run per tile",
    )
    onnx.set_defaults(func=_run_export_onnx)


def _whole_scene_max_arg(text: str) -> int | str:
    """--whole-scene-max: "off" or a number of pixels (see :func:`_whole_scene_px`)."""
    if text.strip().lower() == "off":
        return "off"
    return _whole_scene_px(text)


def _whole_scene_px(text: str) -> int:
    """--whole-scene-max in pixels: positive and within the manifest's bound on a tile, checked
    here so that a bad value is refused before any work."""
    from sarbridge.runtime.manifest import TILE_SIZE_RANGE

    value = _positive(text)
    if value > TILE_SIZE_RANGE[1]:
        raise argparse.ArgumentTypeError(
            f"at most {TILE_SIZE_RANGE[1]} pixels (one tile is one read), not {value}"
        )
    return value


def _vote_iou_arg(text: str | None) -> float | str | None:
    """--vote-iou for export: None (the run's setting), "off", or an IoU."""
    from sarbridge.runtime.boxes import parse_vote_iou

    if text is None:
        return None
    try:
        value = parse_vote_iou(text)
    except ValueError as exc:
        raise SystemExit(f"--vote-iou: {exc}") from None
    return "off" if value is None else value


def _run_export_engine(args) -> int:
    from sarbridge.runtime.trt.build import build_engine
    from sarbridge.runtime.zoo import resolve_artifact, zoo_dir

    source = resolve_artifact(args.artifact)
    source = source if source.is_dir() else source.parent
    folder = args.out or source
    entry = build_engine(
        source,
        precision=args.precision,
        dla_core=args.dla,
        max_batch=args.max_batch,
        opt_batch=args.opt_batch,
        workspace_mib=args.workspace,
        timing_cache=args.timing_cache,
        force=args.force,
        cuda=args.cuda,
        device_index=args.device,
        verbose=args.verbose,
        out=args.out,
        zoo_root=zoo_dir(),
    )
    dla = "" if entry["dla_core"] is None else f" --dla {entry['dla_core']}"
    print(
        f"run it: sarbridge detect <scenes> --model {folder} --backend tensorrt "
        f"--engine-precision {entry['precision']}{dla}"
    )
    return 0


def _run_export_onnx(args) -> int:
    from sarbridge.export.onnx_export import export_run

    manifest = export_run(
        args.run,
        args.out,
        tile_size=args.tile_size,
        overlap=args.overlap,
        parity_images=args.parity_images,
        nms_iou=args.nms_iou,
        vote_iou=_vote_iou_arg(args.vote_iou),
        tta_flips=args.tta_flips,
        whole_scene_max=args.whole_scene_max,
    )
    print(f"{manifest['task']} artifact written: {args.out} (model.onnx, manifest.json)")
    return 0


DEFAULT_COMPRESS_SOURCE = "zoo:ssdd_edge_det"
# (flag, dest) of compress options that a recipe file sets per step instead
_STEP_FLAGS = (
    ("--method", "method"), ("--out", "out"), ("--name", "name"),
    ("--data", "data"), ("--ratio", "ratio"), ("--ratio-of", "ratio_of"),
    ("--importance", "importance"), ("--global", "global_pruning"), ("--round-to", "round_to"),
    ("--class-evidence", "class_evidence"), ("--teacher", "teacher"),
    ("--teacher-flips", "teacher_flips"), ("--epochs", "epochs"), ("--lr", "lr"),
    ("--target", "target"), ("--calibration-images", "calibration_images"),
    ("--guard-images", "guard_images"), ("--max-ap-drop", "max_ap_drop"), ("--seed", "seed"),
    ("--set", "overrides"),
)  # fmt: skip


def _add_compress(sub: argparse._SubParsersAction) -> None:
    from sarbridge.compress.settings import IMPORTANCES, RATIO_OF, STEP_DEFAULTS, prune_default

    c = sub.add_parser(
        "compress",
        help="a run or zoo detector -> a compressed, deployable artifact (INT8 per target, QAT, FP16)",
        description="Exports the FP32 parent (BatchNorm folded, parity-checked), compresses it, "
        "scores parent and result through the deployed torch-free pipeline (an accuracy guard on "
        "validation images, then the test split once) and writes model.onnx + manifest.json. "
        "INT8 calibrates on train images only, through the runtime's own preprocessing and "
        "tiling. Targets and their quantization schemes: sarbridge compress --list-targets",
     epilog=EXIT_CODES)
    c.add_argument(
        "--method",
        help="int8: post-training quantization with an accuracy guard; qat: NNCF "
        "quantization-aware fine-tuning, then the same per-target INT8 export; fp16: half "
        "precision for GPU targets; prune: channel pruning (Torch-Pruning) + fine-tuning, "
        "a run folder; distill: training with a teacher's outputs and features, a run folder; "
        "finetune: the same training without a teacher (the baseline), a run folder",
    )
    c.add_argument(
        "--recipe",
        type=Path,
        help="a recipe (configs/compress_<name>.yaml): steps that chain, each measured "
        "against its parent, resumable step by step",
    )
    c.add_argument(
        "--from",
        dest="source",
        help=f"run directory, checkpoint or zoo:<name> (default {DEFAULT_COMPRESS_SOURCE}; with "
        "--recipe, the recipe's source); --method int8 also takes an exported FP32 artifact "
        "without its run (e.g. sarbridge import ultralytics), with --data",
    )
    c.add_argument(
        "--data",
        help="an artifact source's dataset: its train split calibrates, its test split scores "
        "(default SSDD under the data root)",
    )
    c.add_argument(
        "--target",
        help="deployment target of an INT8 model: onnxruntime (x86, uint8 x int8), "
        f"openvino (NNCF preset), tensorrt (symmetric int8 Q/DQ); default {STEP_DEFAULTS['target']}",
    )
    c.add_argument(
        "--out",
        type=Path,
        help="artifact directory to write (default artifacts/<source name>_<method>[_<target>]); "
        "prune, distill, finetune: the run folder (default <--runs-dir>/<source name>_<method>...)",
    )
    c.add_argument(
        "--ratio",
        type=float,
        help="prune: the share of the parent's MACs (or channels, --ratio-of) KEPT, in (0, 1)",
    )
    c.add_argument(
        "--ratio-of", choices=RATIO_OF,
        help=f"prune: what --ratio counts (default {prune_default('ratio_of')})",
    )  # fmt: skip
    c.add_argument(
        "--importance",
        choices=IMPORTANCES,
        help="prune: channel importance: L2 magnitude (l2), BatchNorm scale (bn), Taylor "
        f"(default {prune_default('importance')})",
    )
    c.add_argument(
        "--global",
        dest="global_pruning",
        action=argparse.BooleanOptionalAction,
        help="prune: rank channels across layers (the default) or prune each layer alike",
    )
    c.add_argument(
        "--round-to",
        type=int,
        help=f"prune: channel counts a multiple of this (default {prune_default('round_to')}; "
        "AVX-512 holds 16 "
        "floats; at half the MACs, ONNX Runtime ran the 16 model in 13.9 ms, the 8 one in 17.7 ms)",
    )
    c.add_argument(
        "--class-evidence",
        type=int,
        help="prune: at every class output, per class, this many channels with a positive and "
        "as many with a negative class weight rank above all others (default "
        f"{prune_default('class_evidence')}; 0: "
        "importance alone, which can leave a level unable to score above the sigmoid of its bias)",
    )
    c.add_argument(
        "--teacher",
        help="distill (and prune's fine-tuning): the teacher, a run folder, checkpoint or "
        "zoo:<name>",
    )
    c.add_argument(
        "--teacher-flips",
        default=None,
        help="with --teacher: flips the teacher also sees each batch under (h, v, hv; comma-"
        "separated), its targets averaged over the views: its test-time flips distilled into "
        "a single-view student (default: the plain view only)",
    )
    c.add_argument(
        "--calibration-images",
        type=_positive,
        help="network inputs (images or scene tiles) of the train split to calibrate "
        f"on (default {STEP_DEFAULTS['calibration_images']})",
    )
    c.add_argument(
        "--guard-images",
        type=_positive,
        help="held-out images the accuracy guard scores: validation, or train images the calibration "
        f"did not read (default {STEP_DEFAULTS['guard_images']})",
    )
    c.add_argument(
        "--max-ap-drop",
        type=_fraction,
        help="largest AP50 drop the guard accepts before keeping layers in float (default "
        f"{STEP_DEFAULTS['max_ap_drop']})",
    )
    c.add_argument(
        "--seed",
        type=int,
        help=f"calibration sampling seed; training steps' seed (default {STEP_DEFAULTS['seed']})",
    )
    c.add_argument("--threads", type=_positive, help="inference threads while scoring")
    c.add_argument("--name", help="int8, qat, fp16: the artifact's name in its manifest (default: the folder)")
    c.add_argument(
        "--epochs",
        type=int,
        help="qat, prune, distill, finetune: training epochs (defaults 2, then 10; prune 0: no "
        "fine-tuning)",
    )
    c.add_argument(
        "--lr", type=float, help="qat, prune, distill, finetune: learning rate (defaults 1e-4, "
        "then 1e-3)"
    )
    c.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="prune, distill, finetune: change the fine-tuning config (the parent's, with a "
        "cosine schedule and EMA), e.g. --set augment.mosaic=1.0, --set optim.schedule=cyclic "
        "--set optim.swa_epochs=8 --set optim.ema=false, --set distill.feature_weight=0 "
        "(repeatable; a recipe step's set: mapping)",
    )
    c.add_argument(
        "--resume",
        action="store_true",
        help="qat, prune, distill, finetune, recipes: continue an interrupted run where it stopped",
    )
    c.add_argument(
        "--runs-dir", type=Path, default=Path("runs"),
        help="where training runs go: prune, distill, finetune (the default --out), qat's run, a "
        "recipe's runs and recipe.json (default runs)",
    )  # fmt: skip
    c.add_argument(
        "--overwrite", action="store_true",
        help="replace an existing --out (a run: deleted before training again); not with --recipe",
    )  # fmt: skip
    c.add_argument(
        "--list-targets",
        action="store_true",
        help="print each target's quantization scheme and exit",
    )
    c.set_defaults(func=_run_compress, parser=c)


def _run_compress(args) -> int:
    from sarbridge.compress.api import compress, describe_targets

    if args.list_targets:
        print(describe_targets())
        return 0
    if args.recipe:
        from sarbridge.compress.recipe import run_recipe_file

        if args.overwrite:
            args.parser.error(
                "--overwrite: not with --recipe (a recipe replaces none of its outputs: --resume "
                "continues it; to start again, delete its runs/<name> folder and artifacts)"
            )
        given = [flag for flag, dest in _STEP_FLAGS if getattr(args, dest) is not None]
        if given:  # a recipe's steps carry their own options; refused rather than ignored
            args.parser.error(
                f"{', '.join(given)}: not with --recipe (its source and each step's options are "
                f"in {args.recipe}; copy the preset and edit it)"
            )

        run_recipe_file(args.recipe, resume=args.resume, threads=args.threads,
                        runs_dir=args.runs_dir, source=args.source)  # fmt: skip
        return 0
    if not args.method:
        args.parser.error(
            "--method is required (int8, qat, fp16, prune, distill or finetune) or --recipe"
        )
    if args.source is None:
        args.source = DEFAULT_COMPRESS_SOURCE
    out = args.out
    if out is None:
        stem = str(args.source).rstrip("/").split(":")[-1]
        stem = Path(stem).name if not Path(stem).is_file() else Path(stem).parent.name
        if args.method == "prune":
            suffix = f"prune{round((args.ratio or 0) * 100)}"
        elif args.method in ("fp16", "distill", "finetune"):
            suffix = args.method
        else:
            from sarbridge.compress.settings import STEP_DEFAULTS

            suffix = f"{args.method}_{args.target or STEP_DEFAULTS['target']}"
        from sarbridge.compress.settings import TRAINING_METHODS

        folder = args.runs_dir if args.method in TRAINING_METHODS else Path("artifacts")
        out = folder / f"{stem}_{suffix}"
    compress(
        args.method,
        args.source,
        out,
        target=args.target,
        calibration_images=args.calibration_images,
        guard_images=args.guard_images,
        seed=args.seed,
        max_ap_drop=args.max_ap_drop,
        threads=args.threads,
        name=args.name,
        overwrite=args.overwrite,
        epochs=args.epochs,
        lr=args.lr,
        runs_dir=args.runs_dir,
        resume=args.resume,
        ratio=args.ratio,
        ratio_of=args.ratio_of,
        importance=args.importance,
        global_pruning=args.global_pruning,
        round_to=args.round_to,
        class_evidence=args.class_evidence,
        teacher=args.teacher,
        teacher_flips=args.teacher_flips,
        data=args.data,
        overrides=args.overrides,
    )
    return 0


def _add_detect(sub: argparse._SubParsersAction) -> None:
    det = sub.add_parser(
        "detect",
        help="detect ships in whole SAR scenes with an exported artifact (torch-free)",
        description="Reads each scene (8/16-bit, TIFF/GeoTIFF/PNG/JPEG; a folder means its images), "
        "applies the manifest's preprocessing, tiles with overlap, runs the tiles in batches, merges "
        "across tiles and writes <scene>.json (COCO style), <scene>.geojson when the scene is "
        "georeferenced, and <scene>.overlay.png with --overlay. A bad scene is reported and skipped. "
        "Every scene is sized from its header first and refused over the pixel and tile limits; "
        "the manifest is checked against the model file before any scene is read.",
        epilog=EXIT_CODES,
    )
    det.add_argument("scenes", nargs="+", type=Path, metavar="SCENE_OR_DIR")
    det.add_argument(
        "--model", required=True, help="artifact directory (manifest.json) or zoo:<name>"
    )
    det.add_argument("--out", type=Path, required=True, help="output folder")
    det.add_argument(
        "--backend",
        default="onnxruntime",
        help="inference backend: onnxruntime, openvino (CPU), tensorrt (an engine built with "
        "sarbridge export engine), pytorch (default onnxruntime)",
    )
    det.add_argument(
        "--providers",
        help="comma-separated ONNX Runtime providers (default: all available, GPU first); "
        "onnxruntime backend only",
    )
    det.add_argument(
        "--threads", type=_positive, help="inference threads (default: the backend's)"
    )
    _add_engine_choice(det)
    det.add_argument(
        "--batch", type=_positive, default=8, help="tiles per inference call (default 8)"
    )
    det.add_argument(
        "--score-threshold", type=_fraction, help="override the manifest's threshold, in [0, 1]"
    )
    det.add_argument(
        "--max-pixels",
        type=_positive,
        help="largest scene (height x width) read by window, from its header (default 2**30; "
        "PNG/JPEG, decoded whole: 2**26; $SARBRIDGE_MAX_PIXELS)",
    )
    det.add_argument(
        "--max-tiles",
        type=_positive,
        help="most tiles in one scene (default 100000; $SARBRIDGE_MAX_TILES)",
    )
    det.add_argument(
        "--tta-flips",
        help="override the manifest's test-time flips: comma-separated among h, v, hv, or 'off' "
        "(each flip is one more network run per tile)",
    )
    det.add_argument("--overlay", action="store_true", help="also write an overlay PNG per scene")
    det.add_argument("--geojson", action=argparse.BooleanOptionalAction, default=True)
    det.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    det.add_argument(
        "--pipelined",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="prepare the next tiles, and begin the next scene, while the backend runs the "
        "current ones; two decoded scenes are then in memory (default: on when the network "
        "runs on a GPU/NPU, off on the CPU)",
    )
    det.set_defaults(func=_run_detect)


def _add_engine_choice(parser: argparse.ArgumentParser) -> None:
    """--engine-precision / --dla / --cuda: which TensorRT engine (tensorrt backend only)."""
    parser.add_argument(
        "--engine-precision",
        choices=("fp32", "fp16", "int8", "best"),
        help="tensorrt backend: the engine to run (default: the best one built for this GPU)",
    )
    parser.add_argument(
        "--dla", type=_nonnegative, metavar="N", help="tensorrt backend: the DLA core N engine"
    )
    parser.add_argument(
        "--cuda",
        choices=("cuda-python", "pycuda"),
        help="tensorrt backend: the CUDA binding for buffers (default cuda-python)",
    )


def _engine_options(args, backends) -> dict:
    """The tensorrt backend's options from --engine-precision/--dla/--cuda."""
    from sarbridge.runtime.errors import SarbridgeError

    given = {
        k: v
        for k, v in (("precision", args.engine_precision), ("dla_core", args.dla), ("cuda", args.cuda))
        if v is not None
    }
    if given and "tensorrt" not in backends:
        raise SarbridgeError("--engine-precision, --dla and --cuda are for the tensorrt backend")
    return given


def _print_outcome(outcome) -> None:
    from tqdm import tqdm

    lines = [f"{'ok    ' if outcome.ok else 'FAILED'} {outcome.path}: {outcome.message}"]
    lines += [f"       -> {path}" for path in outcome.outputs]
    tqdm.write("\n".join(lines))


def _run_detect(args) -> int:
    from sarbridge.runtime.limits import limits

    with limits(max_pixels=args.max_pixels, max_tiles=args.max_tiles):
        return _detect(args)


def _detect(args) -> int:
    from sarbridge.runtime.detector import Detector
    from sarbridge.runtime.errors import SarbridgeError
    from sarbridge.runtime.fileio import writable_dir
    from sarbridge.runtime.scenes import detect_scenes
    from sarbridge.runtime.zoo import resolve_artifact

    writable_dir(args.out)  # before the model loads: a bad --out costs nothing

    options = {"threads": args.threads}  # every backend takes threads
    if args.providers:
        if args.backend != "onnxruntime":
            raise SarbridgeError(
                f"--providers is for the onnxruntime backend, not {args.backend!r}"
            )
        options["providers"] = [p.strip() for p in args.providers.split(",") if p.strip()]
    options.update(_engine_options(args, [args.backend]))
    detector = Detector.from_artifact(
        resolve_artifact(args.model),
        backend=args.backend,
        batch_size=args.batch,
        score_threshold=args.score_threshold,
        tta_flips=args.tta_flips,
        pipelined=args.pipelined,
        **options,
    )
    print(f"{args.model}: {detector.backend.description}")
    outcomes = detect_scenes(
        args.scenes,
        detector,
        args.out,
        overlay=args.overlay,
        geojson=args.geojson,
        progress=args.progress,
        on_outcome=_print_outcome,
    )
    failed = [o for o in outcomes if not o.ok]
    renamed = [o for o in outcomes if o.ok and o.name != o.path.stem]
    print(
        f"{len(outcomes) - len(failed)} of {len(outcomes)} scenes written to {args.out}"
        + (f", {len(failed)} failed" if failed else "")
        + (f", {len(renamed)} under another name (a name clash)" if renamed else "")
    )
    return 1 if failed else 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "bench",
        help="accuracy against latency, memory, size and energy for exported models (torch-free)",
        description="Each model x backend in its own process, through the deployed path "
        "(tiling and merge as `sarbridge detect`): COCO AP, latency percentiles and throughput, "
        "peak memory, size, power/energy where a probe exists. Writes results.json, report.md, "
        "report.html and PNG plots. With --compare X Y: the differences between two reports, "
        "regressions first; reports of different datasets are refused unless --force.",
        epilog=EXIT_CODES + "; with --compare, 1 means a regression",
    )
    b.add_argument("--models", nargs="+", help="artifact directories or zoo:<name>")
    b.add_argument("--data", help="dataset root, absolute or under the data root (default: SSDD)")
    b.add_argument("--split", default="test", help="dataset split (default test)")
    b.add_argument(
        "--max-images", type=_positive, help="only the first N (>= 1) images of the split"
    )
    b.add_argument("--scenes", nargs="*", type=Path, default=[], help="large scenes to time")
    b.add_argument(
        "--backends",
        default="onnxruntime",
        help="comma-separated: onnxruntime, openvino, tensorrt, pytorch (optional row)",
    )
    b.add_argument(
        "--providers", help="comma-separated ONNX Runtime providers (onnxruntime rows only)"
    )
    _add_engine_choice(b)
    b.add_argument("--threads", type=_positive, help="inference threads")
    b.add_argument(
        "--batch-sizes",
        type=_positive_list,
        default=(1, 2, 4, 8),
        help="throughput batch sizes (default 1,2,4,8)",
    )
    b.add_argument(
        "--iterations", type=_positive, default=50, help="timed images per batch size"
    )
    b.add_argument(
        "--power", default="auto", help="auto | none | tegrastats | nvml | rapl (default auto)"
    )
    b.add_argument("--out", type=Path, help="report folder (reports/<name>)")
    b.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    b.add_argument(
        "--force",
        action="store_true",
        help="--compare: compare reports although they scored different datasets",
    )
    b.set_defaults(func=_run_bench)


def _run_bench(args) -> int:
    from sarbridge.runtime.errors import SarbridgeError

    if args.compare:
        from sarbridge.benchmarks.bench import compare

        lines = compare(*args.compare, force=args.force)
        print("\n".join(lines) if lines else "no records in common")
        return 1 if any(line.startswith("WORSE") for line in lines) else 0
    if not args.models or not args.out:
        raise SarbridgeError("sarbridge bench needs --models and --out (or --compare BEFORE AFTER)")
    from sarbridge.benchmarks.bench import BenchSettings, run_bench
    from sarbridge.runtime.zoo import resolve_artifact

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    settings = BenchSettings(
        engine=_engine_options(args, backends),
        data=args.data or "SSDD",
        split=args.split,
        max_images=args.max_images,
        scenes=tuple(str(s) for s in args.scenes),
        threads=args.threads,
        batch_sizes=tuple(args.batch_sizes),
        iterations=args.iterations,
        power=args.power,
        providers=tuple(p.strip() for p in (args.providers or "").split(",") if p.strip()),
    )
    results = run_bench(
        [str(resolve_artifact(m)) for m in args.models],
        backends,
        settings,
        args.out,
    )
    print(f"report: {args.out / 'report.md'} (and report.html, results.json, plots)")
    return 1 if results["failures"] or (results["dataset"] or {}).get("problems") else 0


def _add_import(sub: argparse._SubParsersAction) -> None:
    imp = sub.add_parser(
        "import",
        help="models trained elsewhere -> a sarbridge artifact (torch-free)",
        epilog=EXIT_CODES,
    )
    isub = imp.add_subparsers(dest="import_command", required=True, metavar="SOURCE")
    ul = isub.add_parser(
        "ultralytics",
        help="an Ultralytics YOLOv8/YOLO11 detection export (ONNX or OpenVINO) -> artifacts/<name>",
        description="Reads class names, input size and task from the ONNX metadata Ultralytics "
        "writes, and writes model.onnx (or model.xml + model.bin) + manifest.json: Ultralytics' 8-bit preprocessing and "
        "centred letterbox, the ultralytics decode, the runtime's NMS and tiling.",
        epilog=EXIT_CODES,
    )
    ul.add_argument(
        "model",
        type=Path,
        help="the .onnx file (yolo export format=onnx) or the OpenVINO folder (format=openvino, "
        "FP32 or int8=True)",
    )
    ul.add_argument("--out", type=Path, required=True, help="artifact folder to write (new)")
    ul.add_argument("--name", help="the artifact's name (default: the folder's)")
    ul.add_argument(
        "--overlap", type=_overlap, default=0.25, help="scene tile overlap (default 0.25)"
    )
    ul.add_argument(
        "--whole-scene-max",
        type=_whole_scene_px,
        help="scenes up to this long side (pixels) are letterboxed whole into the input, as "
        "Ultralytics trains and validates on whole images; longer ones tiled (default: the "
        "input size; for a comparison with a sarbridge detector, give the whole_scene_max of "
        "its manifest)",
    )
    ul.add_argument(
        "--parity-images",
        type=int,
        default=16,
        help="real test images on which the runtime must agree with Ultralytics' own predict "
        "(needs the 'peers' extra; default 16; 0: no check, recorded as such)",
    )
    ul.add_argument("--parity-data", default="SSDD", help="dataset of those images (default SSDD)")
    ul.add_argument(
        "--min-agreement", type=_fraction, default=0.95, help="refuse below this (default 0.95)"
    )
    ul.set_defaults(func=_run_import_ultralytics)


def _run_import_ultralytics(args) -> int:
    import importlib.util

    from sarbridge.runtime.importers import import_ultralytics

    check, unchecked = None, None
    if args.parity_images <= 0:
        unchecked = "--parity-images 0"
    elif importlib.util.find_spec("ultralytics") is None:
        unchecked = "Ultralytics is not installed here (pip install 'sarbridge[peers]')"
    else:
        from sarbridge.export.ultralytics_parity import parity_check

        check = parity_check(args.model, args.parity_data, args.parity_images, args.min_agreement)
    if unchecked:
        print(f"parity with Ultralytics' own predictions not checked: {unchecked}")
    out = import_ultralytics(
        args.model, args.out, args.name, args.overlap, check=check, unchecked=unchecked,
        whole_scene_max=args.whole_scene_max,
    )  # fmt: skip
    print(f"detect artifact written: {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    return 0


def _add_zoo(sub: argparse._SubParsersAction) -> None:
    zoo = sub.add_parser(
        "zoo",
        help="the release models every user starts from (zoo/): list, check, release",
        description="zoo:<name> is accepted wherever a run or an artifact is. Files are checked "
        "against their sha256 in zoo/zoo.json before use ($SARBRIDGE_ZOO moves the folder).",
    )
    zsub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="COMMAND")
    ls = zsub.add_parser("list", help="the zoo's models with their figures", epilog=EXIT_CODES)
    ls.set_defaults(func=_run_zoo_list)
    chk = zsub.add_parser("check", help="every zoo file against its sha256", epilog=EXIT_CODES)
    chk.set_defaults(func=_run_zoo_check)
    rel = zsub.add_parser(
        "release",
        help="a run -> zoo/<name>/ (slim checkpoint, ONNX, manifest) and its zoo.json row "
        "(needs the 'train' and 'export' extras)",
     epilog=EXIT_CODES)
    rel.add_argument("name", help="zoo name: lower-case letters, digits and '_'")
    rel.add_argument("--from", dest="source", required=True, help="run folder or checkpoint")
    rel.add_argument("--command", required=True, help="the exact command that trained it")
    rel.add_argument("--bench", type=Path, help="results.json of a bench run of the artifact")
    rel.add_argument("--description", default="", help="one paragraph for zoo/README.md")
    rel.set_defaults(func=_run_zoo_release)
    meas = zsub.add_parser(
        "measure", help="record a bench run of a zoo model (sarbridge bench --models zoo:<name>)"
    , epilog=EXIT_CODES)
    meas.add_argument("name")
    meas.add_argument("--bench", type=Path, required=True, help="the bench run's results.json")
    meas.set_defaults(func=_run_zoo_measure)


def _run_zoo_list(args) -> int:
    from sarbridge.runtime.zoo import load_index, zoo_dir

    index = load_index()
    print(f"{zoo_dir()}:")
    for e in index["models"]:
        dep = e.get("deployed") or {}
        acc = f"AP50 {dep['AP50']:.3f}, AP50:95 {dep['AP50_95']:.3f}" if dep else ""
        print(f"  zoo:{e['name']:24s} {e['task']:7s} {e['parameters'] / 1e6:.2f} M params  {acc}")
    return 0


def _run_zoo_check(args) -> int:
    from sarbridge.runtime.zoo import check_all

    for line in check_all():
        print(line)
    return 0


def _run_zoo_release(args) -> int:
    from sarbridge.train.release import release

    entry = release(
        args.source, args.name, args.command, bench=args.bench, description=args.description
    )
    print(f"released zoo:{entry['name']} ({', '.join(f['path'] for f in entry['files'].values())})")
    return 0


def _run_zoo_measure(args) -> int:
    from sarbridge.train.release import add_bench

    entry = add_bench(args.name, args.bench)
    dep = entry.get("deployed") or {}
    print(f"zoo:{entry['name']}: {dep} , batch-1 p50 {entry.get('latency_ms_batch1_p50')} ms")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sarbridge",
        description="SAR ship detection from BNN pretraining to a satellite's onboard computer.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"sarbridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data(sub)
    _add_train(sub)
    _add_export(sub)
    _add_compress(sub)
    _add_detect(sub)
    _add_bench(sub)
    _add_import(sub)
    _add_zoo(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so every open atomic write removes its file."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, message printed): a return code
        return exc.code if isinstance(exc.code, int) else 2
    from sarbridge.runtime.errors import SarbridgeError
    from sarbridge.runtime.fileio import remove_partials

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args) or 0)
    except SarbridgeError as exc:
        print(f"sarbridge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        remove_partials()
        print("sarbridge: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        remove_partials()
        print("sarbridge: terminated", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
