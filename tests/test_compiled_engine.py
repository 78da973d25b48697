"""The compiled engine computes the scalar engine's function: losses, gradients, logits, checkpoints.

    python -m pytest -q tests/test_compiled_engine.py

Every expected value comes from an independent computation: the scalar engine (atomic.py's Value
autograd), `microgpt check` (finite differences and the scalar engine), the numpy engine, or the
reference run's printed losses. Skipped when Numba is not installed. The first run compiles the
kernels (a minute or two per dtype); Numba caches them on disk for the next.
"""

import json
import os
import random
import subprocess
import sys
import time

import pytest

numba = pytest.importorskip("numba", reason="the compiled engine needs numba: pip install -e '.[compiled]'")
np = pytest.importorskip("numpy")

from microgpt import cli, engines  # noqa: E402
from microgpt.config import MODEL_FIELDS, ModelConfig, TrainConfig  # noqa: E402
from microgpt.data import Batch, DocumentData, Tokenizer, read_text, split_docs  # noqa: E402
from microgpt.engines import base, compiled as compiled_engine, compiled_kernels as kernels  # noqa: E402
from microgpt.engines.compiled import COMPILE_NOTE  # noqa: E402
from microgpt.errors import UsageError  # noqa: E402
from microgpt.params import init_tensors  # noqa: E402
from conftest import run_cli  # noqa: E402
from test_numpy_engine import CUSTOM_TEXT, assert_tensors_close, names_batch  # noqa: E402
from tiny_run import samples_by_engine, train  # noqa: E402

pytestmark = pytest.mark.slow  # minutes of subprocesses: scripts/test.sh --fast leaves this module out

DEFAULT_MODEL = {k: getattr(ModelConfig(), k) for k in MODEL_FIELDS}
FLOAT32_TOL = 1e-5   # float32 losses stay within this of float64's over the first 100 steps (measured: 2e-7)


def train_losses(tmp_path, name, engine, model=None, data=None, stop_after=None, **tcfg):
    """Per-step losses of a quiet training run into tmp_path/name."""
    out = tmp_path / name
    train(dict(model or DEFAULT_MODEL), TrainConfig(engine=engine, samples=0, **tcfg), data, str(out),
          log_every=10**9, stop_after=stop_after)
    with open(out / "metrics.jsonl") as f:
        return [json.loads(line)["loss"] for line in f if '"loss"' in line]


def engines_for(cfg, names, seed=0, dtype="float64"):
    params = init_tensors(cfg, random.Random(seed))
    return [engines.get(n)(cfg, TrainConfig(engine=n, dtype=dtype if n != "scalar" else "float64"), params)
            for n in names]


def lay_out(monkeypatch, layout):
    """Every tile in one layout: 'rows' (attention row by row), 'position' (in columns, attention across
    documents by position) or 'document' (in columns, attention on each document's block)."""
    monkeypatch.setattr(compiled_engine, "BY_POSITION_LANES", 1 if layout == "position" else 10**9)
    monkeypatch.setattr(compiled_engine, "BY_DOCUMENT_POSITIONS", 1 if layout == "document" else 10**9)


# ---- per-step losses against the scalar engine -------------------------------------------------
# small configs: the scalar engine is slow
@pytest.mark.parametrize("model,batch,seed,layout", [
    (DEFAULT_MODEL, 1, 42, "rows"),                                                 # the reference run's first 40 steps
    ({"n_layer": 2, "n_embd": 8, "n_head": 2, "block_size": 8}, 3, 7, "rows"),      # deeper, narrower, cut documents, a batch
    ({"n_layer": 2, "n_embd": 8, "n_head": 2, "block_size": 8}, 3, 7, "position"),  # ... in tiles laid out by position
    ({"n_layer": 2, "n_embd": 8, "n_head": 2, "block_size": 8}, 3, 7, "document"),  # ... and by document
    ({"n_layer": 1, "n_embd": 20, "n_head": 5, "block_size": 8}, 1, 3, "rows"),     # wider, five heads
    ({"n_layer": 1, "n_embd": 20, "n_head": 5, "block_size": 8}, 2, 3, "document"),
    ({"n_layer": 1, "n_embd": 4, "n_head": 2, "block_size": 8}, 2, 5, "position"),  # narrower than the products' blocks
    ({"n_layer": 1, "n_embd": 4, "n_head": 2, "block_size": 8}, 2, 5, "document"),  # of 8, heads narrower than 4
])
def test_losses_equal_scalar_for_40_steps(tmp_path, monkeypatch, model, batch, seed, layout):
    lay_out(monkeypatch, layout)
    want = train_losses(tmp_path, "scalar", "scalar", model, seed=seed, batch_size=batch, stop_after=40)
    got = train_losses(tmp_path, "compiled", "compiled", model, seed=seed, batch_size=batch, stop_after=40)
    assert len(want) == len(got) == 40
    assert max(abs(a - b) for a, b in zip(want, got)) <= 1e-9


