"""Structured pruning (Torch-Pruning), distillation and compression recipes."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from torch import nn  # noqa: E402

from sarbridge.compress.prune import (  # noqa: E402
    PruneSettings,
    changed_layers,
    count_macs,
    prune,
    pruning_scope,
)
from sarbridge.compress.recipe import load_recipe  # noqa: E402
from sarbridge.compress.targets import CompressError  # noqa: E402


def _convs(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _onnx_matches(module, x, tmp_path, atol=1e-3):
    import onnxruntime as ort

    path = tmp_path / "pruned.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), str(path), opset_version=17, dynamo=False)
        expected = module(x)
    expected = list(expected.values()) if isinstance(expected, dict) else [expected]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {ort.InferenceSession(str(path)).get_inputs()[0].name: x.numpy()}
    )
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(e.numpy(), g, atol=atol, rtol=1e-3)


def _models():
    from sarbridge.train.models.bnn import BridgeNet
    from sarbridge.train.models.registry import build_detector

    torch.manual_seed(0)
    return {
        "edge_det": (build_detector("edge_det", box_bins=16), 256),
        "yolov3_darknet53": (build_detector("yolov3_darknet53"), 128),
        "faster_rcnn_r50_fpn": (build_detector("faster_rcnn_r50_fpn"), 128),
        "bnn_edge": (BridgeNet("edge", patch_size=128), 128),
    }


@pytest.mark.parametrize("name", ["edge_det", "yolov3_darknet53", "faster_rcnn_r50_fpn", "bnn_edge"])
def test_pruning_reaches_the_mac_ratio_keeps_protected_layers_and_exports(name, tmp_path):
    """Every registered detector and the BNN: MACs within 4 points of the
    target, narrowed convolutions a multiple of round_to, protected layers unchanged, a forward
    pass, and an ONNX export that ONNX Runtime runs to the same numbers."""
    model, size = _models()[name]
    model.eval()
    scope, protected = pruning_scope(model)
    x = torch.rand(1, 1, size, size)
    pruned, result = prune(model, x, PruneSettings(0.5, round_to=16), progress=False)
    # freshly initialised weights rank alike, so channels go in coarse steps: 5 points
    assert abs(result.macs_kept - 0.5) < 0.05, result.as_dict()
    macs, _ = count_macs(pruning_scope(pruned)[0], x)
    assert macs == result.macs_after < result.macs_before
    changed = changed_layers(model, pruned)
    assert changed and all(after % 16 == 0 for _, after in changed.values())
    names = {id(m): n for n, m in model.named_modules()}
    before = _convs(model) | {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    after = dict(pruned.named_modules())
    for layer in protected:
        n = names[id(layer)]
        assert after[n].weight.shape[0] == before[n].weight.shape[0], n
    assert count_macs(scope, x)[0] == result.macs_before  # the original is left as it was
    p_scope, _ = pruning_scope(pruned)
    with torch.no_grad():
        p_scope(x)
    _onnx_matches(p_scope if name in ("faster_rcnn_r50_fpn", "bnn_edge") else pruned, x, tmp_path)
    if name == "faster_rcnn_r50_fpn":  # the whole detector still detects
        with torch.no_grad():
            out = pruned(torch.rand(1, 1, size, size))
        assert set(out[0]) == {"boxes", "scores", "labels"}


def test_a_class_head_without_positive_weights_is_reported_with_its_ceiling():
    """ReLU features are never negative: a class-output convolution with no positive weight
    cannot score above the sigmoid of its bias, and that is what the check reports."""
    import copy

    from sarbridge.compress.prune import class_score_ceilings
    from sarbridge.train.checkpoint import load_model

    model = load_model("zoo:ssdd_edge_det").model
    assert class_score_ceilings(model) == {}  # the parent keeps positive evidence at every level
    capped = copy.deepcopy(model)
    with torch.no_grad():
        capped.cls_out[1].weight.copy_(-capped.cls_out[1].weight.abs())
    ceilings = class_score_ceilings(capped)
    assert list(ceilings) == [1]
    assert ceilings[1] == pytest.approx(float(torch.sigmoid(capped.cls_out[1].bias.max())))
    x = torch.rand(2, 1, 256, 256)
    feats = {}
    capped.cls_out[1].register_forward_hook(lambda m, i, o: feats.__setitem__("logits", o))
    with torch.no_grad():
        capped.eval()(x)
    assert float(torch.sigmoid(feats["logits"]).max()) <= ceilings[1] + 1e-6
    assert class_score_ceilings(nn.Conv2d(1, 1, 1)) == {}  # no class head: nothing to say


@pytest.mark.slow
def test_pruning_keeps_evidence_for_and_against_the_class_at_every_level():
    """Magnitude alone removes every channel with a positive class weight from the zoo detector
    at 30 % of its MACs (each level then scores below the sigmoid of its bias, whatever the
    image); class_evidence keeps that many channels of each sign per class output (all of a
    sign where the parent has fewer: the zoo detector's third level has 2 positive weights)."""
    from sarbridge.compress.prune import class_outputs, class_score_ceilings
    from sarbridge.train.checkpoint import load_model

    model = load_model("zoo:ssdd_edge_det").model
    x = torch.rand(1, 1, 512, 512)
    blind, _ = prune(model, x, PruneSettings(0.3, class_evidence=0), progress=False)
    assert sorted(class_score_ceilings(blind)) == [0, 1, 2]
    kept, result = prune(model, x, PruneSettings(0.3), progress=False)
    assert abs(result.macs_kept - 0.3) < 0.02, result.as_dict()
    assert class_score_ceilings(kept) == {}
    evidence = PruneSettings(0.3).class_evidence
    for parent, conv in zip(class_outputs(model), class_outputs(kept), strict=True):
        p, w = parent.weight.flatten(), conv.weight.flatten()
        assert conv.weight.shape[1] < parent.weight.shape[1]  # the level was pruned
        for sign in (1, -1):
            had, has = int((sign * p > 0).sum()), int((sign * w > 0).sum())
            assert has >= min(evidence, had), (sign, had, w)


@pytest.mark.parametrize(
    "how", [{"importance": "l2"}, {"importance": "bn"}, {"global_pruning": False},
            {"ratio_of": "channels"}],  # fmt: skip
)
def test_channels_of_both_signs_survive_where_the_importance_would_drop_them(how):
    """The channels feeding positive class weights made the weakest of their group (tower
    weights and BatchNorm scales shrunk): importance alone drops them all at every level, and
    class_evidence keeps that many of them, whatever the importance or ranking."""
    from sarbridge.compress.prune import class_outputs
    from sarbridge.train.models.registry import build_detector

    torch.manual_seed(0)
    model = build_detector("edge_det").eval()
    with torch.no_grad():
        for tower, head in zip(model.cls_towers, class_outputs(model), strict=True):
            positive = head.weight[0, :, 0, 0] > 0
            last = tower[-1]
            conv = next(m for m in last.modules() if isinstance(m, nn.Conv2d))
            bn = next(m for m in last.modules() if isinstance(m, nn.BatchNorm2d))
            conv.weight[positive] *= 1e-3
            bn.weight[positive] = 1e-3
            head.weight[0, positive] = head.weight[0, positive].abs() * 1e-3
    x = torch.rand(1, 1, 128, 128)

    def positives(settings):
        pruned, _ = prune(model, x, settings, progress=False)
        return [int((h.weight[0] > 0).sum()) for h in class_outputs(pruned)]

    assert positives(PruneSettings(0.4, class_evidence=0, **how)) == [0, 0, 0]
    assert all(n >= 3 for n in positives(PruneSettings(0.4, class_evidence=3, **how)))


def test_a_prune_run_recorded_before_class_evidence_resumes_as_importance_alone(tmp_path):
    from sarbridge.compress.finetune import _same_pruning

    old = {"ratio": 0.3, "ratio_of": "macs", "importance": "l2", "global_pruning": True,
           "round_to": 16, "max_layer_ratio": 0.9}  # fmt: skip
    step, parent = {"kind": "prune", "settings": old, "parent": {"sha256": "a"}}, {"sha256": "a"}
    _same_pruning(step, PruneSettings(0.3, class_evidence=0), parent, tmp_path)
    with pytest.raises(CompressError, match="was pruned with"):
        _same_pruning(step, PruneSettings(0.3), parent, tmp_path)


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.3])
def test_the_trained_zoo_detector_is_pruned_to_the_requested_macs(ratio):
    from sarbridge.train.checkpoint import load_model

    model = load_model("zoo:ssdd_edge_det").model
    _, result = prune(model, torch.rand(1, 1, 512, 512), PruneSettings(ratio), progress=False)
    assert abs(result.macs_kept - ratio) < 0.02, result.as_dict()


