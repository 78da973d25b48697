"""The torch engine computes the reference function: checked against the scalar engine (atomic.py).

    python -m pytest -q tests/test_torch_engine.py

In float64 on CPU, losses, gradients and Adam's moments agree with the scalar engine to round-off;
checkpoints move between the two engines; the options beyond the reference are checked against
their definitions, computed here from the scalar engine's gradients. Skipped when torch is missing.
"""

import io
import json
import math
import random
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the torch engine needs torch: pip install torch")

from microgpt import checkpoint, cli  # noqa: E402
from microgpt.tensor import Tensor  # noqa: E402
from microgpt.config import ModelConfig, TrainConfig  # noqa: E402
from microgpt.data import DocumentData, Tokenizer, read_text, split_docs  # noqa: E402
from microgpt.engines import scalar  # noqa: E402
from microgpt.engines import torch as torch_engine  # noqa: E402
from microgpt.params import init_params, param_shapes  # noqa: E402
from microgpt.run import Run  # noqa: E402
from tiny_run import train  # noqa: E402

torch.set_num_threads(1)  # tiny tensors: one thread is as fast, and immune to a busy machine

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NAMES = SHARED / "data" / "names.txt"
REFERENCE = SHARED / "reference" / "reference_run_seed42.json"
MODEL_DEFAULTS = {"n_layer": 1, "n_embd": 16, "n_head": 4, "block_size": 16}


def need(path: Path) -> str:
    if not path.exists():
        pytest.skip(f"{path} is absent (shared test data lives beside the repository)")
    return str(path)


def losses(out_dir) -> list[float]:
    with open(Path(out_dir) / "metrics.jsonl") as f:
        return [r["loss"] for r in map(json.loads, f) if "loss" in r]


def run_quietly(fn, *args, **kwargs):
    with redirect_stdout(io.StringIO()) as out:
        result = fn(*args, **kwargs)
    return result, out.getvalue()


def setup(model: dict, seed: int = 3):
    """A model config on the embedded names, params drawn as model.py draws them, and the documents."""
    docs = split_docs(read_text(None))
    random.Random(seed).shuffle(docs)
    tok = Tokenizer.from_docs(docs)
    cfg = ModelConfig(vocab_size=tok.vocab_size, **model)
    floats = init_params(cfg, random.Random(seed))
    params = {name: Tensor.from_floats(shape, floats[name]) for name, shape in param_shapes(cfg)}
    return cfg, params, DocumentData(docs, tok, cfg.block_size)


def max_diff(a: Tensor, b: Tensor) -> float:
    return max(abs(x - y) for x, y in zip(a.to_floats(), b.to_floats()))


# ---- equal to the scalar engine -------------------------------------------------------------------
@pytest.mark.slow
def test_first_40_losses_equal_the_scalar_engine_and_the_reference(tmp_path):
    data = need(NAMES)
    for engine in ("scalar", "torch"):
        run_quietly(train, dict(MODEL_DEFAULTS), TrainConfig(engine=engine, samples=0), data,
                    str(tmp_path / engine), stop_after=40)
    ours, theirs = losses(tmp_path / "torch"), losses(tmp_path / "scalar")
    assert len(ours) == len(theirs) == 40
    assert max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-9
    if REFERENCE.exists():  # and the printed figures of the reference run itself
        printed = json.loads(REFERENCE.read_text())["printed_losses_4dp"][:40]
        assert [round(x, 4) for x in ours] == printed


CONFIGS = {
    "two layers, batch 3": ({**MODEL_DEFAULTS, "n_layer": 2}, 3),
    "width 32, 2 heads": ({**MODEL_DEFAULTS, "n_embd": 32, "n_head": 2}, 1),
    "block 8, documents cut": ({**MODEL_DEFAULTS, "block_size": 8}, 4),
    "batch 5 of different lengths": (MODEL_DEFAULTS, 5),
    "batch 12, packed several to a row": (MODEL_DEFAULTS, 12),
}


@pytest.mark.parametrize("model,batch", [pytest.param(*c, marks=[pytest.mark.slow] if c[1] > 5 else []) for c in
                                         CONFIGS.values()], ids=CONFIGS.keys())  # batch 12: slow
def test_gradients_equal_the_scalar_engine(model, batch):
    cfg, params, data = setup(model)
    seqs = data.batch(7, batch)
    if model["block_size"] == 8:
        assert any(len(s) == 9 for s in seqs), "the test needs a document cut at the block"
    if batch == 12:
        assert len(torch_engine.pack(seqs, cfg.block_size)["idx"]) < 8, "the test needs rows of several documents"
    tcfg = TrainConfig(engine="torch")
    loss_s, grads_s = scalar.Engine(cfg, tcfg, params).loss_and_grads(seqs)
    loss_t, grads_t = torch_engine.Engine(cfg, tcfg, params).loss_and_grads(seqs)
    assert abs(loss_s - loss_t) < 1e-12
    assert set(grads_t) == set(grads_s)
    for name in grads_s:
        assert max_diff(grads_s[name], grads_t[name]) < 1e-12, name


