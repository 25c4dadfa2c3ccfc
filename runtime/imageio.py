"""Image I/O for SAR scenes and chips: PNG/JPEG, TIFF (8/16-bit, float), GeoTIFF.

A scene is opened as a :class:`Raster`, which reads windows on demand, so a
20,000 x 20,000 scene never has to sit in memory whole:

* uncompressed TIFF: a window is read row by row at its file offsets
  (no memory map, so resident memory does not grow with the scene);
* tiled or compressed TIFF: only the TIFF tiles/strips under a window are
  decoded (a small LRU cache serves overlapping windows);
* GeoTIFF with the ``geo`` extra (rasterio): windowed reads through GDAL,
  georeferencing from GDAL; without it the geotransform is read from the
  GeoTIFF tags directly;
* PNG/JPEG cannot be read by window; they are decoded whole on open.

Every scene is sized from its header before any pixel is decoded and refused when it is over
the process's limits (:mod:`sarbridge.runtime.limits`): a file whose header claims 200,000 x
200,000 pixels costs a header read, never a decode. Every failure names the file and says
what is wrong (:class:`DataError`).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarbridge.runtime.errors import DataError
from sarbridge.runtime.fileio import atomic_path
from sarbridge.runtime.limits import get_limits

PIL_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
TIFF_SUFFIXES = {".tif", ".tiff"}
IMAGE_SUFFIXES = PIL_SUFFIXES | TIFF_SUFFIXES
SUPPORTED_DTYPES = (np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64)


def check_pixels(path: Path, height: int, width: int, *, whole: bool) -> None:
    """Refuse a scene whose header size is over the limits, before anything is decoded.

    Args:
        whole: the format is decoded whole (PNG/JPEG/BMP), so ``max_whole_pixels`` applies;
            else ``max_pixels`` (windowed TIFF reads).
    """
    lim = get_limits()
    name = "max_pixels"
    if whole and lim.max_whole_pixels < lim.max_pixels:
        name = "max_whole_pixels"
    cap = getattr(lim, name)
    if height <= 0 or width <= 0:
        raise DataError(path, f"its header gives an empty image ({width} x {height} pixels)")
    if height * width > cap:
        what = "decoded whole (PNG/JPEG/BMP); store larger scenes as a tiled TIFF" if whole else (
            "read by window"
        )
        raise DataError(
            path,
            f"its header claims {width} x {height} = {height * width:,} pixels, over the limit "
            f"of {cap:,} pixels for an image {what} (raise it with {lim.describe(name)})",
        )


@dataclass(frozen=True)
class GeoRef:
    """Affine georeferencing of a raster, GDAL order.

    ``x_map = a * col + b * row + c`` and ``y_map = d * col + e * row + f``
    for pixel corner coordinates (col, row).
    """

    transform: tuple[float, float, float, float, float, float]
    crs: str | None = None

    def pixel_to_map(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b, c, d, e, f = self.transform
        cols = np.asarray(cols, dtype=np.float64)
        rows = np.asarray(rows, dtype=np.float64)
        return a * cols + b * rows + c, d * cols + e * rows + f

    def to_dict(self) -> dict:
        return {"transform": list(self.transform), "crs": self.crs}


class Raster:
    """A read-only raster opened for windowed reading.

    Attributes:
        path: the file.
        height, width: size in pixels.
        channels: 1 for single-band images, else the band count.
        dtype: the stored sample type (uint8, uint16, float32, ...).
        georef: :class:`GeoRef` when the file is georeferenced, else None.
    """

    path: Path
    height: int
    width: int
    channels: int
    dtype: np.dtype
    georef: GeoRef | None = None

    def read(
        self, y0: int = 0, x0: int = 0, h: int | None = None, w: int | None = None
    ) -> np.ndarray:
        """Read the window rows [y0, y0+h) and columns [x0, x0+w).

        Returns:
            array [h, w] for single-band rasters, [h, w, C] otherwise, in the
            stored dtype (complex samples become amplitude).
        """
        h = self.height - y0 if h is None else h
        w = self.width - x0 if w is None else w
        if y0 < 0 or x0 < 0 or h <= 0 or w <= 0 or y0 + h > self.height or x0 + w > self.width:
            raise DataError(
                self.path,
                f"window rows {y0}:{y0 + h}, cols {x0}:{x0 + w} is outside the "
                f"{self.height}x{self.width} image",
            )
        cap = get_limits().max_whole_pixels
        if h * w > cap:  # a window is decoded whole: the same bound as a PNG/JPEG
            raise DataError(
                self.path,
                f"a window of {w} x {h} pixels is over the limit of {cap:,} pixels read at once "
                f"(read it in smaller windows, or raise {get_limits().describe('max_whole_pixels')})",
            )
        out = self._read(y0, x0, h, w)
        if np.iscomplexobj(out):
            out = np.abs(out).astype(np.float32)
        if out.ndim == 3 and out.shape[2] == 1:
            out = out[:, :, 0]
        if out.dtype.kind == "f":
            bad = ~np.isfinite(out)
            if bad.any():
                raise DataError(
                    self.path,
                    f"{int(bad.sum())} of {bad.size} pixels in rows {y0}:{y0 + h}, "
                    f"cols {x0}:{x0 + w} are NaN or infinite; mask or fill no-data before detection",
                )
        return out

    def _read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> Raster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, {self.height}x{self.width}x{self.channels}, "
            f"{np.dtype(self.dtype).name}, georef={self.georef is not None})"
        )


def _check_dtype(path: Path, dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return np.dtype(np.float32)  # complex SLC samples are read as amplitude
    if dtype == np.bool_ or not any(dtype == np.dtype(t) for t in SUPPORTED_DTYPES):
        raise DataError(
            path,
            f"unsupported sample type {dtype.name} ({dtype.itemsize * 8}-bit); expected 8- or 16-bit "
            "integers or float32/float64 amplitude or intensity",
        )
    return dtype


class ArrayRaster(Raster):
    """A raster held in memory (decoded PNG/JPEG, or an array given by the caller)."""

    def __init__(
        self, array: np.ndarray, path: str | Path = "<array>", georef: GeoRef | None = None
    ):
        array = np.asarray(array)
        if array.ndim not in (2, 3):
            raise DataError(
                path, f"expected a 2-D image or H x W x C array, got shape {array.shape}"
            )
        self.path = Path(path)
        self.dtype = _check_dtype(self.path, array.dtype)
        self._array = array
        self.height, self.width = array.shape[:2]
        self.channels = 1 if array.ndim == 2 else array.shape[2]
        self.georef = georef

    def _read(self, y0, x0, h, w):
        return self._array[y0 : y0 + h, x0 : x0 + w]


def _grey_band(img):
    """The first colour band of a PIL image when its colour bands are identical (alpha ignored;
    compared in C, no numpy copies), else None."""
    from PIL import ImageChops

    colour = [band for name, band in zip(img.getbands(), img.split(), strict=True) if name != "A"]
    first = colour[0]
    if all(ImageChops.difference(first, band).getbbox() is None for band in colour[1:]):
        return first
    return None


_PIL_GUARD = threading.Lock()


def _open_pil(path: Path, failure: str = "cannot read image header"):
    """``PIL.Image.open`` (the header only) with the size checked against the limits.

    PIL's own decompression-bomb guard (a process-wide setting whose errors and warnings
    depend on what was opened before) is off while the header is read; :func:`check_pixels`
    takes its place before anything is decoded.
    """
    from PIL import Image

    with _PIL_GUARD:  # the swap is process-wide: one thread at a time
        before, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            img = Image.open(path)
        except Exception as exc:  # PIL raises many types on hostile headers
            raise DataError(path, f"{failure} ({type(exc).__name__}: {exc})") from exc
        finally:
            Image.MAX_IMAGE_PIXELS = before
    try:
        check_pixels(path, img.height, img.width, whole=True)
    except DataError:
        img.close()
        raise
    return img


def _pil_to_array(path: Path) -> np.ndarray:

    img = _open_pil(path, "cannot decode image")
    try:
        with img:
            img.load()  # decode now: a truncated file fails here, not later
            mode = img.mode
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                mode = img.mode
            if mode in ("1",):
                raise DataError(path, "1-bit (bilevel) image: a SAR image needs 8 or 16 bits")
            if mode in ("I;16", "I;16B", "I;16L"):
                arr = np.array(img, dtype=np.uint16)
            elif mode == "CMYK":
                arr = np.asarray(img.convert("RGB"))
            elif mode in ("RGB", "RGBA", "LA") and (grey := _grey_band(img)) is not None:
                arr = np.asarray(grey)  # a grey quick-look: one band, alpha dropped
                mode = "L"
            else:
                arr = np.asarray(img)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, MemoryError) as exc:
        raise DataError(path, f"cannot decode image ({type(exc).__name__}: {exc})") from exc
    if mode == "I" and arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)  # 16-bit PNGs come back as mode "I"
    return arr


class _TiffFileRaster(Raster):
    """Windowed TIFF reading with tifffile: direct row reads when uncompressed, else per-segment decode."""

    _CACHE_BYTES = 64 * 1024 * 1024

    def __init__(self, path: Path):
        import tifffile

        self.path = path
        try:
            self._tif = tifffile.TiffFile(path)
            if len(self._tif.pages) == 0:
                raise DataError(
                    path, "cannot read TIFF: no image in it (truncated or corrupt file)"
                )
            page = (
                self._tif.pages.first if hasattr(self._tif.pages, "first") else self._tif.pages[0]
            )
            shape = page.shape
            self._page = page
        except DataError:
            raise
        except Exception as exc:  # tifffile raises several types for broken files
            raise DataError(path, f"cannot read TIFF ({type(exc).__name__}: {exc})") from exc
        self.dtype = _check_dtype(path, page.dtype)
        if page.planarconfig == 2 and len(shape) == 3:  # separate planes: [C, H, W]
            self.channels, self.height, self.width = shape
            self._planar = True
        else:
            self.height, self.width = shape[:2]
            self.channels = 1 if len(shape) == 2 else shape[2]
            self._planar = False
        if len(shape) > 3 or (len(shape) == 3 and min(shape) > 16):
            self._tif.close()
            raise DataError(
                path, f"unsupported TIFF layout (shape {shape}); expected H x W or H x W x C"
            )
        try:
            check_pixels(path, self.height, self.width, whole=False)
        except DataError:
            self._tif.close()
            raise
        self.georef = _georef_from_tiff_tags(page)
        # uncompressed, contiguous samples: read window rows straight from the file
        self._contiguous = bool(page.is_memmappable)
        if self._contiguous:
            self._offset = int(page.dataoffsets[0])
            self._file_dtype = np.dtype(page.dtype).newbyteorder(self._tif.byteorder)
            self._fd = self._tif.filehandle
        self._lock = threading.Lock()  # the file handle's position
        self._cache_lock = threading.Lock()  # the segment cache and its byte count
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        if not self._contiguous:
            if page.is_tiled:
                self._seg_h, self._seg_w = page.tilelength, page.tilewidth
            else:
                self._seg_h, self._seg_w = page.rowsperstrip or self.height, self.width
            self._segs_x = math.ceil(self.width / self._seg_w)
            self._segs_y = math.ceil(self.height / self._seg_h)
            samples = 1 if self._planar else self.channels
            seg_bytes = self._seg_h * self._seg_w * samples * np.dtype(page.dtype).itemsize
            cap = get_limits().max_segment_mib
            if seg_bytes > cap * 2**20:
                self._tif.close()
                raise DataError(
                    path,
                    f"one {'tile' if page.is_tiled else 'strip'} of {self._seg_w} x {self._seg_h} "
                    f"pixels decodes to {seg_bytes / 2**20:,.0f} MiB, over the limit of {cap} MiB "
                    f"(store the scene with 512 x 512 tiles, or raise "
                    f"{get_limits().describe('max_segment_mib')})",
                )

    def _segment(self, index: int) -> np.ndarray:
        """Decoded segment ``index`` as [seg_h, seg_w, C] (edge segments may be smaller).

        Safe from several threads: the cache is read and changed only under its lock; the
        decode runs outside it (two threads may decode one segment; one copy is kept)."""
        with self._cache_lock:
            cached = self._cache.get(index)
            if cached is not None:
                self._cache.move_to_end(index)
                return cached
        page = self._page
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        fh = self._tif.filehandle
        try:
            with self._lock:
                fh.seek(offset)
                data = fh.read(count) if count else None
            seg, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
        except Exception as exc:
            raise DataError(self.path, f"cannot decode TIFF segment {index} ({exc})") from exc
        if seg is None:  # empty segment: fill value
            seg = np.zeros(shape, dtype=page.dtype)
        seg = np.asarray(seg).reshape(seg.shape[-3:])  # [h, w, c]
        with self._cache_lock:
            if index in self._cache:  # another thread decoded it meanwhile
                self._cache.move_to_end(index)
                return self._cache[index]
            self._cache[index] = seg
            self._cache_bytes += seg.nbytes
            while self._cache_bytes > self._CACHE_BYTES and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old.nbytes
        return seg

    def _read(self, y0, x0, h, w):
        if self._contiguous:
            return self._read_rows(y0, x0, h, w)
        out = np.empty((h, w, self.channels), dtype=self._page.dtype)
        nseg = self._segs_x * self._segs_y
        for sy in range(y0 // self._seg_h, (y0 + h - 1) // self._seg_h + 1):
            for sx in range(x0 // self._seg_w, (x0 + w - 1) // self._seg_w + 1):
                gy, gx = sy * self._seg_h, sx * self._seg_w  # segment origin in the image
                ry0, ry1 = max(y0, gy), min(y0 + h, gy + self._seg_h, self.height)
                rx0, rx1 = max(x0, gx), min(x0 + w, gx + self._seg_w, self.width)
                planes = range(self.channels) if self._planar else [None]
                for p in planes:
                    index = sy * self._segs_x + sx + (p * nseg if p is not None else 0)
                    seg = self._segment(index)
                    block = seg[ry0 - gy : ry1 - gy, rx0 - gx : rx1 - gx]
                    if p is None:
                        out[ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0] = block
                    else:
                        out[ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0, p] = block[..., 0]
        return out

    def _read_rows(self, y0, x0, h, w):
        item = self._file_dtype.itemsize
        if self._planar:
            out = np.empty((self.channels, h, w), dtype=self._file_dtype)
            plane = self.height * self.width * item
            for c in range(self.channels):
                for r in range(h):
                    pos = self._offset + c * plane + ((y0 + r) * self.width + x0) * item
                    out[c, r] = self._pread(pos, w * item)
            out = np.moveaxis(out, 0, -1)
        else:
            px = self.channels * item  # bytes per pixel
            out = np.empty((h, w * self.channels), dtype=self._file_dtype)
            if w == self.width:  # whole rows: one read
                out[:] = self._pread(self._offset + y0 * self.width * px, h * w * px).reshape(h, -1)
            else:
                for r in range(h):
                    out[r] = self._pread(self._offset + ((y0 + r) * self.width + x0) * px, w * px)
            out = out.reshape(h, w, self.channels)
        return out.astype(self._file_dtype.newbyteorder("="), copy=False)

    def _pread(self, pos: int, count: int) -> np.ndarray:
        with self._lock:
            self._fd.seek(pos)
            buf = self._fd.read(count)
        if len(buf) != count:
            raise DataError(self.path, f"file is truncated (wanted {count} bytes at offset {pos})")
        return np.frombuffer(buf, dtype=self._file_dtype)

    def close(self):
        with self._cache_lock:
            self._cache.clear()
            self._cache_bytes = 0
        self._tif.close()


def _georef_from_tiff_tags(page) -> GeoRef | None:
    """Geotransform from GeoTIFF tags (ModelTransformation, or PixelScale + Tiepoint)."""
    tags = page.tags
    crs = None
    keys = tags.get("GeoKeyDirectoryTag")
    if keys is not None:
        values = list(keys.value)
        for i in range(4, len(values) - 3, 4):
            key, loc, _, val = values[i : i + 4]
            if (
                key in (3072, 2048) and loc == 0 and val not in (0, 32767)
            ):  # Projected / Geographic CRS
                crs = f"EPSG:{val}"
                break
    mt = tags.get("ModelTransformationTag")
    if mt is not None:
        m = list(mt.value)
        return GeoRef((m[0], m[1], m[3], m[4], m[5], m[7]), crs)
    scale, tie = tags.get("ModelPixelScaleTag"), tags.get("ModelTiepointTag")
    if scale is not None and tie is not None:
        sx, sy = scale.value[0], scale.value[1]
        i, j, _, x, y, _ = list(tie.value)[:6]
        return GeoRef((sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy), crs)
    return None


class _RasterioRaster(Raster):
    """Windowed reads through GDAL (the ``geo`` extra), for any GeoTIFF GDAL understands.

    GDAL's block cache is capped at ``GDAL_CACHE_MB`` (64 MiB): its default, a share of the
    machine's RAM, would let a large scene's blocks pile up far beyond the tile batch. The
    GDAL environment that sets it is entered around the open and each read, not held open: a
    rasterio environment belongs to one thread, and a scene may be opened on a worker thread
    and read and closed on another (``sarbridge detect`` beginning the next scene).
    """

    GDAL_CACHE_MB = 64

    def __init__(self, path: Path):
        import rasterio
        from rasterio.errors import RasterioIOError

        self.path = path
        try:
            with self._env():
                self._ds = rasterio.open(path)
        except RasterioIOError as exc:
            raise DataError(path, f"cannot open raster ({exc})") from exc
        self.height, self.width, self.channels = self._ds.height, self._ds.width, self._ds.count
        try:
            check_pixels(path, self.height, self.width, whole=False)
            self.dtype = _check_dtype(path, np.dtype(self._ds.dtypes[0]))
        except DataError:
            self.close()
            raise
        t = self._ds.transform
        has_geo = self._ds.crs is not None or not t.is_identity
        crs = self._ds.crs.to_string() if self._ds.crs is not None else None
        self.georef = GeoRef((t.a, t.b, t.c, t.d, t.e, t.f), crs) if has_geo else None

    def _env(self):
        import rasterio

        return rasterio.Env(GDAL_CACHEMAX=self.GDAL_CACHE_MB * 2**20)

    def _read(self, y0, x0, h, w):
        from rasterio.windows import Window

        try:
            with self._env():
                data = self._ds.read(window=Window(x0, y0, w, h))  # [C, h, w]
        except Exception as exc:
            raise DataError(self.path, f"cannot read window ({exc})") from exc
        return np.moveaxis(data, 0, -1)

    def close(self):
        if not self._ds.closed:
            self._ds.close()


def _has_rasterio() -> bool:
    import importlib.util

    return importlib.util.find_spec("rasterio") is not None


def open_raster(path: str | Path, *, use_gdal: bool | None = None) -> Raster:
    """Open an image or scene for windowed reading.

    Args:
        path: PNG, JPEG, BMP or (Geo)TIFF file.
        use_gdal: read TIFFs through rasterio/GDAL. None (default): when
            rasterio is installed and the TIFF is georeferenced.

    Raises:
        DataError: missing file, unknown format, corrupt data, unsupported
            sample type.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    suffix = path.suffix.lower()
    if suffix in PIL_SUFFIXES:
        return ArrayRaster(_pil_to_array(path), path)
    if suffix in TIFF_SUFFIXES:
        raster = _TiffFileRaster(path)
        if use_gdal or (use_gdal is None and raster.georef is not None and _has_rasterio()):
            raster.close()
            return _RasterioRaster(path)
        return raster
    raise DataError(
        path, f"unknown image format '{suffix}'; expected one of {sorted(IMAGE_SUFFIXES)}"
    )