def test_ratio_of_channels_and_per_layer_pruning():
    """--ratio-of channels --no-global: every layer wide enough keeps the same share."""
    from sarbridge.train.models.registry import build_detector

    model = build_detector("edge_det").eval()
    x = torch.rand(1, 1, 128, 128)
    pruned, result = prune(
        model, x, PruneSettings(0.75, ratio_of="channels", global_pruning=False), progress=False
    )
    assert result.macs_after < result.macs_before
    protected = set(map(id, pruning_scope(model)[1]))
    after = _convs(pruned)
    wide = {n: m.out_channels for n, m in _convs(model).items()
            if id(m) not in protected and m.out_channels >= 64}  # fmt: skip
    assert wide and all(after[n].out_channels == 3 * c // 4 for n, c in wide.items())
    assert all(after % 16 == 0 for _, after in changed_layers(model, pruned).values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": 0}, "in \\(0, 1\\)"),
        ({"ratio": 1.0}, "in \\(0, 1\\)"),
        ({"ratio": -0.5}, "in \\(0, 1\\)"),
        ({"ratio": 0.5, "importance": "random"}, "--importance"),
        ({"ratio": 0.5, "ratio_of": "flops"}, "--ratio-of"),
        ({"ratio": 0.5, "round_to": 0}, "--round-to"),
        ({"ratio": 0.5, "class_evidence": -1}, "--class-evidence"),
        ({"ratio": 0.5, "class_evidence": 2.5}, "--class-evidence"),
        ({"ratio": 0.5, "class_evidence": True}, "--class-evidence"),
    ],
)
def test_bad_prune_settings_are_refused(kwargs, message):
    with pytest.raises(CompressError, match=message):
        PruneSettings(**kwargs)


def test_options_left_unset_take_the_settings_defaults_and_unknown_ones_are_refused():
    """The command line, recipes and compress() pass None for what the user did not set: the
    defaults come from PruneSettings alone."""
    from sarbridge.compress.settings import prune_default, prune_settings

    got = prune_settings(0.3, round_to=None, class_evidence=None, importance="bn")
    assert got == PruneSettings(0.3, importance="bn")
    assert (got.round_to, got.class_evidence) == (prune_default("round_to"), prune_default("class_evidence"))
    assert got.class_evidence > 0 and got.global_pruning is True
    with pytest.raises(CompressError, match="unknown prune settings \\['bits'\\]"):
        prune_settings(0.3, bits=4)


