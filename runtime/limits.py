"""Bounds on what the runtime agrees to read: every scene is sized from its header first.

An unattended board must never let one file take all its memory or all its time. Each input
is checked against these limits before a pixel is decoded, whatever its format and whatever
the files before it:

* ``max_pixels``: height x width of a windowed scene (TIFF/GeoTIFF), default 2**30
  (32,768 x 32,768; a Sentinel-1 IW GRD scene is about 25,000 x 16,700);
* ``max_whole_pixels``: PNG/JPEG/BMP are decoded whole, so they get a lower cap,
  default 2**26 (8,192 x 8,192): larger scenes belong in a (tiled) TIFF;
* ``max_segment_mib``: one TIFF strip or tile, decoded whole, default 256 MiB (a compressed
  TIFF stored as one strip would otherwise be decoded whole);
* ``max_tiles``: tiles of one scene, default 100,000 (a 32,768 pixel square at 512 px and
  0.5 overlap is 16,129 tiles), which bounds the time a scene can take.

Limits hold for the process. The defaults can be changed with the environment variables
``SARBRIDGE_MAX_PIXELS``, ``SARBRIDGE_MAX_WHOLE_PIXELS``, ``SARBRIDGE_MAX_SEGMENT_MIB`` and
``SARBRIDGE_MAX_TILES``, or ``sarbridge detect --max-pixels / --max-tiles``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass

from sarbridge.runtime.errors import SarbridgeError

ENV = {
    "max_pixels": "SARBRIDGE_MAX_PIXELS",
    "max_whole_pixels": "SARBRIDGE_MAX_WHOLE_PIXELS",
    "max_segment_mib": "SARBRIDGE_MAX_SEGMENT_MIB",
    "max_tiles": "SARBRIDGE_MAX_TILES",
}


@dataclass(frozen=True)
class Limits:
    """What one scene may be; see the module doc for each field."""

    max_pixels: int = 2**30
    max_whole_pixels: int = 2**26
    max_segment_mib: int = 256
    max_tiles: int = 100_000

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SarbridgeError(f"limit {f.name} must be a positive integer, got {value!r}")

    def describe(self, name: str) -> str:
        """How a user raises limit ``name``: its environment variable (and option)."""
        option = {"max_pixels": " or --max-pixels", "max_tiles": " or --max-tiles"}.get(name, "")
        return f"{ENV[name]}{option}"


def _from_environment() -> Limits:
    values = {}
    for name, var in ENV.items():
        text = os.environ.get(var)
        if text is None or not text.strip():
            continue
        try:
            values[name] = int(text.strip())
        except ValueError:
            raise SarbridgeError(f"{var}={text!r} is not a positive integer") from None
        if values[name] < 1:
            raise SarbridgeError(f"{var}={text!r} is not a positive integer")
    return Limits(**values)


_current: Limits | None = None


def get_limits() -> Limits:
    """This process's limits (the defaults, changed by the environment on first use)."""
    global _current
    if _current is None:
        _current = _from_environment()
    return _current


def set_limits(**changes) -> Limits:
    """Change some limits for the rest of the process; None values are left as they are."""
    global _current
    changes = {k: v for k, v in changes.items() if v is not None}
    _current = dataclasses.replace(get_limits(), **changes)
    return _current


@contextlib.contextmanager
def limits(**changes) -> Iterator[Limits]:
    """The limits changed inside a ``with`` block only (tests, one-off reads)."""
    global _current
    before = get_limits()
    try:
        yield set_limits(**changes)
    finally:
        _current = before
