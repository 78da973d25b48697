"""The numpy engine computes the scalar engine's function: losses, gradients, logits, samples.

Every expected value comes from an independent computation: the scalar engine (atomic.py's Value
autograd) or the reference run's printed losses. Speed is not tested here; see `microgpt bench`.
"""

import json
import math
import random
from dataclasses import replace

import pytest

np = pytest.importorskip("numpy")

from microgpt import cli, engines  # noqa: E402
from microgpt.tensor import Tensor  # noqa: E402
from microgpt.config import ModelConfig, TrainConfig, validate  # noqa: E402
from microgpt.data import DocumentData, Tokenizer, read_text, split_docs  # noqa: E402
from microgpt.errors import UsageError  # noqa: E402
from microgpt.params import init_params, param_shapes  # noqa: E402
from microgpt.config import MODEL_FIELDS  # noqa: E402
from microgpt.run import Run  # noqa: E402
from tiny_run import samples_by_engine, train  # noqa: E402

DEFAULT_MODEL = {k: getattr(ModelConfig(), k) for k in MODEL_FIELDS}
CUSTOM_TEXT = "the quick brown fox\njumps over\nthe lazy dog!\n" + "\n".join(
    "".join(random.Random(i).choice("abcdefgh ,.") for _ in range(2 + i % 9)) for i in range(60))


def train_losses(tmp_path, name, engine, data=None, stop_after=None, **tcfg):
    """Per-step losses of a quiet training run (train.train) into tmp_path/name."""
    out = tmp_path / name
    train(dict(DEFAULT_MODEL), TrainConfig(engine=engine, samples=0, **tcfg), data, str(out), log_every=10**9,
          stop_after=stop_after)
    with open(out / "metrics.jsonl") as f:
        return [json.loads(line)["loss"] for line in f if '"loss"' in line]


def engine_pair(model_cfg, seed=0, dtype="float64"):
    """A scalar and a numpy engine holding the same freshly initialized parameters."""
    floats = init_params(model_cfg, random.Random(seed))
    params = {name: Tensor.from_floats(shape, floats[name]) for name, shape in param_shapes(model_cfg)}
    scalar = engines.get("scalar")(model_cfg, TrainConfig(), params)
    numpy_engine = engines.get("numpy")(model_cfg, TrainConfig(engine="numpy", dtype=dtype), params)
    return scalar, numpy_engine


def assert_tensors_close(want, got, rel):
    """Each tensor of got within rel times the largest |value| of want's tensor of the same name."""
    assert set(got) == set(want)
    for name in want:
        a, b = np.array(want[name].to_floats()), np.array(got[name].to_floats())
        assert np.abs(a - b).max() <= rel * np.abs(a).max(), name


def names_batch(block_size, count, seed):
    """`count` sequences of the embedded names, encoded and cut to the block, a few long ones included."""
    docs = split_docs(read_text(None))
    random.Random(seed).shuffle(docs)
    docs = docs[:count - 2] + ["christopherjohnathan", "maximilianalexander"]  # longer than small blocks
    tok = Tokenizer.from_docs(split_docs(read_text(None)))
    return DocumentData(docs, tok, block_size).train, tok.vocab_size


# ---- per-step losses ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [42, 7])
@pytest.mark.slow
def test_losses_equal_scalar_for_40_steps(tmp_path, seed):
    """The first 40 steps of the default run (1000 steps, so the default learning-rate schedule)."""
    scalar = train_losses(tmp_path, "scalar", "scalar", seed=seed, stop_after=40)
    fast = train_losses(tmp_path, "numpy", "numpy", seed=seed, stop_after=40)
    assert len(scalar) == len(fast) == 40
    assert max(abs(a - b) for a, b in zip(scalar, fast)) <= 1e-9


@pytest.mark.slow
def test_losses_equal_scalar_on_own_file(tmp_path):
    data = tmp_path / "docs.txt"
    data.write_text(CUSTOM_TEXT, encoding="utf-8")  # punctuation, spaces, documents cut at the block
    scalar = train_losses(tmp_path, "scalar", "scalar", data=str(data), seed=3, stop_after=40)
    fast = train_losses(tmp_path, "numpy", "numpy", data=str(data), seed=3, stop_after=40)
    assert len(scalar) == len(fast) == 40
    assert max(abs(a - b) for a, b in zip(scalar, fast)) <= 1e-9