def test_a_model_without_a_pruning_scope_is_refused():
    with pytest.raises(CompressError, match="does not declare what may be pruned"):
        prune(nn.Sequential(nn.Conv2d(1, 8, 3)), torch.rand(1, 1, 16, 16), PruneSettings(0.5))


# ---------------------------------------------------------------- distillation


def _real_batch(data, size=256, count=4):
    from sarbridge.runtime.decode import letterbox
    from sarbridge.train.config import from_dict
    from sarbridge.train.data.detection import make_sets
    from sarbridge.train.recipes.detect import DetConfig

    cfg = from_dict(DetConfig, {"data": {"input_size": size, "max_train_images": count,
                                         "val_fraction": 0.0}})  # fmt: skip
    train = make_sets(cfg.data)[0]
    xs, targets = [], []
    for k in range(count):
        image, lb = letterbox(train.image(k), size)
        xs.append(image)
        boxes = np.asarray(train.records[k].boxes, np.float32).reshape(-1, 4)
        sx, sy = lb.resized_width / lb.width, lb.resized_height / lb.height
        boxes = boxes * np.array([sx, sy, sx, sy], np.float32)  # padding is bottom/right
        targets.append({"boxes": torch.from_numpy(boxes),
                        "labels": torch.zeros(len(boxes), dtype=torch.long)})  # fmt: skip
    return torch.from_numpy(np.stack(xs)), targets