def test_losses_equal_scalar_on_own_file(tmp_path):
    data = tmp_path / "docs.txt"
    data.write_text(CUSTOM_TEXT, encoding="utf-8")   # punctuation, spaces, documents cut at the block
    want = train_losses(tmp_path, "scalar", "scalar", data=str(data), seed=3, batch_size=2, stop_after=40)
    got = train_losses(tmp_path, "compiled", "compiled", data=str(data), seed=3, batch_size=2, stop_after=40)
    assert max(abs(a - b) for a, b in zip(want, got)) <= 1e-9


def test_narrow_model_and_tiny_vocabulary_by_position_equal_scalar(tmp_path, monkeypatch):
    """Fewer than four rows in a product (width 2, a vocabulary of 3: two letters and BOS) take
    matmul_left's one-row path, in tiles laid out by position."""
    monkeypatch.setattr(compiled_engine, "BY_POSITION_LANES", 1)
    data = tmp_path / "ab.txt"
    data.write_text("\n".join("".join(random.Random(i).choice("ab") for _ in range(1 + i % 11)) for i in range(50)),
                    encoding="utf-8")
    model = {"n_layer": 1, "n_embd": 2, "n_head": 1, "block_size": 8}
    want = train_losses(tmp_path, "scalar", "scalar", model, data=str(data), seed=2, batch_size=3, stop_after=40)
    got = train_losses(tmp_path, "compiled", "compiled", model, data=str(data), seed=2, batch_size=3, stop_after=40)
    assert len(want) == len(got) == 40
    assert max(abs(a - b) for a, b in zip(want, got)) <= 1e-9


def test_reproduces_reference_run(tmp_path, names_path, reference):
    losses = train_losses(tmp_path, "ref", "compiled", data=names_path, seed=42, steps=1000)
    want = reference["printed_losses_4dp"]
    assert len(losses) == len(want) == 1000
    bad = [(i + 1, got, ref) for i, (got, ref) in enumerate(zip(losses, want)) if f"{got:.4f}" != f"{ref:.4f}"]
    assert not bad, f"steps differing from the reference: {bad[:5]}"


@pytest.mark.parametrize("layout", ["rows", "position", "document"])
def test_float32_tracks_float64(tmp_path, monkeypatch, layout):
    lay_out(monkeypatch, layout)
    f64 = train_losses(tmp_path, "f64", "compiled", seed=42, batch_size=4, stop_after=100)
    f32 = train_losses(tmp_path, "f32", "compiled", seed=42, batch_size=4, dtype="float32", stop_after=100)
    assert len(f64) == len(f32) == 100
    assert max(abs(a - b) for a, b in zip(f64, f32)) <= FLOAT32_TOL


