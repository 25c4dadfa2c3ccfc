"""File helpers every stage shares: atomic writes, file hashes, tool versions, the git sha.

An atomic write goes to a hidden temporary name beside the target
(``.<name>.partial``) and is renamed into place with :func:`os.replace`, so a crash
never leaves a half-written file under the real name. Parent folders are created.
Temporary files still open are recorded, so an interrupted command removes them
(:func:`remove_partials`, called by the CLI on SIGINT and SIGTERM).
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

_PARTIALS: set[Path] = set()  # temporary files being written now


def _partial_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def remove_partials() -> list[Path]:
    """Remove every temporary file an unfinished atomic write left; returns them."""
    removed = []
    for tmp in list(_PARTIALS):
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
        _PARTIALS.discard(tmp)
    return removed


def writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """``path`` as a folder this process can write into, made when missing, checked up front.

    Raises:
        SarbridgeError: ``path`` is a file, or the folder cannot be made or written.
    """
    from sarbridge.runtime.errors import SarbridgeError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SarbridgeError(f"{path}: the {what} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".sarbridge-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SarbridgeError(f"{path}: the {what} cannot be written ({exc.strerror or exc})") from None
    return path


@contextlib.contextmanager
def atomic_group(paths: list[str | Path]) -> Iterator[list[Path]]:
    """Temporary paths for several files published together: all renamed into place when the
    block succeeds, in the order given (put the file readers look for first, last), none when
    it raises (every temporary file removed, the targets left as they were)."""
    paths = [Path(p) for p in paths]
    tmps = [_partial_name(p) for p in paths]
    for p, tmp in zip(paths, tmps, strict=True):
        p.parent.mkdir(parents=True, exist_ok=True)
        _PARTIALS.add(tmp)
    try:
        yield tmps
        for p, tmp in zip(paths, tmps, strict=True):
            os.replace(tmp, p)
            _PARTIALS.discard(tmp)
    finally:
        for tmp in tmps:
            if tmp in _PARTIALS:
                tmp.unlink(missing_ok=True)
                _PARTIALS.discard(tmp)


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
    _PARTIALS.add(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _PARTIALS.discard(tmp)


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


def sha256_mismatch(path: str | Path, want: str) -> str | None:
    """None when ``path``'s sha256 is ``want``; else ``"sha256 <got>... != <want>..."`` (12 hex
    digits of each) for the caller's error, which says what was changed and how to restore it."""
    actual = sha256_file(path)
    return None if actual == want else f"sha256 {actual[:12]}... != {want[:12]}..."


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
