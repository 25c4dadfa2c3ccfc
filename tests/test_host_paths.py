"""The runtime's faster host paths give exactly what the plain ones give: preprocessing into a
given buffer, letterboxing into a batch slot, candidates found on the logits first, NMS from one
IoU matrix, batch arrays reused and the pipelined scene loop."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from sarbridge.runtime import boxes as boxes_mod
from sarbridge.runtime import decode as decode_mod
from sarbridge.runtime.decode import (
    dense_candidates,
    grid_points,
    letterbox,
    resize_by,
    yolo_candidates,
    yolo_grid,
)
from sarbridge.runtime.detector import ScenePipeline
from sarbridge.runtime.preprocess import SarPreprocess, clip_range, preprocess


def _reference_preprocess(band, params, lo_hi):
    """The preprocessing formula written out with temporaries (the form before ``out``)."""
    lo, hi = lo_hi
    if band.dtype == np.uint8 and params.eight_bit_passthrough:
        x = band.astype(np.float32) * np.float32(1.0 / 255.0)
    else:
        x = band.astype(np.float32)
        if params.to_db and params.input_kind != "db":
            factor = 20.0 if params.input_kind == "amplitude" else 10.0
            x = factor * np.log10(np.maximum(x, 1e-6))
        x = (np.clip(x, lo, hi) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    if params.mean != 0.0 or params.std != 1.0:
        x = (x - np.float32(params.mean)) * np.float32(1.0 / params.std)
    return np.ascontiguousarray(np.repeat(x[None], params.channels, axis=0), np.float32)


@pytest.mark.parametrize(
    "dtype, params",
    [
        (np.uint8, SarPreprocess()),
        (np.uint8, SarPreprocess(mean=0.2, std=0.7, channels=3)),
        (np.uint16, SarPreprocess()),
        (np.float32, SarPreprocess(input_kind="intensity")),
        (np.float32, SarPreprocess(input_kind="db", to_db=False, clip="none")),
        (np.float64, SarPreprocess(to_db=False, clip="fixed", clip_low=10.0, clip_high=900.0)),
    ],
)
def test_preprocess_into_a_buffer_is_the_formula(dtype, params):
    rng = np.random.default_rng(1)
    band = (rng.gamma(2.0, 300.0, size=(37, 53)) % 255).astype(dtype)
    band[3, 4] = 0  # no-data for the percentiles, floored by the dB step
    before = band.copy()
    lo_hi = clip_range(band, params)
    want = _reference_preprocess(band, params, lo_hi)
    np.testing.assert_array_equal(preprocess(band, params, lo_hi), want)
    # into the corner of a network input (a strided view), as the scene pipeline does
    net = np.full((params.channels, 64, 64), np.nan, np.float32)
    got = preprocess(band, params, lo_hi, out=net[:, :37, :53])
    assert got.base is net or got is net or np.shares_memory(got, net)
    np.testing.assert_array_equal(net[:, :37, :53], want)
    np.testing.assert_array_equal(band, before)  # the input is never written
    with pytest.raises(ValueError, match="float32"):
        preprocess(band, params, lo_hi, out=np.empty((params.channels, 37, 52), np.float32))


@pytest.mark.parametrize("shape", [(1, 350, 500), (1, 512, 512), (3, 40, 30), (1, 600, 200)])
def test_letterbox_into_a_slot_is_the_plain_letterbox(shape):
    image = np.random.default_rng(2).random(shape, dtype=np.float32)
    S = 512
    resized = resize_by(image, S / max(shape[1:]))  # the plain form: resize, then pad zeros
    want = np.zeros((shape[0], S, S), np.float32)
    want[:, : resized.shape[1], : resized.shape[2]] = resized
    got, box = letterbox(image, S)
    np.testing.assert_array_equal(got, want)
    slot = np.full((shape[0], S, S), 7.0, np.float32)  # a reused slot holds the last tile
    got2, box2 = letterbox(image, S, out=slot)
    assert got2 is slot and box2 == box
    np.testing.assert_array_equal(slot, want)
    assert (box.resized_height, box.resized_width) == resized.shape[1:]


@pytest.mark.parametrize("shape", [(1, 350, 500), (1, 512, 300)])
def test_centred_letterbox_splits_the_padding_as_ultralytics(shape):
    """Centred with a fill (Ultralytics' LetterBox: 114/255, the odd pixel below/right), into a
    fresh array and into a used slot alike; boxes go back to image pixels."""
    image = np.random.default_rng(3).random(shape, dtype=np.float32)
    S, fill = 512, 114 / 255
    resized = resize_by(image, S / max(shape[1:]))
    _, nh, nw = resized.shape
    top, left = round((S - nh) / 2 - 0.1), round((S - nw) / 2 - 0.1)
    want = np.full((shape[0], S, S), fill, np.float32)
    want[:, top : top + nh, left : left + nw] = resized
    got, box = letterbox(image, S, align="center", fill=fill)
    np.testing.assert_array_equal(got, want)
    slot = np.full((shape[0], S, S), 7.0, np.float32)
    letterbox(image, S, out=slot, align="center", fill=fill)
    np.testing.assert_array_equal(slot, want)
    assert (box.top, box.left) == (top, left) and (top > 0) != (left > 0)
    whole = box.to_image(np.array([[left, top, left + nw, top + nh]], np.float32))
    np.testing.assert_allclose(whole, [[0, 0, shape[2], shape[1]]], atol=1e-3)
    with pytest.raises(ValueError, match="letterbox align"):
        letterbox(image, S, align="diagonal")


def test_the_scene_pipeline_letterboxes_as_its_manifest_says():
    """A centred pipeline feeds the network the centred input and maps its boxes back."""

    class Capture(ScenePipeline):
        def run_inputs(self, inputs, timings=None):
            self.seen = inputs.copy()
            box = np.array([[0, 106, 512, 406]], np.float32)  # the whole image, centred
            return [(box, np.array([0.9], np.float32), np.array([0]))] * len(inputs)

    pipe = Capture(SarPreprocess(), 512, 512, 0.5, 0.5, 100, letterbox_align="center",
                   letterbox_fill=0.25)  # fmt: skip
    res = pipe.detect(np.full((300, 512), 51, np.uint8))  # no resize: placed at row 106
    np.testing.assert_allclose(res.boxes, [[0, 0, 512, 300]], atol=1e-3)
    assert np.all(pipe.seen[0, :, :106] == 0.25) and np.all(pipe.seen[0, :, 406:] == 0.25)
    np.testing.assert_allclose(pipe.seen[0, :, 106:406], 51 / 255, rtol=1e-6)


def _random_boxes(rng, n):
    xy = rng.uniform(0, 100, size=(n, 2))
    wh = rng.uniform(1, 30, size=(n, 2))
    b = np.concatenate([xy, xy + wh], axis=1)
    if n:
        b[rng.random(n) < 0.2] = b[0]  # exact duplicates
    return b


@pytest.mark.parametrize("n", [0, 1, 2, 7, 40, 48, 49, 120])
def test_nms_matrix_path_keeps_what_the_loop_keeps(n, monkeypatch):
    rng = np.random.default_rng(n)
    boxes = _random_boxes(rng, n)
    scores = np.round(rng.random(n), 2)  # ties
    if n > 3:
        boxes[3, 2] = np.nan  # a broken box suppresses like in the loop
    labels = rng.integers(0, 3, n)
    for thr in (0.3, 0.5, 0.7):
        fast = boxes_mod.nms(boxes, scores, thr)
        fast_b = boxes_mod.batched_nms(boxes, scores, labels, thr)
        monkeypatch.setattr(boxes_mod, "_NMS_MATRIX_MAX", -1)  # the loop only
        np.testing.assert_array_equal(fast, boxes_mod.nms(boxes, scores, thr))
        np.testing.assert_array_equal(fast_b, boxes_mod.batched_nms(boxes, scores, labels, thr))
        monkeypatch.setattr(boxes_mod, "_NMS_MATRIX_MAX", 48)
        assert fast.dtype == np.int64


@pytest.mark.parametrize("classes", [1, 3])
@pytest.mark.parametrize("threshold", [0.0, 1e-6, 0.001, 0.05, 0.3, 0.9, 0.9999, 1.0])
def test_candidates_found_on_the_logits_are_the_full_pass(classes, threshold, monkeypatch):
    rng = np.random.default_rng(classes)
    S = 128
    points, strides = grid_points(S)
    raw = rng.normal(0, 3, size=(len(points), 4 + classes)).astype(np.float32)
    raw[5, 4:] = 80.0  # saturated logits
    raw[6, 4] = np.nan
    anchors = np.array([[[10, 13], [16, 30]], [[30, 61], [62, 45]], [[116, 90], [156, 198]]])
    cells, ystrides, wh = yolo_grid(S, (8, 16, 32), anchors)
    raw_y = rng.normal(0, 3, size=(len(cells), 5 + classes)).astype(np.float32)
    dense = partial(dense_candidates, points=points, strides=strides)
    yolo = partial(yolo_candidates, cells=cells, strides=ystrides, anchors=wh)
    for top_k in (2000, 5):
        fast = dense(raw, score_threshold=threshold, pre_nms_top_k=top_k)
        fast_y = yolo(raw_y, score_threshold=threshold, pre_nms_top_k=top_k)
        monkeypatch.setattr(decode_mod, "_rows_above", lambda logits, thr: None)
        slow = dense(raw, score_threshold=threshold, pre_nms_top_k=top_k)
        slow_y = yolo(raw_y, score_threshold=threshold, pre_nms_top_k=top_k)
        for a, b in zip(fast + fast_y, slow + slow_y, strict=True):
            np.testing.assert_array_equal(a, b)
        monkeypatch.undo()


class _Fake(ScenePipeline):
    """A network stand-in whose detections depend on every input pixel: one box per input at
    its brightest pixel, scored by the input's mean."""

    reuse_inputs = True

    def __init__(self, **kwargs):
        super().__init__(SarPreprocess(), 64, 64, 0.25, 0.5, 100, batch_size=3, **kwargs)
        self.seen: list[np.ndarray] = []

    def run_inputs(self, inputs, timings=None):
        self.seen.append(inputs)
        out = []
        for x in inputs:
            y, x0 = np.unravel_index(int(np.argmax(x[0])), x[0].shape)
            box = np.array([[x0, y, x0 + 5, y + 5]], np.float32)
            out.append((box, np.array([x.mean()], np.float32), np.zeros(1, np.int64)))
        return out


class _Keeper(_Fake):
    reuse_inputs = False  # keeps the inputs it was given (as calibration capture does)


def test_reused_batches_and_the_pipelined_loop_give_the_same_detections():
    scene = np.random.default_rng(3).integers(0, 255, size=(150, 230), dtype=np.uint8)
    plain = _Keeper().detect(scene)
    for pipeline in (_Fake(), _Fake(pipelined=True), _Keeper(pipelined=True)):
        got = pipeline.detect(scene)
        assert got.tiles == plain.tiles > 3 * 2  # several batches
        for a, b in zip(
            (got.boxes, got.scores, got.labels),
            (plain.boxes, plain.scores, plain.labels),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    keeper = _Keeper(pipelined=True)
    keeper.detect(scene)
    arrays = keeper.seen
    assert len({id(a) for a in arrays}) == len(arrays)
    assert not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1 :])
    reuser = _Fake()
    reuser.detect(scene)
    assert np.shares_memory(reuser.seen[0], reuser.seen[1])  # one batch array, filled again


