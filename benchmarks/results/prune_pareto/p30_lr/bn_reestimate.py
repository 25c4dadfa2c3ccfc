"""A run's test AP as saved, then with its BatchNorm statistics re-estimated on 160 train images
(letterboxed as in training evaluation): whether stale statistics explain a weak student.

    python benchmarks/results/prune_pareto/p30_lr/bn_reestimate.py runs/<run>
"""

import sys

import numpy as np
import torch  # noqa: TID251 - a research script beside its results, not the deployed path

from sarbridge.runtime.decode import letterbox
from sarbridge.runtime.metrics import coco_ap
from sarbridge.train.checkpoint import load_model
from sarbridge.train.data.detection import make_sets
from sarbridge.train.evaluation import predict

torch.set_num_threads(1)
loaded = load_model(sys.argv[1])
model, cfg = loaded.model, loaded.config
sets = make_sets(cfg.data)
train, test = sets[0], sets[2]


def score(tag: str) -> None:
    dets = predict(model, test, cfg, torch.device("cpu"))
    ap = coco_ap(test.records, dets, loaded.classes, 300)
    top = np.concatenate([d.scores for d in dets]).max()
    print(f"{tag} AP50 {ap['AP50']:.3f} AP50:95 {ap['AP50_95']:.3f} max score {top:.3f}")


score("as saved")
for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
    bn.reset_running_stats()
    bn.momentum = None  # a cumulative average over every batch below
model.train()
idx = np.random.default_rng(0).permutation(len(train.records))[:160]
with torch.no_grad():
    for k in range(0, 160, 8):
        batch = [letterbox(train.image(int(i)), cfg.data.input_size)[0] for i in idx[k : k + 8]]
        model(torch.from_numpy(np.stack(batch)))
model.eval()
score("BN re-estimated on 160 train images")
