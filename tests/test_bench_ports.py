"""scripts/bench_ports.py end to end: it builds a port from a checkout, runs it beside our engines, and
prints a table whose ratios are the medians of the times it printed along the way.

The port is a stand-in written here, a checkout of "microgpt.cpp" that reads input.txt, waits 0.3 s and
prints one loss line (the real ports are other people's code, never part of this repo: see the script's docstring).
Our side is the numpy engine alone (the compiled engine's rows are the same code, and need its compile).

    python -m pytest -q tests/test_bench_ports.py
"""

import importlib.util
import os
import re
import shutil

import pytest

from conftest import REPO

STAND_IN = r"""
#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
int main() {
    std::ifstream in("input.txt");            // the script puts the documents here, as every port expects
    std::string line; int docs = 0;
    while (std::getline(in, line)) docs++;
    if (docs == 0) return 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));   // long beside the rounding of its time
    std::cout << "step 1000 / 1000 | loss 2.5000" << std::endl;
    return 0;
}
"""


def load_script():
    spec = importlib.util.spec_from_file_location("bench_ports", os.path.join(REPO, "scripts", "bench_ports.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def stand_in(tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("needs g++ to build the stand-in port")
    (tmp_path / "microgpt.cpp").write_text(STAND_IN)
    return tmp_path


def test_a_port_beside_the_numpy_engine(stand_in, monkeypatch, capsys):
    bench_ports = load_script()
    monkeypatch.setattr(bench_ports.engines, "is_available", lambda engine: engine == "numpy")
    assert bench_ports.main(["--microgpt-cpp", str(stand_in), "--rounds", "2"]) == 0
    out, err = capsys.readouterr()
    printed = {}   # name -> the seconds of each round, from the progress lines
    for name, seconds in re.findall(r"round \d/2: (.+): ([0-9.]+) s", err):
        printed.setdefault(name, []).append(float(seconds))
    assert set(printed) == {"Charbel199/microgpt.cpp", "microgpt numpy float64"}
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines()
            if line.startswith(("Charbel199", "microgpt numpy"))}
    port, ours = rows["Charbel199/microgpt.cpp"], rows["microgpt numpy float64"]
    assert port[-1] == "2.5000"                            # the last loss the port printed
    assert "-Ofast" in " ".join(port)                      # built with the port's own flags
    assert 2.0 < float(ours[-1]) < 3.0                     # 1000 steps trained (ln 27 = 3.30 untrained)
    median = {name: sum(ts) / 2 for name, ts in printed.items()}   # two rounds: the median is the mean
    want = median["Charbel199/microgpt.cpp"] / median["microgpt numpy float64"]
    assert float(port[-2]) == pytest.approx(want, abs=0.01)   # "x numpy", printed to 2 decimals
    assert float(ours[-2]) == 1.0


def test_no_port_is_one_line(capsys):
    assert load_script().main([]) == 2
    assert capsys.readouterr().err.strip() == ("error: point at least one port's checkout: --microgpt-cpp, "
                                               "--rust-microgpt, --microgpts")
