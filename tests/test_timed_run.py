"""scripts/timed_run.py on small CPU runs: its figures against the run's own metrics.jsonl and a FLOP count
made here from the model's shapes, and its one-line refusals.

    python -m pytest -q tests/test_timed_run.py
"""

import json
import os
import random
import statistics
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "timed_run.py")


def timed_run(*args):
    result = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout, result.stderr


def figures(stdout):
    """The report's lines, by their first word: {'val': 'loss 4.2269 (step 6)', ...}."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("val loss"))
    return {line.split()[0]: line.split(None, 1)[1] for line in lines[start:]}


def number(text):
    return float(text.split()[0].rstrip("%").replace(",", ""))


def test_a_stream_run_reports_what_its_metrics_and_shapes_give(tmp_path):
    pytest.importorskip("torch")   # the shakespeare-cpu preset's engine
    text = tmp_path / "text.txt"
    rng = random.Random(0)
    text.write_text("".join(rng.choice("abcdefgh ij\n") for _ in range(20000)))
    out = tmp_path / "run"
    L, C, T, B = 1, 16, 16, 2
    code, stdout, stderr = timed_run("--out", str(out), "--peak", "0.1", "--", "--preset", "shakespeare-cpu",
                                     "--data", str(text), "--steps", "6", "--eval-every", "3",
                                     "--batch-size", str(B), "--n-layer", str(L), "--n-embd", str(C),
                                     "--block-size", str(T), "--samples", "0", "--threads", "1")
    assert code == 0, stderr
    got = figures(stdout)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [row["dt"] for row in rows if "dt" in row]
    val = [row for row in rows if "val_loss" in row][-1]
    assert len(steps) == 6 and val["step"] == 6
    assert got["val"] == f"loss   {val['val_loss']:.4f} (step 6)"
    assert number(got["steps"]) == 6
    assert f"median {statistics.median(steps) * 1e3:.2f} ms" in got["steps"]
    assert 0 < number(got["wall"].split()[0]) < 300
    tokens_per_second = B * T / statistics.median(steps)
    assert number(got["tokens/s"]) == pytest.approx(tokens_per_second, abs=0.5)
    # FLOPs a token, counted here from the shapes: lm_head (V, C) and per layer wq, wk, wv, wo (C, C),
    # fc1 (4C, C) and fc2 (C, 4C), a multiply-add forward and two backward (6 FLOPs a weight); attention's
    # q.k and weights.v over the whole block, forward and backward, 12 L T C (nanoGPT's count)
    V = len(set(text.read_text())) + 1   # the characters and BOS
    per_token = 6 * (V * C + L * (4 * C * C + 8 * C * C)) + 12 * L * T * C
    assert number(got["MFU"]) == pytest.approx(100 * tokens_per_second * per_token / 0.1e12, abs=0.006)
    assert f"{per_token / 1e6:.4g} MFLOP a token" in got["MFU"]


def test_a_run_on_documents_gets_no_tokens_per_second_and_no_peak_no_mfu(tmp_path, names_path):
    code, stdout, stderr = timed_run("--out", str(tmp_path / "run"), "--", "--data", names_path, "--steps", "3",
                                     "--val-docs", "50", "--samples", "0", "--engine", "numpy")
    assert code == 0, stderr
    got = figures(stdout)
    assert got["tokens/s"].startswith("none:") and "MFU" not in got
    assert got["val"].startswith("loss ") and "(step 3)" in got["val"]


@pytest.mark.parametrize("args, says", [
    (["--out", "X", "--peak", "-1", "--"], "--peak must be a positive number"),
    (["--out", "X", "--", "--out", "Y"], "give --out before `--`"),
    (["--out", "X", "--", "--data", "/nonexistent/text.txt"], "microgpt train exited with 2: nothing to report"),
])
def test_bad_input_is_one_line_and_trains_nothing(tmp_path, args, says):
    args = [str(tmp_path / a) if a in ("X", "Y") else a for a in args]
    code, stdout, stderr = timed_run(*args)
    assert code != 0 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith(f"timed_run: {says}")
    assert not os.path.exists(tmp_path / "X" / "metrics.jsonl")
