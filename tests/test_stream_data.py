"""Stream datasets (`--data-mode stream`): windows of one character stream, nanoGPT's shakespeare_char.

    python -m pytest -q tests/test_stream_data.py

Needs only the standard library: windows come from the first 90% of the text, are reproducible
from (seed, step), split across processes as one larger batch would, and the held-out windows
cover the last 10% once. A tiny run trains, evaluates and resumes exactly.
"""

import io
import json
from contextlib import redirect_stdout

import pytest

from microgpt import cli
from microgpt.config import TrainConfig
from microgpt.data import StreamData, Tokenizer
from microgpt.errors import UsageError
from tiny_run import train

TEXT = "".join(f"line {i}: the quick brown fox {i * i % 97} jumps.\n" for i in range(300))


def stream(block_size=16, seed=1):
    return StreamData(TEXT, Tokenizer(sorted(set(TEXT))), block_size, seed)


def test_windows_come_from_the_first_90_percent():
    data, tok = stream(), Tokenizer(sorted(set(TEXT)))
    cut = int(len(TEXT) * 0.9)
    assert tok.decode(data.train) == TEXT[:cut]
    for step in range(20):
        for window in data.batch(step, 4):
            assert len(window) == 17
            assert tok.decode(window) in TEXT[:cut]


def test_windows_depend_on_seed_and_step_alone():
    assert stream().batch(5, 4) == stream().batch(5, 4)
    assert stream().batch(5, 4) != stream().batch(6, 4)
    assert stream(seed=2).batch(5, 4) != stream().batch(5, 4)


def test_processes_share_one_larger_batch():
    data = stream()
    whole = data.batch(3, 6)
    assert data.batch(3, 3, rank=0, world=2) + data.batch(3, 3, rank=1, world=2) == whole


def test_held_out_windows_cover_the_last_10_percent_once():
    data, tok = stream(), Tokenizer(sorted(set(TEXT)))
    held_out = TEXT[int(len(TEXT) * 0.9):]
    assert all(len(w) == 17 for w in data.val)
    joined = tok.decode(data.val[0]) + "".join(tok.decode(w[1:]) for w in data.val[1:])
    assert held_out.startswith(joined) and len(held_out) - len(joined) < 16
    assert [w for batch in data.val_batches(7) for w in batch] == data.val


def test_a_text_too_short_for_the_block_is_refused():
    with pytest.raises(UsageError, match="block-size"):
        StreamData(TEXT[:100], Tokenizer(sorted(set(TEXT))), 16, 1)


@pytest.mark.slow
def test_a_stream_run_evaluates_and_resumes_exactly(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("".join(f"to be or not to be {i % 7}\n" for i in range(60)))  # small: the scalar engine
    model = {"n_layer": 1, "n_embd": 8, "n_head": 2, "block_size": 8}
    tcfg = TrainConfig(steps=4, batch_size=2, data_mode="stream", eval_every=2, samples=2)

    def run(out, **kw):
        with redirect_stdout(io.StringIO()):
            return train(dict(model), tcfg, str(path), str(tmp_path / out), **kw)

    whole = run("whole")
    assert whole["val_loss"] is not None
    run("split", stop_after=1)
    resumed = run("split", resume=True)
    read = lambda out: [json.loads(line) for line in open(tmp_path / out / "metrics.jsonl")]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "dt"} for r in rs]
    assert strip(read("split")) == strip(read("whole"))
    assert resumed["samples"] == whole["samples"]


def test_val_docs_is_refused_in_stream_mode(tmp_path, capsys):
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    code = cli.main(["train", "--data", str(path), "--data-mode", "stream", "--val-docs", "10",
                     "--out", str(tmp_path / "out")])
    assert code == 2 and "--val-docs" in capsys.readouterr().err
