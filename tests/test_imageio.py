import numpy as np
import pytest
import tifffile

from sarbridge.runtime.errors import DataError
from sarbridge.runtime.imageio import open_raster, read_image, write_image


@pytest.fixture
def scene16():
    rng = np.random.default_rng(0)
    return rng.integers(1, 65535, size=(700, 900), dtype=np.uint16)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # uncompressed strips: memory-mapped
        {"tile": (128, 128), "compression": "zlib"},  # tiled + compressed: per-tile decode
        {"compression": "zlib", "rowsperstrip": 64},  # compressed strips
        {"tile": (256, 256)},  # tiled uncompressed
    ],
)
def test_tiff_window_reads_match_whole_image(tmp_path, scene16, kwargs):
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, scene16, photometric="minisblack", **kwargs)
    with open_raster(path) as r:
        assert (r.height, r.width, r.channels, r.dtype) == (700, 900, 1, np.uint16)
        for y0, x0, h, w in [
            (0, 0, 700, 900),
            (100, 130, 300, 257),
            (650, 850, 50, 50),
            (0, 899, 700, 1),
        ]:
            np.testing.assert_array_equal(r.read(y0, x0, h, w), scene16[y0 : y0 + h, x0 : x0 + w])


def test_tiled_tiff_reads_from_many_threads(tmp_path, scene16, monkeypatch):
    """Threads sharing one raster read right windows, and the segment cache's byte count stays
    the sum of what it holds under a cap that forces evictions."""
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, scene16, photometric="minisblack", tile=(64, 64), compression="zlib")
    rng = np.random.default_rng(1)
    windows = [
        (int(y), int(x), int(h), int(w))
        for y, x, h, w in zip(
            rng.integers(0, 600, 200),
            rng.integers(0, 800, 200),
            rng.integers(1, 100, 200),
            rng.integers(1, 100, 200),
            strict=True,
        )
    ]
    with open_raster(path) as r:
        monkeypatch.setattr(r, "_CACHE_BYTES", 4 * 64 * 64 * 2)  # four segments
        with ThreadPoolExecutor(8) as pool:
            reads = list(pool.map(lambda win: r.read(*win), windows))
        for (y0, x0, h, w), got in zip(windows, reads, strict=True):
            np.testing.assert_array_equal(got, scene16[y0 : y0 + h, x0 : x0 + w])
        assert r._cache_bytes == sum(seg.nbytes for seg in r._cache.values())
        assert len(r._cache) <= 4


def test_multiband_planar_tiff(tmp_path):
    arr = np.arange(2 * 60 * 80, dtype=np.float32).reshape(2, 60, 80)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(
        path, arr, planarconfig="separate", photometric="minisblack", compression="zlib"
    )
    with open_raster(path) as r:
        assert r.channels == 2
        np.testing.assert_array_equal(r.read(10, 20, 30, 40), np.moveaxis(arr, 0, -1)[10:40, 20:60])


def test_float_and_complex_tiff(tmp_path):
    amp = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", amp)
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), amp)
    slc = (amp * np.exp(1j * 0.3)).astype(np.complex64)
    tifffile.imwrite(tmp_path / "c.tif", slc)
    np.testing.assert_allclose(read_image(tmp_path / "c.tif"), amp, rtol=1e-6)


def test_nan_tiff_is_a_clear_error(tmp_path):
    path = tmp_path / "nans.tif"
    tifffile.imwrite(path, np.full((32, 32), np.nan, np.float32))
    with pytest.raises(DataError, match=r"nans\.tif.*NaN or infinite"):
        read_image(path)


def test_truncated_jpeg_is_a_clear_error(tmp_path, data):
    src = data / "SSDD" / "JPEGImages" / "000001.jpg"
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.jpg: cannot decode image"):
        read_image(bad)


def test_wrong_bit_depth_and_format(tmp_path):
    tifffile.imwrite(tmp_path / "bool.tif", np.zeros((8, 8), bool))
    with pytest.raises(DataError, match="unsupported sample type"):
        open_raster(tmp_path / "bool.tif")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(DataError, match="unknown image format"):
        open_raster(tmp_path / "x.gif")
    with pytest.raises(DataError, match="no such file"):
        open_raster(tmp_path / "missing.tif")


