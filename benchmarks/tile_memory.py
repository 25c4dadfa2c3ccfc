"""Peak memory of tiling a large 16-bit scene (target: peak RSS under 1 GiB at 20,000 x 20,000).

Writes a synthetic speckled uint16 scene as TIFF (two layouts: uncompressed
strips and zlib-compressed 512 x 512 tiles), then in a fresh process per
layout: scene-wide clip range from a subsample, every 512 tile at 0.5 overlap
read, preprocessed to float32 network input and dropped. Prints peak RSS,
time and tiles/s per layout.

    python -m sarbridge.benchmarks.tile_memory --size 20000 --workdir /tmp/sarbridge-bench
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sarbridge.runtime.fileio import atomic_path

GIB = 1024**3


def write_scene(
    path: Path, size: int, layout: str, block: int = 512, geotags: bool = False
) -> None:
    """Write a size x size uint16 speckle scene without holding it in memory.

    With ``geotags``: GeoTIFF tags for a 10 m grid in UTM zone 33N (EPSG:32633).
    """
    import tifffile

    rng = np.random.default_rng(0)

    def blocks():
        if layout == "tiled-zlib":
            for _ in range((-(-size // block)) ** 2):
                yield (rng.standard_exponential((block, block), np.float32) * 3000 + 50).astype(
                    np.uint16
                )
        else:
            for y in range(0, size, block):
                rows = min(block, size - y)
                yield (rng.standard_exponential((rows, size), np.float32) * 3000 + 50).astype(
                    np.uint16
                )

    kwargs = (
        {"tile": (block, block), "compression": "zlib"}
        if layout == "tiled-zlib"
        else {"rowsperstrip": block}
    )
    if geotags:
        kwargs["extratags"] = [
            (33550, "d", 3, (10.0, 10.0, 0.0), True),  # ModelPixelScale
            (33922, "d", 6, (0.0, 0.0, 0.0, 400000.0, 5000000.0, 0.0), True),  # ModelTiepoint
            (34735, "H", 8, (1, 1, 0, 1, 3072, 0, 1, 32633), True),  # GeoKeyDirectory
        ]
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            data=blocks(),
            shape=(size, size),
            dtype=np.uint16,
            photometric="minisblack",
            **kwargs,
        )


def tile_scene(path: str, tile: int, overlap: float) -> dict:
    """Tile and preprocess every tile of a scene; runs in the measured child process."""
    from sarbridge.runtime.imageio import open_raster
    from sarbridge.runtime.preprocess import SarPreprocess, clip_range, preprocess, scene_sample
    from sarbridge.runtime.tiling import read_tile, tile_grid

    params = SarPreprocess(input_kind="amplitude")
    t0 = time.perf_counter()
    with open_raster(path) as r:
        lo_hi = clip_range(scene_sample(r), params, r.path)
        grid = tile_grid(r.height, r.width, tile, overlap)
        checksum = 0.0
        for t in grid:
            x = preprocess(read_tile(r, t, tile), params, lo_hi)
            checksum += float(x[0, 0, 0])
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"tiles": len(grid), "seconds": seconds, "peak_rss_bytes": peak, "checksum": checksum}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=20000, help="scene side in pixels")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sarbridge-bench"))
    ap.add_argument(
        "--layouts", nargs="+", default=["strips", "tiled-zlib"], choices=["strips", "tiled-zlib"]
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(tile_scene(args.child, args.tile, args.overlap)))
        return 0

    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"scene {args.size} x {args.size} uint16 ({args.size**2 * 2 / GIB:.2f} GiB of pixels), "
        f"tiles {args.tile} at overlap {args.overlap}"
    )
    results = {}
    for layout in args.layouts:
        path = args.workdir / f"scene_{args.size}_{layout}.tif"
        if not path.exists():
            t0 = time.perf_counter()
            write_scene(path, args.size, layout)
            print(
                f"  wrote {path} ({path.stat().st_size / GIB:.2f} GiB) in {time.perf_counter() - t0:.0f} s"
            )
        cmd = [
            sys.executable,
            "-m",
            "sarbridge.benchmarks.tile_memory",
            "--child",
            str(path),
            "--tile",
            str(args.tile),
            "--overlap",
            str(args.overlap),
        ]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        results[layout] = res
        verdict = "PASS" if res["peak_rss_bytes"] < GIB else "FAIL"
        print(
            f"  {layout:10s}: {res['tiles']} tiles in {res['seconds']:.1f} s "
            f"({res['tiles'] / res['seconds']:.0f} tiles/s), peak RSS {res['peak_rss_bytes'] / 2**20:.0f} MiB "
            f"-> {verdict} (target < 1024 MiB)"
        )
    return 0 if all(r["peak_rss_bytes"] < GIB for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
