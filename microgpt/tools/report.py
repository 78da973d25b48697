"""`microgpt report --out DIR`: writes DIR/report.html, one self-contained page (no network: every
chart is a PNG inside the file) about the run saved in DIR.

    pip install -e '.[report]'         # in a clone: matplotlib draws the charts
    microgpt report --out out [--docs emma,olivia] [--samples 20] [--loss-docs 200]

It shows the training and validation loss (from DIR/metrics.jsonl), the learning-rate schedule,
each layer's and head's attention weights on a few documents, a 2-D map of the character
embeddings, the next-character distribution after BOS, the loss at each position, samples, and the
parameter count of every tensor. Samples and losses come from the run's own engine (else NumPy,
else the pure engine); the attention maps from the NumPy engine, which keeps every attention weight
for them (matplotlib needs NumPy, so it is there). A stream run (`--data-mode stream`)
gets the charts that fit it: no BOS charts, windows of its held-out text instead of documents, and
its samples as blocks of text. Progress goes to stderr.
"""

import base64
import contextlib
import functools
import html
import io
import os
import math
import random

from microgpt import durable, engines, metrics
from microgpt.data import MAX_DATA_MB, add_max_data_argument
from microgpt.engines.pure import softmax
from microgpt.errors import UsageError
from microgpt.install import hint
from microgpt.params import num_params, param_shapes
from microgpt.progress import WorkProgress
from microgpt.run import Run, check_out_dir
from microgpt.sample import generate

ATTENTION_TOKENS = 24     # a stream run's attention maps show windows this long (a map per layer and head)
STREAM_SAMPLES = 3        # samples listed for a stream run (each is 500 characters)

INSTALL = hint("report", "matplotlib")


def need_matplotlib():
    """matplotlib's Figure (no pyplot, no display needed), or a UsageError saying what to install."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(f"microgpt report draws its charts with matplotlib, which is not installed: {INSTALL}") from None
    return Figure


def read_metrics(out_dir: str) -> tuple[list[dict], list[dict]]:
    """(training rows {step, loss, lr, dt}, validation rows {step, val_loss}) from metrics.jsonl."""
    rows = metrics.read_metrics(os.path.join(out_dir, "metrics.jsonl"))   # [] when there is none
    return [r for r in rows if "loss" in r], [r for r in rows if "val_loss" in r]


def png(fig) -> str:
    """The figure as a data: URI, so that the page needs no other file."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


SHOWN = {"\n": "\\n", " ": "\u2423"}  # characters a chart cannot show as themselves: newline, space


@functools.cache
def chart_font_chars() -> frozenset[int]:
    """The code points that the charts' font (matplotlib's default) can draw."""
    from matplotlib import font_manager, ft2font
    return frozenset(ft2font.FT2Font(font_manager.findfont(font_manager.FontProperties())).get_charmap())


def label(tokenizer, t) -> str:
    """Token t as a chart shows it: BOS, its character, SHOWN's stand-in, or, for a character the charts'
    font lacks (which matplotlib would draw as a box, warning on stderr), its code point, U+6F22."""
    if t == tokenizer.bos:
        return "BOS"
    ch = tokenizer.chars[t]
    if ch in SHOWN:
        return SHOWN[ch]
    return ch if ord(ch) in chart_font_chars() else f"U+{ord(ch):04X}"


def code_point_note(tokenizer, most: int = 20) -> str:
    """A sentence for a caption naming the characters the charts label by code point (label), or ""."""
    shown = ((label(tokenizer, t), ch) for t, ch in enumerate(tokenizer.chars))
    coded = [f"{code} {ch}" for code, ch in shown if code.startswith("U+")]
    if not coded:
        return ""
    more = f" and {len(coded) - most} more" if len(coded) > most else ""
    return (f" The charts' font lacks {len(coded)} of the characters, labelled by code point: "
            f"{', '.join(coded[:most])}{more}.")


def upright_code_points(ax) -> None:
    """Stand the x axis's code-point labels (U+6F22: wider than a tick's room) upright."""
    for text in ax.get_xticklabels():
        if text.get_text().startswith("U+"):
            text.set_rotation(90)