def test_a_worker_error_reaches_the_caller():
    class Broken(_Fake):
        def _fit(self, pixels, lo_hi, path, out):
            raise RuntimeError("tile failed")

    scene = np.zeros((150, 230), np.uint8)
    with pytest.raises(RuntimeError, match="tile failed"):
        Broken(pipelined=True).detect(scene)


def test_which_backends_count_as_a_device():
    """`--pipelined` defaults on where the network runs off the host CPU."""
    from types import SimpleNamespace

    from sarbridge.runtime.detector import runs_on_device

    assert runs_on_device(SimpleNamespace(providers=["CUDAExecutionProvider", "CPUExecutionProvider"]))
    assert not runs_on_device(SimpleNamespace(providers=["CPUExecutionProvider"]))
    assert runs_on_device(SimpleNamespace(providers=None, device="GPU"))  # TensorRT, OpenVINO GPU
    assert runs_on_device(SimpleNamespace(device="NPU")) and runs_on_device(SimpleNamespace(device="DLA0"))
    assert not runs_on_device(SimpleNamespace(device="CPU"))
    assert runs_on_device(SimpleNamespace(device=SimpleNamespace(type="cuda")))  # torch.device
    assert not runs_on_device(SimpleNamespace(device=SimpleNamespace(type="cpu")))
    assert not runs_on_device(SimpleNamespace())
