"""sarbridge.runtime: the on-board layer (numpy, pillow, tifffile; never torch).

Image I/O, SAR radiometric preprocessing, tiling and cross-tile merging, NMS and
the decoders (a registry), annotation and optical/SAR pair readers, metrics, the
manifest, the inference backends (a lazy registry: a backend's package is imported
only when it is chosen), file helpers and the synthetic scene generator. Everything
here must run on a Jetson board with no torch installed.
"""

from sarbridge._stage_guard import check as _check

_check(__name__, "runtime")

from sarbridge.runtime.errors import DataError, ManifestError, SarbridgeError  # noqa: E402

__all__ = ["DataError", "ManifestError", "SarbridgeError"]
