"""Where the detection scores of a student lie: the highest score on the SSDD test split and
precision / recall at a few operating scores (PyTorch evaluation of the run's model).

    python benchmarks/results/prune_pareto/p30_lr/score_range.py runs/<run> [...]
"""

import sys

import numpy as np
import torch  # noqa: TID251 - a research script beside its results, not the deployed path

from sarbridge.runtime.metrics import precision_recall_at
from sarbridge.train.checkpoint import load_model
from sarbridge.train.data.detection import make_sets
from sarbridge.train.evaluation import predict

torch.set_num_threads(1)
for src in sys.argv[1:]:
    loaded = load_model(src)
    cfg = loaded.config
    test = make_sets(cfg.data)[2]
    dets = predict(loaded.model, test, cfg, torch.device("cpu"))
    scores = np.concatenate([d.scores for d in dets])
    print(src, "max score", float(scores.max()), "p99", float(np.quantile(scores, 0.99)))
    for t in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3):
        pr = precision_recall_at(test.records, dets, t)
        print(f"  t={t}: P {pr['precision']:.3f} R {pr['recall']:.3f} F1 {pr['f1']:.3f}")
