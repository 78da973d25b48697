"""Data-parallel training under torchrun equals one process with the whole batch.

    python -m pytest -q tests/test_torch_ddp.py

Two CPU processes (gloo), each with batch 3 of documents of different lengths, must give the losses
and weights of one process with batch 6, also when the run is stopped and resumed; only rank 0
prints and writes. Skipped when torch is missing.
"""

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="data-parallel training needs torch: pip install torch")
pytestmark = pytest.mark.slow  # scripts/test.sh --fast leaves this module out
torch.set_num_threads(1)  # as torchrun sets each of its processes (OMP_NUM_THREADS=1)

from microgpt.config import TrainConfig  # noqa: E402
from microgpt.errors import UsageError  # noqa: E402
from microgpt.run import Run  # noqa: E402
from tiny_run import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = {"n_layer": 2, "n_embd": 16, "n_head": 4, "block_size": 16}
FLAGS = ["--engine", "torch", "--n-layer", "2", "--steps", "6", "--samples", "3", "--val-docs", "50",
         "--eval-every", "3", "--lr-schedule", "cosine", "--warmup-steps", "1", "--min-lr", "0.001"]


def torchrun(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "microgpt", "train", *FLAGS, "--batch-size", "3", *args]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def records(out_dir: Path) -> list[dict]:
    with open(out_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def assert_same_run(ours: Path, single: Path) -> None:
    a, b = records(ours), records(single)
    assert [sorted(r) for r in a] == [sorted(r) for r in b]  # the same steps, evaluations included
    for x, y in zip(a, b):
        for key in ("loss", "val_loss", "lr"):
            if key in x:
                assert abs(x[key] - y[key]) < 1e-12, (key, x, y)
    p, q = Run.load(str(ours)), Run.load(str(single))
    assert p.step == q.step == 6
    for name in q.params:
        assert max(abs(u - v) for u, v in zip(p.params[name].to_floats(), q.params[name].to_floats())) < 1e-12


def test_two_processes_equal_one_with_twice_the_batch(tmp_path):
    tcfg = TrainConfig(engine="torch", steps=6, samples=3, val_docs=50, eval_every=3, batch_size=6,
                       lr_schedule="cosine", warmup_steps=1, min_lr=0.001)
    with redirect_stdout(io.StringIO()) as single_out:
        train(dict(MODEL), tcfg, None, str(tmp_path / "single"))

    printed = torchrun("--out", str(tmp_path / "ddp"))
    assert printed.count("num docs") == 1 and printed.count("--- samples ---") == 1  # rank 0 alone
    assert_same_run(tmp_path / "ddp", tmp_path / "single")
    samples = lambda text: text[text.index("--- samples ---"):text.index("checkpoint: ")]  # not its path
    assert samples(printed) == samples(single_out.getvalue())

    torchrun("--out", str(tmp_path / "resumed"), "--stop-after", "2")
    assert Run.load(str(tmp_path / "resumed")).step == 2
    torchrun("--out", str(tmp_path / "resumed"), "--resume")
    assert_same_run(tmp_path / "resumed", tmp_path / "single")
    with pytest.raises(UsageError, match="trained by 2 processes"):  # one process would take other documents
        train(dict(MODEL), tcfg, None, str(tmp_path / "ddp"), resume=True)
