"""Power probes: sampled board/GPU/CPU power over a timed window, and the energy it adds up to.

Three real sources, chosen by name or found automatically:

- ``tegrastats``: Jetson boards. NVIDIA's ``tegrastats`` prints one line per interval with
  power rails as ``NAME <current>mW/<average>mW[/<max>mW]``; rail names differ between boards
  and JetPack releases, so rails are parsed generically and the module input (``VDD_IN`` on
  Orin Nano/NX, the sum of ``VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0`` on AGX Orin) is the total.
- ``nvml``: NVIDIA desktop/server GPUs through nvidia-ml-py. Uses the board's total-energy
  counter (Volta and newer) when it answers, else samples ``nvmlDeviceGetPowerUsage``.
- ``rapl``: x86 CPUs with RAPL under /sys/class/powercap (package domains summed; needs read
  permission on ``energy_uj``, often root-only).

Where none is available the result is ``None`` and reports say "not measured".
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sarbridge.runtime.errors import SarbridgeError

RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*)\s+(\d+)mW/(\d+)mW(?:/(\d+)mW)?")
# rails that together make the module's input power, by board family (first match wins)
TOTAL_RAILS = (("VDD_IN",), ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"), ("POM_5V_IN",))


@dataclass
class PowerReading:
    """Energy and power over one measured window."""

    source: str
    seconds: float
    energy_j: float
    mean_w: float
    samples: int
    peak_w: float | None = None
    method: str = "sampled"  # "sampled" (trapezoid over samples) or "counter" (energy counter)
    rails: dict[str, float] = field(default_factory=dict)  # mean W per rail where known

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "seconds": round(self.seconds, 4),
            "energy_j": round(self.energy_j, 4),
            "mean_w": round(self.mean_w, 3),
            "peak_w": None if self.peak_w is None else round(self.peak_w, 3),
            "samples": self.samples,
            "method": self.method,
            "rails": {k: round(v, 3) for k, v in self.rails.items()},
        }


def parse_tegrastats_line(line: str) -> dict[str, float]:
    """Rails in a tegrastats line as {name: current watts}; empty when the line has none."""
    return {m.group(1): int(m.group(2)) / 1000.0 for m in RAIL.finditer(line)}


def tegrastats_total(rails: dict[str, float]) -> float | None:
    """The module's input power from parsed rails.

    Uses the board's known total rails; on a board whose rails are not among them, the sum of
    all rails printed (a lower bound of module power). None when the line has no rails.
    """
    for names in TOTAL_RAILS:
        if all(n in rails for n in names):
            return sum(rails[n] for n in names)
    return sum(rails.values()) if rails else None


def integrate(samples: list[tuple[float, float]], t0: float, t1: float) -> float:
    """Energy in joules from (time, watts) samples over [t0, t1] (trapezoid, held at the ends)."""
    pts = sorted(samples)
    if not pts or t1 <= t0:
        return 0.0
    if len(pts) == 1:
        return pts[0][1] * (t1 - t0)
    energy, prev_t, prev_w = 0.0, t0, pts[0][1]
    for t, w in pts:
        t = min(max(t, t0), t1)
        energy += 0.5 * (prev_w + w) * (t - prev_t)
        prev_t, prev_w = t, w
    return energy + prev_w * (t1 - prev_t)


class PowerProbe:
    """Samples power on a background thread between ``start()`` and ``stop()``."""

    name = "probe"

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self._samples: list[tuple[float, float]] = []
        self._rails: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    # a subclass gives either read_watts (sampled) or read_energy_j (counter)
    def read_watts(self) -> tuple[float, dict[str, float]]:
        raise NotImplementedError

    def read_energy_j(self) -> float | None:
        return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            # one failed read (file busy, empty read) skips its sample and sampling goes on;
            # start() and stop() read directly and still report a probe that fails
            with contextlib.suppress(OSError, ValueError):
                self._sample()
            self._stop.wait(self.interval_s)

    def _sample(self) -> None:
        watts, rails = self.read_watts()
        self._samples.append((time.perf_counter(), watts))
        for k, v in rails.items():
            self._rails.setdefault(k, []).append(v)

    def start(self) -> None:
        self._samples, self._rails = [], {}
        self._stop.clear()
        self._e0 = self.read_energy_j()
        self._t0 = time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> PowerReading:
        t1 = time.perf_counter()
        e1 = self.read_energy_j()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        seconds = t1 - self._t0
        if self._e0 is not None and e1 is not None and e1 >= self._e0:
            return self._reading(seconds, e1 - self._e0, "counter")
        return self._reading(seconds, integrate(self._samples, self._t0, t1), "sampled")

    def _reading(self, seconds: float, energy: float, method: str) -> PowerReading:
        watts = [w for _, w in self._samples]
        return PowerReading(
            self.name,
            seconds,
            energy,
            energy / seconds if seconds > 0 else 0.0,
            len(self._samples),
            max(watts) if watts else None,
            method,
            {k: sum(v) / len(v) for k, v in self._rails.items()},
        )

    def close(self) -> None:
        pass

    def measure(self, fn, *args, **kwargs):
        """Run ``fn`` inside the window; returns (fn's result, PowerReading)."""
        self.start()
        try:
            result = fn(*args, **kwargs)
        finally:
            reading = self.stop()
        return result, reading


class NvmlProbe(PowerProbe):
    name = "nvml"

    def __init__(self, index: int = 0, interval_s: float = 0.02):
        super().__init__(interval_s)
        try:
            import pynvml
        except ImportError as e:
            raise SarbridgeError(
                "the nvml probe needs nvidia-ml-py (pip install nvidia-ml-py)"
            ) from e
        try:
            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.device_name = pynvml.nvmlDeviceGetName(self._handle)
            if isinstance(self.device_name, bytes):
                self.device_name = self.device_name.decode()
            pynvml.nvmlDeviceGetPowerUsage(self._handle)
        except pynvml.NVMLError as e:
            raise SarbridgeError(f"NVML cannot read GPU {index} power: {e}") from e
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self._counter = True
        except pynvml.NVMLError:
            self._counter = False

    def read_watts(self):
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0, {}

    def read_energy_j(self):
        if not self._counter:
            return None
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class RaplProbe(PowerProbe):
    name = "rapl"

    def __init__(self, root: str | Path = "/sys/class/powercap", interval_s: float = 0.05):
        super().__init__(interval_s)
        root = Path(root)
        # package domains are intel-rapl:N (sub-domains intel-rapl:N:M are inside them)
        self.domains = sorted(
            p for p in root.glob("intel-rapl:*") if re.fullmatch(r"intel-rapl:\d+", p.name)
        )
        if not self.domains:
            raise SarbridgeError(f"no RAPL package domains under {root}")
        try:
            self._max = [int((d / "max_energy_range_uj").read_text()) for d in self.domains]
            self._last = [int((d / "energy_uj").read_text()) for d in self.domains]
        except (OSError, ValueError) as e:
            raise SarbridgeError(f"RAPL energy counters under {root} cannot be read: {e}") from e
        self._total_uj = 0
        self._lock = threading.Lock()

    def _accumulate(self) -> float:
        """Total energy so far in joules, unwrapping counters that rolled over."""
        with self._lock:
            for i, d in enumerate(self.domains):
                now = int((d / "energy_uj").read_text())
                delta = now - self._last[i]
                if delta < 0:
                    delta += self._max[i]
                self._total_uj += delta
                self._last[i] = now
            return self._total_uj / 1e6

    def read_energy_j(self):
        return self._accumulate()

    def read_watts(self):
        # the counter is exact; sampling keeps it from wrapping unseen in long windows
        t, e = time.perf_counter(), self._accumulate()
        prev = getattr(self, "_prev", None)
        self._prev = (t, e)
        if prev is None or t <= prev[0]:
            return 0.0, {}
        return (e - prev[1]) / (t - prev[0]), {}

    def _sample(self) -> None:
        watts, _ = self.read_watts()
        if watts > 0:
            self._samples.append((time.perf_counter(), watts))


class TegrastatsProbe(PowerProbe):
    name = "tegrastats"

    def __init__(self, interval_s: float = 0.1, command: str = "tegrastats"):
        super().__init__(interval_s)
        exe = shutil.which(command)
        if exe is None:
            raise SarbridgeError(
                "tegrastats is not on PATH (it ships with JetPack on Jetson boards)"
            )
        self._cmd = [exe, "--interval", str(max(1, int(interval_s * 1000)))]
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._samples, self._rails = [], {}
        self._e0 = None
        self._proc = subprocess.Popen(self._cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._read_lines, daemon=True)
        self._thread.start()

    def _read_lines(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            rails = parse_tegrastats_line(line)
            total = tegrastats_total(rails)
            if total is None:
                continue
            self._samples.append((time.perf_counter(), total))
            for k, v in rails.items():
                self._rails.setdefault(k, []).append(v)

    def stop(self) -> PowerReading:
        t1 = time.perf_counter()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        return self._reading(t1 - self._t0, integrate(self._samples, self._t0, t1), "sampled")


PROBES = {"tegrastats": TegrastatsProbe, "nvml": NvmlProbe, "rapl": RaplProbe}


def open_probe(name: str = "auto") -> tuple[PowerProbe | None, str]:
    """A probe by name ("auto" tries tegrastats, nvml, rapl in turn; "none" measures nothing).

    Returns (probe or None, a line saying which one or why none).
    """
    if name == "none":
        return None, "not measured (power probe turned off)"
    if name != "auto" and name not in PROBES:
        raise SarbridgeError(
            f"unknown power probe {name!r}; choose from auto, none, {', '.join(PROBES)}"
        )
    reasons = []
    for key in PROBES if name == "auto" else (name,):
        try:
            probe = PROBES[key]()
            return probe, f"measured with {key}"
        except SarbridgeError as e:
            if name != "auto":
                raise
            reasons.append(f"{key}: {e}")
    return None, "not measured (" + "; ".join(reasons) + ")"
