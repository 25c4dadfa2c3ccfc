"""sarbridge compress: INT8 per target (scheme checks, TensorRT rules), the accuracy guard,
calibration on train images only, FP16, and the refusals that write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_without_torch

from sarbridge.compress.targets import (
    SCHEMES,
    CompressError,
    scheme_of,
    scheme_problems,
    tensorrt_problems,
)

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


# ---------------------------------------------------------------- a small real graph


class _Net(torch.nn.Module):
    """conv-ReLU x3 (BatchNorm-free, like an exported detector)."""

    def __init__(self, channels: int = 1):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = torch.nn.Conv2d(channels, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = torch.nn.Conv2d(8, 4, 1)
        for conv in (self.c1, self.c2, self.c3):
            conv.weight.data = torch.randn(conv.weight.shape, generator=g) * 0.3

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.c3(x)


def _export(net, path: Path) -> Path:
    x = torch.zeros(1, net.c1.in_channels, 32, 32)
    torch.onnx.export(
        net.eval(), (x,), str(path), input_names=["images"], output_names=["raw"],
        opset_version=17, dynamo=False, dynamic_axes={"images": {0: "batch"}, "raw": {0: "batch"}},
    )  # fmt: skip
    return path


def _inputs(n=24, seed=0, channels=1):
    return np.random.default_rng(seed).random((n, channels, 32, 32), dtype=np.float32)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """The small graph quantized for the onnxruntime and the tensorrt target."""
    from sarbridge.compress.ptq import Quantizer, prepare

    root = tmp_path_factory.mktemp("graphs")
    prepared = prepare(_export(_Net(), root / "fp32.onnx"), root / "prepared.onnx")
    out = {}
    for target in ("onnxruntime", "tensorrt"):
        q = Quantizer(prepared, SCHEMES[target], _inputs(), "images")
        out[target] = onnx.load(str(q.quantize(root / f"{target}.onnx")))
    return out


def _zero_point_dtypes(model) -> set[str]:
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {
        str(inits[n.input[2]].dtype)
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 2
    }


def test_each_target_gets_its_scheme(graphs):
    """onnxruntime: uint8 activations; tensorrt: int8 activations with zero point 0; both with
    int8 conv weights per output channel on axis 0."""
    assert _zero_point_dtypes(graphs["onnxruntime"]) == {"uint8"}
    assert _zero_point_dtypes(graphs["tensorrt"]) == {"int8"}
    for target, model in graphs.items():
        assert scheme_problems(model, SCHEMES[target]) == [], target
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in graphs["tensorrt"].graph.initializer}
    convs = [n for n in graphs["tensorrt"].graph.node if n.op_type == "Conv"]
    producers = {o: n for n in graphs["tensorrt"].graph.node for o in n.output}
    for conv in convs:
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        assert inits[dq.input[1]].shape == (inits[dq.input[0]].shape[0],)  # one scale per C_out
        assert inits[dq.input[0]].dtype == np.int8
    # a model checked against the other target's scheme is told apart
    assert scheme_problems(graphs["onnxruntime"], SCHEMES["tensorrt"])


def test_onnxruntime_keeps_a_single_channel_conv_in_float(tmp_path, graphs):
    """QLinearConv reading one channel (the stem on a SAR band) is slower than the float conv:
    the onnxruntime scheme leaves it in float; the tensorrt scheme quantizes it."""
    from sarbridge.compress.ptq import Quantizer, prepare
    from sarbridge.compress.targets import quantized_convs

    prepared = prepare(_export(_Net(), tmp_path / "fp32.onnx"), tmp_path / "prepared.onnx")
    assert Quantizer(prepared, SCHEMES["onnxruntime"], _inputs(), "images").speed_float == [
        "/c1/Conv"
    ]
    assert "/c1/Conv" not in quantized_convs(graphs["onnxruntime"])
    assert "/c1/Conv" in quantized_convs(graphs["tensorrt"])


def test_tensorrt_rules_pass_on_a_tensorrt_model_and_fail_on_a_uint8_one(graphs):
    assert tensorrt_problems(graphs["tensorrt"]) == []
    problems = tensorrt_problems(graphs["onnxruntime"])
    assert any("uint8" in p for p in problems), problems
    assert any("int32 quantized bias" in p for p in problems)  # the onnxruntime scheme's bias


def test_tensorrt_rules_find_an_unquantized_conv_and_a_float_model(tmp_path, graphs):
    model = onnx.ModelProto()
    model.CopyFrom(graphs["tensorrt"])
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    producers = {o: n for n in model.graph.node for o in n.output}
    dq = producers[conv.input[0]]
    conv.input[0] = producers[dq.input[0]].input[0]  # the float tensor in front of its Q/DQ
    assert any(conv.name in p and "not dequantized" in p for p in tensorrt_problems(model))
    assert tensorrt_problems(model, float_layers=[conv.name]) == []  # unless kept in float
    fp32 = onnx.load(str(_export(_Net(), tmp_path / "fp32.onnx")))
    assert "not an INT8 model" in tensorrt_problems(fp32)[0]


def test_unknown_target_lists_the_choices():
    with pytest.raises(CompressError, match="onnxruntime, openvino, tensorrt"):
        scheme_of("coreml")


# ---------------------------------------------------------------- the accuracy guard


class _Fragile(_Net):
    """c1's channel 0 is 1000x larger than the others and c2 reads it through a 1000x smaller
    weight: the float output is normal, but one uint8 scale for c1's output leaves the other
    channels a handful of levels. The layers that cannot stand 8 bits are c1 and c2."""

    def __init__(self):
        super().__init__(channels=2)  # two input channels: not float for speed (see below)
        with torch.no_grad():
            self.c1.weight[0] *= 1000
            self.c1.bias[0] *= 1000
            self.c2.weight[:, 0] /= 1000


def _fidelity(prepared: Path, probe: np.ndarray):
    """1 - relative squared error of a model's output against the float model on ``probe``."""
    import onnxruntime as ort

    def run(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"images": probe}
        )[0]

    reference = run(prepared)

    def evaluate(path: Path) -> float:
        got = run(path)
        return 1.0 - float(np.mean((got - reference) ** 2) / np.mean(reference**2))

    return evaluate


