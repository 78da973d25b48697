"""The pure engine (engines/pure.py: plain floats, the backward by hand) against the scalar engine
(atomic.py's Value autograd), an independent computation: losses over 40 steps, gradients, and samples;
and its 1000-step run on makemore's names against the reference run's losses.

    python -m pytest -q tests/test_pure_engine.py
"""

import sys

import pytest

from conftest import parse_run, run_cli
from microgpt.config import ModelConfig, TrainConfig, lr_at
from microgpt.engines.pure import FloatGPT
from microgpt.run import Run
from microgpt.sample import generate
from test_reference import check_against_reference
from tiny_run import TINY, train

CONFIGS = [
    ({}, 1),                                                          # the reference job
    ({"n_layer": 2, "n_embd": 12, "n_head": 3, "block_size": 5}, 3),  # deeper, cut documents, batches
    ({"n_layer": 1, "n_embd": 5, "n_head": 1, "block_size": 16}, 2),  # one head, odd width
    ({"n_layer": 3, "n_embd": 8, "n_head": 2, "block_size": 8}, 4),   # three layers, names cut at 8
]


@pytest.mark.parametrize("model, batch", CONFIGS)
@pytest.mark.slow
def test_losses_over_40_steps_equal_the_scalar_engine(model, batch):
    tcfg = TrainConfig(steps=40, batch_size=batch)
    run = Run.fresh(ModelConfig(**model), tcfg)
    scalar, pure = run.engine("scalar"), run.engine("pure")
    for step in range(tcfg.steps):
        seqs = run.data.batch(step, batch)
        a, b = scalar.train_step(seqs, step, lr_at(step, tcfg)), pure.train_step(seqs, step, lr_at(step, tcfg))
        assert abs(a - b) <= 1e-9, step
    for ours, theirs in ((pure.weights(), scalar.weights()), (pure.state(), scalar.state())):
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert ours[name].to_floats() == pytest.approx(theirs[name].to_floats(), rel=1e-7, abs=1e-9), name


@pytest.mark.parametrize("model, batch", CONFIGS)
def test_gradients_equal_the_scalar_engine(model, batch):
    run = Run.fresh(ModelConfig(**model), TrainConfig(seed=5))
    seqs = run.data.batch(0, batch + 1)
    loss_s, grads_s = run.engine("scalar").loss_and_grads(seqs)
    loss_p, grads_p = run.engine("pure").loss_and_grads(seqs)
    assert loss_p == pytest.approx(loss_s, rel=1e-13)
    for name in grads_s:
        assert grads_p[name].to_floats() == pytest.approx(grads_s[name].to_floats(), rel=1e-9, abs=1e-14), name


@pytest.mark.slow
def test_samples_equal_the_scalar_engine():
    run = Run.fresh(ModelConfig(), TrainConfig())
    import random
    draws = {name: [generate(run.engine(name), run.tokenizer, 16, rng, 0.5) for _ in range(10)]
             for name, rng in (("scalar", random.Random(3)), ("pure", random.Random(3)))}
    assert draws["pure"] == draws["scalar"]


def test_reference_run_losses(tmp_path, names_path, reference):
    """`microgpt train --engine pure` with seed 42 on names.txt prints the reference run's header counts
    and its 1000 losses to 4 decimals."""
    out = run_cli("train", "--engine", "pure", "--data", names_path, "--seed", 42, "--steps", 1000,
                  "--out", tmp_path / "run")
    assert out.returncode == 0, out.stderr
    run = parse_run(out.stdout)
    check_against_reference(run, reference)
    assert len(run["samples"]) == 20


def test_resume_equals_uninterrupted(tmp_path):
    """A pure run stopped after 4 of 9 steps and resumed (Adam's moments and the step from the checkpoint)
    prints the same losses and ends with the same weights, moments and samples as one that never stopped."""
    tcfg = TrainConfig(engine="pure", steps=9, batch_size=2, samples=3, save_every=100)
    whole = train(dict(TINY), tcfg, None, tmp_path / "whole")
    assert train(dict(TINY), tcfg, None, tmp_path / "parts", stop_after=4)["status"] == "stopped"
    parts = train(dict(TINY), tcfg, None, tmp_path / "parts", resume=True)
    assert parts["samples"] == whole["samples"] and parts["loss"] == whole["loss"]
    a, b = Run.load(str(tmp_path / "whole")), Run.load(str(tmp_path / "parts"))
    assert a.params == b.params and a.state == b.state


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="from Python 3.12 math.sumprod and sum() round sums "
                    "more exactly than Value's additions, so logits agree to round-off (the tests above)")
@pytest.mark.parametrize("model", [model for model, _ in CONFIGS])
def test_forward_equals_the_scalar_engine_bit_for_bit(model):
    """The forward does atomic.py's float operations in atomic.py's order: the same logits and loss."""
    run = Run.fresh(ModelConfig(**model), TrainConfig(seed=3))
    tokens = run.encode("emmanuel")
    walk = FloatGPT(run.model, run.params).forward(tokens)
    scalar = run.engine("scalar")
    cache = scalar.new_cache()
    assert [at.logits for at in walk.positions] == [scalar.logits(cache, at.token_id, at.pos_id) for at in walk.positions]
    assert walk.loss == scalar.eval_loss([tokens])