def _distil_steps(distiller, student, x, targets, size: int, steps: int) -> list[float]:
    """``steps`` AdamW steps of the student (and the adapters) on the distillation loss; the
    distillation terms (soft classes + box distributions + neck features) before each step."""
    student.train()
    opt = torch.optim.AdamW([*student.parameters(), *distiller.adapters.parameters()], lr=1e-3)
    kd = []
    for _ in range(steps):
        loss, logs = distiller.loss(student, x, targets, size)
        kd.append(logs["kd_cls"] + logs["kd_box"] + logs["kd_feat"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return kd


def test_distillation_lowers_the_distillation_loss_on_real_images(data):
    """The zoo detector teaches its pruned copy: on a batch of real SSDD train images the
    distillation terms (soft classes, box distributions, neck features) fall in a few steps."""
    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.losses.distill import Distiller

    teacher = load_model("zoo:ssdd_edge_det").model
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, targets = _real_batch(data)
    student, _ = prune(teacher, x[:1], PruneSettings(0.5), progress=False)
    distiller = Distiller(teacher, student, 256)
    assert distiller.use_ld and "LD" in distiller.describe()
    kd = _distil_steps(distiller, student, x, targets, 256, 6)
    assert kd[-1] < 0.8 * kd[0], kd
    for k, v in teacher.state_dict().items():  # weights and BatchNorm statistics untouched
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_a_wider_teacher_scale_teaches_the_board_detector(data, tmp_path):
    """The m-scale edge detector (``edge_m`` backbone, neck 192: a teacher for a GPU) exports to
    ONNX like the board model, and teaches the zoo detector through 1x1 adapters (64 -> 192
    channels per neck level) with its box distributions: the distillation terms fall."""
    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.losses.distill import Distiller
    from sarbridge.train.models.registry import build_detector

    torch.manual_seed(0)
    teacher = build_detector("edge_det", backbone="edge_m", width=192, box_bins=16).eval()
    student = load_model("zoo:ssdd_edge_det").model
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(teacher) > 8 * n(student)
    _onnx_matches(teacher, torch.rand(1, 1, 128, 128), tmp_path)
    x, targets = _real_batch(data, size=128, count=2)
    distiller = Distiller(teacher, student, 128)
    assert [(a.in_channels, a.out_channels) for a in distiller.adapters] == [(64, 192)] * 3
    assert distiller.use_ld
    kd = _distil_steps(distiller, student, x, targets, 128, 5)
    assert kd[-1] < 0.95 * kd[0], kd  # an untrained teacher, far from the student: slowly


@pytest.mark.parametrize("flip", ["h", "v", "hv"])
@pytest.mark.parametrize("bins", [0, 16])
def test_a_flipped_views_outputs_map_back_onto_the_plain_grid(flip, bins):
    """unflip_raw puts a flipped view's raw output in the plain view's layout: every grid
    point's boxes (decoded at the plain grid's centres) and scores are the ones the flipped view
    found at the mirrored point, mapped back as test-time flips map boxes (unflip_boxes)."""
    from sarbridge.runtime.decode import FLIP_AXES, unflip_boxes
    from sarbridge.train.losses.distill import unflip_raw
    from sarbridge.train.models.edge_det import box_distributions, decode_boxes, grid
    from sarbridge.train.models.registry import build_detector

    torch.manual_seed(0)
    model = build_detector("edge_det", box_bins=bins).eval()
    for conv in [*model.reg_out, *model.cls_out]:  # sides and cells that differ from each other
        nn.init.normal_(conv.weight, std=0.5)
        nn.init.normal_(conv.bias, std=1.0)
    size = 96
    x = torch.rand(2, 1, size, size)
    with torch.no_grad():
        raw_f = model(x.flip(FLIP_AXES[flip]))  # log-distances, C logits
        with box_distributions(model):
            bins_f = model(x.flip(FLIP_AXES[flip])) if bins else raw_f
    points, strides = grid(size, model.strides, "cpu")
    mapped = unflip_raw(raw_f, flip, (size, size), model.strides, 4)
    boxes = decode_boxes(mapped[..., :4], points, strides)  # [B, N, 4] at the plain grid
    found = decode_boxes(raw_f[..., :4], points, strides)  # where the flipped view put them
    # the point of the flipped view that each plain grid point mirrors (row-major levels)
    source, offset = [], 0
    for stride in model.strides:
        n = size // stride
        rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        rows = n - 1 - rows if "v" in flip else rows
        cols = n - 1 - cols if "h" in flip else cols
        source.append(offset + rows.ravel() * n + cols.ravel())
        offset += n * n
    source = np.concatenate(source)
    assert sorted(source) == list(range(offset)) and (source != np.arange(offset)).any()
    for b in range(2):
        expected = unflip_boxes(found[b].numpy()[source], flip, size)
        np.testing.assert_allclose(boxes[b].numpy(), expected, atol=1e-3)
    np.testing.assert_array_equal(mapped[..., 4:].numpy(), raw_f[:, source, 4:].numpy())
    if bins:  # bin logits follow their box sides
        width = 4 * bins
        mapped_bins = unflip_raw(bins_f, flip, (size, size), model.strides, width)
        sides = model.expected_distance(
            mapped_bins[..., :width].unflatten(-1, (4, bins)).permute(0, 2, 3, 1)[..., None]
        )[..., 0].permute(0, 2, 1)  # [B, N, 4] distances in strides
        np.testing.assert_allclose(sides.log().numpy(), mapped[..., :4].numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="does not divide"):
        unflip_raw(raw_f, flip, (size + 4, size), model.strides, 4)


def test_a_flip_ensemble_teacher_averages_its_views_and_teaches(data):
    """With teacher_flips the targets are the mean over the plain and flipped views (class
    probabilities averaged, then as logits; DFL bin logits averaged): the distiller's class and
    box-distribution terms are the ones of those averaged targets, which differ from the plain
    view's, and the distillation terms still fall."""
    from sarbridge.runtime.decode import FLIP_AXES
    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.losses.distill import (
        Distiller,
        flip_ensemble,
        localization_loss,
        soft_class_loss,
        unflip_raw,
    )
    from sarbridge.train.models.edge_det import box_distributions

    teacher = load_model("zoo:ssdd_edge_det").model
    x, targets = _real_batch(data)
    student, _ = prune(teacher, x[:1], PruneSettings(0.5), progress=False)
    plain = Distiller(teacher, student, 256)
    flips = Distiller(teacher, student, 256, teacher_flips=("h", "v", "hv"))
    assert "flips h,v,hv" in flips.describe() and flips.use_ld
    views = [torch.randn(2, 10, 6) for _ in range(3)]
    mean = flip_ensemble(views, 4)
    torch.testing.assert_close(mean[..., :4], torch.stack(views)[..., :4].mean(0))
    probs = torch.stack(views)[..., 4:].sigmoid()
    torch.testing.assert_close(mean[..., 4:].sigmoid(), probs.mean(0), atol=1e-5, rtol=0)
    # the targets the distiller uses, computed here view by view (bin logits, as LD reads them)
    bins = teacher.box_bins
    width = 4 * bins
    student.eval()  # BatchNorm on running statistics: the same student outputs every call
    with torch.no_grad(), box_distributions(student), box_distributions(teacher):
        s_raw = student(x)
        t_views = [teacher(x)] + [
            unflip_raw(teacher(x.flip(FLIP_AXES[f])), f, (256, 256), teacher.strides, width)
            for f in ("h", "v", "hv")
        ]
    t_mean = flip_ensemble(t_views, width)
    assert (t_mean[..., width:].sigmoid() - t_views[0][..., width:].sigmoid()).abs().max() > 0.05

    def expected(t_raw):
        t_logits = t_raw[..., width:]
        cls = soft_class_loss(s_raw[..., width:], t_logits)
        box = localization_loss(
            s_raw[..., :width].unflatten(-1, (4, bins)), t_raw[..., :width].unflatten(-1, (4, bins)),
            t_logits.sigmoid().amax(-1), plain.temperature,
        )  # fmt: skip
        return float(cls), float(box)

    for distiller, t_raw in ((flips, t_mean), (plain, t_views[0])):
        _, logs = distiller.loss(student, x, targets, 256)
        cls, box = expected(t_raw)
        assert logs["kd_cls"] == pytest.approx(cls, rel=1e-4)
        assert logs["kd_box"] == pytest.approx(box, rel=1e-4)
    assert expected(t_mean)[1] != pytest.approx(expected(t_views[0])[1], rel=1e-3)
    student.train()
    kd = _distil_steps(flips, student, x, targets, 256, 6)
    assert kd[-1] < 0.8 * kd[0], kd


def test_teacher_flips_are_refused_without_a_teacher_or_off_the_stride_grid(tmp_path):
    from sarbridge.runtime.errors import SarbridgeError
    from sarbridge.train.config import ConfigError, from_dict
    from sarbridge.train.models.registry import build_detector
    from sarbridge.train.recipes.detect import DetConfig, load_teacher

    with pytest.raises(ConfigError, match="teacher_flips needs distill.teacher"):
        from_dict(DetConfig, {"distill": {"teacher_flips": ["h"]}})
    cfg = from_dict(DetConfig, {"data": {"input_size": 200},
                                "distill": {"teacher": "zoo:ssdd_edge_det", "teacher_flips": ["v"]}})  # fmt: skip
    with pytest.raises(SarbridgeError, match="multiple of the largest stride \\(32\\)"):
        load_teacher(cfg, build_detector("edge_det", box_bins=16), ["ship"])


def test_a_teacher_that_is_not_an_edge_detector_is_refused():
    from sarbridge.runtime.errors import SarbridgeError
    from sarbridge.train.losses.distill import Distiller
    from sarbridge.train.models.registry import build_detector

    student = build_detector("edge_det")
    with pytest.raises(SarbridgeError, match="edge detectors"):
        Distiller(build_detector("yolov3_darknet53"), student, 128)
    with pytest.raises(SarbridgeError, match="class set"):
        Distiller(build_detector("edge_det", num_classes=3), student, 128)


# ---------------------------------------------------------------- the command and recipes


def _tiny_run(edge_artifact):
    return edge_artifact.parent.parent / "runs" / "tiny_edge"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "prune", "--ratio", "1.5"], "in (0, 1)"),
        (["--method", "prune", "--ratio", "0"], "in (0, 1)"),
        (["--method", "prune"], "needs --ratio"),
        (["--method", "distill"], "needs --teacher"),
        (["--method", "distill", "--teacher", "zoo:bnn_edge_sar"], "holds a bnn model"),
        (["--method", "finetune", "--teacher", "zoo:ssdd_edge_det"],
         "--method finetune does not take --teacher (taken by prune, distill)"),
        (["--method", "finetune", "--epochs", "0"], "--epochs must be at least 1"),
        (["--method", "prune", "--ratio", "0.5", "--epochs", "0", "--teacher", "zoo:ssdd_edge_det"],
         "--teacher needs --epochs"),
        (["--method", "prune", "--ratio", "0.5", "--from", "zoo:bnn_edge_sar"], "--epochs 0"),
        (["--method", "finetune", "--teacher-flips", "h"], "does not take --teacher-flips"),
        (["--method", "distill", "--teacher-flips", "h"], "needs --teacher"),
        # an option of another method is refused, not ignored
        (["--method", "int8", "--teacher", "zoo:ssdd_edge_det"],
         "--method int8 does not take --teacher (taken by prune, distill)"),
        (["--method", "fp16", "--epochs", "3", "--no-global"],
         "--method fp16 does not take --epochs (taken by prune, distill, finetune, qat); "
         "--global (taken by prune)"),
        (["--method", "distill", "--teacher", "zoo:ssdd_edge_det", "--ratio", "0.5"],
         "does not take --ratio (taken by prune)"),
        (["--method", "qat", "--round-to", "8"], "--method qat does not take --round-to"),
        (["--method", "prune", "--ratio", "0.5", "--target", "tensorrt", "--max-ap-drop", "0.02"],
         "--method prune does not take --target (taken by int8, qat); --max-ap-drop (taken by "
         "int8, qat)"),
        (["--method", "fp16", "--seed", "1"], "--method fp16 does not take --seed"),
        (["--method", "distill", "--teacher", "zoo:ssdd_edge_det", "--teacher-flips", "x"],
         "test-time flips are distinct names"),
        # --set: the fine-tuning config's keys, checked before anything is written
        (["--method", "finetune", "--set", "optim.lr=0.1"],
         "--set optim.lr: not settable in a compress step: use --lr"),
        (["--method", "finetune", "--set", "model.width=32"], "the model is the parent's"),
        (["--method", "finetune", "--set", "seed=3"], "step: use --seed"),
        (["--method", "finetune", "--set", "optim.schedul=cyclic"],
         "unknown config keys ['optim.schedul']"),
        (["--method", "finetune", "--set", "optim.ema=maybe"], "'optim.ema' must be true or false"),
        (["--method", "finetune", "--epochs", "4", "--set", "optim.swa_epochs=6"],
         "optim.swa_epochs must be between 0 and optim.epochs (4)"),
        (["--method", "finetune", "--set", "augment.mosaic"], "must look like section.key=value"),
        (["--method", "finetune", "--set", "optim={lr: 0.1}"], "--set optim: a whole section"),
        (["--method", "finetune", "--set", "augment={mosaic: 1}"],
         "'augment' is a whole section; set its keys one by one"),
        (["--method", "finetune", "--set", "data.preprocess.clip_high=99"],
         "trained on its preprocessing"),
        (["--method", "prune", "--ratio", "0.5", "--epochs", "0", "--set", "augment.mosaic=1"],
         "--set changes the fine-tuning config: it needs --epochs"),
        (["--method", "int8", "--set", "augment.mosaic=1"],
         "--method int8 does not take --set (taken by prune, distill, finetune)"),
    ],
)
def test_bad_prune_and_distill_requests_write_nothing(tmp_path, capsys, args, message):
    from sarbridge.cli import main

    out = tmp_path / "runs" / "out"
    assert main(["compress", *args, "--out", str(out), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_options_of_a_single_command_are_refused_with_a_recipe(tmp_path, capsys, monkeypatch):
    """A recipe's steps carry their options: --teacher, --method, --ratio ... beside --recipe are
    refused, not ignored, and so is --overwrite; --from replaces the recipe's source."""
    import yaml

    from sarbridge.cli import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "r.yaml"
    steps = [{"method": "int8"}, {"method": "prune", "ratio": 0.5}]
    path.write_text(yaml.safe_dump({"name": "chain", "steps": steps}))  # no source
    for extra in (
        ["--teacher", "zoo:ssdd_edge_det"], ["--method", "int8"], ["--ratio", "0.5"],
        ["--target", "openvino"], ["--calibration-images", "64"], ["--seed", "1"],
        ["--overwrite"],  # a recipe replaces none of its outputs
    ):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(["compress", "--recipe", str(path), *extra])
        assert exit_.value.code == 2
        assert f"{extra[0]}: not with --recipe" in capsys.readouterr().err
    assert main(["compress", "--recipe", str(path)]) == 2
    assert "no source" in capsys.readouterr().err
    # the source given on the command line is the recipe's: its chain is checked next
    assert main(["compress", "--recipe", str(path), "--from", "zoo:ssdd_edge_det"]) == 2
    assert "pruning after quantization" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_a_teacher_of_another_class_set_is_refused(edge_artifact, tmp_path, capsys):
    from sarbridge.cli import main
    from sarbridge.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(_tiny_run(edge_artifact) / "best.pt")
    ckpt["classes"] = ["tanker"]
    torch.save(ckpt, tmp_path / "other_classes.pt")
    out = tmp_path / "runs" / "kd"
    args = ["compress", "--method", "distill", "--from", str(_tiny_run(edge_artifact)),
            "--teacher", str(tmp_path / "other_classes.pt"), "--out", str(out)]  # fmt: skip
    assert main(args) == 2
    assert "class set" in capsys.readouterr().err and not out.exists()


def _write_recipe(path, source, steps):
    import yaml

    path.write_text(yaml.safe_dump({"name": "chain", "source": str(source), "steps": steps}))
    return path


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"method": "int8"}, {"method": "prune", "ratio": 0.5}], "pruning after quantization"),
        ([{"method": "qat"}, {"method": "int8"}], "PTQ after QAT"),
        ([{"method": "fp16"}, {"method": "distill", "teacher": "source"}], "training after"),
        ([{"method": "int8"}, {"method": "finetune"}], "training after quantization"),
        ([{"method": "sparsify"}], "method 'sparsify' does not exist"),
        ([{"method": "prune", "ratio": 0.5, "bits": 4}], "unknown options \\['bits'\\]"),
        ([{"method": "prune"}], "needs a ratio"),
        ([{"method": "prune", "ratio": 0.5, "epochs": 0}, {"method": "prune", "ratio": 2}],
         "step 2 \\(prune\\): --ratio must be in"),
        ([{"method": "finetune", "epochs": 0}], "at least 1"),
        ([{"method": "int8", "target": "coreml"}], "unknown INT8 target"),
        ([{"method": "distill", "teacher": "source", "teacher_flips": ["h", "r90"]}],
         "step 1 \\(distill\\): teacher_flips: test-time flips"),
        ([{"method": "finetune", "teacher_flips": "h"}], "unknown options \\['teacher_flips'\\]"),
        ([{"method": "prune", "ratio": 0.5, "teacher_flips": "h"}], "teacher_flips needs a teacher"),
        ([{"method": "finetune", "set": {"optim.lr": 0.1}}], "set optim.lr: .*use --lr"),
        ([{"method": "distill", "teacher": "source", "set": {"augment.mosaic": "lots"}}],
         "step 1 \\(distill\\): set: 'augment.mosaic' must be a number"),
        ([{"method": "finetune", "epochs": 4, "set": {"optim.swa_epochs": 6}}],
         "optim.swa_epochs must be between 0 and optim.epochs \\(4\\)"),
        ([{"method": "prune", "ratio": 0.5, "epochs": 0, "set": {"augment.mosaic": 1}}],
         "it needs epochs of at least 1"),
        ([{"method": "finetune", "set": "augment.mosaic=1"}], "set: a mapping"),
        ([{"method": "finetune", "set": {"augment": {"mosaic": 1}}}], "a whole section"),
        ([{"method": "int8", "set": {"augment.mosaic": 1}}], "unknown options \\['set'\\]"),
        ([], "non-empty list"),
    ],
)
def test_refused_recipes_name_the_rule_and_write_nothing(tmp_path, steps, message):
    from sarbridge.compress.recipe import run_recipe_file

    path = _write_recipe(tmp_path / "r.yaml", "zoo:ssdd_edge_det", steps)
    with pytest.raises(CompressError, match=message):
        load_recipe(path)
    with pytest.raises(CompressError, match=message):
        run_recipe_file(path, runs_dir=tmp_path / "runs", artifacts_dir=tmp_path / "art")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_a_bnn_is_pruned_without_fine_tuning_and_restores(tmp_path):
    """The zoo BNN's SAR branch pruned to 60 % of its MACs (--epochs 0): a run whose checkpoint
    load_model restores, its footprint the SAR branch's, its 50-d head unchanged."""
    from sarbridge.compress.api import compress
    from sarbridge.train.checkpoint import load_model

    out = tmp_path / "runs" / "bnn_p60"
    c = compress("prune", "zoo:bnn_edge_sar", out, ratio=0.6, epochs=0, threads=1, progress=False)
    assert abs(c["child"]["macs"] / c["parent"]["macs"] - 0.6) < 0.03
    pruned = load_model(out)
    assert pruned.task == "bnn" and pruned.lineage[-1]["kind"] == "prune"
    assert pruned.model.sar.head.fc.out_features == 50
    side = pruned.config.data.input_size
    with torch.no_grad():
        z = pruned.model.sar(torch.rand(2, 1, side, side))
    assert z.shape == (2, 50)