def test_reproduces_reference_run(tmp_path, names_path, reference):
    losses = train_losses(tmp_path, "ref", "numpy", data=names_path, seed=42, steps=1000)
    want = reference["printed_losses_4dp"]
    assert len(losses) == len(want) == 1000
    mismatches = [(i + 1, got, ref) for i, (got, ref) in enumerate(zip(losses, want)) if f"{got:.4f}" != f"{ref:.4f}"]
    assert not mismatches, f"steps differing from the reference: {mismatches[:5]}"


# ---- gradients -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n_layer,n_embd,n_head,block_size,batch", [
    pytest.param(2, 32, 2, 8, 3, marks=pytest.mark.slow),  # wider, fewer heads, cut at a block of 8, batch 3
    pytest.param(3, 16, 4, 16, 4, marks=pytest.mark.slow),  # deeper, documents of different lengths
    (2, 16, 4, 8, 1),    # one document, cut at the block
])
def test_gradients_equal_scalar(n_layer, n_embd, n_head, block_size, batch):
    seqs, vocab = names_batch(block_size, batch + 2, seed=n_layer + batch)
    seqs = seqs[-batch:]  # ends with the long names: some of the batch is cut at the block
    assert any(len(s) == block_size + 1 for s in seqs)
    cfg = ModelConfig(vocab_size=vocab, n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=block_size)
    scalar, fast = engine_pair(cfg, seed=n_embd)
    want_loss, want = scalar.loss_and_grads(seqs)
    got_loss, got = fast.loss_and_grads(seqs)
    assert abs(got_loss - want_loss) <= 1e-12
    assert fast.eval_loss(seqs) == pytest.approx(want_loss, abs=1e-12)
    assert set(got) == set(want)
    for name in want:
        a, b = np.array(want[name].to_floats()), np.array(got[name].to_floats())
        scale = np.abs(a).max()
        if name == "wpe" or name == "wte":
            assert scale > 0
        else:
            assert scale > 1e-6, f"{name}: the reference gradient is all but zero; the test would prove nothing"
        assert np.abs(a - b).max() <= 1e-10 * scale, name


def test_batch_loss_is_mean_over_all_tokens():
    """A batch's loss weighs documents by their predicted tokens, not equally (padding adds nothing)."""
    seqs, vocab = names_batch(16, 5, seed=1)
    cfg = ModelConfig(vocab_size=vocab)
    scalar, fast = engine_pair(cfg)
    per_doc = [scalar.eval_loss([s]) for s in seqs]
    tokens = [len(s) - 1 for s in seqs]
    want = sum(l * n for l, n in zip(per_doc, tokens)) / sum(tokens)
    assert fast.eval_loss(seqs) == pytest.approx(want, abs=1e-12)


def test_batches_of_equal_token_count_do_not_mix():
    """Batches with the same number of tokens share buffers; each still computes its own loss."""
    tok = Tokenizer.from_docs(split_docs(read_text(None)))
    big, one, *two = DocumentData(["christopher", "emmanue", "ava", "zoe"], tok, 16).train
    # 8 predicted tokens in `one`, 4 + 4 in `two`; `big` first, so that the buffers are already large
    scalar, fast = engine_pair(ModelConfig(vocab_size=tok.vocab_size))
    for batch in ([big, one, *two], [one], two, [one], two[::-1]):
        assert fast.eval_loss(batch) == pytest.approx(scalar.eval_loss(batch), abs=1e-12)


# ---- sampling ------------------------------------------------------------------------------------
def test_logits_with_kv_cache_equal_scalar():
    seqs, vocab = names_batch(16, 2, seed=5)
    cfg = ModelConfig(vocab_size=vocab, n_layer=2)
    scalar, fast = engine_pair(cfg, seed=9)
    cs, cf = scalar.new_cache(), fast.new_cache()
    for pos, token in enumerate(seqs[0][:-1]):
        want, got = scalar.logits(cs, token, pos), fast.logits(cf, token, pos)
        assert max(abs(a - b) for a, b in zip(want, got)) <= 1e-12