def test_window_outside_image(tmp_path, scene16):
    tifffile.imwrite(tmp_path / "s.tif", scene16)
    with open_raster(tmp_path / "s.tif") as r, pytest.raises(DataError, match="outside"):
        r.read(600, 0, 200, 10)


def test_png_16bit_and_rgba_roundtrip(tmp_path, scene16, data):
    from PIL import Image

    Image.fromarray(scene16).save(tmp_path / "s16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "s16.png"), scene16)
    # a grey RGBA quick-look (R = G = B, alpha) decodes to its one band
    real = read_image(data / "large_scenes_ioEclipse" / "Test_image.png")
    assert real.shape == (1254, 2507) and real.dtype == np.uint8
    with Image.open(data / "large_scenes_ioEclipse" / "Test_image.png") as im:
        np.testing.assert_array_equal(real, np.asarray(im.getchannel("R")))
    # colour stays colour (preprocessing then refuses it as not single-band SAR)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    assert read_image(tmp_path / "colour.png").shape == (8, 8, 3)
    write_image(tmp_path / "w.tif", scene16)
    np.testing.assert_array_equal(read_image(tmp_path / "w.tif"), scene16)
    with pytest.raises(DataError, match="8-bit images only"):
        write_image(tmp_path / "w.png", scene16)


def test_geotiff_georeferencing_from_tags(tmp_path):
    arr = np.ones((100, 200), np.uint16)
    tags = [
        (33550, "d", 3, (10.0, 10.0, 0.0), True),  # ModelPixelScale
        (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4100000.0, 0.0), True),  # ModelTiepoint
        (34735, "H", 8, (1, 1, 0, 1, 3072, 0, 1, 32611), True),  # GeoKeyDirectory: EPSG:32611
    ]
    path = tmp_path / "geo.tif"
    tifffile.imwrite(path, arr, extratags=tags)
    with open_raster(path, use_gdal=False) as r:
        assert r.georef is not None and r.georef.crs == "EPSG:32611"
        x, y = r.georef.pixel_to_map(np.array([0, 200]), np.array([0, 100]))
        np.testing.assert_allclose(x, [500000, 502000])
        np.testing.assert_allclose(y, [4100000, 4099000])


def _geotiff(path, arr):
    rasterio = pytest.importorskip("rasterio", reason="the 'geo' extra (rasterio) is not installed")
    from rasterio.transform import from_origin

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=arr.shape[0],
        width=arr.shape[1],
        count=1,
        dtype="uint16",
        crs="EPSG:32633",
        transform=from_origin(300000, 5000000, 5, 5),
        tiled=True,
        blockxsize=64,
        blockysize=64,
        compress="deflate",
    ) as ds:
        ds.write(arr, 1)
    return path


def test_geotiff_through_rasterio(tmp_path):
    arr = np.arange(120 * 80, dtype=np.uint16).reshape(120, 80)
    path = _geotiff(tmp_path / "g.tif", arr)
    with open_raster(path) as r:
        assert type(r).__name__ == "_RasterioRaster"
        assert r.georef.crs == "EPSG:32633"
        np.testing.assert_array_equal(r.read(10, 20, 70, 50), arr[10:80, 20:70])
        x, y = r.georef.pixel_to_map(np.array([10]), np.array([4]))
        assert (x[0], y[0]) == (300050, 4999980)


def test_a_geotiff_opened_on_one_thread_is_read_and_closed_on_another(tmp_path):
    """`sarbridge detect` begins the next scene on a worker and finishes it on the main thread."""
    from concurrent.futures import ThreadPoolExecutor

    arr = np.arange(120 * 80, dtype=np.uint16).reshape(120, 80)
    path = _geotiff(tmp_path / "g.tif", arr)
    with ThreadPoolExecutor(1) as pool:
        r = pool.submit(open_raster, path).result()
    assert type(r).__name__ == "_RasterioRaster"
    np.testing.assert_array_equal(r.read(10, 20, 70, 50), arr[10:80, 20:70])
    r.close()
    r.close()  # a second close does nothing

