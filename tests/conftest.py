"""Shared fixtures: the real data root and small helpers."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def data() -> Path:
    root = data_root()
    if not (root / "SSDD").is_dir():
        pytest.skip(f"real data not found at {root}; set SARBRIDGE_DATA to the shared data folder")
    return root


def run_without_torch(code: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing torch raises."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + code, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )
