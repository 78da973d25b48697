"""Tests of the pure engine's forward and backward (engines/pure.py) and of `microgpt trace`: the
plain-float forward, the hand-written backward, and the trace's recording of atomic.py's own run
(its values, gradients, lines and the Adam step) must equal what the scalar engine computes.

    python -m pytest -q tests/test_trace.py
"""

import ast
import json
import os
import re

import pytest

from microgpt import engines
from microgpt.cli import main
from microgpt.config import ModelConfig, TrainConfig, lr_at
from microgpt.engines.pure import FloatGPT
from microgpt.engines.scalar import Engine as ScalarEngine
from microgpt.params import param_shapes
from microgpt.run import Run
from microgpt.tools.recorder import source_line
from microgpt.tools.trace import walk_step
from tiny_run import tiny_run

CONFIGS = [
    {},                                                               # the default model
    {"n_layer": 2, "n_embd": 6, "n_head": 3, "block_size": 4},        # deeper; "emma" is cut to the block
    {"n_layer": 1, "n_embd": 5, "n_head": 1, "block_size": 16},       # one head, odd width
]


def flat(rows):
    return [x for row in rows for x in row]


def fresh(data, seed, model):
    return Run.fresh(ModelConfig(**model), TrainConfig(seed=seed), data)


def state_for(overrides, seed=3):
    return fresh(None, seed, {"n_layer": 1, "n_embd": 16, "n_head": 4, "block_size": 16, **overrides})


@pytest.mark.parametrize("overrides", CONFIGS)
def test_forward_and_backward_equal_the_scalar_engine(overrides):
    state = state_for(overrides)
    tokens = state.encode("emma")
    engine = ScalarEngine(state.model, state.train, state.params)
    loss, grads = engine.loss_and_grads([tokens])

    gpt = FloatGPT(state.model, state.params)
    walk = gpt.forward(tokens)
    assert len(walk.positions) == min(len(tokens) - 1, state.model.block_size)
    assert walk.loss == pytest.approx(loss, rel=1e-14, abs=0)
    mine = gpt.backward(walk)
    for name, _ in param_shapes(state.model):
        assert flat(mine[name]) == pytest.approx(grads[name].to_floats(), rel=1e-9, abs=1e-14), name

    cache = engine.new_cache()
    for at in walk.positions:
        assert at.logits == pytest.approx(engine.logits(cache, at.token_id, at.pos_id), rel=1e-14, abs=1e-15)


def test_adam_step_from_a_fresh_init_equals_a_scalar_train_step():
    state = state_for({})
    result = walk_step(state, "emma")
    engine = ScalarEngine(state.model, state.train, state.params)
    loss = engine.train_step([state.encode("emma")], 0, lr_at(0, state.train))
    assert result["loss"] == pytest.approx(loss, rel=1e-14)
    assert result["adam"]["params"] == pytest.approx(_flat_export(engine, 0), rel=0, abs=1e-12)


@pytest.mark.slow
def test_adam_step_from_a_checkpoint_uses_its_moments_and_step(tmp_path):
    out = tiny_run(tmp_path / "run", steps=8, stop_after=3)
    state = Run.load(out)
    assert state.step == 3 and state.state  # the checkpoint holds Adam's moments mid-run
    result = walk_step(state, "olivia")
    engine = ScalarEngine(state.model, state.train, state.params)
    engine.load_state(state.state)
    engine.train_step([state.encode("olivia")], state.step, lr_at(state.step, state.train))
    for k, key in enumerate(("params", "m", "v")):
        assert result["adam"][key] == pytest.approx(_flat_export(engine, k), rel=0, abs=1e-12), key


def _flat_export(engine, which):
    state = engine.state()
    tensors = [engine.weights(), *({n: state[f"adam.{w}.{n}"] for n, _ in engine.shapes} for w in "mv")][which]
    return [x for name, _ in param_shapes(engine.cfg) for x in tensors[name].to_floats()]


@pytest.mark.parametrize("engine_name", engines.available())
@pytest.mark.slow
def test_trace_reads_checkpoints_of_every_engine(tmp_path, engine_name, capsys):
    out = tiny_run(tmp_path / engine_name, engine=engine_name, steps=2)
    assert main(["trace", "ava", "--out", out, "--json", str(tmp_path / "t.json")]) == 0
    data = json.loads((tmp_path / "t.json").read_text())
    state = Run.load(out)
    engine = engines.get(engine_name)(state.model, state.train, state.params)
    assert data["loss"] == pytest.approx(float(engine.eval_loss([state.encode("ava")])), rel=1e-9)
    assert data["step"] == 2


def test_trace_prints_atomic_names_position_by_position(capsys):
    assert main(["trace", "emma", "--seed", "5", "--param", "layer0.attn_wq[3,5]"]) == 0
    text = capsys.readouterr().out
    for p, (a, b) in enumerate([("<BOS>", "'e'"), ("'e'", "'m'"), ("'m'", "'m'"), ("'m'", "'a'"), ("'a'", "<BOS>")]):
        assert f"=== position {p}: token_id" in text and f"{a} -> target_id" in text
    for name in ("tok_emb", "pos_emb", "x_residual", "scale", "q", "k", "v", "keys", "values", "q_h", "k_h", "v_h",
                 "attn_logits", "max_val", "attn_weights", "head_out", "x_attn", "logits", "probs", "loss_t",
                 "m[i]", "v[i]", "m_hat", "v_hat", "update"):
        assert re.search(rf"^ *{re.escape(name)}( +=|:) ", text, re.MULTILINE), name
    assert "=== Adam on layer0.attn_wq[3,5]" in text
    # the loss printed is the scalar engine's
    state = state_for({}, seed=5)
    loss = ScalarEngine(state.model, state.train, state.params).eval_loss([state.encode("emma")])
    assert f"loss = (1 / n) * sum(losses)  ->  {loss:.4f}" in text