def test_numpy_checkpoint_samples_identically_with_scalar(tmp_path, capsys):
    printed = samples_by_engine(tmp_path / "run", "numpy", ("scalar", "numpy"), capsys)
    assert printed["scalar"].count("sample ") == 10
    assert printed["numpy"] == printed["scalar"]


# ---- float32, state and options ----------------------------------------------------------------
def test_float32_trains_close_to_float64(tmp_path):
    f64 = train_losses(tmp_path, "f64", "numpy", steps=40)
    f32 = train_losses(tmp_path, "f32", "numpy", steps=40, dtype="float32")
    assert f32 != f64  # it really computed in float32
    assert max(abs(a - b) for a, b in zip(f64, f32)) <= 1e-3
    ck = Run.load(str(tmp_path / "f32"))
    assert {t.dtype for t in ck.params.values()} == {"F32"}


def test_float32_gradients_close_to_scalar():
    seqs, vocab = names_batch(8, 3, seed=2)
    cfg = ModelConfig(vocab_size=vocab, n_layer=2, block_size=8)
    scalar, fast = engine_pair(cfg, dtype="float32")
    want_loss, want = scalar.loss_and_grads(seqs)
    got_loss, got = fast.loss_and_grads(seqs)
    assert abs(got_loss - want_loss) <= 1e-5
    assert_tensors_close(want, got, 1e-4)


def test_float32_sharp_attention_stays_finite():
    """Query and key weights scaled up 40x make attention scores that differ by hundreds within one
    document: float32 exp() underflows past 87, so each row must subtract its own max. The loss still
    matches the scalar engine's (float64, per-row max as atomic.py) to float32 precision."""
    seqs, vocab = names_batch(16, 4, seed=3)
    cfg = ModelConfig(vocab_size=vocab)
    floats = init_params(cfg, random.Random(5))
    for name in ("layer0.attn_wq", "layer0.attn_wk"):
        floats[name] = [40 * x for x in floats[name]]
    params = {name: Tensor.from_floats(shape, floats[name]) for name, shape in param_shapes(cfg)}
    want = engines.get("scalar")(cfg, TrainConfig(), params).eval_loss(seqs)
    got = engines.get("numpy")(cfg, TrainConfig(engine="numpy", dtype="float32"), params).eval_loss(seqs)
    assert np.isfinite(got) and abs(got - want) <= 1e-4 * abs(want)


def test_unsupported_dtype_is_a_usage_error():
    with pytest.raises(UsageError, match="float16"):  # config.validate knows each engine's dtypes
        validate(ModelConfig(vocab_size=27), TrainConfig(engine="numpy", dtype="float16"))


def test_resume_equals_uninterrupted_run(tmp_path):
    """weights/state/load_state carry the whole state: a run stopped and resumed ends where one run ends."""
    cfg = dict(DEFAULT_MODEL)
    tcfg = TrainConfig(engine="numpy", steps=30, samples=0, batch_size=4)
    train(cfg, tcfg, None, str(tmp_path / "whole"), log_every=10**9)
    train(cfg, tcfg, None, str(tmp_path / "parts"), log_every=10**9, stop_after=12)
    train(cfg, tcfg, None, str(tmp_path / "parts"), resume=True, log_every=10**9)
    a, b = Run.load(str(tmp_path / "whole")), Run.load(str(tmp_path / "parts"))
    assert a.step == b.step == 30
    for name in a.params:
        assert a.params[name].data == b.params[name].data, name
        assert a.state[f"adam.v.{name}"].data == b.state[f"adam.v.{name}"].data, name


