"""Exceptions with messages a user can act on."""

from __future__ import annotations

from pathlib import Path


class SarbridgeError(Exception):
    """Base class of every error sarbridge raises on purpose."""


class DataError(SarbridgeError, ValueError):
    """Bad input data: names the file and what is wrong with it."""

    def __init__(self, path: str | Path | None, message: str):
        self.path = None if path is None else Path(path)
        self.reason = message
        super().__init__(f"{path}: {message}" if path is not None else message)


class ManifestError(DataError):
    """A manifest that is missing, malformed, of an unknown version or does not match its model."""
