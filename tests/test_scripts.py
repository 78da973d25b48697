"""The benchmark scripts in scripts/ refuse bad flags in one line, before any work (they are run by hand,
and a traceback after minutes of timing loses the run).

    python -m pytest -q tests/test_scripts.py
"""

import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.parametrize("script, flags, error", [
    ("bench_numpy.py", ["--steps", "0"], "error: --steps must be a positive integer (got 0); the reference uses 1000"),
    ("bench_optimizers.py", ["--steps", "3"], "error: --steps must be more than the 20 untimed warm-up steps (got 3)"),
    ("bench_packing.py", ["--threads", "0"], "error: --threads must be 1 or more (got 0)"),
    ("shakespeare_cpu_tokens_per_second.py", ["--rounds", "0"], "error: --rounds must be 1 or more (got 0)"),
    ("shakespeare_cpu_tokens_per_second.py", ["--steps", "0"], "error: --steps must be 1 or more (got 0)"),
])
def test_a_bad_flag_is_one_line(script, flags, error):
    if script != "bench_numpy.py":
        pytest.importorskip("torch", reason="the side-by-side scripts time the torch engine: pip install torch")
    done = subprocess.run([sys.executable, os.path.join(REPO, "scripts", script), *flags],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr.strip(), done.stdout) == (2, error, "")
