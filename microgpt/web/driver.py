"""The browser page's Python side: what worker.js asks of the microgpt package, running in Pyodide.

The page's Web Worker copies this package into Pyodide's file system, imports this module and sends
it one JSON request per action; `handle` answers with {"ok": result} or {"error": "one line"}, the
text of the UsageError the command line would print. Nothing here computes the model: training is
train.py's own loop (run in chunks of steps with its `stop_after`, so the worker can answer Pause and
Stop between chunks), sampling is `microgpt sample`'s own command, and the step-through and the
attention maps are tools/trace.py's recording of atomic.py. It can be tried without a browser:

    from microgpt.web import driver
    driver.handle('{"op": "start", "settings": {"steps": "20"}}')
    driver.handle('{"op": "train", "steps": 20}')
"""

import argparse
import contextlib
import io
import json
import math
import os
import random
import traceback
from dataclasses import replace

from microgpt import checkpoint
from microgpt.cli import sample_arguments, sample_command, train_arguments
from microgpt.config import resolve, validate
from microgpt.errors import UsageError
from microgpt.params import num_params
from microgpt.run import Run
from microgpt.sample import generate
from microgpt.tools.trace import to_json, walk_step
from microgpt.train import train

MAX_DATA_BYTES = 10 * 1024 * 1024        # the text files the page takes (the names are 0.2 MB)
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024  # a checkpoint the page's engines can still run
MAX_PARAMS = 500_000                     # a model the page trains (Python floats in WebAssembly's memory)
RUN_DIR, UPLOAD_DIR, DATA_DIR = "/microgpt/run", "/microgpt/upload", "/microgpt/data"
PAGE_ONLY = {"sample_every": 100}        # settings the command line does not have, and their defaults
NOT_IN_PAGE = ("data", "preset", "out", "resume", "compile")  # train flags the page has no use for
# train.py's lines about its shell run, printed around each chunk: the hint to resume, the step it resumes
# from, where the checkpoint is (the page has Download for that)
DROPPED = ("stopped after step", "resuming from step", "checkpoint: ")


class Session:
    """The page's one run: trained here (RUN_DIR) or uploaded (UPLOAD_DIR)."""

    def __init__(self):
        self.run = None
        self.dir = None
        self.training = False
        self.sample_every = PAGE_ONLY["sample_every"]
        self.log_every = 1
        self.metrics_read = 0  # lines of metrics.jsonl already sent
        self.stop_after = None  # the step the run ends at (train's --stop-after; else its --steps)


SESSION = Session()


# ---- settings: the command line's own flags, types and checks ----------------------------------
def parse_settings(settings: dict) -> tuple[argparse.Namespace, dict]:
    """The page's settings (CLI names, as strings) through `microgpt train`'s parser; (args, page-only)."""
    parser = argparse.ArgumentParser(prog="microgpt train", exit_on_error=False, add_help=False)
    train_arguments(parser)
    known = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    argv, page = [], dict(PAGE_ONLY)
    for name, value in settings.items():
        key = name.replace("-", "_")
        if value is None or str(value).strip() == "":
            continue
        if key in PAGE_ONLY:
            page[key] = positive_int(key, value)
        elif key in known and key not in NOT_IN_PAGE:
            argv += [known[key], str(value).strip()]
        else:
            raise UsageError(f"unknown setting {name!r}; the page takes the training flags of `microgpt train` "
                             f"(e.g. seed, steps, n_layer) and {', '.join(PAGE_ONLY)}")
    try:
        args = parser.parse_args(argv)
    except argparse.ArgumentError as e:
        raise UsageError(str(e)) from None
    return args, page


def positive_int(name: str, value) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number <= 0:
        raise UsageError(f"{name} must be a positive integer (got {value!r})")
    return number


def check_size(kind: str, name: str, size: int) -> None:
    """A file too large for the page is refused before it is read."""
    limit = MAX_DATA_BYTES if kind == "data" else MAX_CHECKPOINT_BYTES
    if size > limit:
        raise UsageError(f"{name} is {size / 2**20:.1f} MB; the page takes {kind} files up to "
                         f"{limit // 2**20} MB (train larger ones with the command line: microgpt train --data FILE)")


def check_params(model) -> None:
    if num_params(model) > MAX_PARAMS:
        raise UsageError(f"this model has {num_params(model):,} parameters; the page trains up to {MAX_PARAMS:,} "
                         f"(lower n_embd, n_layer or block_size, or train it with the command line: microgpt train)")


