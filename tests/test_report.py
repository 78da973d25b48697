"""Tests of `microgpt report`: a self-contained report.html with every chart, for checkpoints of
every installed engine, and a clear error without matplotlib. (tests/test_report_browser.py opens
the page in a real browser.)

    python -m pytest -q tests/test_report.py
"""

import base64
import builtins
import re

import pytest

from microgpt import engines
from microgpt.cli import main
from tiny_run import tiny_run

CHARTS = ["loss", "lr", "attention-0", "attention-1", "embeddings", "after-bos", "loss-by-position"]


def images(page: str) -> dict[str, bytes]:
    """section id -> the decoded PNG of its <img>."""
    found = re.findall(r'<section id="([\w-]+)"><h2>[^<]*</h2><figure><img alt="[^"]*" '
                       r'src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    return {sid: base64.b64decode(data) for sid, data in found}


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    pytest.importorskip("matplotlib", reason="microgpt report needs matplotlib: pip install matplotlib")
    out = tiny_run(tmp_path_factory.mktemp("report") / "run")
    assert main(["report", "--out", out, "--docs", "emma,olivia", "--samples", "7", "--loss-docs", "4"]) == 0
    with open(f"{out}/report.html", encoding="utf-8") as f:
        return f.read()


@pytest.mark.slow
def test_every_chart_is_an_embedded_png(page):
    pngs = images(page)
    assert list(pngs) == CHARTS
    for sid, data in pngs.items():
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, sid


@pytest.mark.slow
def test_page_is_self_contained(page):
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.IGNORECASE)
    assert "<script" not in page and "<link" not in page and "@import" not in page


@pytest.mark.slow
def test_page_lists_samples_params_and_losses(page):
    assert len(re.findall(r"<li>", page)) == 7
    counts = {name: int(n.replace(",", "")) for name, n in
              re.findall(r"<tr><td>([\w.]+)</td><td>\d+ &times; \d+</td><td>([\d,]+)</td>", page)}
    # the tiny run's model: vocab 27, n_embd 8, block 8, two layers with 4 square and 2 wide matrices each
    assert counts["wte"] == counts["lm_head"] == 27 * 8 and counts["wpe"] == 8 * 8
    assert counts["layer1.mlp_fc1"] == 32 * 8 and len(counts) == 3 + 2 * 6
    assert "final validation loss" in page and 'Attention on &quot;olivia&quot;' in page


@pytest.mark.parametrize("engine_name", engines.available())
@pytest.mark.slow
def test_report_reads_checkpoints_of_every_engine(tmp_path, engine_name):
    pytest.importorskip("matplotlib", reason="microgpt report needs matplotlib: pip install matplotlib")
    out = tiny_run(tmp_path / engine_name, engine=engine_name, steps=2)
    assert main(["report", "--out", out, "--samples", "2", "--loss-docs", "2"]) == 0
    with open(f"{out}/report.html", encoding="utf-8") as f:
        assert len(images(f.read())) == 5 + 3  # three attention maps by default