def test_guard_keeps_a_fragile_layer_in_float(tmp_path):
    from sarbridge.compress.ptq import Quantizer, guarded_quantize, prepare

    prepared = prepare(_export(_Fragile(), tmp_path / "fp32.onnx"), tmp_path / "prepared.onnx")
    probe = _inputs(8, seed=1, channels=2)
    evaluate = _fidelity(prepared, probe)
    q = Quantizer(prepared, SCHEMES["onnxruntime"], _inputs(channels=2), "images")
    assert q.speed_float == []
    plain = evaluate(q.quantize(tmp_path / "plain.onnx"))
    assert plain < 0.95  # the fragile layer really breaks plain INT8
    result = guarded_quantize(
        q, evaluate, 1.0, 0.01, tmp_path / "int8.onnx", probe, progress=False, log=lambda s: None
    )
    model = onnx.load(str(tmp_path / "int8.onnx"))
    fragile = {n.name for n in model.graph.node if n.op_type == "Conv"} - {
        n.name for n in model.graph.node if n.op_type == "Conv" and "c3" in n.name
    }
    assert set(result.float_layers) == fragile  # c1 and c2, ranked worst, kept in float
    assert result.ranking[0][0] in fragile and result.ranking[1][0] in fragile
    assert 1.0 - result.metric <= 0.01 and result.tried[0]["float_layers"] == 0
    assert not list(tmp_path.glob("int8.float*.onnx"))  # the attempts are cleaned up


def test_guard_that_cannot_meet_the_budget_says_what_it_tried(tmp_path):
    from sarbridge.compress.ptq import Quantizer, guarded_quantize, prepare

    prepared = prepare(_export(_Net(), tmp_path / "fp32.onnx"), tmp_path / "prepared.onnx")
    q = Quantizer(prepared, SCHEMES["onnxruntime"], _inputs(), "images")
    lines = []
    with pytest.raises(CompressError, match=r"misses the accuracy budget.*up to 3 of 3"):
        guarded_quantize(
            q, lambda path: 0.5, 0.9, 0.01, tmp_path / "int8.onnx", _inputs(4), progress=False,
            log=lines.append, max_float_fraction=1.0,
        )  # fmt: skip
    # 0, 1, 2 and then exactly the limit (3), not only the powers of two below it
    assert [int(line.split("with")[1].split("layer")[0]) for line in lines] == [0, 1, 2, 3]
    assert not (tmp_path / "int8.onnx").exists()
    assert not list(tmp_path.glob("int8.float*.onnx"))  # every attempt removed


# ---------------------------------------------------------------- calibration data