# ---- gradients, logits ---------------------------------------------------------------------------
def test_check_passes(capsys):
    """`microgpt check`: finite differences of the engine's own loss, and the scalar engine's gradients."""
    assert cli.main(["check", "--engines", "compiled", "--docs", "3"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip().startswith(("wte", "wpe", "lm_head", "layer"))]
    assert rows and all(line.endswith("ok") for line in rows)


# A layer runs over a tile of whole documents at once. 26 documents make 8 chunks of 3 or 4 (CHUNK_DOCS 1: a
# chunk may have as few as one); tiles of 8 rows hold one document each, tiles of 20 hold two and leave the
# next for a new tile, and tiles of 64 hold a whole chunk. A tile of at least BY_POSITION_LANES documents x
# heads (3 heads here) is laid out by position, for attention's sake: 1, every tile; 6, the tiles of two
# documents (tiles of 20 rows mix both). But a tile whose documents average BY_DOCUMENT_POSITIONS positions or
# more runs by document: 1, every tile; 5, those of long names (tiles of 20 mix all three).
@pytest.mark.parametrize("tile_rows,by_position_lanes,by_document_positions", [
    (8, 10**9, 10**9), (20, 10**9, 10**9), (64, 10**9, 10**9), (8, 1, 10**9), (64, 1, 10**9), (20, 6, 10**9),
    (8, 10**9, 1), (64, 10**9, 1), (20, 6, 5)])
def test_gradients_equal_scalar_per_tensor(monkeypatch, tile_rows, by_position_lanes, by_document_positions):
    monkeypatch.setattr(compiled_engine, "TILE_ROWS", tile_rows)
    monkeypatch.setattr(compiled_engine, "BY_POSITION_LANES", by_position_lanes)
    monkeypatch.setattr(compiled_engine, "BY_DOCUMENT_POSITIONS", by_document_positions)
    monkeypatch.setattr(compiled_engine, "CHUNK_DOCS", 1)
    seqs, vocab = names_batch(8, 26, seed=4)   # ends with long names, cut at the block
    cfg = ModelConfig(vocab_size=vocab, n_layer=2, n_embd=12, n_head=3, block_size=8)
    scalar, compiled = engines_for(cfg, ["scalar", "compiled"], seed=5)
    want_loss, want = scalar.loss_and_grads(seqs)
    got_loss, got = compiled.loss_and_grads(seqs)
    assert abs(got_loss - want_loss) <= 1e-12
    for name in want:
        assert np.abs(np.array(want[name].to_floats())).max() > 1e-6, f"{name}: the reference gradient is all but zero"
    assert_tensors_close(want, got, 1e-10)


def test_a_large_batch_equals_numpy_per_tensor():
    """The engine as shipped (tiles of up to 256 rows in float64, by position from 16 lanes) on a batch of 256
    names: 8 chunks of 32 documents, each a tile by position. The numpy engine computes the same function."""
    seqs, vocab = names_batch(16, 256, seed=8)
    numpy, compiled = engines_for(ModelConfig(vocab_size=vocab), ["numpy", "compiled"], seed=3)
    want_loss, want = numpy.loss_and_grads(seqs)
    got_loss, got = compiled.loss_and_grads(seqs)
    assert abs(got_loss - want_loss) <= 1e-12
    assert_tensors_close(want, got, 1e-10)


def test_long_sequences_equal_numpy_per_tensor():
    """The engine as shipped on a stream preset's kind of batch: three sequences of block_size + 1 tokens make
    chunks of one and two, tiles whose documents are long: by document."""
    rng = random.Random(6)
    seqs = [[rng.randrange(30) for _ in range(65)] for _ in range(3)]
    cfg = ModelConfig(vocab_size=30, n_layer=2, n_embd=32, n_head=4, block_size=64)
    numpy, compiled = engines_for(cfg, ["numpy", "compiled"], seed=9)
    want_loss, want = numpy.loss_and_grads(seqs)
    got_loss, got = compiled.loss_and_grads(seqs)
    assert abs(got_loss - want_loss) <= 1e-12
    assert_tensors_close(want, got, 1e-10)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_exp_nonpositive_is_exp(dtype):
    """The kernels' own exp (softmax's, attention's), in each dtype, against NumPy's exp in float64."""
    @numba.njit(**dict(kernels.JIT, cache=False))   # (a cached copy would not see the kernels change)
    def exps(x, out):
        for i in range(x.shape[0]):
            out[i] = kernels.exp_nonpositive(x[i])
    x = np.concatenate([-np.linspace(0, 800, 100001), -np.random.default_rng(0).random(100000) * 12,
                        [-0.0, -1e-30, -np.inf]]).astype(dtype)
    got = np.empty_like(x)
    exps(x, got)
    assert got.dtype == np.dtype(dtype)
    want = np.exp(x.astype(np.float64))
    error = np.abs(got.astype(np.float64) - want)
    eps = np.finfo(dtype).eps
    assert error.max() <= eps / 2                              # what a softmax (sum >= 1) can see
    near = x >= -10
    ulps = error[near] / np.spacing(want[near].astype(dtype)).astype(np.float64)
    assert ulps.max() <= 4
    assert got[-3] == 1 and got[-1] == 0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_reciprocal_is_one_over(dtype):
    """Adam's division by Newton's steps, in each dtype, against NumPy's 1 / d in float64: within an ulp or
    two from the smallest normal number to its reciprocal (Adam's d, a square root, stays far below that), and
    finite below it (where 1 / d overflows)."""
    @numba.njit(**dict(kernels.TREE, cache=False))   # adam's flags; not cached, as above
    def reciprocals(d, out):
        for i in range(d.shape[0]):
            out[i] = kernels.reciprocal(d[i])
    info = np.finfo(dtype)
    d = np.concatenate([np.geomspace(info.tiny, 1 / info.tiny, 200001, dtype=np.float64),
                        np.random.default_rng(1).random(100000) + 0.5]).astype(dtype)
    got = np.empty_like(d)
    reciprocals(d, got)
    assert got.dtype == np.dtype(dtype)
    want = 1 / d.astype(np.float64)
    ulps = np.abs(got - want) / np.spacing(want.astype(dtype)).astype(np.float64)
    assert ulps.max() <= 2
    tiny = np.array([info.smallest_subnormal, info.tiny / 2, 0], dtype)
    out = np.empty_like(tiny)
    reciprocals(tiny, out)
    assert np.all(np.isfinite(out)) and np.all(out > 0)      # as 1 / (the smallest normal number)


@pytest.mark.parametrize("I,O", [(16, 16), (27, 16), (16, 27), (64, 16), (3, 2), (2, 5), (5, 3)])
def test_matmul_left_and_what_it_folds_in_equal_numpy(I, O):
    """The columns' product, out = w @ x, alone, plus a residual, with ReLU, and gated (ReLU's backward), on
    whole quads of rows, a last quad that overlaps the one before (I % 4), fewer than four rows or inputs,
    and w as a transposed view: against NumPy's product and np.maximum / np.where."""
    rng = np.random.default_rng(I * 100 + O)
    R = 24
    w, x, residual, gate = rng.standard_normal((I, O)), rng.standard_normal((O, R)), \
        rng.standard_normal((I, R)), rng.standard_normal((I, R))
    product = w @ x
    out = np.full((I, R), np.nan)
    for args, want in [((), product), ((residual,), product + residual), ((None, True), np.maximum(product, 0)),
                       ((None, False, gate), np.where(gate <= 0, 0, product)),
                       ((residual, False, gate), np.where(gate <= 0, 0, product + residual))]:
        kernels.matmul_left(out, w, x, *args)
        np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    kernels.matmul_left(out, np.ascontiguousarray(w.T).T, x)   # an F-ordered w, as the backward passes it
    np.testing.assert_allclose(out, product, rtol=1e-12, atol=1e-12)


def test_logits_with_kv_cache_equal_scalar():
    seqs, vocab = names_batch(16, 2, seed=5)
    cfg = ModelConfig(vocab_size=vocab, n_layer=2)
    scalar, compiled = engines_for(cfg, ["scalar", "compiled"], seed=9)
    cs, cc = scalar.new_cache(), compiled.new_cache()
    tokens = [t for s in seqs for t in s][:cfg.block_size]   # a whole block: the cache's last position too
    assert len(tokens) == cfg.block_size
    for pos, token in enumerate(tokens):
        want, got = scalar.logits(cs, token, pos), compiled.logits(cc, token, pos)
        assert max(abs(a - b) for a, b in zip(want, got)) <= 1e-12


# ---- threads: the same numbers, whoever computes them ----------------------------------------------
def test_thread_count_changes_nothing_not_even_round_off():
    """A batch of several documents goes through step_parallel whatever the thread count, and its chunks'
    gradients are added in chunk order: one thread and two give the same bits. step_serial (one
    document, one chunk) is the same loops, compiled on their own: equal to round-off."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two Numba threads (NUMBA_NUM_THREADS >= 2) to compare one with two")
    seqs, vocab = names_batch(16, 40, seed=6)
    cfg = ModelConfig(vocab_size=vocab, n_layer=2)
    one, two, serial = engines_for(cfg, ["compiled"] * 3, seed=2)
    tokens = np.array([t for s in seqs for t in s], np.int64)
    starts = np.cumsum([0] + [len(s) for s in seqs]).astype(np.int64)
    work = np.zeros((8, serial.work.shape[1]), serial.dtype)   # step_serial: a work space per chunk
    ints = np.zeros((8, *serial.ints.shape[1:]), np.int64)
    before = numba.get_num_threads()
    try:
        for step in range(3):
            one.hyper[[kernels.LR, kernels.C1, kernels.C2]] = 0.01, 1 - 0.85 ** (step + 1), 1 - 0.99 ** (step + 1)
            two.hyper[:] = serial.hyper[:] = one.hyper
            losses = []
            for engine, threads in ((one, 1), (two, 2)):
                numba.set_num_threads(threads)
                losses.append(kernels.step_parallel(engine.flat, engine.offsets, engine.dims, engine.hyper, tokens,
                                                    starts, engine.work, engine.ints, kernels.TRAIN, 8, threads))
            loss = kernels.step_serial(serial.flat, serial.offsets, serial.dims, serial.hyper, tokens, starts,
                                       work, ints, kernels.TRAIN, 8)
            assert losses[0] == losses[1]
            assert np.array_equal(one.flat[:3], two.flat[:3])   # parameters and Adam's moments, bit for bit
            assert abs(loss - losses[0]) <= 1e-12
            assert np.abs(serial.flat[:3] - one.flat[:3]).max() <= 1e-12
    finally:
        numba.set_num_threads(before)


def test_numbers_do_not_depend_on_where_the_kernels_came_from(tmp_path):
    """Kernels compiled in the process, and the same kernels loaded from Numba's disk cache by a process
    that calls its entry points in the other order (step_parallel before step_serial), give the same bits:
    each entry point runs its own copies of the functions it calls (compiled_kernels.py, OWN_SYMBOLS)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))   # an empty cache: the first compiles
    runs = []
    for order in ("serial-first", "parallel-first"):
        proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "compiled_probe.py"), order],
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    assert runs[0] == runs[1]