def test_without_matplotlib_the_error_says_what_to_install(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["report", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'microgpt-atomic[report]'" in err and err.count("\n") == 1


def test_report_without_a_checkpoint_is_a_one_line_error(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="microgpt report needs matplotlib: pip install matplotlib")
    assert main(["report", "--out", str(tmp_path / "none")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_the_attention_the_numpy_engine_records_is_the_pure_engines(tmp_path):
    pytest.importorskip("numpy", reason="the report's attention maps come from the NumPy engine")
    from microgpt.engines.pure import FloatGPT
    from microgpt.run import Run
    state = Run.load(tiny_run(tmp_path / "run", steps=2))
    tokens = state.encode("olivia")
    walk = FloatGPT(state.model, state.params).forward(tokens)  # atomic.py's arithmetic, independent of numpy
    got = state.engine("numpy", dtype="float64").attention_weights(tokens[:-1])
    for at, weights in zip(walk.positions, got, strict=True):
        for li in range(state.model.n_layer):
            for h in range(state.model.n_head):
                assert weights[li][h] == pytest.approx(at.saved[li]["attn_weights"][h], abs=1e-12)


def test_a_stream_run_gets_the_charts_that_fit_it(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="microgpt report needs matplotlib: pip install -e '.[report]'")
    import io
    from contextlib import redirect_stdout
    from microgpt.config import TrainConfig
    from tiny_run import TINY, train
    text = tmp_path / "text.txt"
    # 24 lines, 648 characters: the held-out tail is 8 windows, each evaluated by the scalar engine
    text.write_text("".join(f"to be or not to be, line {i % 7}\n" for i in range(24)))
    tcfg = TrainConfig(steps=4, batch_size=2, data_mode="stream", samples=0, eval_every=2, lr_schedule="cosine",
                       warmup_steps=1, min_lr=0.001)
    with redirect_stdout(io.StringIO()):
        train(dict(TINY), tcfg, str(text), str(tmp_path / "run"))
    assert main(["report", "--out", str(tmp_path / "run"), "--samples", "2", "--loss-docs", "3",
                 "--data", str(text)]) == 0  # the run's text: a checkpoint names its file, never opens it
    err = capsys.readouterr().err
    assert "report [1/" in err  # progress, on stderr when it is no terminal
    page = open(tmp_path / "run" / "report.html", encoding="utf-8").read()
    assert list(images(page)) == ["loss", "lr", "attention-0", "attention-1", "attention-2", "embeddings",
                                  "loss-by-position"]  # no BOS chart
    assert "cosine decay from 0.01 to 0.001" in page and "linear warmup over 1 steps" in page
    assert "mean over step 4 of 4" in page and "(the last evaluation)" in page
    assert page.count('<pre class="sample">') == 2 and "<ol class=\"samples\">" not in page
    assert "The BOS row is left out" in page


def test_the_embedding_chart_of_a_stream_run_leaves_out_bos():
    pytest.importorskip("matplotlib", reason="microgpt report needs matplotlib: pip install -e '.[report]'")
    from matplotlib.figure import Figure
    from microgpt.data import Tokenizer
    from microgpt.tools.report import embedding_chart
    tok = Tokenizer.from_docs(["abc", "cab"])
    wte = [[float(i), float(i * i % 5), 1.0 / (i + 1)] for i in range(tok.vocab_size)]
    shown = lambda fig: sorted(t.get_text() for t in fig.axes[0].texts)
    assert shown(embedding_chart(Figure, wte, tok)) == ["BOS", "a", "b", "c"]
    assert shown(embedding_chart(Figure, wte, tok, with_bos=False)) == ["a", "b", "c"]


def test_characters_the_chart_font_lacks_are_labelled_by_code_point_without_warnings():
    pytest.importorskip("matplotlib", reason="microgpt report needs matplotlib: pip install -e '.[report]'")
    import warnings
    from types import SimpleNamespace
    from matplotlib.figure import Figure
    from microgpt.data import Tokenizer
    from microgpt.tools.report import attention_chart, code_point_note, embedding_chart, label, next_char_chart, png
    tok = Tokenizer.from_docs(["a漢字", "字a"])   # 漢 and 字: not in matplotlib's default font, DejaVu Sans
    ids = {ch: i for i, ch in enumerate(tok.chars)}
    assert label(tok, ids["a"]) == "a" and label(tok, tok.bos) == "BOS"
    assert label(tok, ids["漢"]) in ("漢", "U+6F22")   # the character, where the font has it
    V = tok.vocab_size
    wte = [[float(i), float(i * i % 5), 1.0 / (i + 1)] for i in range(V)]
    tokens = [tok.bos, ids["a"], ids["漢"], ids["字"]]
    weights = [[[[1.0 / (pos + 1)] * (pos + 1)]] for pos in range(len(tokens))]   # [pos][layer][head]
    cfg = SimpleNamespace(n_layer=1, n_head=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # matplotlib warns "Glyph ... missing from font(s)" when it draws a box
        for fig in (embedding_chart(Figure, wte, tok), next_char_chart(Figure, [1.0 / V] * V, tok),
                    attention_chart(Figure, weights, tokens, cfg, tok)):
            png(fig)
    if label(tok, ids["漢"]) == "U+6F22":
        assert "U+6F22 漢" in code_point_note(tok) and "U+5B57 字" in code_point_note(tok)
    assert code_point_note(Tokenizer.from_docs(["abc"])) == ""