# ---- training ------------------------------------------------------------------------------------
def start(settings: dict, data_path: str | None = None) -> dict:
    """A fresh run, as `microgpt train` builds it; returns the header lines it prints."""
    args, page = parse_settings(settings)
    if args.stop_after is not None and args.stop_after <= 0:
        raise UsageError(f"--stop-after must be a positive number of steps (got {args.stop_after})")
    flags = {k: v for k, v in vars(args).items() if k not in NOT_IN_PAGE + ("log_every", "stop_after")}
    model, tcfg = resolve(flags)
    validate(model, tcfg)
    from microgpt import engines
    engines.get(tcfg.engine)
    check_params(replace(model, vocab_size=1))  # before the data is read: the size without the vocabulary
    run = Run.fresh(model, tcfg, data_path)
    check_params(run.model)
    run.source = f"the page's run (seed {tcfg.seed}, {os.path.basename(data_path) if data_path else 'the embedded names'})"
    for name in os.listdir(RUN_DIR) if os.path.isdir(RUN_DIR) else []:
        os.remove(os.path.join(RUN_DIR, name))  # the page's previous run
    SESSION.run, SESSION.dir, SESSION.training = run, RUN_DIR, True
    SESSION.sample_every, SESSION.log_every, SESSION.metrics_read = page["sample_every"], args.log_every, 0
    SESSION.stop_after = min(args.stop_after or tcfg.steps, tcfg.steps)
    return {"lines": run.header(), "steps": tcfg.steps, "val": bool(run.data.val), "settings": settings_of(run)}


