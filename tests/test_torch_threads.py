"""The torch engine picks its CPU thread count on purpose and says so; `bench --threads` shows the cost.

    python -m pytest -q tests/test_torch_threads.py
"""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="the torch engine needs torch: pip install torch")

from conftest import REPO  # noqa: E402
from microgpt import cli  # noqa: E402
from microgpt.config import ModelConfig, TrainConfig  # noqa: E402
from microgpt.engines.torch import SMALL_MODEL, choose_threads  # noqa: E402
from microgpt.params import num_params  # noqa: E402
from microgpt.run import Run  # noqa: E402


def test_a_small_model_gets_one_thread(machine):
    machine(0.0)
    assert num_params(ModelConfig(vocab_size=27)) < SMALL_MODEL  # the default model is small
    assert choose_threads(0, SMALL_MODEL - 1)[0] == 1


@pytest.mark.parametrize("load, threads", [(0.0, 4), (0.3, 4), (1.0, 3), (2.6, 1), (3.9, 1), (12.0, 1)])
def test_a_large_model_gets_the_idle_cores(machine, load, threads):
    machine(load)
    chosen, why = choose_threads(0, SMALL_MODEL)
    assert chosen == threads and "4 cores" in why and f"load {load:.1f}" in why


def test_the_flag_and_the_environment_come_first(machine, monkeypatch):
    machine(0.0)
    assert choose_threads(3, 10) == (3, "--threads")
    assert choose_threads(16, 10) == (4, "--threads 16, but 4 cores here")   # e.g. saved by a larger machine
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads(0, SMALL_MODEL * 10) == (torch.get_num_threads(), "OMP_NUM_THREADS")


def test_the_engine_sets_torch_to_its_choice(machine):
    machine(0.0)
    before = torch.get_num_threads()
    try:
        run = Run.fresh(ModelConfig(), TrainConfig(engine="torch", threads=2, steps=1))
        engine = run.engine()
        assert torch.get_num_threads() == 2 and engine.note == "torch: 2 CPU threads (--threads)"
        run.engine(threads=0)  # the default model is small
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_train_says_what_it_chose(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert cli.main(["train", "--engine", "torch", "--steps", "2", "--samples", "0", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(before)
    lines = capsys.readouterr().err.splitlines()  # stdout keeps atomic.py's format
    assert [line for line in lines if line.startswith("torch:")] == [
        f"torch: 1 CPU thread (a model under {SMALL_MODEL:,} parameters; --threads N to choose)"]


def test_threads_belong_to_the_engines_with_threads(tmp_path, capsys):
    assert cli.main(["train", "--engine", "numpy", "--threads", "2", "--out", str(tmp_path / "unused")]) == 2
    assert "--threads is not implemented by --engine numpy" in capsys.readouterr().err
    assert cli.main(["train", "--engine", "torch", "--threads", "-1", "--out", str(tmp_path / "unused")]) == 2
    assert "--threads must be >= 0" in capsys.readouterr().err


def test_bench_runs_the_torch_rows_once_per_thread_count(capsys):
    before = torch.get_num_threads()
    try:
        assert cli.main(["bench", "--engines", "torch", "--threads", "1,2", "--steps", "3", "--batched-steps", "2",
                         "--batch-size", "4", "--rounds", "1", "--json"]) == 0
    finally:
        torch.set_num_threads(before)
    rows = json.loads(capsys.readouterr().out)
    assert [(r["threads"], r["batch"]) for r in rows] == [(1, 1), (1, 4), (2, 4)]  # batched: once per count
    assert rows[1]["final_loss"] == pytest.approx(rows[2]["final_loss"], abs=1e-9)  # threads change no result


def test_bench_shows_the_threads_the_engine_ran(capsys, monkeypatch):
    """A row's --threads past the cores here runs the cores (the engine's cap, as in train), and bench's
    table says so rather than the count asked for."""
    from microgpt.engines import base
    monkeypatch.setattr(base, "cores", lambda: 1)
    before = torch.get_num_threads()
    argv = ["bench", "--engines", "torch", "--threads", "1,3", "--steps", "2", "--batched-steps", "2",
            "--batch-size", "4", "--rounds", "1"]
    try:
        assert cli.main(argv + ["--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
    finally:
        torch.set_num_threads(before)
    assert [(r["batch"], r["threads"], r["threads_run"]) for r in rows] == [(1, 1, 1), (4, 1, 1), (4, 3, 1)]
    table = [line.split() for line in out.splitlines() if line.lstrip().startswith("torch")]
    assert [(row[2], row[3]) for row in table] == [("1", "1"), ("4", "1"), ("4", "1")]


NESTING_PROBE = """
import ctypes, os, sys
import numba, numpy as np
from microgpt.config import ModelConfig, TrainConfig
from microgpt.run import Run

@numba.njit(parallel=True)
def total(x):
    s = 0.0
    for i in numba.prange(x.shape[0]):
        s += x[i]
    return s

total(np.ones(64))   # Numba's first parallel launch starts its OpenMP threads
try:
    gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
except OSError:
    sys.exit("skip: no libgomp loaded")
if numba.threading_layer() != "omp" or gomp.omp_get_max_active_levels() <= 1:
    sys.exit("skip: Numba left OpenMP nesting off here")
before = gomp.omp_get_max_active_levels()
Run.fresh(ModelConfig(), TrainConfig(engine="torch", threads=2)).engine()
print(before, gomp.omp_get_max_active_levels())
"""


def test_the_engine_turns_off_the_openmp_nesting_that_numba_turns_on():
    """After the compiled engine's threads in one process, torch's two-thread steps ran 40x slower
    (openmp_nesting_off). In a process of its own: which engine first started OpenMP decides the state."""
    pytest.importorskip("numba", reason="needs numba, whose OpenMP threads turn nesting on")
    result = subprocess.run([sys.executable, "-c", NESTING_PROBE], env=dict(os.environ, PYTHONPATH=REPO),
                            capture_output=True, text=True, timeout=300)
    if result.returncode and result.stderr.strip().startswith("skip:"):
        pytest.skip(result.stderr.strip()[6:])
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = map(int, result.stdout.split()[-2:])
    assert before > 1 and after == 1

