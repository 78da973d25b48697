"""`--resume --steps N` extends a finished or stopped run to N steps, and says what that changes.

    python -m pytest -q tests/test_extend.py
"""

import json
import os

from conftest import run_cli
from microgpt.run import Run

FLAGS = ["--engine", "numpy", "--n-layer", "1", "--n-embd", "8", "--n-head", "2", "--block-size", "8",
         "--samples", "0", "--lr", "0.01"]


def lrs(out) -> dict[int, float]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return {r["step"]: r["lr"] for r in map(json.loads, f) if "lr" in r}


def test_resume_with_more_steps_continues_on_a_stretched_schedule(tmp_path):
    out, whole = tmp_path / "run", tmp_path / "whole"
    assert run_cli("train", *FLAGS, "--steps", "10", "--out", out).returncode == 0
    done = run_cli("train", "--out", out, "--resume", "--steps", "25")
    assert done.returncode == 0, done.stderr
    note = [line for line in done.stdout.splitlines() if line.startswith("note: --steps 25 extends")]
    # the default schedule is linear from --lr to 0: step s (1-based) has lr 0.01 * (1 - (s - 1) / steps)
    assert len(note) == 1 and "from 0.001 (step 10) to 0.006 (step 11)" in note[0], done.stdout
    assert Run.load(str(out)).step == 25
    got = lrs(out)
    assert sorted(got) == list(range(1, 26))
    for s in range(1, 26):
        steps = 10 if s <= 10 else 25
        assert abs(got[s] - 0.01 * (1 - (s - 1) / steps)) < 1e-15, s

    # ... which is why it is not the uninterrupted 25-step run: that one had other lrs from step 2 on
    assert run_cli("train", *FLAGS, "--steps", "25", "--out", whole).returncode == 0
    assert Run.load(str(out)).params != Run.load(str(whole)).params


def test_steps_below_the_checkpoint_are_refused(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", *FLAGS, "--steps", "6", "--out", out).returncode == 0
    done = run_cli("train", "--out", out, "--resume", "--steps", "4")
    assert done.returncode == 2
    assert done.stderr.strip() == (f"microgpt: error: the checkpoint in {out} is at step 6, past --steps 4; "
                                   f"give --steps larger than 6 to train further")