def test_calibration_reads_train_images_only(data):
    """The inputs come from the run's train records through the runtime pipeline, never from
    its validation or test records, and the list's sha256 changes with the seed."""
    from sarbridge.compress.calibration import collect_inputs
    from sarbridge.runtime.manifest import load_manifest
    from sarbridge.train.config import from_dict
    from sarbridge.train.data.detection import split_records
    from sarbridge.train.recipes.detect import DetConfig

    cfg = from_dict(DetConfig, {"data": {"val_fraction": 0.1}})
    ds, train, val, test = split_records(cfg.data, quiet=True)
    manifest = load_manifest(REPO / "zoo" / "ssdd_edge_det")
    cal = collect_inputs(manifest, train, 40, 0, "train", ds.root, progress=False)
    paths = {item.rsplit("#", 1)[0] for item in cal.items}
    rel = lambda recs: {str(r.path.relative_to(ds.root)) for r in recs}  # noqa: E731
    assert len(cal.items) == 40 and paths <= rel(train)
    assert not paths & rel(val) and not paths & rel(test)
    size = manifest["preprocessing"]["input_size"]
    assert cal.inputs.shape == (40, 1, size, size) and cal.inputs.dtype == np.float32
    again = collect_inputs(manifest, train, 40, 0, "train", ds.root, progress=False)
    other = collect_inputs(manifest, train, 40, 1, "train", ds.root, progress=False)
    assert again.list_sha256 == cal.list_sha256 != other.list_sha256


def test_a_large_scene_calibrates_on_tiles_cut_by_the_runtime(data):
    """A scene larger than the manifest's tile gives several inputs, each one tile of the
    runtime's grid; a cap per scene keeps one scene from filling the set."""
    from sarbridge.compress.calibration import collect_inputs
    from sarbridge.runtime.annotations import ImageRecord
    from sarbridge.runtime.manifest import load_manifest
    from sarbridge.runtime.tiling import tile_grid

    manifest = load_manifest(REPO / "zoo" / "ssdd_edge_det")
    scene = data / "large_scenes_ioEclipse" / "vv2.jpg"
    from PIL import Image

    with Image.open(scene) as im:
        width, height = im.size
    grid = tile_grid(height, width, manifest["tiling"]["size"], manifest["tiling"]["overlap"])
    assert len(grid) > 8
    rec = ImageRecord("vv2", scene, height, width)
    cal = collect_inputs(manifest, [rec], 64, 0, "train", progress=False, per_scene=5)
    assert len(cal.items) == 5 and len(set(cal.items)) == 5
    assert all(0 <= int(i.rsplit("#", 1)[1]) < len(grid) for i in cal.items)
    assert not np.allclose(cal.inputs[0], cal.inputs[1])  # different tiles


def test_an_empty_or_unreadable_calibration_set_is_refused(tmp_path):
    from sarbridge.compress.calibration import collect_inputs
    from sarbridge.runtime.annotations import ImageRecord
    from sarbridge.runtime.manifest import load_manifest

    manifest = load_manifest(REPO / "zoo" / "ssdd_edge_det")
    with pytest.raises(CompressError, match="no train images"):
        collect_inputs(manifest, [], 8, 0, "train", progress=False)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    recs = [ImageRecord("broken", bad, 100, 100)]
    with pytest.raises(CompressError, match="none of the 1 train images could be read.*broken.jpg"):
        collect_inputs(manifest, recs, 8, 0, "train", progress=False)


