"""Every registered detector: forward, loss, backward; decode shared with the runtime; real SSDD steps."""

import numpy as np
import pytest
import torch

from sarbridge.runtime.decode import decode_dense, grid_points, letterbox
from sarbridge.runtime.errors import SarbridgeError
from sarbridge.train.evaluation import detector_predict
from sarbridge.train.losses import detector_loss
from sarbridge.train.losses.edge_det import dfl_loss, task_aligned_assign
from sarbridge.train.models.backbones import list_backbones
from sarbridge.train.models.edge_det import bin_expectation, box_distributions, decode_boxes, grid
from sarbridge.train.models.registry import build_detector, detector_spec, list_detectors


def _targets():
    return [
        {
            "boxes": torch.tensor([[10.0, 12.0, 30.0, 40.0], [60.0, 60.0, 70.0, 66.0]]),
            "labels": torch.tensor([0, 0]),
        },
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long)},
    ]


@pytest.mark.parametrize("name", list_detectors())
def test_forward_loss_backward_predict(name):
    torch.manual_seed(0)
    model = build_detector(name, num_classes=1, input_size=96)
    x = torch.rand(2, 1, 96, 96)
    model.train()
    loss, logs = detector_loss(model, x, _targets(), 96)
    assert torch.isfinite(loss) and logs["loss"] == pytest.approx(loss.item())
    loss.backward()
    stem = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert stem.weight.grad is not None and torch.isfinite(stem.weight.grad).all()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad[:5]
    model.eval()
    with torch.no_grad():
        preds = detector_predict(model, x, 96, 0.0, 0.5, 50)
    assert len(preds) == 2
    for boxes, scores, labels in preds:
        assert boxes.shape[1] == 4 and len(boxes) == len(scores) == len(labels) <= 50
        assert (labels >= 0).all()
    spec = detector_spec(name)
    with torch.no_grad():
        if spec.kind == "torchvision":  # its NMS is torchvision's: no voting to apply
            with pytest.raises(SarbridgeError, match="box voting"):
                detector_predict(model, x, 96, 0.0, 0.5, 50, vote_iou=0.7)
        else:  # voting moves boxes, never adds, drops or rescores one
            voted = detector_predict(model, x, 96, 0.0, 0.5, 50, vote_iou=0.7)
            for (_, s0, l0), (_, s1, l1) in zip(preds, voted, strict=True):
                np.testing.assert_array_equal(s0, s1)
                np.testing.assert_array_equal(l0, l1)
    expected = {"edge_det": 512, "yolov3_darknet53": 416, "faster_rcnn_r50_fpn": 512}
    assert spec.input_size == expected[name] and spec.preprocess.channels == 1


