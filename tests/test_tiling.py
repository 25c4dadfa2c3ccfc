import numpy as np
import pytest

from sarbridge.runtime.boxes import batched_nms, box_iou, box_vote, nms, parse_vote_iou
from sarbridge.runtime.imageio import ArrayRaster
from sarbridge.runtime.tiling import merge_tile_detections, read_tile, tile_grid


@pytest.mark.parametrize(
    "hw", [(512, 512), (1000, 1500), (300, 200), (513, 2049), (1, 1), (4096, 700)]
)
@pytest.mark.parametrize("size,overlap", [(512, 0.5), (256, 0.25), (400, 0.0)])
def test_every_pixel_covered_and_tiles_inside(hw, size, overlap):
    H, W = hw
    cover = np.zeros((H, W), np.int32)
    tiles = tile_grid(H, W, size, overlap)
    for t in tiles:
        assert t.y0 >= 0 and t.x0 >= 0 and t.y0 + t.h <= H and t.x0 + t.w <= W
        assert (t.h, t.w) == (min(size, H), min(size, W))
        cover[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w] += 1
    assert cover.min() >= 1
    if overlap == 0 and H % size == 0 and W % size == 0:
        assert cover.max() == 1


def test_tile_read_roundtrip_and_padding():
    scene = np.arange(300 * 700, dtype=np.uint16).reshape(300, 700)
    r = ArrayRaster(scene)
    rebuilt = np.zeros_like(scene)
    for t in tile_grid(300, 700, 256, 0.5):
        rebuilt[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w] = read_tile(r, t)
    np.testing.assert_array_equal(rebuilt, scene)
    small = ArrayRaster(np.ones((100, 50), np.uint8))
    (t,) = tile_grid(100, 50, 128, 0.5)
    padded = read_tile(small, t, size=128)
    assert padded.shape == (128, 128) and padded[:100, :50].all() and not padded[100:].any()


def _detect_ship(tile, ship):
    """An ideal detector: the part of the ship box visible in the tile, in tile pixels."""
    x1, y1, x2, y2 = ship
    vis = np.array(
        [max(x1, tile.x0), max(y1, tile.y0), min(x2, tile.x0 + tile.w), min(y2, tile.y0 + tile.h)],
        float,
    ) - [tile.x0, tile.y0, tile.x0, tile.y0]
    if vis[2] - vis[0] < 2 or vis[3] - vis[1] < 2:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)
    frac = (vis[2] - vis[0]) * (vis[3] - vis[1]) / ((x2 - x1) * (y2 - y1))
    return np.array([vis], float), np.array([0.5 + 0.4 * frac]), np.array([0])


@pytest.mark.parametrize(
    "ship",
    [
        (240, 100, 290, 120),  # cut by the x=256 border of the first tile
        (500, 500, 530, 540),  # near the corner where four tiles meet
        (100, 230, 400, 290),  # longer than the overlap: truncated in every tile
    ],
)
def test_ship_cut_by_tile_border_merges_to_one_box(ship):
    H, W = 768, 1024
    tiles = tile_grid(H, W, 256, 0.5)
    dets = [_detect_ship(t, ship) for t in tiles]
    assert sum(len(d[0]) for d in dets) > 1  # seen by several tiles
    boxes, scores, labels = merge_tile_detections(tiles, dets, (H, W))
    assert len(boxes) == 1
    np.testing.assert_allclose(boxes[0], ship, atol=1e-4)


def test_merge_keeps_separate_ships_and_classes():
    H, W = 512, 512
    tiles = tile_grid(H, W, 256, 0.5)
    ships = [(10, 10, 40, 30), (60, 10, 90, 30), (300, 300, 330, 330)]
    dets = []
    for t in tiles:
        parts = [_detect_ship(t, s) for s in ships]
        dets.append(tuple(np.concatenate([p[i] for p in parts]) for i in range(3)))
    boxes, _, _ = merge_tile_detections(tiles, dets, (H, W))
    assert len(boxes) == 3
    two_classes = [
        (np.array([[0, 0, 20, 20], [0, 0, 20, 20]]), np.array([0.9, 0.8]), np.array([0, 1]))
    ]
    b, _, lab = merge_tile_detections(tile_grid(64, 64, 64, 0.5), two_classes, (64, 64))
    assert sorted(lab.tolist()) == [0, 1]


def test_nms_hand_case():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # IoU(3, 0) = 90/100 -> 0 suppressed by 3; IoU(3, 1) = 72/(90+100-72) = 0.61 -> suppressed
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [3, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.95), [3, 0, 1, 2])
    keep = batched_nms(boxes, scores, np.array([0, 1, 0, 1]), 0.5)
    assert sorted(keep.tolist()) == [0, 2, 3]
    assert box_iou(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(81 / 119)


def test_box_vote_hand_case():
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [0, 0, 10, 10], [30, 30, 40, 40]], float)
    scores = np.array([0.6, 0.2, 0.9, 0.5])
    labels = np.array([0, 0, 1, 0])
    kept = np.array([0, 3])
    voted = box_vote(kept, boxes, scores, labels, 0.6)
    # box 1 overlaps box 0 by IoU 80/120 >= 0.6 and shares its label: a 0.6/0.2 weighted mean;
    # box 2 has another label; box 3 stands alone
    np.testing.assert_allclose(voted[0], (0.6 * boxes[0] + 0.2 * boxes[1]) / 0.8)
    np.testing.assert_allclose(voted[1], boxes[3])
    np.testing.assert_allclose(box_vote(kept, boxes, scores, labels, 0.7), boxes[kept])
    assert box_vote(np.zeros(0, int), boxes, scores, labels, 0.6).shape == (0, 4)
    assert parse_vote_iou("OFF") is None and parse_vote_iou("0.7") == 0.7
    for bad in ("0", "1.5", "seven"):
        with pytest.raises(ValueError, match="box-voting IoU"):
            parse_vote_iou(bad)


def test_decode_with_box_voting():
    from sarbridge.runtime.decode import decode_dense, grid_points

    points, strides = grid_points(32, (8,))  # 16 points
    raw = np.full((16, 5), -10.0, np.float32)
    raw[5] = [0.0, 0.0, 0.0, 0.0, 3.0]  # a box of side 2 strides around point 5
    raw[6] = [0.0, 0.0, 0.0, 0.0, 1.0]  # the same shape one point to the right, lower score
    plain = decode_dense(raw, points, strides, 0.05, 0.5)
    voted = decode_dense(raw, points, strides, 0.05, 0.5, vote_iou=0.3)
    # NMS at 0.5 keeps both (IoU 1/3); voting at 0.3 pulls each towards the other
    assert len(plain[0]) == len(voted[0]) == 2
    np.testing.assert_array_equal(plain[1], voted[1])
    s5, s6 = 1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(
        voted[0][0], (s5 * plain[0][0] + s6 * plain[0][1]) / (s5 + s6), rtol=1e-5
    )
