"""Tests of `microgpt check`: it passes every installed engine, and it catches an engine whose
gradient is wrong (a deliberately broken engine, plugged in the way a new engine would be).

    python -m pytest -q tests/test_check.py
"""

import random

import pytest

from microgpt import engines
from microgpt.tools.check import fd_entries, random_config
from microgpt.cli import main
from microgpt.engines.scalar import Engine as ScalarEngine

SMALL = ["--n-layer", "2", "--n-embd", "4", "--n-head", "2", "--block-size", "4", "--fd-entries", "2"]


class BrokenEngine(ScalarEngine):
    """The scalar engine with one gradient scaled by 1.01: the kind of slip a hand-written backward makes."""
    name = "broken"

    def loss_and_grads(self, seqs):
        loss, grads = super().loss_and_grads(seqs)
        g = grads["layer1.mlp_fc1"]
        grads["layer1.mlp_fc1"] = type(g).from_floats(g.shape, [1.01 * x for x in g.to_floats()])
        return loss, grads


@pytest.mark.slow
def test_check_passes_every_installed_engine(capsys):
    assert main(["check", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "check passed" in out and "FAIL" not in out
    for name in engines.available():
        assert f"engine {name}: loss" in out
    rows = [line for line in out.splitlines() if line.strip().startswith(("wte", "wpe", "lm_head", "layer"))]
    assert len(rows) == len(engines.available()) * 15  # 3 + 6 per layer, for every engine
    assert all(line.endswith("ok") for line in rows)


@pytest.mark.slow
def test_check_catches_a_wrong_gradient(monkeypatch, capsys):
    real_get = engines.get
    monkeypatch.setattr(engines, "get", lambda name: BrokenEngine if name == "broken" else real_get(name))
    assert main(["check", "--engines", "scalar,broken", *SMALL]) == 1
    out = capsys.readouterr().out
    failed = [line.split()[0] for line in out.splitlines() if line.endswith("FAIL")]
    assert failed == ["layer1.mlp_fc1"]
    assert "check FAILED" in out


@pytest.mark.slow
def test_default_run_checks_the_default_and_a_random_config(monkeypatch, capsys):
    # one scalar engine and one entry per tensor keep this quick; the tables are the real ones
    assert main(["check", "--engines", "scalar", "--fd-entries", "1", "--docs", "1"]) == 0
    out = capsys.readouterr().out
    assert "== default config: n_layer 1, n_embd 16, n_head 4, block_size 16, vocab 27 (4192 params) ==" in out
    assert "== random config (seed 42): n_layer 2" in out


def test_random_configs_are_valid_and_varied():
    configs = [random_config(random.Random(seed)) for seed in range(20)]
    assert all(c["n_embd"] % c["n_head"] == 0 and c["n_layer"] >= 2 and c["block_size"] <= 8 for c in configs)
    assert len({tuple(sorted(c.items())) for c in configs}) > 5


def test_fd_entries_include_the_largest_gradient():
    grad = [0.0, -3.0, 1.0, 2.0, 0.5]
    picks = fd_entries(grad, 3, random.Random(0))
    assert picks[0] == 1 and len(set(picks)) == 3


@pytest.mark.parametrize("args, message", [
    (["check", "--engines", "nope"], "unknown engine"),
    (["check", "--docs", "0"], "--docs"),
    (["check", "--n-embd", "5", "--n-head", "2"], "not divisible"),
])
def test_check_bad_input_is_a_one_line_error(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err