def test_dense_output_layout():
    model = build_detector("edge_det")
    raw = model(torch.rand(1, 1, 96, 96))
    assert raw.shape == (1, sum((96 // s) ** 2 for s in model.strides), 5)


@pytest.mark.parametrize("box_bins", [0, 16])
def test_edge_detector_budget(box_bins):
    from torch.utils.flop_counter import FlopCounterMode

    model = build_detector("edge_det", box_bins=box_bins)
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 1, 512, 512))
    flops = counter.get_total_flops()
    print(
        f"edge_det (box bins {box_bins}): {params / 1e6:.2f} M parameters, "
        f"{flops / 1e9:.2f} GFLOPs at 512x512"
    )
    assert params <= 2.5e6 and flops <= 4.0e9


def test_box_bins_head_trains_on_bins_and_outputs_log_distances():
    torch.manual_seed(0)
    model = build_detector("edge_det", num_classes=1, box_bins=16)
    x = torch.rand(2, 1, 96, 96)
    loss, logs = detector_loss(model.train(), x, _targets(), 96)
    assert logs["dfl"] > 0 and logs["box"] > 0
    loss.backward()
    assert all(p.grad is not None for p in model.reg_out.parameters())
    model.eval()
    with torch.no_grad():
        with box_distributions(model):
            bins = model(x)
        raw = model(x)
    n = sum((96 // s) ** 2 for s in model.strides)
    assert bins.shape == (2, n, 4 * 16 + 1) and raw.shape == (2, n, 5)
    # what the graph exports (and the runtime decodes as exp(reg) * stride) is the logarithm of
    # the bins' expected distance, the same distance the loss trains
    expected = (bins[..., :64].unflatten(-1, (4, 16)).softmax(-1) * torch.arange(16.0)).sum(-1)
    torch.testing.assert_close(raw[..., :4].exp(), expected.clamp(min=1e-3))
    torch.testing.assert_close(raw[..., 4:], bins[..., 64:])


def test_bin_logits_decode_to_the_boxes_of_the_log_distance_form():
    """The exported graph's bin logits through the runtime's dense_dfl decode give the boxes,
    scores and labels of the training evaluation's log-distance form through dense_ltrb."""
    from sarbridge.runtime.decode import get_decoder

    torch.manual_seed(0)
    model = build_detector("edge_det", num_classes=1, box_bins=16).eval()
    for conv in model.reg_out:  # spread the untrained bins so the expectations differ
        torch.nn.init.normal_(conv.weight, std=0.5)
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        with box_distributions(model):
            bins = model(x).numpy()
        raw = model(x).numpy()
    post = {"strides": [8, 16, 32]}
    dfl = get_decoder("dense_dfl").build({**post, "box_bins": 16}, 128, 0.005)
    ltrb = get_decoder("dense_ltrb").build(post, 128, 0.005)
    for b, r in zip(bins, raw, strict=True):
        got, want = dfl(np.ascontiguousarray(b.T)), ltrb(r)  # the graph's layout: [4R + C, N]
        assert len(want[1]) > 10
        np.testing.assert_allclose(got[0], want[0], atol=1e-3)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])
    with pytest.raises(ValueError, match=r"is not \[4 x 16 bins \+ classes"):
        dfl(bins[0][:, :64].T)  # no class logits
    with pytest.raises(ValueError, match="channels first"):
        dfl(bins[0])  # the points-first layout
    with pytest.raises(ValueError, match="box_bins"):
        build_detector("edge_det", box_bins=1)
    from sarbridge.train.config import from_dict
    from sarbridge.train.recipes.detect import DetConfig
    from sarbridge.train.recipes.detect import model_from_config as build_from_config

    with pytest.raises(SarbridgeError, match="model.box_bins must be"):
        build_from_config(from_dict(DetConfig, {"model": {"box_bins": 1}}), 1)
    with pytest.raises(SarbridgeError, match="edge detector"):
        build_from_config(
            from_dict(DetConfig, {"model": {"name": "yolov3_darknet53", "box_bins": 16}}), 1
        )


def test_expected_distance_is_the_softmax_expectation_and_stays_finite():
    model = build_detector("edge_det", box_bins=16)
    logits = torch.randn(2, 4, 16, 3, 3) * 4
    softmax_mean = (logits.softmax(2) * torch.arange(16.0).view(1, 1, -1, 1, 1)).sum(2)
    torch.testing.assert_close(model.expected_distance(logits), softmax_mean.clamp(min=1e-3))
    # logits far beyond exp's range (float16 overflows at 11.1): the distance is the top bin's
    peaked = torch.full((1, 4, 16, 1, 1), -500.0)
    peaked[0, torch.arange(4), torch.tensor([0, 3, 9, 15])] = 500.0
    for dtype in (torch.float32, torch.float16):
        dist = model.expected_distance(peaked.to(dtype)).float().flatten()
        torch.testing.assert_close(dist, torch.tensor([1e-3, 3.0, 9.0, 15.0]))


def test_dfl_loss_is_least_on_the_two_bins_around_the_distance():
    target = torch.tensor([[3.3, 0.0, 7.5, 20.0]])  # 20 is beyond the last bin: clamped to it

    def split(dist, r=16):  # probability on the two bins either side of each distance
        p = torch.full((4, r), 1e-6)
        for i, d in enumerate(dist.clamp(0, r - 1 - 1e-3).tolist()):
            left = int(d)
            p[i, left] += left + 1 - d
            p[i, left + 1] += d - left
        return p.log()[None]

    best = dfl_loss(split(target[0]), target)
    assert best < dfl_loss(split(target[0] + 0.5), target)
    assert best < dfl_loss(split(target[0] - 0.3), target)
    assert best < dfl_loss(torch.zeros(1, 4, 16), target)
    mean = (split(target[0]).softmax(-1) * torch.arange(16.0)).sum(-1)
    torch.testing.assert_close(mean, target.clamp(max=15 - 1e-3), atol=1e-3, rtol=0)


def test_torch_and_numpy_decode_agree_and_roundtrip():
    size = 64
    pts_np, strides_np = grid_points(size)
    pts, strides = grid(size, (8, 16, 32), "cpu")
    np.testing.assert_array_equal(pts.numpy(), pts_np)
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 1, (len(pts_np), 5)).astype(np.float32)
    raw[:, 4] = -20
    # encode one box at grid point 10 (stride 8): distances 3, 5, 7, 2 px
    p = pts_np[10]
    raw[10, :4] = np.log(np.array([3, 5, 7, 2]) / 8.0)
    raw[10, 4] = 5.0
    boxes, scores, labels = decode_dense(raw, pts_np, strides_np, 0.5)
    np.testing.assert_allclose(boxes[0], [p[0] - 3, p[1] - 5, p[0] + 7, p[1] + 2], atol=1e-4)
    assert labels.tolist() == [0] and scores[0] == pytest.approx(1 / (1 + np.exp(-5)))
    torch_boxes = decode_boxes(torch.from_numpy(raw[:, :4]), pts, strides)
    np.testing.assert_allclose(torch_boxes[10].numpy(), boxes[0], atol=1e-4)
    # network-input pixels -> image pixels (record format) through the letterbox
    img = np.zeros((1, 100, 50), np.float32)
    boxed, lb = letterbox(img, 200)
    assert boxed.shape == (1, 200, 200) and lb.scale == 2.0
    np.testing.assert_allclose(lb.to_image(np.array([[20, 40, 60, 100]])), [[10, 20, 30, 50]])
    # sides rounded to whole pixels: each axis goes back by its own factor, as training scaled it
    _, lb = letterbox(np.zeros((1, 350, 500), np.float32), 512)
    assert (lb.resized_height, lb.resized_width) == (358, 512) and lb.scale == 512 / 500
    ship = np.array([[400.0, 300.0, 415.0, 315.0]])
    as_trained = ship * np.array([512 / 500, 358 / 350, 512 / 500, 358 / 350])
    np.testing.assert_allclose(lb.to_image(as_trained), ship, atol=1e-3)


