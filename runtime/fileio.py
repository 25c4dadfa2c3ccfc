"""File helpers every stage shares: atomic writes, file hashes, tool versions, the git sha.

An atomic write goes to a hidden temporary name beside the target
(``.<name>.partial``) and is renamed into place with :func:`os.replace`, so a crash
never leaves a half-written file under the real name. Parent folders are created.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _partial_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path`` through: renamed into place on success.

    For writers that need a file name (PIL, tifffile, matplotlib, torch.save). When
    the block raises, the temporary file is removed and the target is left as it was.

    Example:
        with atomic_path(out / "model.onnx") as tmp:
            onnx.save(model, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def atomic_write_json(obj: Any, path: str | Path, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (``indent`` spaces, trailing newline) to ``path`` atomically.

    ``indent=None`` writes one compact line (large annotation files).
    """
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tool_versions(packages: Iterable[str]) -> dict[str, str]:
    """Installed versions of ``packages`` (distribution names); missing ones are skipped."""
    import importlib.metadata as md

    out = {}
    for pkg in packages:
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def git_sha() -> str | None:
    """The full commit sha of the checkout this package runs from; None outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None