# ---- the charts, each a function of plain data returning a figure ------------------------------
def loss_chart(Figure, train_rows, val_rows, held_out="held-out documents"):
    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    steps = [r["step"] for r in train_rows]
    losses = [r["loss"] for r in train_rows]
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="training loss (each step)")
    window = max(1, min(50, len(losses) // 10))
    if window > 1:
        smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
                  for i in range(len(losses))]
        ax.plot(steps, smooth, color="tab:blue", linewidth=1.8, label=f"training loss (mean of last {window})")
    if val_rows:
        ax.plot([r["step"] for r in val_rows], [r["val_loss"] for r in val_rows], "o-", color="tab:orange",
                label=f"validation loss ({held_out})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def lr_chart(Figure, train_rows):
    fig = Figure(figsize=(8, 2.6))
    ax = fig.add_subplot()
    ax.plot([r["step"] for r in train_rows], [r["lr"] for r in train_rows], color="tab:green")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return fig


def attention_chart(Figure, weights, tokens, cfg, tokenizer):
    """One heatmap per layer and head: row = the position asking, column = the position attended to.
    weights[pos][layer][head]: the weights of position pos over positions 0..pos."""
    n = len(weights)
    names = [label(tokenizer, t) for t in tokens[:n]]
    fig = Figure(figsize=(1.8 + 2.1 * cfg.n_head, 0.6 + 2.2 * cfg.n_layer))  # a fixed layout: constrained
    axes = fig.subplots(cfg.n_layer, cfg.n_head, squeeze=False,          # layout doubled the drawing time
                        gridspec_kw={"wspace": 0.15, "hspace": 0.3, "left": 0.06, "right": 0.9})
    for li in range(cfg.n_layer):
        for h in range(cfg.n_head):
            grid = [[float("nan")] * n for _ in range(n)]  # the future is masked: nothing to show there
            for pos in range(n):
                grid[pos][:pos + 1] = weights[pos][li][h]
            ax = axes[li][h]
            image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
            ax.set_title(f"layer {li}, head {h}", fontsize=9)
            # the characters label the outer edges only: every panel has the same rows and columns
            ax.set_xticks(range(n), names if li == cfg.n_layer - 1 else [], fontsize=7)
            ax.set_yticks(range(n), names if h == 0 else [], fontsize=7)
            if tokens[0] == tokenizer.bos and li == cfg.n_layer - 1:
                ax.get_xticklabels()[0].set_rotation(90)  # BOS: keeps clear of the next character
            upright_code_points(ax)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    return fig


def embedding_chart(Figure, wte, tokenizer, with_bos=True):
    """The rows of wte projected on their two main directions (PCA by SVD); with_bos=False leaves out
    BOS's row (a stream run never trains it, so it is only its initial noise)."""
    import numpy as np  # matplotlib depends on numpy, so it is there whenever matplotlib is
    shown = [i for i in range(len(wte)) if with_bos or i != tokenizer.bos]
    x = np.array([wte[i] for i in shown])               # (shown, n_embd)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T                                   # (vocab, 2)
    share = s ** 2 / (s ** 2).sum()
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    ax.scatter(xy[:, 0], xy[:, 1], s=10, color="tab:gray")
    for i, t in enumerate(shown):
        vowel = label(tokenizer, t).lower() in "aeiouy"
        ax.annotate(label(tokenizer, t), xy[i], fontsize=11, ha="center", va="bottom",
                    color="tab:red" if vowel else "tab:blue")
    ax.set_xlabel(f"first principal direction ({share[0]:.0%} of the variance)")
    ax.set_ylabel(f"second ({share[1] if len(share) > 1 else 0:.0%})")
    ax.grid(alpha=0.3)
    return fig


def next_char_chart(Figure, probs, tokenizer):
    fig = Figure(figsize=(8, 3))
    ax = fig.add_subplot()
    ax.bar(range(len(probs)), probs, color="tab:purple")
    ax.set_xticks(range(len(probs)), [label(tokenizer, i) for i in range(len(probs))], fontsize=8)
    upright_code_points(ax)
    ax.set_ylabel("probability")
    ax.set_xlabel("next character after BOS (the first character of a document)")
    ax.grid(alpha=0.3, axis="y")
    return fig


def position_chart(Figure, per_position, what, xlabel):
    fig = Figure(figsize=(8, 3))
    ax = fig.add_subplot()
    xs = [p for p, losses in enumerate(per_position) if losses]
    ax.plot(xs, [sum(per_position[p]) / len(per_position[p]) for p in xs], "o-", color="tab:red")
    ax2 = ax.twinx()
    ax2.bar(xs, [len(per_position[p]) for p in xs], color="tab:gray", alpha=0.2)
    ax2.set_ylabel(f"{what} reaching it", color="tab:gray")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean loss (nats)")
    ax.grid(alpha=0.3)
    return fig


# ---- what the charts say about the run ---------------------------------------------------------
def lr_caption(tcfg) -> str:
    """The schedule the run used, in words (config.lr_at computes it)."""
    if tcfg.lr_schedule == "linear" and not tcfg.warmup_steps and not tcfg.min_lr:
        return "lr_t = lr * (1 - step / num_steps), as atomic.py decays it."
    warmup = f"linear warmup over {tcfg.warmup_steps} steps to {tcfg.lr:g}, then " if tcfg.warmup_steps else ""
    shape = "cosine" if tcfg.lr_schedule == "cosine" else "linear"
    return f"The lr at each step: {warmup}{shape} decay from {tcfg.lr:g} to {tcfg.min_lr:g} at step {tcfg.steps}."


def final_training_loss(train_rows) -> tuple[str, str]:
    """(label, value): the mean over the last tenth of the steps (at most 50), saying which steps."""
    last = train_rows[-max(1, min(50, len(train_rows) // 10)):]
    mean = sum(r["loss"] for r in last) / len(last)
    steps = f"step {last[0]['step']}" if len(last) == 1 else f"steps {last[0]['step']}-{last[-1]['step']}"
    return "final training loss", f"{mean:.4f} (mean over {steps} of {train_rows[-1]['step']})"


def position_losses(engine, seqs, block_size: int) -> list[list[float]]:
    """-log p(next token) at each position of each sequence, per position, from the engine's logits."""
    per_position = [[] for _ in range(block_size)]
    for seq in seqs:
        for pos, row in enumerate(engine.forward_logits(engine.new_cache(), seq[:-1])):
            probs, _ = softmax(row)
            per_position[pos].append(-math.log(probs[seq[pos + 1]]))
    return per_position


# ---- the page ---------------------------------------------------------------------------------
def build(out_dir: str, docs: list[str] | None = None, num_samples: int | None = None, seed: int | None = None,
          loss_docs: int = 200, data_path: str | None = None,
          max_data_mb: float = MAX_DATA_MB) -> str:
    """Write out_dir/report.html and return its path."""
    Figure = need_matplotlib()
    state = Run.load(out_dir, with_state=False)
    check_out_dir(out_dir, "copy the run's folder where you can write, and give that --out")  # before any chart
    path = os.path.join(out_dir, "report.html")
    if standing := durable.not_a_file(path):
        raise UsageError(f"{path} is {standing}, and the report is written there; move it")
    cfg, tok = state.model, state.tokenizer
    stream = state.train.data_mode == "stream"
    encode = (lambda doc: tok.encode(doc[:cfg.block_size + 1])) if stream else state.encode
    for doc in docs or []:
        encode(doc)  # a document the vocabulary cannot spell fails here, not after the samples and charts
    num_samples = (STREAM_SAMPLES if stream else 20) if num_samples is None else num_samples
    train_rows, val_rows = read_metrics(out_dir)
    if data_path is not None:  # the run's documents, from --data (never from a path in the checkpoint)
        state.read_data(data_path, max_data_mb)
    elif not state.data_name():  # ... or the embedded names, when the run trained on them
        with contextlib.suppress(UsageError):
            state.read_data(None)
    if docs is None and stream and state.data is not None:  # windows of the held-out text
        docs = [tok.decode(w[:ATTENTION_TOKENS + 1]) for w in state.data.val[:3]]
    pool = []  # the sequences of the loss-by-position chart
    if stream and state.data is not None:
        pool = state.data.val[:loss_docs]
    elif state.docs:
        held_out = state.train.val_docs > 0
        pool = state.docs[len(state.docs) - state.train.val_docs:] if held_out else state.docs
        pool = [state.encode(d) for d in pool[:loss_docs] if set(d) <= set(tok.chars)]
    pieces = 1 + num_samples + 1 + (len(docs) if docs else 3) + 2 + bool(pool)  # as progress() is called below
    progress = WorkProgress("report", pieces)

    progress(f"loading the model into the {state.train.engine} engine")
    engine = state.engine(engines.best_available(state.train.engine), device="auto")
    rng = random.Random(state.train.seed if seed is None else seed)
    samples = []
    for i in range(num_samples):
        progress(f"sample {i + 1} of {num_samples}")
        samples.append(generate(engine, tok, cfg.block_size, rng, state.train.temperature, stream=stream))

    figures = []  # (id, title, caption, data URI)
    progress("loss and lr charts")
    if train_rows:
        figures.append(("loss", "Loss", f"Training loss at each of {len(train_rows)} steps"
                        + (f" and validation loss at {len(val_rows)} evaluation{'s' if len(val_rows) > 1 else ''}." if val_rows else
                           "; no validation loss (train with --val-docs N to hold documents out)."),
                        png(loss_chart(Figure, train_rows, val_rows, "the last 10% of the text" if stream
                                       else "held-out documents"))))
        figures.append(("lr", "Learning-rate schedule", lr_caption(state.train), png(lr_chart(Figure, train_rows))))
    if docs is None:
        docs = (state.docs[:3] if state.docs else [s[:ATTENTION_TOKENS] for s in samples if s][:3]) or ["a"]
    numpy_engine = state.engine("numpy", dtype="float64")  # matplotlib brings numpy: it keeps the weights
    for i, doc in enumerate(docs):
        progress(f"attention on {doc[:20]!r}")
        tokens = encode(doc)
        if len(tokens) < 2:
            continue
        weights = numpy_engine.attention_weights(tokens[:-1])  # each position but the last predicts the next
        where = "a window of the held-out text" if stream else "the document"
        figures.append((f"attention-{i}", f'Attention on "{doc}"' if not stream else f"Attention on {where}",
                        "softmax(q . k / sqrt(head_dim)) for every layer and head: row = the position whose "
                        "query asks, column = the earlier position it reads (the cache); rows sum to 1."
                        + (f" The window: {doc!r}." if stream else ""),
                        png(attention_chart(Figure, weights, tokens, cfg, tok))))
    progress("embeddings")
    figures.append(("embeddings", "Character embeddings",
                    "Each row of wte, projected on its two principal directions; vowels in red."
                    + (" The BOS row is left out: stream training never sees BOS." if stream else "")
                    + code_point_note(tok),
                    png(embedding_chart(Figure, state.params["wte"].rows(), tok, with_bos=not stream))))
    progress("next character after BOS" if not stream else "(no BOS chart: a stream run never sees BOS)")
    if not stream:  # stream training never sees BOS, so what follows it says nothing about the model
        probs, _ = softmax(engine.logits(engine.new_cache(), tok.bos, 0))
        figures.append(("after-bos", "Next character after BOS", "softmax(logits) at position 0, where the input is BOS.",
                        png(next_char_chart(Figure, probs, tok))))
    if pool:
        progress(f"loss by position over {len(pool)} {'windows' if stream else 'documents'}")
        per_position = position_losses(engine, pool, cfg.block_size)
        if stream:
            what, xlabel = "held-out windows", "position in the window (0 predicts the 2nd character from the 1st)"
        else:
            what = f"{'held-out' if state.train.val_docs > 0 else 'training'} documents"
            xlabel = "position (0 predicts the first character from BOS)"
        figures.append(("loss-by-position", "Loss by position",
                        f"Mean -log p(next character) at each position over {len(pool)} {what}; "
                        f"grey bars: how many {'windows' if stream else 'documents'} reach that position.",
                        png(position_chart(Figure, per_position, what, xlabel))))
    progress.close()

    report = page(out_dir, state, train_rows, val_rows, figures, samples).encode("utf-8")
    durable.replace_file(path, lambda f: f.write(report))
    return path


def page(out_dir, state, train_rows, val_rows, figures, samples) -> str:
    cfg, e = state.model, html.escape
    summary = [("checkpoint", state.source), ("model", f"n_layer {cfg.n_layer}, n_embd {cfg.n_embd}, n_head "
                f"{cfg.n_head}, block_size {cfg.block_size}, vocab {cfg.vocab_size}"),
               ("parameters", f"{num_params(cfg):,}")]
    if train_rows:
        summary.append(final_training_loss(train_rows))
    if val_rows:
        summary.append(("final validation loss", f"{val_rows[-1]['val_loss']:.4f} at step {val_rows[-1]['step']} "
                        f"(the last evaluation)"))
    if not train_rows:
        summary.append(("metrics", "no metrics.jsonl in this directory: no loss curves"))
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in summary)
    charts = "".join(
        f'<section id="{fid}"><h2>{e(title)}</h2><figure><img alt="{e(title)}" src="{uri}">'
        f"<figcaption>{e(caption)}</figcaption></figure></section>" for fid, title, caption, uri in figures)
    total = num_params(cfg)
    counts = "".join(f"<tr><td>{e(name)}</td><td>{r} &times; {c}</td><td>{r * c:,}</td><td>{r * c / total:.1%}</td></tr>"
                     for name, (r, c) in param_shapes(cfg))
    if state.train.data_mode == "stream":  # blocks of text, line breaks kept
        sample_list = "".join(f'<pre class="sample">{e(s)}</pre>' for s in samples)
    else:
        sample_list = '<ol class="samples">' + "".join(f"<li>{e(s) or '<i>(empty)</i>'}</li>" for s in samples) + "</ol>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>microgpt report: {e(out_dir)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 900px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }}
figure {{ margin: 0; }} img {{ max-width: 100%; height: auto; display: block; }}
figcaption {{ color: #555; font-size: .9em; margin-top: .3em; }}
table {{ border-collapse: collapse; }} td, th {{ padding: .15em .8em; text-align: left; border-bottom: 1px solid #eee; }}
ol.samples {{ columns: 4; column-gap: 3.5em; font-family: ui-monospace, monospace; }}
ol.samples li {{ break-inside: avoid; overflow-wrap: anywhere; }} /* the numbers sit in the column gap */
pre.sample {{ white-space: pre-wrap; overflow-wrap: anywhere; background: #f6f6f6; padding: .6em; }}
</style></head><body>
<h1>microgpt report: {e(out_dir)}</h1>
<table class="summary">{rows}</table>
{charts}
<section id="samples"><h2>Samples</h2><p>{len(samples)} samples at temperature {state.train.temperature}, drawn as
<code>microgpt sample</code> draws them.</p>{sample_list}</section>
<section id="params"><h2>Parameters per tensor</h2><table class="params">
<tr><th>tensor</th><th>shape</th><th>count</th><th>share</th></tr>{counts}
<tr><th>total</th><td></td><th>{total:,}</th><td>100%</td></tr></table></section>
</body></html>
"""


# ---- the command line -----------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--out", default="out", help="the run's directory; report.html is written there (default out)")
    p.add_argument("--docs", help="comma-separated documents for the attention maps (default: the first three "
                   "training documents)")
    p.add_argument("--samples", type=int, help=f"samples listed (default 20; {STREAM_SAMPLES} for a stream run)")
    p.add_argument("--seed", type=int, help="seed for the samples (default: the run's seed)")
    p.add_argument("--loss-docs", type=int, default=200, help="documents averaged for the loss by position (default 200)")
    p.add_argument("--data", help="the run's data file, for the attention maps and the loss by position "
                   "(checked against the SHA-256 the checkpoint recorded; default: none, unless the run trained "
                   "on the embedded names)")
    add_max_data_argument(p)


def run(args) -> int:
    if (args.samples is not None and args.samples < 0) or args.loss_docs < 1:
        raise UsageError("--samples must be >= 0 and --loss-docs >= 1")
    docs = [d.strip() for d in args.docs.split(",") if d.strip()] if args.docs else None
    print(f"wrote {build(args.out, docs, args.samples, args.seed, args.loss_docs, args.data, args.max_data_mb)}")
    return 0
