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


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="check, tile and synthesise SAR data (torch-free)")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    check = dsub.add_parser(
        "check",
        help="check a dataset or scene and list every bad item",
        description="Detects the format (VOC, COCO, YOLO, optical/SAR pairs, single scene), prints counts "
        "per split and box statistics, and lists every bad item with its file. Exit code 1 if anything is bad.",
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
    )
    tile.add_argument("scene", type=Path)
    tile.add_argument("--size", type=int, default=512, help="tile side in pixels (default 512)")
    tile.add_argument(
        "--overlap", type=float, default=0.5, help="overlap fraction in [0, 1) (default 0.5)"
    )
    tile.add_argument("--out", type=Path, required=True, help="output folder")
    tile.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    tile.set_defaults(func=_run_data_tile)

    synth = dsub.add_parser(
        "synth", help="write synthetic SAR scenes, optical renderings and COCO boxes"
    )
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--n", type=int, default=8, help="number of scenes")
    synth.add_argument("--size", type=int, default=512, help="scene side in pixels")
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
    )
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
        "checkpoint by AP50:95) and scores the test split once at the end.",
    )
    det.add_argument("--config", type=Path, help="YAML config (configs/det_*.yaml)")
    det.add_argument(
        "--init", help="random | bnn:runs/<bnn-run> | imagenet:<local file> | file:<backbone .pt>"
    )
    det.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    det.add_argument("--name", help="run name (default: the config's name)")
    det.add_argument("--runs-dir", type=Path, default=Path("runs"))
    det.add_argument("--resume", action="store_true")
    det.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    det.set_defaults(func=_run_train_detect)

    exp = tsub.add_parser(
        "bnn-export-backbone", help="write a BNN run's SAR backbone in the form detectors load"
    )
    exp.add_argument("--from", dest="run", type=Path, required=True, help="the BNN run directory")
    exp.add_argument("--which", choices=("best", "last"), default="best")
    exp.add_argument("--out", type=Path, help="output file (default: <run>/sar_backbone.pt)")
    exp.set_defaults(func=_run_bnn_export)


def _run_train_bnn(args) -> int:
    import dataclasses

    from sarbridge.train.bnn_train import BNNConfig, train_bnn
    from sarbridge.train.config import load_config

    cfg = load_config(BNNConfig, args.config, args.overrides)
    if args.name:
        cfg = dataclasses.replace(cfg, name=args.name)
    train_bnn(cfg, args.runs_dir, resume=args.resume, progress=args.progress)
    return 0


def _run_train_detect(args) -> int:
    import dataclasses

    from sarbridge.train.config import load_config
    from sarbridge.train.detect_train import DetConfig, train_detector

    cfg = load_config(DetConfig, args.config, args.overrides)
    if args.init:
        cfg = dataclasses.replace(cfg, init=args.init)
    if args.name:
        cfg = dataclasses.replace(cfg, name=args.name)
    train_detector(cfg, args.runs_dir, resume=args.resume, progress=args.progress)
    return 0


def _run_bnn_export(args) -> int:
    from sarbridge.train.bnn_train import export_sar_backbone

    path = export_sar_backbone(args.run, args.out, args.which)
    print(f"SAR backbone written: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sarbridge",
        description="SAR ship detection from BNN pretraining to a satellite's onboard computer.",
    )
    parser.add_argument("--version", action="version", version=f"sarbridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data(sub)
    _add_train(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from sarbridge.runtime.errors import SarbridgeError

    try:
        return int(args.func(args) or 0)
    except SarbridgeError as exc:
        print(f"sarbridge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sarbridge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
