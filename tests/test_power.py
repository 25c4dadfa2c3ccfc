"""Power probes: tegrastats parsing on real board lines, energy integration, RAPL, 'not measured'."""

from __future__ import annotations

import pytest

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.runtime.power import (
    RaplProbe,
    integrate,
    open_probe,
    parse_tegrastats_line,
    tegrastats_total,
)


@pytest.fixture(scope="module")
def tegra_lines(data):
    return (data / "tegrastats" / "samples.txt").read_text().splitlines()


def test_tegrastats_agx_orin(tegra_lines):
    rails = parse_tegrastats_line(tegra_lines[0])
    assert rails == {"VDD_GPU_SOC": 3.034, "VDD_CPU_CV": 1.137, "VIN_SYS_5V0": 4.939}
    assert tegrastats_total(rails) == pytest.approx(3.034 + 1.137 + 4.939)


def test_tegrastats_orin_nano_uses_module_input(tegra_lines):
    rails = parse_tegrastats_line(tegra_lines[1])
    assert rails["VDD_IN"] == 4.548 and rails["VDD_SOC"] == 1.489
    assert tegrastats_total(rails) == pytest.approx(4.548)  # VDD_IN already holds the others


def test_tegrastats_every_sample_parses(tegra_lines):
    for line in tegra_lines:
        rails = parse_tegrastats_line(line)
        assert rails, line
        assert 0 < tegrastats_total(rails) < 100
    # the current/average form without a max, and the temperature/frequency fields are not rails
    rails = parse_tegrastats_line(tegra_lines[3])
    assert set(rails) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"}
    assert "GR3D_FREQ" not in parse_tegrastats_line(tegra_lines[4])


def test_tegrastats_line_without_rails():
    assert parse_tegrastats_line("RAM 974/7546MB CPU [0%@729] GR3D_FREQ 0%") == {}
    assert tegrastats_total({}) is None


def test_integrate_constant_and_ramp():
    assert integrate([(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)], 0.0, 2.0) == pytest.approx(10.0)
    assert integrate([(0.0, 0.0), (2.0, 4.0)], 0.0, 2.0) == pytest.approx(4.0)
    # held at the ends: samples inside a longer window
    assert integrate([(1.0, 3.0)], 0.0, 4.0) == pytest.approx(12.0)
    assert integrate([], 0.0, 1.0) == 0.0


def _fake_rapl(root, energy_uj: int, max_uj: int = 1000):
    d = root / "intel-rapl:0"
    d.mkdir(parents=True, exist_ok=True)
    (d / "energy_uj").write_text(str(energy_uj))
    (d / "max_energy_range_uj").write_text(str(max_uj))
    (root / "intel-rapl:0:0").mkdir(exist_ok=True)  # a sub-domain: not summed again
    return d


def test_rapl_counter_with_wraparound(tmp_path):
    d = _fake_rapl(tmp_path, 900)
    probe = RaplProbe(tmp_path)
    assert [p.name for p in probe.domains] == ["intel-rapl:0"]
    (d / "energy_uj").write_text("100")  # wrapped: 900 -> 1000 -> 100 is 200 uJ
    assert probe.read_energy_j() == pytest.approx(200e-6)


def test_rapl_measure_window(tmp_path):
    d = _fake_rapl(tmp_path, 0, max_uj=10**12)
    probe = RaplProbe(tmp_path, interval_s=0.01)

    def work():  # 3 J used inside the window, written at once as the kernel's counter is
        (d / "energy_uj.new").write_text(str(3_000_000))
        (d / "energy_uj.new").replace(d / "energy_uj")

    _, reading = probe.measure(work)
    assert reading.method == "counter"
    assert reading.energy_j == pytest.approx(3.0)
    assert reading.seconds > 0


def test_rapl_sampler_skips_a_failed_read(tmp_path):
    import time

    d = _fake_rapl(tmp_path, 0, max_uj=10**12)
    probe = RaplProbe(tmp_path, interval_s=0.005)
    probe.start()
    (d / "energy_uj").write_text("")  # reads that return nothing for a few sampling intervals
    time.sleep(0.05)
    assert probe._thread.is_alive()  # the sampling thread must not die on them
    (d / "energy_uj").write_text(str(2_000_000))
    reading = probe.stop()
    assert reading.energy_j == pytest.approx(2.0)


def test_rapl_missing_is_a_clear_error(tmp_path):
    with pytest.raises(SarbridgeError, match="no RAPL"):
        RaplProbe(tmp_path)


def test_not_measured_paths():
    probe, note = open_probe("none")
    assert probe is None and note.startswith("not measured")
    with pytest.raises(SarbridgeError, match="unknown power probe"):
        open_probe("wattmeter")
    probe, note = open_probe("auto")
    if probe is None:  # on a machine without any probe, the reason for each one is given
        assert note.startswith("not measured") and "tegrastats" in note and "rapl" in note
    else:
        probe.close()
