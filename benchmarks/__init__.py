"""sarbridge.benchmarks: accuracy, latency, memory and power measurement, reports."""

from sarbridge._stage_guard import check as _check

_check(__name__, "benchmarks")