def test_packing_keeps_each_document_whole_and_apart():
    seqs = [[0, 5, 6, 0], [0, 7, 0], [0, 1, 2, 3, 4, 0], [0, 9, 0]]  # 3, 2, 5, 2 (input, target) pairs
    batch = torch_engine.pack(seqs, 8)
    idx, targets, pos, mask = (batch[k] for k in ("idx", "targets", "pos", "mask"))
    assert idx.shape == (2, 8) and mask.shape == (2, 1, 8, 8)  # 12 pairs in two rows of 8
    pairs = sorted(zip(idx[targets >= 0].tolist(), targets[targets >= 0].tolist()))
    assert pairs == sorted((s[i], s[i + 1]) for s in seqs for i in range(len(s) - 1))  # each pair once
    for r in range(2):
        starts = [t for t in range(8) if pos[r, t] == 0]
        for t in range(8):
            doc_start = max(u for u in starts if u <= t)
            if targets[r, t] >= 0:  # a real token sees exactly its own document up to itself
                assert pos[r, t] == t - doc_start
                assert mask[r, 0, t].nonzero().flatten().tolist() == list(range(doc_start, t + 1))
            assert mask[r, 0, t].any()  # padding sees something too, so softmax has no empty row


@pytest.mark.slow
def test_adam_steps_equal_the_scalar_engine_on_batches():
    cfg, params, data = setup({**MODEL_DEFAULTS, "n_layer": 2})
    tcfg = TrainConfig(engine="torch")
    a, b = scalar.Engine(cfg, tcfg, params), torch_engine.Engine(cfg, tcfg, params)
    for step in range(3):
        seqs = data.batch(step, 2)
        assert abs(a.train_step(seqs, step, 0.01) - b.train_step(seqs, step, 0.01)) < 1e-12
    for ours, theirs in ((a.weights(), b.weights()), (a.state(), b.state())):  # params; m and v
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert max_diff(ours[name], theirs[name]) < 1e-12, name


def test_float32_stays_close_to_float64():
    cfg, params, data = setup(MODEL_DEFAULTS)
    seqs = data.batch(0, 8)
    exact = torch_engine.Engine(cfg, TrainConfig(engine="torch"), params).eval_loss(seqs)
    single = torch_engine.Engine(cfg, TrainConfig(engine="torch", dtype="float32"), params).eval_loss(seqs)
    assert abs(exact - single) < 1e-5


# ---- checkpoints move between engines ---------------------------------------------------------------
def sample_with(engine: str, out_dir) -> str:
    code, printed = run_quietly(cli.main, ["sample", "--out", str(out_dir), "--engine", engine, "--seed", "7",
                                           "--num", "8", "--top-k", "20", "--prompt", "a"])
    assert code == 0
    return printed


def test_a_torch_checkpoint_samples_the_same_with_the_scalar_engine(tmp_path):
    run_quietly(train, dict(MODEL_DEFAULTS), TrainConfig(engine="torch", steps=30, samples=0), None, str(tmp_path))
    torch_samples = sample_with("torch", tmp_path)
    assert torch_samples.count("sample") == 8
    assert sample_with("scalar", tmp_path) == torch_samples


@pytest.mark.slow
def test_a_scalar_checkpoint_resumes_in_torch(tmp_path):
    tcfg = TrainConfig(steps=8, samples=3)
    whole, _ = run_quietly(train, dict(MODEL_DEFAULTS), tcfg, None, str(tmp_path / "whole"))
    run_quietly(train, dict(MODEL_DEFAULTS), tcfg, None, str(tmp_path / "split"), stop_after=3)
    ck = Run.load(str(tmp_path / "split"))
    assert ck.step == 3 and ck.train.engine == "scalar"
    resumed, _ = run_quietly(train, dict(MODEL_DEFAULTS), replace(tcfg, engine="torch"), None,
                             str(tmp_path / "split"), resume=True)
    assert max(abs(a - b) for a, b in zip(losses(tmp_path / "whole"), losses(tmp_path / "split"))) < 1e-9
    assert len(losses(tmp_path / "split")) == 8
    assert resumed["samples"] == whole["samples"]


# ---- the options beyond the reference, against their definitions ------------------------------------
def first_step(tcfg: TrainConfig):
    """One torch step from fresh Adam, and the scalar engine's gradients at the same point."""
    cfg, params, data = setup(MODEL_DEFAULTS)
    seqs = data.batch(0, 4)
    _, grads = scalar.Engine(cfg, tcfg, params).loss_and_grads(seqs)
    engine = torch_engine.Engine(cfg, tcfg, params)
    engine.train_step(seqs, 0, tcfg.lr)
    state = engine.state()
    return params, grads, (engine.weights(), *({n: state[f"adam.{w}.{n}"] for n in params} for w in "mv"))


def test_weight_decay_is_decoupled_as_in_adamw():
    tcfg = TrainConfig(engine="torch", weight_decay=0.5)
    before, grads, (after, _, _) = first_step(tcfg)
    for name in before:  # step 1: m_hat = g, v_hat = g^2, and the decay applies to the weights alone
        expected = [p * (1 - tcfg.lr * tcfg.weight_decay) - tcfg.lr * g / (abs(g) + tcfg.eps)
                    for p, g in zip(before[name].to_floats(), grads[name].to_floats())]
        assert max(abs(x - y) for x, y in zip(expected, after[name].to_floats())) < 1e-12, name


def test_gradient_clipping_scales_the_global_norm():
    tcfg = TrainConfig(engine="torch", grad_clip=0.1)
    _, grads, (_, m, _) = first_step(tcfg)
    norm = math.sqrt(sum(g * g for t in grads.values() for g in t.to_floats()))
    assert norm > tcfg.grad_clip, "the test needs a gradient larger than the clip"
    scale = tcfg.grad_clip / (norm + 1e-6)  # torch's clip_grad_norm_ adds 1e-6
    for name in grads:  # after one step m = (1 - beta1) * clipped gradient
        expected = [(1 - tcfg.beta1) * g * scale for g in grads[name].to_floats()]
        assert max(abs(x - y) for x, y in zip(expected, m[name].to_floats())) < 1e-12, name


def test_gradient_accumulation_equals_one_larger_batch(tmp_path):
    runs = {"accum": TrainConfig(engine="torch", steps=6, batch_size=2, grad_accum=3, samples=0),
            "batch": TrainConfig(engine="torch", steps=6, batch_size=6, samples=0)}
    for name, tcfg in runs.items():
        run_quietly(train, dict(MODEL_DEFAULTS), tcfg, None, str(tmp_path / name))
    assert max(abs(a - b) for a, b in zip(losses(tmp_path / "accum"), losses(tmp_path / "batch"))) < 1e-12
    a, b = Run.load(str(tmp_path / "accum")), Run.load(str(tmp_path / "batch"))
    assert max(max_diff(a.params[n], b.params[n]) for n in a.params) < 1e-12


def train_whole_and_split(tcfg, tmp_path) -> None:
    """One run in tmp_path/whole; the same stopped after 3 steps and resumed in tmp_path/split."""
    run_quietly(train, dict(MODEL_DEFAULTS), tcfg, None, str(tmp_path / "whole"))
    run_quietly(train, dict(MODEL_DEFAULTS), tcfg, None, str(tmp_path / "split"), stop_after=3)
    run_quietly(train, dict(MODEL_DEFAULTS), tcfg, None, str(tmp_path / "split"), resume=True)
    assert losses(tmp_path / "whole") == losses(tmp_path / "split")


def test_dropout_runs_resume_exactly(tmp_path):
    tcfg = TrainConfig(engine="torch", steps=8, batch_size=4, dropout=0.2, samples=0)
    train_whole_and_split(tcfg, tmp_path)
    no_dropout = replace(tcfg, dropout=0.0)
    run_quietly(train, dict(MODEL_DEFAULTS), no_dropout, None, str(tmp_path / "plain"))
    assert losses(tmp_path / "plain")[0] != losses(tmp_path / "whole")[0]  # dropout did something


def test_dropout_zeroes_a_fraction_p_and_scales_the_rest():
    x = torch.ones(200_000, dtype=torch.float64)
    drop = torch_engine.Dropout(0.3).train()
    y = drop(x)
    zeroed = (y == 0).double().mean().item()
    assert abs(zeroed - 0.3) < 0.005  # 200K draws: the standard error is 0.001
    assert torch.all((y == 0) | (y == 1 / 0.7))
    assert torch.equal(drop.eval()(x), x)


@pytest.mark.parametrize("attn_dropout", [None, 0.0])
def test_attn_dropout_alone_decides_the_dropout_on_attention_weights(attn_dropout):
    cfg, params, data = setup(MODEL_DEFAULTS)
    engine = torch_engine.Engine(cfg, TrainConfig(engine="torch", dropout=0.5, attn_dropout=attn_dropout), params)
    for module in engine.model.modules():  # switch off every dropout but the one on attention weights
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    seqs = data.batch(0, 4)
    training = engine._loss_sum(engine.model.train(), seqs).item()
    exact = engine._loss_sum(engine.model.eval(), seqs).item()
    if attn_dropout == 0.0:
        assert abs(training - exact) < 1e-12  # nothing left to drop
    else:
        assert abs(training - exact) > 1e-3  # --dropout 0.5 reaches the attention weights too, as nanoGPT