def read_image(path: str | Path) -> np.ndarray:
    """Read a whole image: [H, W] or [H, W, C] in its stored dtype."""
    with open_raster(path) as raster:
        return raster.read()


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding pixels.

    Raises:
        DataError: unreadable header, or a size over the limits (:func:`check_pixels`).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_file() and suffix in PIL_SUFFIXES:
        with _open_pil(path) as img:
            return img.height, img.width
    if path.is_file() and suffix in TIFF_SUFFIXES:
        with _TiffFileRaster(path) as raster:  # the header only: never GDAL for a size
            return raster.height, raster.width
    with open_raster(path) as raster:  # a missing file or an unknown format: its error
        return raster.height, raster.width


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an image atomically (write to a temporary name, then rename).

    uint8 arrays go to PNG/JPEG/TIFF; other dtypes need a .tif/.tiff name.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TIFF_SUFFIXES and suffix not in PIL_SUFFIXES:
        raise DataError(path, f"unknown image format '{suffix}'")
    if suffix in PIL_SUFFIXES and image.dtype != np.uint8:
        raise DataError(path, f"{suffix} holds 8-bit images only; got {image.dtype.name}: use .tif")
    with atomic_path(path) as tmp:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            tifffile.imwrite(tmp, image, photometric="minisblack" if image.ndim == 2 else "rgb")
        else:
            from PIL import Image

            Image.fromarray(image).save(
                tmp, format="JPEG" if suffix in (".jpg", ".jpeg") else suffix[1:].upper()
            )
    return path