# ---------------------------------------------------------------- the command


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "int4"], "unknown method 'int4'"),
        (["--method", "int8", "--target", "coreml"], "unknown INT8 target 'coreml'"),
        (["--method", "int8", "--from", "zoo:no_such_model"], "no_such_model"),
        (["--method", "int8", "--from", "runs/no_such_run"], "no_such_run"),
        (["--method", "int8", "--from", "zoo:bnn_edge_sar"], "nothing to detect"),
        (["--method", "int8", "--max-ap-drop", "2"], "max-ap-drop"),
        (["--method", "qat", "--target", "tensorrt", "--epochs", "1"], "not supported yet"),
        (["--method", "qat", "--epochs", "0"], "--epochs must be at least 1"),
        # options a method would ignore are refused instead
        (["--method", "int8", "--resume"], "--resume continues a training run"),
        (["--method", "fp16", "--resume"], "--resume continues a training run"),
        (["--method", "int8", "--data", "SSDD"], "--data names the dataset of an exported"),
        (["--method", "finetune", "--data", "SSDD"], "--data names the dataset of an exported"),
        (["--method", "distill", "--teacher", "zoo:ssdd_edge_det", "--name", "x"], "--name"),
    ],
)
def test_bad_requests_are_refused_and_write_nothing(tmp_path, capsys, args, message):
    from sarbridge.cli import main

    out = tmp_path / "artifacts" / "out"
    assert main(["compress", *args, "--out", str(out), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # not even the artifacts/ or runs/ folder


def test_an_existing_artifact_is_not_replaced(tmp_path, capsys):
    from sarbridge.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["compress", "--method", "int8", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_int8_from_a_run_with_validation_end_to_end(edge_artifact, tmp_path):
    """A run with a validation split: calibration on train, the guard on validation, the test
    split scored once; the artifact's manifest says all of it and runs with torch blocked."""
    from sarbridge.compress.api import compress
    from sarbridge.runtime.manifest import load_manifest
    from sarbridge.train.checkpoint import load_model
    from sarbridge.train.data.detection import split_records

    run = edge_artifact.parent.parent / "runs" / "tiny_edge"
    out = tmp_path / "int8"
    compress("int8", run, out, calibration_images=12, guard_images=50, threads=1,
             progress=False, max_ap_drop=0.05)  # fmt: skip
    manifest = load_manifest(out)
    quant = manifest["quantization"]
    # the stem (one input channel) stays float in the onnxruntime scheme: precision "mixed"
    assert manifest["precision"] == "mixed" and quant["target"] == "onnxruntime"
    assert len(quant["float_layers"]) == 1 and "stem" in quant["float_layers"][0]
    assert quant["activations"] == {"dtype": "uint8", "symmetric": False}
    assert quant["weights"]["per_channel_axis"] == 0
    assert quant["guard"]["split"] == "val" and quant["calibration"]["split"] == "train"
    ds, train, val, test = split_records(load_model(run).config.data, quiet=True)
    assert quant["guard"]["images"] == len(val)
    items = (out / "calibration.txt").read_text().split()
    assert len(items) == quant["calibration"]["images"] == 12
    import hashlib

    assert (
        hashlib.sha256((out / "calibration.txt").read_bytes()).hexdigest()
        == quant["calibration"]["list_sha256"]
    )
    used = {i.rsplit("#", 1)[0] for i in items}
    assert not used & {str(r.path.relative_to(ds.root)) for r in val + test}
    step = manifest["lineage"][-1]
    assert step["kind"] == "ptq" and step["parent"]["name"] == manifest["lineage"][-2]["name"]
    for key in ("test_AP50", "parent_test_AP50", "test_AP50_95", "test_AP_small", "model_bytes"):
        assert key in manifest["metrics"]
    assert manifest["metrics"]["model_bytes"] < manifest["metrics"]["parent_model_bytes"]
    res = run_without_torch(
        "from sarbridge.runtime.detector import Detector\n"
        "import numpy as np\n"
        "det = Detector.from_artifact(sys.argv[1], threads=1)\n"
        "r = det.detect(np.random.default_rng(0).integers(0, 255, (300, 400), dtype=np.uint8))\n"
        "print('tiles', r.tiles)\n",
        str(out),
    )
    assert res.returncode == 0 and "tiles" in res.stdout, res.stderr


@pytest.mark.slow
def test_fp16_keeps_float32_inputs_and_records_parity(edge_artifact, tmp_path):
    from sarbridge.compress.api import compress
    from sarbridge.runtime.manifest import load_manifest

    run = edge_artifact.parent.parent / "runs" / "tiny_edge"
    out = tmp_path / "fp16"
    compress("fp16", run, out, threads=1, progress=False)
    manifest = load_manifest(out)
    assert manifest["precision"] == "fp16" and "quantization" not in manifest
    model = onnx.load(str(out / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [t for t in model.graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    metrics = manifest["metrics"]
    assert metrics["parity_max_abs_diff"] < 0.1 and metrics["parity_detection_agreement"] > 0.9
    assert json.loads((out / "manifest.json").read_text())["lineage"][-1]["kind"] == "fp16"


@pytest.mark.slow
def test_qat_fine_tunes_exports_qdq_and_resumes_like_any_run(edge_artifact, tmp_path):
    """QAT on the tiny run: a run folder of its own (checkpoints, run.json), a Q/DQ graph with
    int8 weights that follows the onnxruntime scheme, the qat step in the lineage; run again
    with resume, the trainer restores the fake-quantized model from its checkpoint (the same
    structure rebuilt) and the export is the same model."""
    from sarbridge.compress.api import compress

    run = edge_artifact.parent.parent / "runs" / "tiny_edge"
    runs = tmp_path / "runs"
    kwargs = dict(calibration_images=8, guard_images=8, threads=1, progress=False,
                  max_ap_drop=0.5, epochs=1, runs_dir=runs)  # fmt: skip
    first = compress("qat", run, tmp_path / "qat", **kwargs)
    qat_run = runs / "qat_qat"
    assert (qat_run / "checkpoint.pt").is_file() and (qat_run / "run.json").is_file()
    kinds = [s["kind"] for s in first["lineage"]]
    assert kinds[-2:] == ["qat", "export"] and first["precision"] == "int8"
    model = onnx.load(str(tmp_path / "qat" / "model.onnx"))
    assert scheme_problems(model, SCHEMES["onnxruntime"]) == []
    assert not [n for n in model.graph.node if n.op_type in ("FakeQuantize", "QuantizeLinear")
                and n.input[0] in {t.name for t in model.graph.initializer}]  # fmt: skip
    import shutil

    import onnxruntime as ort

    shutil.copy(tmp_path / "qat" / "model.onnx", tmp_path / "first.onnx")
    compress("qat", run, tmp_path / "qat", overwrite=True, resume=True, **kwargs)
    x = np.random.default_rng(0).random((2, 1, 128, 128), dtype=np.float32)

    def run_model(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"images": x}
        )[0]

    np.testing.assert_array_equal(
        run_model(tmp_path / "first.onnx"), run_model(tmp_path / "qat" / "model.onnx")
    )
    shutil.rmtree(tmp_path / "qat")
    with pytest.raises(CompressError, match="--resume"):  # the run exists: resume or overwrite
        compress("qat", run, tmp_path / "qat", **kwargs)


def test_int8_of_an_artifact_without_its_run(edge_artifact, tmp_path, data):
    """An exported FP32 artifact alone (as `sarbridge import ultralytics` makes one): the
    dataset's train split calibrates and guards, its test split scores; other methods and
    non-FP32 artifacts are refused."""
    import shutil

    from conftest import mini_voc

    from sarbridge.compress.api import compress
    from sarbridge.compress.targets import CompressError
    from sarbridge.runtime.manifest import load_manifest

    art = tmp_path / "exported"
    for name in ("model.onnx", "manifest.json"):
        (art / name).parent.mkdir(exist_ok=True)
        shutil.copy2(edge_artifact / name, art / name)
    stems = ["000001", "000002", "000003", "000004", "000005", "000006", "000007", "000008"]
    voc = mini_voc(tmp_path / "voc", data, stems, {"train": stems[:6], "test": stems[6:]})
    out = tmp_path / "int8"
    manifest = compress("int8", art, out, data=str(voc), calibration_images=4, guard_images=4,
                        threads=1, progress=False, max_ap_drop=0.5)  # fmt: skip
    quant = manifest["quantization"]
    assert quant["calibration"]["split"] == "train" and quant["guard"]["split"] == "train-not-calibrated"
    assert manifest["lineage"][-1]["kind"] == "ptq"
    assert manifest["lineage"][-1]["parent"]["sha256"] == load_manifest(art)["model"]["sha256"]
    assert "test_AP50" in manifest["metrics"] and "parent_test_AP50" in manifest["metrics"]
    with pytest.raises(CompressError, match="only --method int8"):
        compress("fp16", art, tmp_path / "fp16", data=str(voc), progress=False)
    with pytest.raises(CompressError, match="takes an FP32 ONNX detector"):
        compress("int8", out, tmp_path / "again", data=str(voc), progress=False)


def test_the_qdq_export_of_a_dfl_head_outputs_its_bins_channels_first(tmp_path):
    """QAT's Q/DQ export of a distribution (DFL) head writes what its FP32 parent's graph does
    (decode dense_dfl): the bin logits and class logits, channels first."""
    from types import SimpleNamespace

    import onnxruntime as ort
    import torch

    from sarbridge.compress.qat import export_qdq, quantized_model
    from sarbridge.train.models.registry import build_detector

    torch.manual_seed(0)
    model = build_detector("edge_det", num_classes=1, box_bins=16).eval()
    inputs = np.random.default_rng(0).random((4, 1, 128, 128), dtype=np.float32)
    qmodel = quantized_model(SimpleNamespace(model=model), "onnxruntime", inputs)
    path = export_qdq(qmodel, torch.from_numpy(inputs[:1]), tmp_path / "q.onnx", True)
    raw = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"images": inputs[:2]}
    )[0]
    points = sum((128 // s) ** 2 for s in (8, 16, 32))
    assert raw.shape == (2, 4 * 16 + 1, points)
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(path)).graph.node}