def test_ema_is_the_moving_average_of_the_trained_weights():
    cfg, params, data = setup(MODEL_DEFAULTS)
    plain = torch_engine.Engine(cfg, TrainConfig(engine="torch"), params)
    averaging = torch_engine.Engine(cfg, TrainConfig(engine="torch", ema=0.9), params)
    average = {n: t.to_floats() for n, t in params.items()}  # computed here, from the plain engine's weights
    for step in range(4):
        seqs = data.batch(step, 3)
        assert abs(plain.train_step(seqs, step, 0.01) - averaging.train_step(seqs, step, 0.01)) < 1e-12
        weights = plain.weights()
        average = {n: [0.9 * a + 0.1 * w for a, w in zip(average[n], weights[n].to_floats())] for n in average}
    model, trained = averaging.weights(), {n: averaging.state()[f"ema.trained.{n}"] for n in params}
    for name in params:
        assert max_diff(trained[name], weights[name]) < 1e-12, name  # Adam trains the same weights
        assert max(abs(a - b) for a, b in zip(model[name].to_floats(), average[name])) < 1e-12, name
    assert max_diff(model["wte"], weights["wte"]) > 1e-4  # the average is not the last weights
    seqs = data.batch(9, 5)  # and the average is what is evaluated
    exact = torch_engine.Engine(cfg, TrainConfig(engine="torch"), model).eval_loss(seqs)
    assert abs(averaging.eval_loss(seqs) - exact) < 1e-12


@pytest.mark.slow
def test_ema_runs_resume_exactly_and_samplers_read_the_average(tmp_path):
    tcfg = TrainConfig(engine="torch", steps=6, batch_size=2, ema=0.8, samples=0)
    train_whole_and_split(tcfg, tmp_path)
    whole, split = Run.load(str(tmp_path / "whole")), Run.load(str(tmp_path / "split"))
    for name in whole.params:
        assert max_diff(whole.params[name], split.params[name]) < 1e-12
        assert max_diff(whole.state[f"ema.trained.{name}"], split.state[f"ema.trained.{name}"]) < 1e-12
    assert sample_with("scalar", tmp_path / "whole") == sample_with("torch", tmp_path / "whole")


@pytest.mark.parametrize("flag", [["--dropout", "0.1"], ["--weight-decay", "0.1"], ["--grad-clip", "1"],
                                  ["--compile"], ["--device", "cpu"], ["--ema", "0.99"],
                                  ["--attn-dropout", "0"], ["--optimizer", "muon"]])
def test_the_scalar_engine_refuses_torch_only_options(flag, tmp_path, capsys):
    code = cli.main(["train", "--engine", "scalar", "--steps", "1", "--out", str(tmp_path), *flag])
    assert code == 2
    assert flag[0] in capsys.readouterr().err
    assert not checkpoint.exists(str(tmp_path))


# ---- GPU paths: run only where there is one ---------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_bfloat16_autocast_on_cuda_stays_close_to_float64():
    cfg, params, data = setup({**MODEL_DEFAULTS, "n_embd": 64})
    seqs = data.batch(0, 16)
    exact = torch_engine.Engine(cfg, TrainConfig(engine="torch", device="cpu"), params).eval_loss(seqs)
    half = torch_engine.Engine(cfg, TrainConfig(engine="torch", device="cuda", dtype="bfloat16"), params)
    assert abs(half.eval_loss(seqs) - exact) < 2e-2
    assert math.isfinite(half.train_step(seqs, 0, 0.01))


@cuda
def test_compiled_float32_on_cuda_matches_cpu():
    cfg, params, data = setup(MODEL_DEFAULTS)
    seqs = data.batch(0, 8)
    tcfg = TrainConfig(engine="torch", dtype="float32", compile=True)
    gpu = torch_engine.Engine(cfg, replace(tcfg, device="cuda"), params)
    cpu = torch_engine.Engine(cfg, replace(tcfg, device="cpu", compile=False), params)
    for step in range(3):
        assert abs(gpu.train_step(seqs, step, 0.01) - cpu.train_step(seqs, step, 0.01)) < 1e-3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where there is no GPU")
def test_asking_for_a_missing_gpu_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["train", "--engine", "torch", "--device", "cuda", "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "--device cuda is not available" in capsys.readouterr().err