@pytest.mark.slow
def test_a_resumed_prune_must_be_the_same_pruning_and_overwrite_checks_first(
    edge_artifact, tmp_path
):
    from sarbridge.compress.api import compress

    run = _tiny_run(edge_artifact)
    out = tmp_path / "runs" / "p60"
    kw = dict(epochs=0, threads=1, progress=False)
    compress("prune", run, out, ratio=0.6, **kw)
    (out / "checkpoint.pt").unlink()  # as if killed after pruning, before fine-tuning
    with pytest.raises(CompressError, match="was pruned with"):
        compress("prune", run, out, ratio=0.5, resume=True, **kw)
    with pytest.raises(CompressError, match="holds a bnn model"):  # refused before removing
        compress("distill", run, out, teacher="zoo:bnn_edge_sar", overwrite=True, **{**kw, "epochs": 1})
    assert (out / "pruned.pt").is_file()


def test_the_shipped_recipes_are_valid():
    from pathlib import Path

    shipped = sorted(Path(__file__).parents[1].glob("configs/compress_*.yaml"))
    assert {p.stem for p in shipped} >= {
        "compress_edge_int8", "compress_edge_prune50_kd_int8", "compress_edge_prune30_steps_kd",
        "compress_edge_prune20_kd_int8",
    }
    for path in shipped:
        assert load_recipe(path).steps


