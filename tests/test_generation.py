"""Generation: greedy sampling, the sliding context window, sample lengths, and how samples print.

    python -m pytest -q tests/test_generation.py

The sliding window is checked against an independent computation: nanoGPT's way, every next token
from a fresh forward pass over the last block_size tokens (no cache kept between tokens), by the
scalar engine (atomic.py's gpt()); the faster engines must give the same greedy text.
"""

import io
import random
from contextlib import redirect_stdout

import pytest

from microgpt import cli, engines
from microgpt.config import TrainConfig
from microgpt.run import Run
from microgpt.sample import RULE, draw, generate
from tiny_run import train

TEXT = "".join(f"to be or not to be, line {i % 7}\n" for i in range(80))
MODEL = {"n_layer": 1, "n_embd": 8, "n_head": 2, "block_size": 8}


@pytest.fixture(scope="module")
def stream_run(tmp_path_factory):
    """A tiny stream run (scalar engine, 3 steps): its directory."""
    tmp = tmp_path_factory.mktemp("gen")
    (tmp / "text.txt").write_text(TEXT)
    tcfg = TrainConfig(steps=3, batch_size=2, data_mode="stream", samples=0)
    with redirect_stdout(io.StringIO()):
        train(dict(MODEL), tcfg, str(tmp / "text.txt"), str(tmp / "run"))
    return str(tmp / "run")


def greedy_without_cache(engine, tokens, block_size, new_tokens):
    """nanoGPT's loop: each token the argmax of a fresh forward pass over the last block_size tokens.

    No KV cache is kept between tokens. The next token is a function of the window alone, so a window
    seen before (greedy text soon repeats itself) gets the token its pass gave then, without the pass."""
    tokens, next_of = list(tokens), {}
    for _ in range(new_tokens):
        window = tuple(tokens[-block_size:])
        if window not in next_of:
            cache = engine.new_cache()
            logits = [engine.logits(cache, t, pos) for pos, t in enumerate(window)][-1]
            next_of[window] = max(range(len(logits)), key=lambda i: logits[i])
        tokens.append(next_of[window])
    return tokens


def test_temperature_zero_takes_the_most_likely_token_and_draws_nothing():
    rng = random.Random(5)
    state = rng.getstate()
    assert draw([0.1, 2.5, -1.0, 2.4], 0, rng) == 1
    assert draw([3.0, 1.0, 3.0], 0, rng, top_k=2) == 0  # the first of equals
    assert rng.getstate() == state


def test_the_window_slides_as_a_fresh_pass_over_the_last_block_size_tokens(stream_run):
    run = Run.load(stream_run)
    scalar = run.engine("scalar")
    tok, block = run.tokenizer, run.model.block_size
    start = tok.encode("to be")
    expected = greedy_without_cache(scalar, start, block, 3 * block)  # slides for 2 blocks and more
    assert tok.bos not in expected, "the test needs a sample that never draws BOS"
    got = generate(scalar, tok, block, random.Random(0), 0.0, prompt="to be", max_new_tokens=3 * block,
                   stream=True)
    assert got == tok.decode(expected)


@pytest.mark.parametrize("engine_name", [e for e in engines.available() if e != "scalar"])
def test_every_engine_slides_its_cache_the_same_way(stream_run, engine_name):
    run = Run.load(stream_run)
    tok, block = run.tokenizer, run.model.block_size
    reference = generate(run.engine("scalar"), tok, block, random.Random(0), 0.0, prompt="to", max_new_tokens=30,
                         stream=True)
    engine = run.engine(engine_name, dtype="float64", device="cpu")
    assert generate(engine, tok, block, random.Random(0), 0.0, prompt="to", max_new_tokens=30,
                    stream=True) == reference


def test_stream_samples_print_as_blocks_between_rules(stream_run, capsys):
    assert cli.main(["sample", "--out", stream_run, "--num", "3", "--max-new-tokens", "20", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    blocks = out.split(RULE + "\n")
    assert blocks[-1] == "" and len(blocks) == 4  # three samples, each closed by a rule
    assert not any(line.startswith("sample ") for line in out.splitlines())
    assert all(0 < len(b.rstrip("\n")) <= 20 for b in blocks[:-1])


def test_stream_samples_default_to_500_new_tokens(stream_run, capsys):
    assert cli.main(["sample", "--out", stream_run, "--num", "1", "--temperature", "0"]) == 0
    text = capsys.readouterr().out.split(RULE)[0][:-1]  # the sample, without the newline before the rule
    run = Run.load(stream_run)
    start = run.tokenizer.encode("\n")
    expected = greedy_without_cache(run.engine("scalar"), start, run.model.block_size, 500)
    assert run.tokenizer.bos not in expected
    assert text == run.tokenizer.decode(expected[1:]) and len(text) == 500


def test_line_samples_fill_the_block_by_default_and_take_more_when_asked(tmp_path, capsys):
    tcfg = TrainConfig(steps=2, samples=0)
    with redirect_stdout(io.StringIO()):
        train(dict(MODEL), tcfg, None, str(tmp_path / "run"))
    # greedy from a 2-step model: a long name that never draws BOS shows the length limit
    assert cli.main(["sample", "--out", str(tmp_path / "run"), "--num", "1", "--temperature", "0"]) == 0
    first = capsys.readouterr().out.split(": ", 1)[1].rstrip("\n")
    assert cli.main(["sample", "--out", str(tmp_path / "run"), "--num", "1", "--temperature", "0",
                     "--max-new-tokens", "20"]) == 0
    longer = capsys.readouterr().out.split(": ", 1)[1].rstrip("\n")
    run = Run.load(str(tmp_path / "run"))
    expected = greedy_without_cache(run.engine("scalar"), [run.tokenizer.bos], MODEL["block_size"], 20)
    drawn = expected[1:]  # after the BOS it starts from
    cut = drawn.index(run.tokenizer.bos) if run.tokenizer.bos in drawn else len(drawn)
    assert longer == run.tokenizer.decode(drawn[:cut])
    assert first == longer[:MODEL["block_size"]]


def test_bad_max_new_tokens_is_one_line(stream_run, capsys):
    assert cli.main(["sample", "--out", stream_run, "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens" in capsys.readouterr().err
