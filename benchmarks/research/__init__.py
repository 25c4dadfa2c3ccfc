"""sarbridge.benchmarks.research: the lab's measurement tools, apart from the deployment bench.

These need torch and a training run (tables of run records, NMS/TTA sweeps, training-step
speed, PyTorch latency); the torch-free deployment bench is :mod:`sarbridge.benchmarks.bench`.
Results they produce go to ``benchmarks/results/``, with the command that made them.
"""