@pytest.mark.slow
def test_a_recipe_killed_between_steps_resumes_and_ends_like_an_uninterrupted_one(
    edge_artifact, tmp_path, monkeypatch
):
    """prune (no fine-tuning) -> distill 1 epoch from the unpruned source -> fp16 on the tiny
    run: killed after step 1, started again with --resume, it skips step 1 and ends with the
    same distilled weights and artifact as a recipe run without interruption. The pruned run
    restores with load_model and its export matches PyTorch (parity in its manifest)."""
    import sarbridge.compress.api as api
    from sarbridge.compress.recipe import run_recipe_file
    from sarbridge.export.onnx_export import export_run
    from sarbridge.train.checkpoint import load_model

    source = _tiny_run(edge_artifact)
    steps = [
        {"method": "prune", "ratio": 0.6, "epochs": 0},
        # a step's config changed by set (the schedule and augmentation a user may choose)
        {"method": "distill", "teacher": "source", "epochs": 1,
         "set": {"augment.mosaic": 0.5, "distill.feature_weight": 2.0}},
        {"method": "fp16"},
    ]
    recipe = _write_recipe(tmp_path / "chain.yaml", source, steps)
    kw = dict(threads=1, progress=False)

    plain = run_recipe_file(recipe, runs_dir=tmp_path / "a" / "runs",
                            artifacts_dir=tmp_path / "a" / "art", **kw)  # fmt: skip
    real, calls = api.compress, []

    def killed_after_step_1(method, *args, **kwargs):
        calls.append(method)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(method, *args, **kwargs)

    monkeypatch.setattr(api, "compress", killed_after_step_1)
    b_runs, b_art = tmp_path / "b" / "runs", tmp_path / "b" / "art"
    with pytest.raises(KeyboardInterrupt):
        run_recipe_file(recipe, runs_dir=b_runs, artifacts_dir=b_art, **kw)
    monkeypatch.setattr(api, "compress", real)
    with pytest.raises(CompressError, match="--resume"):
        run_recipe_file(recipe, runs_dir=b_runs, artifacts_dir=b_art, **kw)
    resumed = run_recipe_file(recipe, runs_dir=b_runs, artifacts_dir=b_art, resume=True, **kw)

    assert [s["method"] for s in resumed["steps"]] == ["prune", "distill", "fp16"]
    for a, b in zip(plain["steps"], resumed["steps"], strict=True):
        assert a["result"].get("child", {}).get("test") == b["result"].get("child", {}).get("test")
    wa = load_model(tmp_path / "a" / "runs" / "chain" / "2_distill").model.state_dict()
    wb = load_model(b_runs / "chain" / "2_distill").model.state_dict()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k])
    pruned = load_model(b_runs / "chain" / "1_prune")
    kinds = [s["kind"] for s in load_model(b_runs / "chain" / "2_distill").lineage]
    assert kinds[-2:] == ["prune", "distill"]
    assert pruned.model.lat3[0].out_channels < load_model(source).model.lat3[0].out_channels
    manifest = export_run(b_runs / "chain" / "1_prune", tmp_path / "pruned_onnx", parity_images=4)
    assert manifest["metrics"]["parity_max_abs_diff"] < 1e-3
    config = json.loads((b_runs / "chain" / "2_distill" / "run.json").read_text())["config"]
    assert config["augment"]["mosaic"] == 0.5 and config["distill"]["feature_weight"] == 2.0
    assert config["distill"]["teacher"] == str(source) and config["optim"]["epochs"] == 1
    compare = json.loads((b_runs / "chain" / "1_prune" / "run.json").read_text())["compare"]
    assert compare["child"]["macs"] < compare["parent"]["macs"]
    fp16 = json.loads((b_art / "chain" / "3_fp16" / "manifest.json").read_text())
    assert fp16["lineage"][-3]["kind"] == "distill"