def test_a_batch_takes_the_parallel_step_with_one_thread_too(monkeypatch):
    """So that a run's numbers do not depend on NUMBA_NUM_THREADS."""
    seqs, vocab = names_batch(16, 4, seed=6)
    (engine,) = engines_for(ModelConfig(vocab_size=vocab), ["compiled"])
    called = []
    monkeypatch.setattr(kernels, "step_serial", lambda *a: called.append("serial") or 1.0)
    monkeypatch.setattr(kernels, "step_parallel", lambda *a: called.append("parallel") or 1.0)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        engine.eval_loss(seqs)
        engine.eval_loss(seqs[:1])
    finally:
        numba.set_num_threads(before)
    assert called == ["parallel", "serial"]


def test_a_slow_first_call_says_it_is_compiling(monkeypatch, capsys):
    """A kernel's first call that outlasts COMPILE_NOTE_AFTER (Numba compiling it: here a kernel made slow)
    prints the note once on stderr, and returns what the kernel returns; a quick first call (the kernels
    already compiled) prints nothing."""
    seqs, vocab = names_batch(16, 4, seed=6)
    seqs, cfg = seqs[:1], ModelConfig(vocab_size=vocab)   # one document: step_serial
    (warm,) = engines_for(cfg, ["compiled"])
    want = warm.eval_loss(seqs)   # compiled (or loaded from the disk cache) by now, with the note or without
    capsys.readouterr()
    (quick,) = engines_for(cfg, ["compiled"])
    assert quick.eval_loss(seqs) == want
    assert COMPILE_NOTE not in capsys.readouterr().err
    real = kernels.step_serial
    monkeypatch.setattr(compiled_engine, "COMPILE_NOTE_AFTER", 0.05)
    monkeypatch.setattr(kernels, "step_serial", lambda *args: time.sleep(0.5) or real(*args))
    (slow,) = engines_for(cfg, ["compiled"])
    assert slow.eval_loss(seqs) == want
    assert slow.eval_loss(seqs) == want   # the second call: the kernel itself, no note
    assert capsys.readouterr().err.count(COMPILE_NOTE) == 1


