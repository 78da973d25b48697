"""The pure engine (engines/pure.py: plain floats, the backward by hand) against the scalar engine
(atomic.py's Value autograd), an independent computation: losses over 40 steps, gradients, and samples.

    python -m pytest -q tests/test_pure_engine.py
"""

import pytest

from microgpt.config import ModelConfig, TrainConfig, lr_at
from microgpt.run import Run
from microgpt.sample import generate

CONFIGS = [
    ({}, 1),                                                          # the reference job
    ({"n_layer": 2, "n_embd": 12, "n_head": 3, "block_size": 5}, 3),  # deeper, cut documents, batches
    ({"n_layer": 1, "n_embd": 5, "n_head": 1, "block_size": 16}, 2),  # one head, odd width
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