def train_steps(steps: int) -> dict:
    """Up to `steps` more steps of train.py's loop; at the last step, its 20 samples too."""
    run = need_run(training=True)
    next_samples = (run.step // SESSION.sample_every + 1) * SESSION.sample_every  # samples land on multiples
    stop_after = min(run.step + max(1, steps), next_samples, SESSION.stop_after)
    before = run.step
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        summary = train(run, RUN_DIR, SESSION.log_every, stop_after)
    lines = [line for line in buffer.getvalue().splitlines() if not line.startswith(DROPPED)]
    done = summary["status"] == "done" or run.step == SESSION.stop_after
    if summary["status"] != "done" and done:
        lines.append(f"stopped after step {run.step} of {run.train.steps} (--stop-after {SESSION.stop_after})")
    SESSION.training = not done
    out = {"lines": lines, "step": run.step, "done": done, **new_metrics()}
    if not done and run.step // SESSION.sample_every > before // SESSION.sample_every:
        out["samples"] = {"step": run.step, "texts": samples_now(run)}
    return out


def stop() -> dict:
    run = need_run(training=True)
    SESSION.training = False
    if run.step == 0:
        SESSION.run = None  # nothing trained, nothing saved
        return {"lines": [f"stopped before the first of {run.train.steps} steps"]}
    return {"lines": [f"stopped at step {run.step} of {run.train.steps}: the checkpoint holds this step "
                      f"(download it, or sample from it)"]}


def new_metrics() -> dict:
    """The rows of metrics.jsonl (train.py's record of every step) not sent yet."""
    with open(os.path.join(RUN_DIR, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    fresh, SESSION.metrics_read = rows[SESSION.metrics_read:], len(rows)
    return {"losses": [[r["step"], r["loss"]] for r in fresh if "loss" in r],
            "val_losses": [[r["step"], r["val_loss"]] for r in fresh if "val_loss" in r]}


def samples_now(run, num: int = 5) -> list[str]:
    """A few samples of the model as it is, from a stream of their own: the run's stream stays as it
    would be without the page looking (so the 20 final samples are the command line's)."""
    engine = run.engine()
    rng = random.Random(f"page samples {run.train.seed} {run.step}")
    return [generate(engine, run.tokenizer, run.model.block_size, rng, run.train.temperature) for _ in range(num)]


# ---- checkpoints -----------------------------------------------------------------------------------
def load_checkpoint(path: str) -> dict:
    """The uploaded file, read as `microgpt sample --out DIR` reads it."""
    directory = os.path.dirname(path)
    run = Run.load(directory)
    SESSION.run, SESSION.dir, SESSION.training = run, directory, False
    cfg = run.model
    return {"lines": [f"loaded {run.source}",
                      f"model: n_layer {cfg.n_layer}, n_embd {cfg.n_embd}, n_head {cfg.n_head}, block_size "
                      f"{cfg.block_size}, vocab {cfg.vocab_size}; trained {run.step} of {run.train.steps} steps"],
            "settings": settings_of(run)}


def checkpoint_path() -> dict:
    need_run()
    return {"path": checkpoint.path_in(SESSION.dir)}


def settings_of(run) -> dict:
    return {"n_layer": run.model.n_layer, "n_embd": run.model.n_embd, "n_head": run.model.n_head,
            "block_size": run.model.block_size, "temperature": run.train.temperature, "step": run.step}


def need_run(training: bool = False):
    if SESSION.run is None:
        raise UsageError("there is no model yet: train one (Train) or upload a checkpoint")
    if training and not SESSION.training:
        raise UsageError("no training is in progress; press Train to start a new run")
    if not training and SESSION.dir == RUN_DIR and not checkpoint.exists(RUN_DIR):
        raise UsageError("the run has no checkpoint yet: let it train at least one chunk of steps")
    return SESSION.run


# ---- sampling: `microgpt sample` itself ---------------------------------------------------------
def sample(options: dict) -> dict:
    need_run()
    parser = argparse.ArgumentParser(prog="microgpt sample", exit_on_error=False, add_help=False)
    sample_arguments(parser)
    argv = ["--out", SESSION.dir]
    for name in ("num", "temperature", "top_k", "prompt", "seed", "engine"):
        value = options.get(name)
        if value is not None and str(value) != "":
            argv += [f"--{name.replace('_', '-')}", str(value)]
    try:
        args = parser.parse_args(argv)
    except argparse.ArgumentError as e:
        raise UsageError(str(e)) from None
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        sample_command(args)
    return {"lines": buffer.getvalue().splitlines()}


# ---- looking inside: atomic.py's own numbers, recorded by tools/trace.py ---------------------------
def inspect(word: str) -> dict:
    """For `word`: each layer's and head's attention weights at every position, and the next-character
    distribution at every position."""
    run = need_run()  # its weights are the latest: train() puts them in the Run at each chunk's end
    walk = walk_step(run, word)
    n = len(walk["positions"])
    attention = [[[[0.0] * n for _ in range(n)] for _ in range(run.model.n_head)] for _ in range(run.model.n_layer)]
    for rec in walk["records"]:
        if rec.name == "attn_weights":
            for t, w in enumerate(rec.value):
                attention[rec.layer][rec.head][rec.pos_id][t] = w.data
    return {"word": word, "tokens": [label(run, t) for t in walk["tokens"]],
            "labels": [label(run, i) for i in range(run.model.vocab_size)], "attention": attention,
            "probs": [[p.data for p in at["probs"]] for at in walk["positions"]],
            "targets": [at["target_id"] for at in walk["positions"]]}


def label(run, token_id: int) -> str:
    return "BOS" if token_id == run.tokenizer.bos else run.tokenizer.chars[token_id]


def embeddings() -> dict:
    """The rows of wte on their two principal directions."""
    run = need_run()
    rows = run.params["wte"].rows()                                  # (vocab, n_embd)
    xy, shares = principal_components(rows, 2)
    return {"labels": [label(run, i) for i in range(len(rows))], "xy": xy, "shares": shares}


def principal_components(rows, count):
    """(each row projected on the `count` main directions of the centered rows, the variance share of
    each), by power iteration with deflation on the covariance: stdlib only, for Pyodide."""
    n, d = len(rows), len(rows[0])
    mean = [sum(r[j] for r in rows) / n for j in range(d)]
    x = [[r[j] - mean[j] for j in range(d)] for r in rows]          # (n, d)
    cov = [[sum(r[i] * r[j] for r in x) for j in range(d)] for i in range(d)]  # (d, d)
    total = sum(cov[i][i] for i in range(d)) or 1.0
    directions, shares = [], []
    for k in range(count):
        v = [1.0 / math.sqrt(d) + 0.01 * j for j in range(d)]
        for _ in range(200):
            w = [sum(cov[i][j] * v[j] for j in range(d)) for i in range(d)]
            length = math.sqrt(sum(wi * wi for wi in w)) or 1.0
            v = [wi / length for wi in w]
        eigenvalue = sum(v[i] * sum(cov[i][j] * v[j] for j in range(d)) for i in range(d))
        cov = [[cov[i][j] - eigenvalue * v[i] * v[j] for j in range(d)] for i in range(d)]
        directions.append(v)
        shares.append(eigenvalue / total)
    return [[sum(r[j] * v[j] for j in range(d)) for v in directions] for r in x], shares


def walk(word: str, param: str | None = None) -> dict:
    """One training step on `word`, every named intermediate beside its line of atomic.py, then the
    gradients and Adam's update of `param` (NAME or NAME[r,c]; default: the largest gradient)."""
    run = need_run()
    result = walk_step(run, word)
    return to_json(run, word, result, argparse.Namespace(param=param or None, top=3))


# ---- the one entry point ---------------------------------------------------------------------------
OPS = {"start": lambda r: start(r.get("settings", {}), r.get("data_path")),
       "train": lambda r: train_steps(int(r.get("steps", 10))),
       "stop": lambda r: stop(),
       "sample": lambda r: sample(r.get("options", {})),
       "inspect": lambda r: inspect(r["word"]),
       "embeddings": lambda r: embeddings(),
       "walk": lambda r: walk(r["word"], r.get("param")),
       "check_size": lambda r: check_size(r["kind"], r["name"], int(r["size"])),
       "load_checkpoint": lambda r: load_checkpoint(r["path"]),
       "checkpoint_path": lambda r: checkpoint_path(),
       "limits": lambda r: {"data_bytes": MAX_DATA_BYTES, "checkpoint_bytes": MAX_CHECKPOINT_BYTES,
                            "dirs": {"run": RUN_DIR, "upload": UPLOAD_DIR, "data": DATA_DIR}}}


def handle(request_json: str) -> str:
    """One request {"op": ..., ...} -> {"ok": result} or {"error": the message for the page}."""
    request = json.loads(request_json)
    try:
        return json.dumps({"ok": OPS[request["op"]](request)})
    except UsageError as e:
        return json.dumps({"error": str(e)})
    except Exception as e:  # a bug, not bad input: say so, with where, and keep the page alive
        return json.dumps({"error": f"internal error ({type(e).__name__}: {e}); please report it",
                           "traceback": traceback.format_exc()})
