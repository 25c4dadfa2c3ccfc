"""The model zoo: release models that every user and every later step starts from.

``zoo/zoo.json`` lists each model with its files and their sha256; ``zoo:<name>`` is accepted
wherever a run or an artifact is (``--init``, ``--from``, ``--model``, ``--models``). Every
file is checked against its recorded sha256 before it is used: a changed file is refused.

The zoo folder is ``$SARBRIDGE_ZOO`` when set, else ``zoo/`` at the repository root.
Torch-free: the board resolves ``zoo:<name>`` artifacts too.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.fileio import sha256_mismatch

PREFIX = "zoo:"
INDEX = "zoo.json"
ZOO_ENV = "SARBRIDGE_ZOO"
ROLES = ("checkpoint", "model", "manifest")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class ZooError(SarbridgeError):
    """A zoo reference that cannot be resolved, or a zoo file that does not match its sha256."""


def is_zoo_ref(ref) -> bool:
    """Whether ``ref`` (a string or a path given on a command line) is ``zoo:<name>``."""
    if isinstance(ref, os.PathLike):
        ref = os.fspath(ref)
    return isinstance(ref, str) and ref.startswith(PREFIX)


def zoo_dir() -> Path:
    env = os.environ.get(ZOO_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "zoo"


def load_index(root: str | Path | None = None) -> dict:
    """zoo.json, checked: ``{"models": [{name, task, files: {role: {path, sha256, bytes}}, ...}]}``."""
    root = Path(root) if root is not None else zoo_dir()
    path = root / INDEX
    if not path.is_file():
        raise ZooError(f"{path}: no zoo index here (set {ZOO_ENV} to the zoo folder)")
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZooError(f"{path}: not readable JSON ({exc})") from None
    models = index.get("models") if isinstance(index, dict) else None
    if not isinstance(models, list):
        raise ZooError(f"{path}: 'models' must be a list")
    seen = set()
    for k, entry in enumerate(models):
        where = f"{path}: models[{k}]"
        if not isinstance(entry, dict) or not _NAME.match(str(entry.get("name", ""))):
            raise ZooError(f"{where}: needs a 'name' of lower-case letters, digits and '_'")
        if entry["name"] in seen:
            raise ZooError(f"{where}: the name {entry['name']!r} is listed twice")
        seen.add(entry["name"])
        files = entry.get("files")
        if not isinstance(files, dict) or not files:
            raise ZooError(f"{where}: 'files' must map roles ({', '.join(ROLES)}) to files")
        for role, f in files.items():
            if role not in ROLES:
                raise ZooError(f"{where}: unknown file role {role!r} (one of {ROLES})")
            rel = f.get("path") if isinstance(f, dict) else None
            if (
                not isinstance(rel, str)
                or Path(rel).is_absolute()
                or ".." in Path(rel).parts
                or not re.fullmatch(r"[0-9a-f]{64}", str(f.get("sha256", "")))
            ):
                raise ZooError(
                    f"{where}: files.{role} needs a relative 'path' inside the zoo and a 64-hex 'sha256'"
                )
    return index


def zoo_entry(name: str, root: str | Path | None = None) -> dict:
    models = {m["name"]: m for m in load_index(root)["models"]}
    if name not in models:
        raise ZooError(f"no model {name!r} in the zoo; it holds: {', '.join(sorted(models))}")
    return models[name]


def zoo_file(name: str, role: str, root: str | Path | None = None) -> Path:
    """The path of model ``name``'s ``role`` file, after checking its sha256."""
    root = Path(root) if root is not None else zoo_dir()
    entry = zoo_entry(name, root)
    if role not in entry["files"]:
        raise ZooError(f"zoo model {name!r} has no {role} file (it has {sorted(entry['files'])})")
    f = entry["files"][role]
    path = root / f["path"]
    if not path.is_file():
        raise ZooError(
            f"{path}: missing (zoo model {name!r}, {role}); git checkout zoo/ restores it"
        )
    bad = sha256_mismatch(path, f["sha256"])
    if bad:
        raise ZooError(
            f"{path}: the file does not match zoo.json ({bad}): it was changed; git checkout "
            f"zoo/ restores the released one"
        )
    return path


def _name(ref) -> str:
    ref = os.fspath(ref) if isinstance(ref, os.PathLike) else ref
    if not is_zoo_ref(ref) or not ref[len(PREFIX) :]:
        raise ZooError(f"{ref!r} is not a zoo reference (zoo:<name>)")
    return ref[len(PREFIX) :]


def zoo_checkpoint(ref: str, root: str | Path | None = None) -> Path:
    """``zoo:<name>`` -> its checkpoint file (sha256 checked)."""
    return zoo_file(_name(ref), "checkpoint", root)


def zoo_artifact(ref: str, root: str | Path | None = None) -> Path:
    """``zoo:<name>`` -> its artifact folder (manifest and model file sha256 checked)."""
    name = _name(ref)
    manifest = zoo_file(name, "manifest", root)
    model = zoo_file(name, "model", root)
    if model.parent != manifest.parent:
        raise ZooError(f"zoo model {name!r}: its model and manifest must share one folder")
    return manifest.parent


def resolve_artifact(ref: str | Path) -> Path:
    """An artifact reference (``zoo:<name>`` or a folder / manifest path) as a path."""
    return zoo_artifact(ref) if is_zoo_ref(ref) else Path(ref)


def check_all(root: str | Path | None = None) -> list[str]:
    """Every zoo file against its sha256 (raises :class:`ZooError` at the first mismatch);
    returns one line per file checked."""
    root = Path(root) if root is not None else zoo_dir()
    lines = []
    for entry in load_index(root)["models"]:
        for role in entry["files"]:
            path = zoo_file(entry["name"], role, root)
            lines.append(f"ok {entry['name']} {role}: {path.relative_to(root)}")
    return lines