def test_a_packed_batch_trains_as_its_lists():
    """DocumentData's batches come packed (data.Batch), and the engine reads those arrays, not the lists:
    steps on a Batch and on the same lists as a plain list give the same numbers, bit for bit."""
    docs = split_docs(read_text(None))[:300]
    tok = Tokenizer.from_docs(docs)
    data = DocumentData(docs, tok, 16)
    packed, plain = engines_for(ModelConfig(vocab_size=tok.vocab_size), ["compiled", "compiled"])
    for step, size in ((0, 64), (1, 64), (2, 64), (300, 1), (301, 1)):   # batches of one take their own path
        batch = data.batch(step, size)
        assert isinstance(batch, Batch)
        assert packed.train_step(batch, step, 0.01) == plain.train_step(list(batch), step, 0.01)
    assert np.array_equal(packed.flat[:3], plain.flat[:3])


# ---- checkpoints move between engines --------------------------------------------------------------
def test_resume_from_numpy_equals_numpy_throughout(tmp_path):
    """A numpy checkpoint (weights and Adam's moments) resumed by the compiled engine trains on as numpy does."""
    whole = train_losses(tmp_path, "numpy", "numpy", seed=1, steps=30, save_every=15)
    out = tmp_path / "mixed"
    train(dict(DEFAULT_MODEL), TrainConfig(engine="numpy", samples=0, seed=1, steps=30, save_every=15), None,
          str(out), log_every=10**9, stop_after=15)
    train(dict(DEFAULT_MODEL), TrainConfig(engine="compiled", samples=0), None, str(out), resume=True, log_every=10**9)
    with open(out / "metrics.jsonl") as f:
        mixed = [json.loads(line)["loss"] for line in f if '"loss"' in line]
    assert len(mixed) == len(whole) == 30
    assert max(abs(a - b) for a, b in zip(whole, mixed)) <= 1e-9