def test_trace_filters_position_layer_and_head(capsys):
    args = ["trace", "emma", "--n-layer", "2", "--n-embd", "8", "--n-head", "2"]
    assert main(args + ["--pos", "2", "--layer", "1", "--head", "0"]) == 0
    text = capsys.readouterr().out
    assert "=== position 2" in text and "=== position 1" not in text and "=== position 3" not in text
    assert "--- layer 1 ---" in text and "--- layer 0 ---" not in text
    assert "--- head 0" in text and "--- head 1" not in text


def test_trace_json_holds_every_line_and_gradient(tmp_path):
    path = tmp_path / "trace.json"
    assert main(["trace", "emma", "--n-layer", "2", "--n-embd", "8", "--n-head", "2", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["tokens"] == [26, 4, 12, 12, 0, 26] and len(data["positions"]) == 5
    lines = data["positions"][4]["lines"]
    heads = {(line["layer"], line["head"]) for line in lines if line["name"] == "attn_weights"}
    assert heads == {(0, 0), (0, 1), (1, 0), (1, 1)}
    weights = [line["value"] for line in lines if line["name"] == "attn_weights"]
    assert all(len(w) == 5 and sum(w) == pytest.approx(1.0) for w in weights)  # position 4 reads 5 keys
    state = fresh(None, 42, {"n_layer": 2, "n_embd": 8, "n_head": 2, "block_size": 16})
    assert all(g is not None for line in lines if line["name"] == "attn_weights" for g in line["grad"])
    _, grads = ScalarEngine(state.model, state.train, state.params).loss_and_grads([state.encode("emma")])
    for name, _ in param_shapes(state.model):
        assert flat(data["grads"][name]["value"]) == pytest.approx(grads[name].to_floats(), rel=1e-9, abs=1e-14)
    adam = data["adam"]
    assert adam["params_after"] == pytest.approx(adam["params_before"] - adam["update"])


def test_trace_names_are_atomic_variables_and_lines_its_source():
    """Every name the trace records is a variable of atomic.py (loss_t names each entry of its `losses`),
    every code line is atomic.py's source at that line number and names that variable."""
    path = os.path.join(os.path.dirname(__file__), "..", "microgpt", "atomic.py")
    source = open(path, encoding="utf-8").read().splitlines()
    tree = ast.parse("\n".join(source))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    state = state_for({"n_layer": 1, "n_embd": 4, "n_head": 2, "block_size": 4})
    records = walk_step(state, "ab")["records"]
    assert {r.name for r in records} - names == {"loss_t"}
    for r in records:
        assert r.code == source[r.lineno - 1].strip() == source_line(r.lineno)
        assert r.name in r.code or r.name == "loss_t", (r.name, r.code)


def test_trace_records_every_intermediate_with_its_gradient():
    """The values recorded are those of atomic.py's own run (the logits equal the pure engine's) and each
    gradient is d(loss)/d(value), checked by the chain rule worked by hand: for the logits,
    (softmax - onehot(target)) / n; for the x that enters lm_head, lm_head^T d(logits)."""
    state = state_for({"n_layer": 1, "n_embd": 8, "n_head": 2, "block_size": 8})
    result = walk_step(state, "emma")
    records = result["records"]
    expected = [at.logits for at in FloatGPT(state.model, state.params).forward(state.encode("emma")).positions]
    logits = [[v.data for v in r.value] for r in records if r.name == "logits"]
    assert logits == [pytest.approx(e, rel=1e-13, abs=1e-15) for e in expected]
    grads = [r.value for r in records if r.name == "logits"]
    n = len(grads)
    for pos, row in enumerate(grads):  # d(mean loss)/d(logits) = (softmax - onehot) / n
        probs = [p.data for p in [r.value for r in records if r.name == "probs"][pos]]
        target = result["tokens"][pos + 1]
        assert [v.grad for v in row] == pytest.approx([(p - (i == target)) / n for i, p in enumerate(probs)],
                                                      abs=1e-14)
        x_final = [r.value for r in records if r.name == "x" and r.pos_id == pos][-1]
        lm_head = state.params["lm_head"].rows()
        dlogits = [v.grad for v in row]
        assert [v.grad for v in x_final] == pytest.approx(
            [sum(d * lm_head[o][i] for o, d in enumerate(dlogits)) for i in range(len(x_final))], abs=1e-14)


@pytest.mark.parametrize("args, message", [
    (["trace", "Emma!"], "not in the model's vocabulary"),
    (["trace", "emma", "--pos", "9"], "--pos 9 is out of range"),
    (["trace", "emma", "--head", "4"], "--head 4 is out of range"),
    (["trace", "emma", "--param", "nope"], "is not a parameter"),
    (["trace", "emma", "--param", "wte[99,0]"], "has shape"),
    (["trace", "emma", "--n-embd", "10", "--n-head", "4"], "not divisible"),
    (["trace", "emma", "--out", "/nonexistent/dir"], "no checkpoint"),
])
def test_trace_bad_input_is_a_one_line_error(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
