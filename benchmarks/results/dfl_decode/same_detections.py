"""Detections of two artifacts on every SSDD test image through the deployed pipeline (the
runtime's Detector): images whose detection counts differ, and the largest box difference (px)
and score difference where they agree.

    python benchmarks/results/dfl_decode/same_detections.py A B [onnxruntime|openvino]
"""

import sys
from pathlib import Path

import numpy as np

from sarbridge.runtime.detector import Detector
from sarbridge.runtime.manifest import load_manifest
from sarbridge.runtime.paths import data_root

a_dir, b_dir = Path(sys.argv[1]), Path(sys.argv[2])
backend = sys.argv[3] if len(sys.argv) > 3 else "onnxruntime"
A = Detector(load_manifest(a_dir), a_dir, backend, threads=2)
B = Detector(load_manifest(b_dir), b_dir, backend, threads=2)
root = data_root() / "SSDD"
ids = (root / "ImageSets" / "Main" / "test.txt").read_text().split()
differ, box, score, count = 0, 0.0, 0.0, 0
for i in ids:
    ra, rb = A.detect(root / "JPEGImages" / f"{i}.jpg"), B.detect(root / "JPEGImages" / f"{i}.jpg")
    count += len(ra.boxes)
    if len(ra.boxes) != len(rb.boxes):
        differ += 1
    elif len(ra.boxes):
        box = max(box, float(np.abs(ra.boxes - rb.boxes).max()))
        score = max(score, float(np.abs(ra.scores - rb.scores).max()))
print(
    f"{backend}: {len(ids)} images, {count} detections of {a_dir.name}; images with another "
    f"count: {differ}; largest box difference {box:.2e} px, score difference {score:.2e}"
)