def test_training_view_without_augmentation_is_the_letterboxed_view():
    # the training resize (scale jitter 1, no flips) and the deployed letterbox give the same
    # pixels and the same box scaling
    from sarbridge.train.data.augment import _geometric
    from sarbridge.train.recipes.detect import DetAugment

    rng = np.random.default_rng(0)
    img = rng.random((2, 350, 500), dtype=np.float32)
    ship = np.array([[400.0, 300.0, 415.0, 315.0]], np.float32)
    still = DetAugment(flip=False, rot90=False, scale_min=1.0, scale_max=1.0)
    trained, boxes = _geometric(img, ship, rng, still, 512)
    deployed, lb = letterbox(img, 512)
    assert trained.shape == (2, 358, 512)
    np.testing.assert_array_equal(deployed[:, :358, :512], trained)
    np.testing.assert_allclose(lb.to_image(boxes), ship, atol=1e-3)
    # a side already at the input size is left as it is
    same, _ = _geometric(img[:, :, :350], ship, rng, still, 350)
    np.testing.assert_array_equal(same, img[:, :, :350])


def test_bin_expectation_is_the_softmax_mean_on_any_axis():
    logits = torch.randn(2, 4, 16, 3, 5) * 4
    values = torch.arange(16.0)
    want = (logits.softmax(2) * values.view(1, 1, -1, 1, 1)).sum(2)
    torch.testing.assert_close(bin_expectation(logits, values.view(1, 1, -1, 1, 1), 2), want)
    last = logits.movedim(2, -1)
    torch.testing.assert_close(bin_expectation(last, values, -1), want)


def test_assignment_gives_every_ship_positives():
    pts, strides = grid(128, (8, 16, 32), "cpu")
    gt = torch.tensor(
        [[40.0, 40.0, 46.0, 45.0], [10.0, 70.0, 110.0, 100.0]]
    )  # a tiny and a long ship
    boxes = torch.cat([pts - 8, pts + 8], 1)
    scores = torch.full((len(pts), 1), 0.5)
    fg, idx, target = task_aligned_assign(scores, boxes, pts, strides, gt, torch.tensor([0, 0]))
    assert set(idx[fg].tolist()) == {0, 1}
    assert (target[fg] > 0).all() and (target[~fg] == 0).all()


@pytest.mark.parametrize("box_bins", [0, 16])
def test_a_few_steps_on_real_ssdd_lower_the_loss(data, box_bins):
    from sarbridge.train.config import from_dict
    from sarbridge.train.data.augment import epoch_batches
    from sarbridge.train.data.detection import make_sets
    from sarbridge.train.engine import DistInfo
    from sarbridge.train.recipes.detect import DetConfig

    torch.manual_seed(0)
    cfg = from_dict(
        DetConfig, {"data": {"input_size": 192, "max_train_images": 8}, "optim": {"batch_size": 8}}
    )
    train, *_ = make_sets(cfg.data)
    x, targets = next(epoch_batches(cfg, train, 0, DistInfo(), "cpu"))
    assert sum(len(t["boxes"]) for t in targets) > 0
    model = build_detector("edge_det", box_bins=box_bins)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss, _ = detector_loss(model, x, targets, 192)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]