@pytest.mark.slow
def test_checkpoint_moves_between_engines(tmp_path):
    """A run the scalar engine began, the numpy engine continues: the losses of one scalar run."""
    cfg, tcfg = dict(DEFAULT_MODEL), TrainConfig(engine="scalar", steps=6, samples=0)
    train(cfg, tcfg, None, str(tmp_path / "a"), log_every=10**9)
    train(cfg, tcfg, None, str(tmp_path / "b"), log_every=10**9, stop_after=3)
    train(cfg, replace(tcfg, engine="numpy"), None, str(tmp_path / "b"), resume=True, log_every=10**9)
    with open(tmp_path / "a" / "metrics.jsonl") as fa, open(tmp_path / "b" / "metrics.jsonl") as fb:
        la = [json.loads(line)["loss"] for line in fa]
        lb = [json.loads(line)["loss"] for line in fb]
    assert len(la) == len(lb) == 6
    assert max(abs(x - y) for x, y in zip(la, lb)) <= 1e-12


# ---- bench -----------------------------------------------------------------------------------------
def test_bench_json_reports_every_row(capsys):
    argv = ["bench", "--engines", "scalar,numpy", "--scalar-steps", "2", "--steps", "5", "--batched-steps", "3",
            "--batch-size", "8", "--rounds", "2", "--json"]
    assert cli.main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["engine"], r["batch"], r["steps"]) for r in rows] == [("scalar", 1, 2), ("numpy", 1, 5), ("numpy", 8, 3)]
    assert all(r["rounds"] == 2 for r in rows)
    for r in rows:
        assert r["ms_per_step"] > 0 and r["us_per_doc"] > 0 and np.isfinite(r["final_loss"])


def test_bench_preset_trains_with_its_init_and_schedule(capsys):
    """--preset names times the preset's width with its init and lr schedule (on Adam): ten batched steps learn,
    ending below the loss of a model that knows nothing, ln(vocab). (With atomic.py's lr they were still
    recovering from a jump to 13.8 at step three: 4.75.)"""
    argv = ["bench", "--engines", "numpy", "--preset", "names", "--steps", "3", "--batched-steps", "10",
            "--batch-size", "64", "--rounds", "1", "--json"]
    assert cli.main(argv) == 0
    batched = [r for r in json.loads(capsys.readouterr().out) if r["batch"] == 64]
    vocab = Run.fresh(ModelConfig(), TrainConfig()).model.vocab_size   # the embedded names' characters and BOS
    assert len(batched) == 1 and batched[0]["final_loss"] < math.log(vocab), batched


def test_bench_ideal_counts_the_rows_own_sequences(tmp_path, capsys):
    """A stream preset's rows train on sequences of block_size + 1 characters: the ideal time counts those, not
    the file's lines (it had counted lines: about half the FLOPs on shakespeare-cpu)."""
    from microgpt.tools.bench import ADAM_FLOPS_PER_PARAM, flops_per_doc
    from microgpt.params import num_params
    text = tmp_path / "text.txt"
    text.write_text((CUSTOM_TEXT + "\n") * 20)
    argv = ["bench", "--engines", "numpy", "--preset", "shakespeare-cpu", "--data", str(text), "--peak", "100",
            "--steps", "1", "--batched-steps", "1", "--batch-size", "2", "--rounds", "1", "--json"]
    assert cli.main(argv) == 0
    batched = [r for r in json.loads(capsys.readouterr().out) if r["batch"] == 2]
    model = Run.fresh(ModelConfig(n_layer=4, n_embd=128, n_head=4, block_size=64),
                      TrainConfig(data_mode="stream"), str(text)).model
    flops = 2 * flops_per_doc(model, model.block_size) + ADAM_FLOPS_PER_PARAM * num_params(model)
    assert len(batched) == 1 and batched[0]["ideal_us_per_doc"] == pytest.approx(flops / 2 / 100e9 * 1e6)


def test_bench_shows_each_rows_threads():
    """'-' for an engine without threads, 'auto' where the engine chose, else the count it ran (the count
    asked for where nothing reported one: the C port's single thread)."""
    from microgpt.tools.bench import threads_shown
    rows = [dict(threads=None), dict(threads=0, threads_run=2), dict(threads=3, threads_run=2), dict(threads=1)]
    assert [threads_shown(r) for r in rows] == ["-", "auto", "2", "1"]


def test_bench_table(capsys):
    assert cli.main(["bench", "--engines", "numpy", "--steps", "3", "--batched-steps", "2", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "ms/step" in out and "numpy" in out
