"""`--optimizer muon`: the batched Muon of engines/muon.py against torch.optim.Muon and the SVD.

    python -m pytest -q tests/test_muon.py

Skipped when torch is missing.
"""

import json
import math

import pytest

torch = pytest.importorskip("torch", reason="the torch engine needs torch: pip install torch")

from microgpt import cli  # noqa: E402
from microgpt.config import TrainConfig  # noqa: E402
from microgpt.engines import muon  # noqa: E402
from microgpt.engines import torch as torch_engine  # noqa: E402
from microgpt.run import Run  # noqa: E402
from tests.test_torch_engine import MODEL_DEFAULTS, max_diff, setup, train_whole_and_split  # noqa: E402

torch.set_num_threads(1)


@pytest.mark.parametrize("shape", [(16, 16), (64, 16), (16, 64)])
def test_orthogonalize_keeps_the_singular_vectors_and_brings_the_values_near_one(shape):
    gen = torch.Generator().manual_seed(0)
    k = min(shape)
    U = torch.linalg.qr(torch.randn(shape[0], k, generator=gen, dtype=torch.float64))[0]  # (rows, k)
    V = torch.linalg.qr(torch.randn(shape[1], k, generator=gen, dtype=torch.float64))[0]  # (cols, k)
    S = torch.logspace(-3, -5, k, dtype=torch.float64)  # singular values spanning 100x, any scale
    O = muon.orthogonalize((U @ torch.diag(S) @ V.T)[None])[0]  # (rows, cols)
    M = U.T @ O @ V  # (k, k): diagonal if O = U S' V^T
    assert (M - torch.diag(torch.diag(M))).abs().max() < 1e-12
    assert 0.6 < torch.diag(M).min() and torch.diag(M).max() < 1.2  # S' near 1, as Muon needs


def test_muon_steps_as_torch_optim_muon():
    gen = torch.Generator().manual_seed(1)
    start = {"square": torch.randn(16, 16, generator=gen), "tall": torch.randn(64, 16, generator=gen),
             "wide": torch.randn(16, 64, generator=gen), "square2": torch.randn(16, 16, generator=gen)}
    ours = {n: w.clone().double().requires_grad_() for n, w in start.items()}
    theirs = [w.clone().double().requires_grad_() for w in start.values()]
    ours_opt = muon.Muon(ours, weight_decay=0.1)
    theirs_opt = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for _ in range(3):  # the same gradients to both, so the momentum is compared too
        grads = [torch.randn(w.shape, generator=gen, dtype=torch.float64) for w in start.values()]
        for p, g in zip([*ours.values(), *theirs], grads * 2):
            p.grad = g.clone()
        ours_opt.step(0.02)
        theirs_opt.step()
    for (name, w0), mine, torch_ in zip(start.items(), ours.values(), theirs):
        moved, expected = (mine - w0).detach(), (torch_ - w0).detach()
        # torch.optim.Muon iterates in bfloat16: agree to its precision
        assert (moved - expected).norm() / expected.norm() < 0.02, name
        assert expected.norm() > 0.1, name  # and the step was a real one
    assert max_diff_momentum(ours_opt, theirs_opt, theirs) < 1e-12


def max_diff_momentum(ours_opt, theirs_opt, theirs) -> float:
    return max((ours_opt.momentum[n] - theirs_opt.state[p]["momentum_buffer"]).abs().max().item()
               for n, p in zip(ours_opt.momentum, theirs))


def test_muon_trains_the_blocks_matrices_and_adamw_the_rest():
    cfg, params, data = setup(MODEL_DEFAULTS | {"n_layer": 2})
    seqs = data.batch(0, 4)
    with_muon = torch_engine.Engine(cfg, TrainConfig(engine="torch", optimizer="muon"), params)
    with_adam = torch_engine.Engine(cfg, TrainConfig(engine="torch"), params)
    with_muon.train_step(seqs, 0, 0.01)
    with_adam.train_step(seqs, 0, 0.01)
    by_muon, by_adam = with_muon.weights(), with_adam.weights()
    for name in params:
        if name.startswith("layer"):
            assert max_diff(by_muon[name], by_adam[name]) > 1e-4, name
        else:  # the same gradient, the same AdamW step
            assert max_diff(by_muon[name], by_adam[name]) < 1e-15, name


def test_muon_runs_resume_exactly_and_keep_the_momentum(tmp_path):
    tcfg = TrainConfig(engine="torch", steps=6, batch_size=3, optimizer="muon", samples=0)
    train_whole_and_split(tcfg, tmp_path)  # the losses of every step agree
    whole, split = Run.load(str(tmp_path / "whole")), Run.load(str(tmp_path / "split"))
    for name in whole.params:
        assert max_diff(whole.params[name], split.params[name]) < 1e-12
    for name in whole.state:
        assert max_diff(whole.state[name], split.state[name]) < 1e-12
    assert max(abs(x) for x in whole.state["muon.momentum.layer0.mlp_fc1"].to_floats()) > 0  # Muon's momentum was saved


@pytest.mark.slow
def test_the_names_preset_with_muon_trains_end_to_end(tmp_path):
    """The names preset (Muon, the EMA, light dropout) through the command line, a few steps on the
    embedded names (with a short EMA to match): it runs, saves, and its held-out loss is well below a
    uniform guess's ln(27)."""
    out = tmp_path / "names"
    assert cli.main(["train", "--preset", "names", "--steps", "60", "--warmup-steps", "5",
                     "--eval-every", "60", "--samples", "2", "--ema", "0.9", "--out", str(out)]) == 0
    evals = [json.loads(line) for line in (out / "metrics.jsonl").open() if "val_loss" in line]
    assert len(evals) == 1 and evals[0]["step"] == 60
    assert evals[0]["val_loss"] < math.log(27) - 0.5
    assert Run.load(str(out)).train.optimizer == "muon"
