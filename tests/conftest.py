"""Shared fixtures: the real data root and small helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sarbridge.runtime.paths import data_root

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]

# Run Python with torch (and friends) made unimportable: `import torch` raises ImportError.
BLOCK_TORCH = (
    "import sys\n"
    "for _m in ('torch', 'torchvision', 'nncf', 'torch_pruning'):\n"
    "    sys.modules[_m] = None\n"
)


def mini_voc(
    root: Path, data: Path, stems: list[str], splits: dict[str, list[str]] | None = None
) -> Path:
    """A small VOC tree at ``root``: copies of SSDD's images and annotations for ``stems``, and
    ``ImageSets/Main/<split>.txt`` for each entry of ``splits``. Tests break the copies."""
    for sub in ("Annotations", "JPEGImages"):
        (root / sub).mkdir(parents=True)
    for stem in stems:
        shutil.copy(data / "SSDD" / "Annotations" / f"{stem}.xml", root / "Annotations")
        shutil.copy(data / "SSDD" / "JPEGImages" / f"{stem}.jpg", root / "JPEGImages")
    if splits:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        for split, ids in splits.items():
            (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="session")
def data() -> Path:
    root = data_root()
    if not (root / "SSDD").is_dir():
        pytest.skip(f"real data not found at {root}; set SARBRIDGE_DATA to the shared data folder")
    return root


def run_without_torch(
    code: str, *args: str, cwd=None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing torch raises.

    The block holds in that interpreter only; processes it spawns need :func:`torch_tripwire`'s
    environment (``env``, added to this process's).
    """
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + code, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env=None if env is None else {**os.environ, **env},
    )


def train_under_ddp(
    task: str, config: Path, runs_dir: Path, port: int
) -> subprocess.CompletedProcess:
    """``sarbridge train <task> --config <config>`` in 2 gloo processes (torch.distributed.run),
    the runs under ``runs_dir``; ``port``: the rendezvous port, one per test."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(port), "-m", "sarbridge", "train", task,
        "--config", str(config), "--runs-dir", str(runs_dir), "--no-progress",
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def torch_tripwire(folder: Path) -> tuple[dict[str, str], Path]:
    """An environment in which importing torch or torchvision raises in every process, spawned
    children included, and each attempt is logged (with its stack) to the returned file.

    Fake ``torch`` and ``torchvision`` packages first on ``PYTHONPATH`` do both.
    """
    log = folder / "torch_imports.log"
    stub = (
        "import os, traceback\n"
        "with open(os.environ['SARBRIDGE_TORCH_IMPORT_LOG'], 'a') as _f:\n"
        "    _f.write(f'import {__name__} in pid {os.getpid()}:\\n' + ''.join(traceback.format_stack()))\n"
        "raise ImportError(f'{__name__} is blocked in this test', name=__name__)\n"
    )
    for name in ("torch", "torchvision"):
        (folder / "blocked" / name).mkdir(parents=True, exist_ok=True)
        (folder / "blocked" / name / "__init__.py").write_text(stub)
    path = os.pathsep.join(filter(None, [str(folder / "blocked"), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "SARBRIDGE_TORCH_IMPORT_LOG": str(log)}, log


@pytest.fixture(scope="session")
def edge_artifact(tmp_path_factory, data) -> Path:
    """A tiny trained edge_det run (128 px, 1 epoch on 16 SSDD images) exported to ONNX.

    Built with torch once per session; the runtime tests then use only the artifact on disk.
    """
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from sarbridge.cli import main
    from sarbridge.train.config import from_dict
    from sarbridge.train.recipes.detect import DetConfig, train_detector

    root = tmp_path_factory.mktemp("edge_artifact")
    cfg = from_dict(
        DetConfig,
        {
            "name": "tiny_edge",
            "threads": 2,
            "data": {"input_size": 128, "max_train_images": 16, "val_fraction": 0.02},
            "optim": {"epochs": 1, "batch_size": 8, "warmup_steps": 2},
        },
    )
    train_detector(cfg, root / "runs", progress=False)
    art = root / "artifacts" / "tiny_edge"
    assert (
        main(
            [
                "export",
                "onnx",
                "--from",
                str(root / "runs" / "tiny_edge"),
                "--out",
                str(art),
                "--tile-size",
                "128",
                "--overlap",
                "0.25",
                "--whole-scene-max",  # the runtime tests cut their scenes into many tiles
                "off",
                "--parity-images",
                "6",
            ]
        )
        == 0
    )
    return art