def test_compiled_checkpoint_samples_identically_with_scalar(tmp_path, capsys):
    printed = samples_by_engine(tmp_path / "run", "compiled", ("scalar", "compiled"), capsys)
    assert printed["scalar"] == printed["compiled"] and printed["scalar"].strip()


# ---- bad input ------------------------------------------------------------------------------------
def test_malformed_batch_is_a_usage_error():
    cfg = ModelConfig(vocab_size=5, block_size=4)
    (compiled,) = engines_for(cfg, ["compiled"])
    for seqs in ([[4, 1, 2, 3, 0, 4]], [[4]], [[4, 7, 4]]):   # longer than the block; no target; token >= vocab
        with pytest.raises(UsageError, match="every sequence needs"):
            compiled.eval_loss(seqs)


@pytest.fixture
def four_cores(machine, monkeypatch):
    """conftest's machine of 4 cores, on which Numba started 4 threads."""
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 4)
    return machine


@pytest.mark.parametrize("load, threads", [(0.0, 4), (0.3, 4), (1.0, 3), (2.6, 1), (3.9, 1), (12.0, 1)])
def test_the_default_thread_count_is_the_idle_cores(four_cores, load, threads):
    """As the torch engine's, but with no small-model rule: the threads share whole chunks of documents."""
    four_cores(load)
    chosen, why = compiled_engine.choose_threads(0)
    assert chosen == threads and why == f"4 cores, load {load:.1f}; --threads N to choose"


def test_the_flag_and_the_environment_come_first(four_cores, monkeypatch):
    four_cores(3.9)
    assert compiled_engine.choose_threads(3) == (3, "--threads")
    monkeypatch.setenv("NUMBA_NUM_THREADS", "4")
    assert compiled_engine.choose_threads(0) == (4, "NUMBA_NUM_THREADS")