def _gpu_teachers(tmp_path, **env):
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "gpu_teachers.sh"
    run_env = {**os.environ, "DRY": "1", "OUT": str(tmp_path / "out"), **env}
    return subprocess.run(
        ["bash", str(script)], cwd=tmp_path, env=run_env, capture_output=True, text=True
    )


def test_the_gpu_students_stage_runs_each_teacher_kind_and_refuses_bad_lists(tmp_path):
    """The device script's dry run: 'parent' distils from the zoo detector, 'none' is the plain
    fine-tuning control, each named by its kind, ratio and seed; a bad teacher or more students
    than the return holds is refused; a dry run writes nothing."""
    done = _gpu_teachers(
        tmp_path, STAGE="students", RATIO="0.3", STUDENTS="parent:0 none:1", STUDENT_EPOCHS="30"
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "--method" in line]
    assert any(
        "--method distill --teacher zoo:ssdd_edge_det --from runs/edge_p30" in line
        and "--seed 0" in line and "runs/edge_p30_kdparent30_s0_gpu" in line
        for line in lines
    ), lines  # fmt: skip
    ft = [line for line in lines if "--method finetune" in line]
    assert len(ft) == 1 and "--teacher" not in ft[0] and "runs/edge_p30_ft30_s1_gpu" in ft[0]
    assert not list(tmp_path.iterdir())
    bad = _gpu_teachers(tmp_path, STAGE="students", STUDENTS="yolo:0")
    assert bad.returncode == 2 and "the teacher is m, parent or none" in bad.stderr
    many = _gpu_teachers(tmp_path, STAGE="students", STUDENTS="m:0 m:1 parent:0 parent:1 none:0")
    assert many.returncode == 2 and "at most 4" in many.stderr


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_fine_tuning_keeps_bf16_steps_only_where_the_cpu_has_them(monkeypatch, native, expected):
    """The zoo detector trained with bfloat16 steps on a CPU with AVX512-BF16; on a CPU that
    would emulate them (many times slower) its fine-tuning runs in float32."""
    import dataclasses

    from sarbridge.compress import finetune
    from sarbridge.train import engine
    from sarbridge.train.checkpoint import load_model

    cfg = load_model("zoo:ssdd_edge_det").config
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, amp="bf16"))
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    tuned = finetune._finetune_config(cfg, "student", 2, 1e-3, 0, None)
    assert tuned.optim.amp == expected and tuned.optim.epochs == 2


