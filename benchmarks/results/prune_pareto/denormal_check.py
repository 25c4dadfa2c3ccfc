"""Latency with and without ONNX Runtime's denormal flush, one real SSDD image, batch 1."""

import time

import numpy as np
import onnxruntime as ort

from sarbridge.runtime.decode import letterbox
from sarbridge.runtime.detector import Detector
from sarbridge.runtime.imageio import read_image
from sarbridge.runtime.preprocess import preprocess

det = Detector.from_artifact("zoo:ssdd_edge_det", threads=1)
img = read_image("/work/shared/data/SSDD/JPEGImages/000005.jpg")
x = letterbox(preprocess(img, det.params), 512)[0][None].astype(np.float32)
for name in ["zoo/ssdd_edge_det", "artifacts/edge_p75_kd12_s0", "artifacts/edge_p75_ft12_s0"]:
    for daz in ("0", "1"):
        o = ort.SessionOptions()
        o.intra_op_num_threads = 2
        o.inter_op_num_threads = 1
        o.add_session_config_entry("session.set_denormal_as_zero", daz)
        s = ort.InferenceSession(f"{name}/model.onnx", o, providers=["CPUExecutionProvider"])
        for _ in range(10):
            s.run(None, {"images": x})
        t = []
        for _ in range(60):
            t0 = time.perf_counter()
            s.run(None, {"images": x})
            t.append(time.perf_counter() - t0)
        print(f"{name:32s} denormal_as_zero={daz}: p50 {1000 * np.median(t):.1f} ms")