def test_more_threads_than_numba_runs_get_what_it_runs(tmp_path, capsys):
    """Numba runs no more threads than it started: a larger --threads, asked for or saved in a checkpoint
    trained on a larger machine (here: sampled with fewer), gets that many, and the note says so."""
    started = numba.config.NUMBA_NUM_THREADS
    assert compiled_engine.choose_threads(started + 1) == (
        started, f"--threads {started + 1}, but Numba runs {started} here: NUMBA_NUM_THREADS, or one per core")
    out = str(tmp_path / "run")
    assert cli.main(["train", "--engine", "compiled", "--threads", str(started + 1), "--batch-size", "4",
                     "--steps", "2", "--samples", "0", "--out", out]) == 0
    assert f"compiled: {started} thread" in capsys.readouterr().err
    assert cli.main(["sample", "--out", out, "--num", "2"]) == 0   # the checkpoint keeps --threads started + 1
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_a_batch_runs_on_the_engines_threads_whatever_the_caller_set(monkeypatch):
    """Numba's thread count belongs to the calling thread: the engine sets its own before each batch, and
    tells step_parallel the same count (with one, the chunks share one work space)."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two Numba threads (NUMBA_NUM_THREADS >= 2)")
    seqs, vocab = names_batch(16, 4, seed=6)
    cfg = ModelConfig(vocab_size=vocab)
    params = init_tensors(cfg, random.Random(0))
    engine, alone = (compiled_engine.Engine(cfg, TrainConfig(engine="compiled", threads=n), params) for n in (2, 1))
    assert engine.note == "compiled: 2 threads for a batch's documents (--threads)"
    seen = []
    step_parallel = kernels.step_parallel

    def spy(*args):
        seen.append((numba.get_num_threads(), args[-1]))
        return step_parallel(*args)
    monkeypatch.setattr(engine, "step_parallel", spy)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        two = engine.eval_loss(seqs)
        numba.set_num_threads(1)
        one = alone.eval_loss(seqs)
        after = numba.get_num_threads()
    finally:
        numba.set_num_threads(before)
    assert seen == [(2, 2)] and after == 1
    assert two == one   # the same bits on one thread and two


def test_train_says_how_many_threads(tmp_path, capsys):
    assert cli.main(["train", "--engine", "compiled", "--threads", "1", "--batch-size", "4", "--steps", "2",
                     "--samples", "0", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().err.splitlines()   # stdout keeps atomic.py's format
    assert [line for line in lines if line.startswith("compiled:")] == [
        "compiled: 1 thread for a batch's documents (--threads)"]


@pytest.mark.parametrize("threads", ["0", "-1", "two", "100000"])
def test_a_bad_thread_count_is_one_line(tmp_path, threads):
    """NUMBA_NUM_THREADS is read when Numba is imported: 0 raised there (a traceback), 100000 crashed the
    process starting threads, and text was ignored with a warning."""
    result = run_cli("train", "--engine", "compiled", "--steps", "1", "--out", tmp_path / "run", timeout=300,
                     env={"NUMBA_NUM_THREADS": threads})
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"microgpt: error: NUMBA_NUM_THREADS must be a whole number from 1 to {base.MAX_THREADS} "
        f"(got {threads!r}); unset it to let the engine choose"]
    assert not (tmp_path / "run").exists()   # a refused start makes no --out


# ---- bench -----------------------------------------------------------------------------------------
def test_bench_rows_and_ideal(capsys):
    """The compiled rows, one batched row per thread count with the same loss, and the ideal column
    from --peak: ideal time = FLOPs / peak, so halving the peak doubles it."""
    argv = ["bench", "--engines", "compiled", "--steps", "3", "--batched-steps", "2", "--batch-size", "8",
            "--rounds", "1", "--threads", "1,2", "--json"]
    rows = {}
    for peak in ("40", "20"):
        assert cli.main(argv + ["--peak", peak]) == 0
        rows[peak] = json.loads(capsys.readouterr().out)
    got = [(r["engine"], r["batch"], r["threads"]) for r in rows["40"]]
    assert got == [("compiled", 1, 1), ("compiled", 8, 1), ("compiled", 8, 2)]
    assert rows["40"][1]["final_loss"] == rows["40"][2]["final_loss"]
    for fast, slow in zip(rows["40"], rows["20"]):
        assert slow["ideal_us_per_doc"] == pytest.approx(2 * fast["ideal_us_per_doc"])
        assert fast["first_call_s"] > 0


def test_bench_threads_0_is_the_engines_own_choice(capsys):
    assert cli.main(["bench", "--engines", "compiled", "--steps", "2", "--batched-steps", "2", "--batch-size", "8",
                     "--rounds", "1", "--threads", "0,1"]) == 0
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines() if line.lstrip().startswith("compiled")]
    assert [(row[2], row[3]) for row in rows] == [("1", "1"), ("8", "auto"), ("8", "1")]
    assert rows[1][-1] == rows[2][-1]   # the same final loss
    notes = [line for line in err.splitlines() if line.startswith("compiled: ")]
    assert len(notes) == 1 and "--threads N to choose" in notes[0], err   # only the auto row says why
    assert cli.main(["bench", "--engines", "compiled", "--threads", "-1"]) == 2
    assert "--threads takes thread counts" in capsys.readouterr().err


def test_bench_bad_peak_is_one_line(capsys):
    assert cli.main(["bench", "--engines", "compiled", "--peak", "fast"]) == 2
    assert capsys.readouterr().err.strip() == ("microgpt: error: --peak takes one core's GFLOP/s as "
                                               "FLOAT64[,FLOAT32], e.g. 48,96 (got 'fast')")