def test_set_changes_the_fine_tuning_config_and_a_resume_must_ask_for_the_same(tmp_path):
    """--set reaches the step's config over the parent's and the step's own schedule (here a
    weight-averaging one); resuming a run with other training settings than it started with is
    refused, naming each one that differs; the same settings resume."""
    from sarbridge.compress import finetune
    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.config import to_dict

    parent = load_model("zoo:ssdd_edge_det").config
    assert parent.augment.mosaic == 0.0
    overrides = ["augment.mosaic=1.0", "optim.schedule=cyclic", "optim.swa_epochs=3",
                 "optim.ema=false"]  # fmt: skip
    cfg = finetune._finetune_config(parent, "student", 3, 1e-3, 0, None, amp="fp32",
                                    overrides=overrides)  # fmt: skip
    assert (cfg.augment.mosaic, cfg.optim.schedule, cfg.optim.swa_epochs, cfg.optim.ema) == (
        1.0, "cyclic", 3, False)  # fmt: skip
    plain = finetune._finetune_config(parent, "student", 3, 1e-3, 0, None, amp="fp32")
    assert (plain.augment.mosaic, plain.optim.schedule, plain.optim.ema) == (0.0, "cosine", True)
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.data) == (plain.optim.lr, 3, plain.data)

    run = tmp_path / "student"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config": to_dict(cfg)}))
    finetune._check_resumed_config(run, cfg)  # the same settings resume
    with pytest.raises(CompressError) as refused:
        finetune._check_resumed_config(run, plain)
    message = str(refused.value)
    for part in ('augment.mosaic=1.0 (asked: 0.0)', 'optim.schedule="cyclic" (asked: "cosine")',
                 "optim.swa_epochs=3 (asked: 0)", "optim.ema=false (asked: true)"):  # fmt: skip
        assert part in message
    assert "optim.lr" not in message and "data." not in message


def test_a_recipe_steps_set_mapping_keeps_its_values_and_types(tmp_path):
    """Values of a recipe's set mapping reach the step as they were written: small floats
    (1e-5 is no string), words that YAML would read as booleans, lists, booleans."""
    import yaml

    from sarbridge.compress.settings import step_overrides

    given = {"optim.weight_decay": 1e-5, "optim.schedule": "cyclic", "optim.ema": False,
             "augment.multi_scale": [0.75, 1.25], "augment.mosaic": 1}  # fmt: skip
    path = _write_recipe(tmp_path / "r.yaml", "zoo:ssdd_edge_det",
                         [{"method": "finetune", "epochs": 12, "set": given}])  # fmt: skip
    step = load_recipe(path).steps[0]
    parsed = {}
    for item in step_overrides(step.options["set"]):
        key, raw = item.split("=", 1)
        parsed[key] = yaml.safe_load(raw)
    assert parsed == given
    assert step_overrides({"data.root": "yes"}) == ["data.root='yes'"]


def test_a_bad_set_with_overwrite_keeps_the_old_run(tmp_path, capsys):
    from sarbridge.cli import main

    out = tmp_path / "runs" / "old"
    out.mkdir(parents=True)
    (out / "run.json").write_text("{}")
    args = ["compress", "--method", "finetune", "--out", str(out), "--overwrite",
            "--set", "optim.ema=maybe"]  # fmt: skip
    assert main(args) == 2
    assert "must be true or false" in capsys.readouterr().err
    assert (out / "run.json").read_text() == "{}"


def test_a_run_resumed_with_other_settings_is_refused_before_training(edge_artifact, tmp_path):
    """compress --resume of a fine-tuning run that started with mosaic, asked without it (or
    with another schedule): refused, naming the setting; the run is left as it was."""
    from sarbridge.compress import finetune
    from sarbridge.compress.api import compress
    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.config import to_dict

    source = _tiny_run(edge_artifact)
    out = tmp_path / "runs" / "ft"
    out.mkdir(parents=True)
    started = finetune._finetune_config(load_model(source).config, out.name, 1, 1e-3, 0, None,
                                        overrides=["augment.mosaic=1.0"])  # fmt: skip
    record = json.dumps({"config": to_dict(started)})
    (out / "run.json").write_text(record)
    kw = dict(epochs=1, lr=1e-3, resume=True, threads=1, progress=False)
    with pytest.raises(CompressError, match=r"augment\.mosaic=1\.0 \(asked: 0\.0\)"):
        compress("finetune", source, out, **kw)
    with pytest.raises(CompressError, match=r"optim\.schedule=\"cosine\" \(asked: \"cyclic\"\)"):
        compress("finetune", source, out, **kw,
                 overrides=["augment.mosaic=1.0", "optim.schedule=cyclic"])  # fmt: skip
    assert (out / "run.json").read_text() == record and sorted(out.iterdir()) == [out / "run.json"]
