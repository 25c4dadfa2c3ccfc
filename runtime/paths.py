"""Where data lives: SARBRIDGE_DATA, else ../shared/data beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "SARBRIDGE_DATA"


def data_root() -> Path:
    """The data root: $SARBRIDGE_DATA, else ``../shared/data`` relative to the repository root.

    The repository root is this checkout's (editable installs); for other
    installs the current directory stands in for it.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[1]
    for base in (repo, Path.cwd()):
        cand = (base / ".." / "shared" / "data").resolve()
        if cand.is_dir():
            return cand
    return (Path.cwd() / ".." / "shared" / "data").resolve()


def resolve_data_path(path: str | Path) -> Path:
    """``path`` as given when absolute or existing, else relative to :func:`data_root`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or p.exists() else data_root() / p