@pytest.mark.parametrize(
    ("name", "images", "steps", "optimizer"),
    [("yolov3_darknet53", 4, 8, "adamw"), ("faster_rcnn_r50_fpn", 2, 6, "sgd")],
)
def test_a_few_steps_on_real_ssdd_lower_the_loss_of_the_full_size_detectors(
    data, name, images, steps, optimizer
):
    # small inputs keep the full-size backbones to seconds a step on a CPU
    from sarbridge.train.config import from_dict
    from sarbridge.train.data.augment import epoch_batches
    from sarbridge.train.data.detection import make_sets
    from sarbridge.train.engine import DistInfo
    from sarbridge.train.recipes.detect import DetConfig

    torch.manual_seed(0)
    size = 128
    cfg = from_dict(
        DetConfig,
        {"data": {"input_size": size, "max_train_images": images}, "optim": {"batch_size": images}},
    )
    train, *_ = make_sets(cfg.data)
    x, targets = next(epoch_batches(cfg, train, 0, DistInfo(), "cpu"))
    assert sum(len(t["boxes"]) for t in targets) > 0
    model = build_detector(name, input_size=size)
    model.train()
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss, _ = detector_loss(model, x, targets, size)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-2:]) < 0.75 * losses[0], losses


def test_train_detect_run_resume_and_bnn_init(tmp_path, data, monkeypatch):
    """The shared trainer: run dir, EMA in the checkpoint, resume equal to uninterrupted, BNN init."""
    import json

    from sarbridge.runtime.fileio import sha256_file
    from sarbridge.train import engine
    from sarbridge.train.checkpoint import load_checkpoint, load_model
    from sarbridge.train.config import config_hash, from_dict
    from sarbridge.train.models.backbones import build_backbone, save_backbone_weights
    from sarbridge.train.recipes.detect import DetConfig, train_detector

    torch.manual_seed(1)
    sar_backbone = build_backbone("edge")
    save_backbone_weights(sar_backbone, tmp_path / "sar_backbone.pt", source="bnn")
    cfg = from_dict(
        DetConfig,
        {
            "name": "tiny",
            "threads": 1,
            "init": f"file:{tmp_path / 'sar_backbone.pt'}",
            "data": {"input_size": 128, "max_train_images": 16, "val_fraction": 0.02},
            "optim": {"epochs": 2, "batch_size": 8, "warmup_steps": 2},
        },
    )
    train_detector(cfg, tmp_path / "a", progress=False)
    full = load_checkpoint(tmp_path / "a" / "tiny")
    run = json.loads((tmp_path / "a" / "tiny" / "run.json").read_text())
    assert run["task"] == "detect" and full["task"] == "detect"
    (step,) = run["lineage"]  # a start from a file: one step, this run's own
    assert step["kind"] == "train" and step["name"] == "tiny" and step["init"] == "file"
    assert step["parent"] == {
        "name": "sar_backbone.pt",
        "sha256": sha256_file(tmp_path / "sar_backbone.pt"),
    }
    assert step["config_sha256"] == config_hash(cfg)
    # the run's test metrics are its lineage step's metrics
    assert step["metrics"]["test_AP50"] == run["final"]["test"]["AP50"]
    assert full["lineage"][0]["metrics"] == {}  # checkpoints are written before the test
    assert "ema" in full and len(run["history"]) == 2

    real_epoch = engine.Trainer._train_epoch
    calls = {"n": 0}

    def killed(self, plan, epoch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_epoch(self, plan, epoch)

    monkeypatch.setattr(engine.Trainer, "_train_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train_detector(cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(engine.Trainer, "_train_epoch", real_epoch)
    train_detector(cfg, tmp_path / "b", resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / "b" / "tiny")
    for key in ("model", "ema"):
        for k, v in full[key].items():
            torch.testing.assert_close(resumed[key][k], v, rtol=0, atol=0, msg=f"{key}.{k}")
    loaded = load_model(tmp_path / "b" / "tiny")
    model, loaded_cfg = loaded.model, loaded.config
    assert loaded_cfg == cfg and not model.training

    from sarbridge.benchmarks.research.det_nms_sweep import main as nms_sweep

    out = tmp_path / "nms.json"
    argv = [str(tmp_path / "b" / "tiny"), "--iou", "0.5", "0.7", "--vote-iou", "off", "0.6"]
    assert nms_sweep([*argv, "--tta-flips", "off", "h", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["split"], r["nms_iou"], r["vote_iou"], r["tta_flips"]) for r in rows] == [
        (split, iou, vote, flips)
        for flips in ([], ["h"])
        for iou in (0.5, 0.7)
        for vote in (None, 0.6)
        for split in ("val", "test")
    ]
    assert rows[0]["AP50_95"] != rows[8]["AP50_95"]  # the flipped view was merged in
    # the sweep at the run's own NMS IoU repeats the trainer's test score
    assert rows[1]["AP50"] == pytest.approx(run["final"]["test"]["AP50"], abs=1e-9)

    # a further schedule from the trained detector: every weight comes from its best checkpoint
    from dataclasses import replace

    from sarbridge.train.recipes.detect import initialise as initialise_from_detector
    from sarbridge.train.recipes.detect import model_from_config as build_from_cfg

    parent = tmp_path / "a" / "tiny"
    fresh = build_from_cfg(cfg, 1)
    steps, start = initialise_from_detector(fresh, replace(cfg, init=f"det:{parent}"), ["ship"])
    trained = load_model(parent).model
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert [s["name"] for s in steps] == ["tiny"] and start["init"] == "det"
    assert start["parent"] == {"name": "tiny", "sha256": sha256_file(parent / "best.pt")}
    with pytest.raises(SarbridgeError, match="width 32"):
        wider = replace(cfg, model=replace(cfg.model, width=32), init=f"det:{parent}")
        initialise_from_detector(build_from_cfg(wider, 1), wider, ["ship"])
    more = replace(cfg, name="tiny_more", init=f"det:{parent}", optim=replace(cfg.optim, epochs=1))
    train_detector(more, tmp_path / "a", progress=False)
    more_run = json.loads((tmp_path / "a" / "tiny_more" / "run.json").read_text())
    # the chain: the parent's own step (with its test metrics), then this run's
    assert [(s["kind"], s["name"]) for s in more_run["lineage"]] == [
        ("train", "tiny"),
        ("train", "tiny_more"),
    ]
    assert more_run["lineage"][0]["metrics"]["test_AP50"] == run["final"]["test"]["AP50"]
    assert more_run["lineage"][1]["parent"]["sha256"] == sha256_file(parent / "best.pt")


def test_yolo_decode_torch_numpy_agree_and_kmeans_anchors():
    from sarbridge.runtime.decode import decode_yolo, yolo_grid
    from sarbridge.train.models.yolov3 import decode_torch, kmeans_anchors

    model = build_detector("yolov3_darknet53", width=64)
    size = 64
    raw = model(torch.rand(1, 1, size, size))
    assert raw.shape == (1, sum((size // s) ** 2 * 3 for s in (8, 16, 32)), 6)
    cells, strides, anchors = yolo_grid(size, model.strides, model.anchors.numpy())
    r = np.random.default_rng(0).normal(0, 1, raw.shape[1:]).astype(np.float32)
    r[:, 4] = -20
    # one ship: cell (3, 2) at stride 8, first anchor (10 x 13), offsets 0.5 -> centre (28, 20)
    row = (2 * 8 + 3) * 3
    r[row, :4] = [0.0, 0.0, np.log(2.0), 0.0]
    r[row, 4:] = [8.0, 8.0]
    boxes, scores, labels = decode_yolo(r, cells, strides, anchors, 0.5)
    np.testing.assert_allclose(boxes[0], [28 - 10, 20 - 6.5, 28 + 10, 20 + 6.5], atol=1e-4)
    t = decode_torch(
        torch.from_numpy(r),
        torch.from_numpy(cells),
        torch.from_numpy(strides),
        torch.from_numpy(anchors),
    )
    np.testing.assert_allclose(t[row].numpy(), boxes[0], atol=1e-4)
    wh = np.concatenate(
        [np.random.default_rng(1).normal(c, 1.0, (50, 2)) for c in ((8, 8), (20, 40), (60, 30))]
    )
    a = kmeans_anchors(np.abs(wh), k=3)
    np.testing.assert_allclose(a, [[8, 8], [20, 40], [60, 30]], atol=2.0)  # sorted by area


@pytest.mark.slow
def test_training_without_validation_keeps_the_last_epoch(tmp_path, data):
    """data.val_fraction 0: every train image is trained on, best.pt is the last epoch."""
    import json

    from sarbridge.train.checkpoint import load_checkpoint
    from sarbridge.train.config import from_dict
    from sarbridge.train.data.detection import make_sets
    from sarbridge.train.recipes.detect import DetConfig, train_detector

    base = {
        "name": "noval",
        "threads": 1,
        "data": {"input_size": 128, "max_train_images": 16, "val_fraction": 0.0},
        "optim": {"epochs": 2, "batch_size": 8, "warmup_steps": 2},
    }
    cfg = from_dict(DetConfig, base)
    train, val, *_ = make_sets(cfg.data)
    assert len(val.records) == 0 and len(train.records) == 16
    report = train_detector(cfg, tmp_path, progress=False)
    run = json.loads((tmp_path / "noval" / "run.json").read_text())
    assert run["best"] == {"metric": "epoch", "value": 1}
    assert all(not any(k.startswith("val_") for k in r) for r in run["history"])
    best = load_checkpoint(tmp_path / "noval" / "best.pt")
    last = load_checkpoint(tmp_path / "noval" / "checkpoint.pt")
    assert best["epoch"] == last["epoch"] == 1 and report["best_epoch"] == 2
    for k, v in last["ema"].items():
        torch.testing.assert_close(best["ema"][k], v, rtol=0, atol=0)
    from sarbridge.benchmarks.research.det_nms_sweep import main as nms_sweep

    out = tmp_path / "nms.json"
    assert nms_sweep([str(tmp_path / "noval"), "--iou", "0.7", "--json", str(out)]) == 0
    assert [r["split"] for r in json.loads(out.read_text())["rows"]] == ["test"]
    with pytest.raises(SarbridgeError, match="val_fraction"):
        make_sets(from_dict(DetConfig, base | {"data": {"val_fraction": 1.0}}).data)


@pytest.mark.slow
def test_detector_trainer_under_ddp_two_gloo_processes(tmp_path, data):
    """The shared engine's DDP path through the detector trainer: 2 processes, one run directory."""
    import json

    import yaml
    from conftest import train_under_ddp

    (tmp_path / "tiny.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "ddp_det",
                "threads": 1,
                "data": {"input_size": 96, "max_train_images": 16, "val_fraction": 0.02},
                "optim": {"epochs": 1, "batch_size": 8, "warmup_steps": 2},
            }
        )
    )
    r = train_under_ddp("detect", tmp_path / "tiny.yaml", tmp_path, port=29534)
    assert r.returncode == 0, r.stderr[-3000:]
    run = json.loads((tmp_path / "ddp_det" / "run.json").read_text())
    assert run["world_size"] == 2 and run["status"] == "finished"
    assert len(run["history"]) == 1 and run["task"] == "detect"
    assert run["lineage"][-1]["metrics"]["test_AP50"] == run["final"]["test"]["AP50"]
    from sarbridge.train.checkpoint import load_model

    loaded = load_model(tmp_path / "ddp_det")  # rank 0's best.pt restores the trained model
    assert sum(p.numel() for p in loaded.model.parameters()) == run["final"]["parameters"]


def _bright_ship_image(h, w, boxes):
    img = np.zeros((1, h, w), np.float32)
    for x0, y0, x1, y1 in boxes.astype(int):
        img[:, y0:y1, x0:x1] = 1.0
    return img


def test_mosaic_keeps_boxes_on_their_ships_in_their_quadrants():
    from sarbridge.train.data.augment import _mosaic
    from sarbridge.train.recipes.detect import DetAugment

    items = []
    for k in range(4):
        boxes = np.array([[20, 30, 60, 50], [200, 100, 230, 180], [5, 250, 40, 290]], np.float32)
        boxes[:, [0, 2]] += 10 * k
        items.append((_bright_ship_image(300, 400, boxes), boxes, np.full(3, k, np.int64)))
    aug = DetAugment(scale_min=0.8, scale_max=1.2)
    seen_quadrant_labels = set()
    for seed in range(8):
        canvas, boxes, labels = _mosaic(items, np.random.default_rng(seed), aug, 256)
        assert canvas.shape == (1, 256, 256) and len(boxes) == len(labels)
        for (x0, y0, x1, y1), lab in zip(boxes, labels, strict=True):
            assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256
            inside = canvas[0, int(np.ceil(y0)) : int(y1), int(np.ceil(x0)) : int(x1)]
            assert inside.size == 0 or inside.mean() > 0.8  # a box still covers its ship
            seen_quadrant_labels.add(int(lab))
    assert seen_quadrant_labels == {0, 1, 2, 3}  # every quadrant's image contributes ships


def test_mosaic_and_multi_scale_batches_on_real_ssdd(data):
    from sarbridge.train.config import from_dict
    from sarbridge.train.data.augment import epoch_batches
    from sarbridge.train.data.detection import make_sets
    from sarbridge.train.engine import DistInfo
    from sarbridge.train.recipes.detect import DetConfig

    cfg = from_dict(
        DetConfig,
        {
            "data": {"input_size": 160, "max_train_images": 24},
            "augment": {"mosaic": 1.0, "close_mosaic": 1, "multi_scale": [0.6, 1.4]},
            "optim": {"batch_size": 4, "epochs": 3},
        },
    )
    train, *_ = make_sets(cfg.data)
    sides = set()
    for x, targets in epoch_batches(cfg, train, 0, DistInfo(), "cpu"):
        side = x.shape[-1]
        assert x.shape[-2] == side and side % 32 == 0 and 96 <= side <= 224
        sides.add(side)
        for t in targets:
            assert len(t["boxes"]) == len(t["labels"])
            if len(t["boxes"]):
                assert float(t["boxes"].max()) <= side
    assert len(sides) > 1
    # a mosaic sample holds ships of several images; mosaic is off in the closing epoch
    n0 = sum(
        len(t["boxes"]) for _, ts in epoch_batches(cfg, train, 0, DistInfo(), "cpu") for t in ts
    )
    n2 = sum(
        len(t["boxes"]) for _, ts in epoch_batches(cfg, train, 2, DistInfo(), "cpu") for t in ts
    )
    assert n0 > n2
    model = build_detector("edge_det")
    x, targets = next(epoch_batches(cfg, train, 0, DistInfo(), "cpu"))
    loss, _ = detector_loss(model, x, targets, x.shape[-1])
    assert torch.isfinite(loss)


def test_yolo_positives_best_anchor_and_similar_shapes_at_the_centre_cell():
    from sarbridge.train.losses.yolov3 import yolo_positives

    model = build_detector("yolov3_darknet53", width=64)
    model.set_anchors(
        [[4, 4], [8, 8], [10, 10], [20, 20], [30, 30], [40, 40], [80, 80], [90, 90], [100, 100]]
    )
    gt = torch.tensor([[20.0, 28.0, 30.0, 38.0], [100.0, 100.0, 190.0, 190.0]])  # 10 x 10, 90 x 90
    rows, ship = yolo_positives(model, gt, 256)
    A, sizes = 3, [32, 16, 8]
    offsets = np.cumsum([0] + [n * n * A for n in sizes])
    got = set()
    for r, s in zip(rows.tolist(), ship.tolist(), strict=True):
        level = int(np.searchsorted(offsets, r, side="right") - 1)
        cell, a = divmod(r - int(offsets[level]), A)
        cy, cx = divmod(cell, sizes[level])
        stride = (8, 16, 32)[level]
        centre = ((gt[s, :2] + gt[s, 2:]) / 2).tolist()
        assert (cx, cy) == (int(centre[0] // stride), int(centre[1] // stride))
        got.add((s, level * A + a))
    # ship 0 (10 x 10): anchors 8, 10 (IoU > 0.25) and 20 (IoU 0.25, not above) -> 1, 2
    assert {a for s, a in got if s == 0} == {1, 2}
    assert {a for s, a in got if s == 1} == {6, 7, 8}


@pytest.mark.parametrize("path", sorted(__import__("glob").glob("configs/det_*.yaml")))
def test_detector_configs_load_and_name_registered_models(path):
    from sarbridge.train.config import load_config
    from sarbridge.train.recipes.detect import DetConfig

    cfg = load_config(DetConfig, path)
    assert cfg.model.name in list_detectors()
    assert cfg.model.backbone is None or cfg.model.backbone in list_backbones()
    if cfg.augment.multi_scale:
        assert len(cfg.augment.multi_scale) == 2


def test_ema_ramp_follows_its_setting_and_averages_toward_the_weights():
    from sarbridge.train.engine import ModelEMA

    def averaged_after_a_jump(ramp_steps: int) -> tuple[float, float]:
        model = torch.nn.Linear(2, 1)
        with torch.no_grad():
            model.weight.zero_()
        ema = ModelEMA(model, decay=0.99, ramp_steps=ramp_steps)
        for _ in range(200):  # weights 0 while the decay ramps up
            ema.update(model)
        with torch.no_grad():
            model.weight.fill_(1.0)
        for _ in range(50):
            ema.update(model)
        return ema.current_decay(), float(ema.module.weight.mean())

    decay, w = averaged_after_a_jump(20)  # ramp done: 50 steps of 0.99 -> 1 - 0.99**50
    assert decay == pytest.approx(0.99, rel=1e-3)
    assert w == pytest.approx(1 - 0.99**50, abs=0.01)
    decay, w = averaged_after_a_jump(2000)  # a ramp far beyond the schedule barely averages
    assert decay < 0.12 and w > 0.999


def test_box_weight_scales_the_anchor_free_box_loss():
    torch.manual_seed(0)
    model = build_detector("edge_det", num_classes=1, input_size=96).train()
    x = torch.rand(2, 1, 96, 96)
    _, low = detector_loss(model, x, _targets(), 96, box_weight=1.0)
    _, high = detector_loss(model, x, _targets(), 96, box_weight=5.0)
    assert low["box"] == pytest.approx(high["box"], rel=1e-4)
    assert high["loss"] - high["cls"] == pytest.approx(5.0 * high["box"], rel=1e-3)
    assert low["loss"] - low["cls"] == pytest.approx(1.0 * low["box"], rel=1e-3)
    yolo = build_detector("yolov3_darknet53", num_classes=1, input_size=96)
    with pytest.raises(SarbridgeError, match="anchor-free detectors only"):
        detector_loss(yolo, x, _targets(), 96, box_weight=5.0)


def test_training_precision_and_layout_settings(data):
    """channels-last gives the same outputs up to rounding; bfloat16 autocast stays close to
    the float32 loss and trains."""
    from sarbridge.train.config import from_dict
    from sarbridge.train.data.augment import epoch_batches
    from sarbridge.train.data.detection import make_sets
    from sarbridge.train.engine import DistInfo, autocast_dtype
    from sarbridge.train.recipes.detect import DetConfig

    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("off", cpu) is None
    assert (
        autocast_dtype("fp32", cpu) is None and autocast_dtype("fp32", torch.device("cuda")) is None
    )
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("auto", torch.device("cuda")) is torch.bfloat16
    with pytest.raises(SarbridgeError, match="optim.amp must be"):
        autocast_dtype("fp8", cpu)

    cfg = from_dict(
        DetConfig, {"data": {"input_size": 160, "max_train_images": 8}, "optim": {"batch_size": 8}}
    )
    train, *_ = make_sets(cfg.data)
    x, targets = next(epoch_batches(cfg, train, 0, DistInfo(), "cpu"))
    torch.manual_seed(0)
    model = build_detector("edge_det").eval()
    raw_eval = model(x)
    raw_train = model.train()(x)  # (updates BatchNorm's running statistics)
    reference, _ = detector_loss(model, x, targets, 160)
    model.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)  # the same weights, untouched statistics, channels-last
    same_init = build_detector("edge_det").eval().to(memory_format=torch.channels_last)
    torch.testing.assert_close(same_init(x_cl), raw_eval, rtol=1e-4, atol=1e-4)
    # training-mode BatchNorm sums its batch statistics in another order: rounding only
    torch.testing.assert_close(model(x_cl), raw_train, rtol=1e-2, atol=2e-2)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(10):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = detector_loss(model, x_cl, targets, 160)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(reference.item(), rel=0.05)
    assert losses[-1] < 0.75 * losses[0]


def test_step_speed_benchmark_times_every_setting(data, tmp_path):
    import json

    from sarbridge.benchmarks.research.det_step_speed import SETTINGS, main

    out = tmp_path / "speed.json"
    assert main(["--size", "96", "--batch", "2", "--steps", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["amp"], r["channels_last"]) for r in rows] == list(SETTINGS)
    for r in rows:  # each row's figures are consistent with its own median step
        assert r["images_per_s"] == pytest.approx(2 / r["median_step_s"])
        assert r["speedup"] == pytest.approx(rows[0]["median_step_s"] / r["median_step_s"])
        assert np.isfinite(r["first_loss"])
    assert rows[0]["speedup"] == 1.0


def test_unreadable_images_are_reported_and_left_out_before_training(tmp_path, data, capsys):
    import json

    from sarbridge.train.config import from_dict
    from sarbridge.train.data.detection import make_sets
    from sarbridge.train.recipes.detect import DetConfig, train_detector
    from tests.conftest import mini_voc

    stems = [f"{i:06d}" for i in range(1, 11)]
    test_stems = ["000001", "000009"]
    train_stems = [s for s in stems if s not in test_stems]
    root = mini_voc(tmp_path / "voc", data, stems, {"test": test_stems, "train": train_stems})
    truncated = root / "JPEGImages" / "000003.jpg"
    truncated.write_bytes(truncated.read_bytes()[:2000])
    (root / "JPEGImages" / "000009.jpg").write_bytes(b"not a jpeg")

    cfg = from_dict(
        DetConfig,
        {
            "name": "bad_files",
            "threads": 1,
            "data": {"root": str(root), "input_size": 64, "val_fraction": 0},
            "optim": {"epochs": 1, "batch_size": 4, "warmup_steps": 1},
        },
    )
    train, _, test, _, summary = make_sets(cfg.data)
    assert summary["images"] == {"train": 7, "val": 0, "test": 1}
    assert "000003" not in {r.image_id for r in train.records}
    assert [r.image_id for r in test.records] == ["000001"]
    left_out = summary["left_out_unreadable"]
    assert len(left_out) == 2
    assert left_out[0].startswith("train:") and "000003.jpg" in left_out[0]
    assert left_out[1].startswith("test:") and "000009.jpg" in left_out[1]
    assert all("cannot decode" in line for line in left_out)
    assert "left out, unreadable: test:" in capsys.readouterr().out

    # the run goes on with the readable images and records what it left out
    train_detector(cfg, tmp_path / "runs", progress=False)
    run_text = (tmp_path / "runs" / "bad_files" / "run.json").read_text()
    assert "000009.jpg" in run_text and "000003.jpg" in run_text
    run = json.loads(run_text)
    # the final test score is the kept model's on the one readable test image
    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.evaluation import evaluate

    again = evaluate(load_model(tmp_path / "runs" / "bad_files").model, test, cfg, "cpu", ["ship"])
    assert run["final"]["test"]["AP50_95"] == pytest.approx(again["AP50_95"], abs=1e-9)
