"""The training loop, the same for every engine, and the `microgpt train` command.

    microgpt train [--data FILE] [--engine scalar] [--steps 1000] [--out DIR] [--resume] ...

With the defaults it is atomic.py's run: seed 42, one document per step, Adam with linear decay,
then 20 samples at temperature 0.5. It writes DIR/checkpoint.safetensors (at --save-every steps,
at the end, and on Ctrl-C) and DIR/metrics.jsonl: {"step", "loss", "lr", "dt"} for every step and
{"step", "val_loss"} for every evaluation. `--resume` continues from the checkpoint and ends with
the same weights and losses as a run that was never interrupted.

Under torchrun (`torchrun --nproc_per_node=N -m microgpt train --engine torch ...`) every process
runs this loop on its own share of each step's batch; only rank 0 prints, writes metrics.jsonl and
saves checkpoints.
"""

import contextlib
import json
import math
import os
import random
import signal
import time
from dataclasses import fields, replace

from microgpt import checkpoint, engines
from microgpt.checkpoint import Checkpoint
from microgpt.config import PRESETS, ModelConfig, TrainConfig
from microgpt.data import DocumentData, StreamData, Tokenizer, fingerprint, read_text, split_docs
from microgpt.errors import UsageError
from microgpt.model import init_tensors, num_params
from microgpt.progress import make_progress
from microgpt.sample import check_sampling_args, print_samples

MODEL_FIELDS = ("n_layer", "n_embd", "n_head", "block_size")
# Flags that may differ when resuming: they change how the run is shown or stored, not what it computes.
RESUMABLE_OVERRIDES = ("engine", "eval_every", "save_every", "samples", "temperature", "device", "compile")
DATA_MODES = ("lines", "stream")
LR_SCHEDULES = ("linear", "cosine")
OPTIMIZERS = ("adam", "muon")


def lr_at(step: int, tcfg: TrainConfig) -> float:
    """The lr of a 0-based step: warmup (none by default), then decay from lr to min_lr over the rest.

    With the defaults (linear, no warmup, min_lr 0) it is atomic.py's lr * (1 - step / steps)."""
    if step < tcfg.warmup_steps:
        return tcfg.lr * (step + 1) / (tcfg.warmup_steps + 1)
    progress = (step - tcfg.warmup_steps) / (tcfg.steps - tcfg.warmup_steps)  # 0 -> 1 after warmup
    if tcfg.lr_schedule == "cosine":
        return tcfg.min_lr + (tcfg.lr - tcfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    return tcfg.min_lr + (tcfg.lr - tcfg.min_lr) * (1 - progress)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes, as torchrun sets them; (0, 1) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def validate(model: dict, tcfg: TrainConfig) -> None:
    for name in MODEL_FIELDS:
        if model[name] <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer (got {model[name]})")
    if model["n_embd"] % model["n_head"]:
        raise UsageError(f"--n-embd {model['n_embd']} is not divisible by --n-head {model['n_head']}; "
                         f"pick a head count that divides it (e.g. --n-head {math.gcd(model['n_embd'], 4)})")
    if tcfg.steps <= 0:
        raise UsageError(f"--steps must be a positive integer (got {tcfg.steps}); the reference uses 1000")
    if tcfg.batch_size <= 0:
        raise UsageError(f"--batch-size must be a positive integer (got {tcfg.batch_size})")
    if tcfg.lr < 0:
        raise UsageError(f"--lr must not be negative (got {tcfg.lr}); the reference uses 0.01")
    if tcfg.eval_every <= 0 or tcfg.save_every <= 0:
        raise UsageError("--eval-every and --save-every must be positive integers")
    if tcfg.samples < 0:
        raise UsageError(f"--samples must be >= 0 (got {tcfg.samples})")
    if tcfg.data_mode not in DATA_MODES:
        raise UsageError(f"--data-mode must be one of {', '.join(DATA_MODES)} (got {tcfg.data_mode!r})")
    if tcfg.data_mode == "stream" and tcfg.val_docs:
        raise UsageError("--val-docs counts documents of --data-mode lines; stream mode holds out the last 10% "
                         "of the text by itself: drop --val-docs")
    if tcfg.optimizer not in OPTIMIZERS:
        raise UsageError(f"--optimizer must be one of {', '.join(OPTIMIZERS)} (got {tcfg.optimizer!r})")
    if tcfg.lr_schedule not in LR_SCHEDULES:
        raise UsageError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)} (got {tcfg.lr_schedule!r})")
    if not 0 <= tcfg.warmup_steps < tcfg.steps:
        raise UsageError(f"--warmup-steps must be from 0 to --steps - 1 (got {tcfg.warmup_steps})")
    if not 0 <= tcfg.min_lr <= tcfg.lr:
        raise UsageError(f"--min-lr must be from 0 to --lr {tcfg.lr} (got {tcfg.min_lr})")
    if not 0 <= tcfg.dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1) (got {tcfg.dropout}); 0.2 is a common choice")
    if tcfg.attn_dropout is not None and not 0 <= tcfg.attn_dropout < 1:
        raise UsageError(f"--attn-dropout must be in [0, 1) (got {tcfg.attn_dropout}); 0 turns it off")
    if tcfg.weight_decay < 0 or tcfg.grad_clip < 0:
        raise UsageError("--weight-decay and --grad-clip must not be negative (0 turns them off)")
    if not 0 <= tcfg.ema < 1:
        raise UsageError(f"--ema must be in [0, 1) (got {tcfg.ema}); 0.999 averages over about 1000 steps")
    if tcfg.grad_accum <= 0:
        raise UsageError(f"--grad-accum must be a positive integer (got {tcfg.grad_accum})")
    check_sampling_args(tcfg.temperature, None, "", model["block_size"])


def evaluate(engine, data: DocumentData, batch_size: int) -> float:
    """Mean loss over every predicted token of the held-out documents."""
    total, count = 0.0, 0
    for seqs in data.val_batches(max(batch_size, 64)):
        n = sum(len(s) - 1 for s in seqs)
        total += float(engine.eval_loss(seqs)) * n
        count += n
    return total / count


def open_metrics(out_dir: str, start_step: int):
    """metrics.jsonl for appending; on resume, drop lines past the checkpoint (they will be redone)."""
    path = os.path.join(out_dir, "metrics.jsonl")
    os.makedirs(out_dir, exist_ok=True)
    if start_step == 0 or not os.path.exists(path):
        return open(path, "w", encoding="utf-8")
    with open(path, encoding="utf-8") as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= start_step]
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)
    return open(path, "a", encoding="utf-8")


class _Interrupt:
    """Ctrl-C sets a flag; the loop saves a checkpoint after the step in flight and stops cleanly."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self.previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def train(model_overrides: dict, tcfg: TrainConfig, data_path: str | None, out_dir: str,
          resume: bool = False, log_every: int = 1, stop_after: int | None = None) -> dict:
    """Train (or resume) and sample. Returns a summary: final loss, val loss, samples, status.

    `stop_after` stops (with a checkpoint) once that many steps are done, as Ctrl-C would."""
    ck = None
    if resume:
        ck = checkpoint.load(out_dir)
        data_path = data_path or ck.data["path"]
        model_overrides = {k: getattr(ck.model, k) for k in MODEL_FIELDS}
    elif checkpoint.exists(out_dir):
        raise UsageError(f"{out_dir} already holds a checkpoint; pass --resume to continue it, "
                         f"or choose another --out")
    validate(model_overrides, tcfg)
    Engine = engines.get(tcfg.engine)  # before any work: an unavailable engine is the first error
    rank, world = rank_and_world()
    engines.check_options(tcfg.engine, tcfg, world)
    if ck is not None and ck.data.get("world", 1) != world:  # each process's share of a step depends on it
        raise UsageError(f"the checkpoint was trained by {ck.data.get('world', 1)} processes and this run has "
                         f"{world}; resume with the same number (torchrun --nproc_per_node)")

    text = read_text(data_path)
    if ck is not None and fingerprint(text) != ck.data["sha256"]:
        raise UsageError(f"{data_path or 'the embedded names'} changed since the checkpoint was written; "
                         f"resume with the same data or start a new --out")
    rng = random.Random(tcfg.seed)  # one stream: shuffle, init, sampling (as atomic.py)
    if tcfg.data_mode == "stream":
        tokenizer = Tokenizer(sorted(set(text)))
        print(f"num chars: {len(text)}")
    else:
        docs = split_docs(text)
        rng.shuffle(docs)
        print(f"num docs: {len(docs)}")
        tokenizer = Tokenizer.from_docs(docs)
    print(f"vocab size: {tokenizer.vocab_size}")
    model_cfg = ModelConfig(vocab_size=tokenizer.vocab_size, **model_overrides)
    if tcfg.data_mode == "stream":
        data = StreamData(text, tokenizer, model_cfg.block_size, tcfg.seed)
    else:
        data = DocumentData(docs, tokenizer, model_cfg.block_size, tcfg.val_docs)
    if data.num_cut:
        print(f"note: {data.num_cut} documents are longer than the block ({model_cfg.block_size} tokens "
              f"after BOS) and were cut to fit; raise --block-size to keep them whole", flush=True)

    if ck is None:
        params = init_tensors(model_cfg, rng)
        start = 0
    else:
        params, start = ck.params, ck.step
        rng.setstate(_rng_from_json(ck.rng_state))
    print(f"num params: {num_params(model_cfg)}", flush=True)
    engine = Engine(model_cfg, tcfg, params)
    if ck is not None and ck.adam_m:
        engine.load_adam(ck.adam_m, ck.adam_v)
    if ck is not None and ck.train_params:  # --ema: the model is the average; these are trained
        engine.load_train_params(ck.train_params)

    data_info = {"path": os.path.abspath(data_path) if data_path else None, "sha256": fingerprint(text),
                 "mode": "stream" if tcfg.data_mode == "stream" else "documents", "world": world}

    def save(step_done: int) -> None:
        if rank != 0:
            return
        p, m, v = engine.export()
        checkpoint.save(out_dir, Checkpoint(model_cfg, tcfg, tokenizer.chars, step_done,
                                            _rng_to_json(rng.getstate()), data_info, p, m, v,
                                            engine.train_params() if tcfg.ema else {}))

    metrics = open_metrics(out_dir, start) if rank == 0 else open(os.devnull, "w")
    progress = make_progress(tcfg.steps, log_every)
    summary = {"status": "done", "loss": None, "val_loss": None, "samples": [], "out": out_dir}
    try:
        with _Interrupt() as interrupt:
            for step in range(start, tcfg.steps):
                seqs = data.batch(step, tcfg.batch_size * tcfg.grad_accum, rank, world)
                lr = lr_at(step, tcfg)
                t0 = time.perf_counter()
                loss = float(engine.train_step(seqs, step, lr))
                dt = time.perf_counter() - t0
                done = step + 1
                if not math.isfinite(loss):
                    raise UsageError(f"the loss became {loss} at step {done}; lower --lr (now {tcfg.lr})")
                metrics.write(json.dumps({"step": done, "loss": loss, "lr": lr, "dt": dt}) + "\n")
                progress.step(done, loss, lr, dt, sum(len(s) - 1 for s in seqs) * world)
                summary["loss"] = loss
                if data.val and (done % tcfg.eval_every == 0 or done == tcfg.steps):
                    summary["val_loss"] = evaluate(engine, data, tcfg.batch_size)
                    metrics.write(json.dumps({"step": done, "val_loss": summary["val_loss"]}) + "\n")
                    progress.val(done, summary["val_loss"])
                stopping = interrupt.requested or done == stop_after
                if stopping or done == tcfg.steps or done % tcfg.save_every == 0:
                    metrics.flush()
                    save(done)
                if stopping and done < tcfg.steps:
                    progress.close()
                    print(f"stopped after step {done}: checkpoint saved in {out_dir}; "
                          f"continue with: microgpt train --out {out_dir} --resume", flush=True)
                    summary["status"] = "interrupted" if interrupt.requested else "stopped"
                    return summary
    finally:
        metrics.close()
    progress.close()

    if tcfg.samples and rank == 0:
        print("--- samples ---")
        summary["samples"] = print_samples(engine, tokenizer, model_cfg.block_size, rng,
                                           tcfg.samples, tcfg.temperature)
    return summary


def _rng_to_json(state) -> list:
    version, internal, gauss_next = state
    return [version, list(internal), gauss_next]


def _rng_from_json(state) -> tuple:
    version, internal, gauss_next = state
    return (version, tuple(internal), gauss_next)


# ---- the command line -----------------------------------------------------------------------
def add_arguments(p) -> None:
    d = TrainConfig()
    m = ModelConfig()
    p.add_argument("--data", help="text file, one document per line (default: the embedded baby names)")
    p.add_argument("--engine", help=f"which engine computes the model: {', '.join(engines.ENGINES)} (default {d.engine})")
    p.add_argument("--preset", help=f"named settings; explicit flags override them ({', '.join(PRESETS) or 'none yet'})")
    p.add_argument("--seed", type=int, help=f"random seed for shuffle, init and sampling (default {d.seed})")
    p.add_argument("--steps", type=int, help=f"training steps (default {d.steps})")
    p.add_argument("--n-layer", type=int, help=f"transformer layers (default {m.n_layer})")
    p.add_argument("--n-embd", type=int, help=f"embedding width (default {m.n_embd})")
    p.add_argument("--n-head", type=int, help=f"attention heads; must divide --n-embd (default {m.n_head})")
    p.add_argument("--block-size", type=int, help=f"context length in tokens (default {m.block_size})")
    p.add_argument("--lr", type=float, help=f"peak learning rate, decayed to --min-lr (default {d.lr})")
    p.add_argument("--batch-size", type=int, help=f"sequences per step, per process under torchrun (default {d.batch_size})")
    p.add_argument("--dtype", help=f"float64 or float32 (numpy/torch engines), bfloat16 (autocast; torch engine, "
                   f"for GPUs) (default {d.dtype})")
    p.add_argument("--val-docs", type=int, help="held-out documents from the end of the shuffled list, "
                   f"for validation loss (default {d.val_docs}: keeps every document for training, as the reference)")
    p.add_argument("--eval-every", type=int, help=f"steps between validation evaluations (default {d.eval_every})")
    p.add_argument("--save-every", type=int, help=f"steps between checkpoints (default {d.save_every})")
    p.add_argument("--samples", type=int, help=f"samples printed after training (default {d.samples})")
    p.add_argument("--temperature", type=float, help=f"sampling temperature, > 0 (default {d.temperature})")
    p.add_argument("--data-mode", choices=DATA_MODES, help="lines: one document per line (the default); stream: the "
                   "file as one character stream, random windows of --block-size + 1 from its first 90%%, the last "
                   "10%% held out for val loss (all engines)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, help=f"decay from --lr to --min-lr after the warmup: "
                   f"linear (the reference) or cosine (all engines; default {d.lr_schedule})")
    p.add_argument("--warmup-steps", type=int, help=f"steps of linear lr warmup (all engines; default {d.warmup_steps})")
    p.add_argument("--min-lr", type=float, help=f"lr at the end of the decay (all engines; default {d.min_lr})")
    p.add_argument("--grad-accum", type=int, help="micro-batches of --batch-size per step, gradients summed: the "
                   f"same step as one batch that many times larger (all engines; default {d.grad_accum})")
    p.add_argument("--weight-decay", type=float, help=f"AdamW's decoupled weight decay ({engines.supported_by('weight_decay')}; "
                   f"default {d.weight_decay})")
    p.add_argument("--dropout", type=float, help=f"dropout probability ({engines.supported_by('dropout')}; default {d.dropout})")
    p.add_argument("--attn-dropout", type=float, help="dropout probability on the attention weights alone; "
                   f"default: the same as --dropout, as nanoGPT ({engines.supported_by('attn_dropout')})")
    p.add_argument("--grad-clip", type=float, help="clip the gradient's global norm to this; 0: off "
                   f"({engines.supported_by('grad_clip')}; default {d.grad_clip})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="adam: AdamW for every matrix (the reference's Adam "
                   "without --weight-decay); muon: Muon for the transformer blocks' matrices (momentum, "
                   "orthogonalized), AdamW for wte, wpe and lm_head "
                   f"({engines.supported_by('optimizer')}; default {d.optimizer})")
    p.add_argument("--ema", type=float, help="keep an exponential moving average of the weights with this decay "
                   "(e.g. 0.999): it is what is evaluated, sampled and saved as the model; 0: off "
                   f"({engines.supported_by('ema')}; default {d.ema})")
    p.add_argument("--device", help=f"auto (cuda, else mps, else cpu), cpu, cuda, mps ({engines.supported_by('device')}; "
                   f"default {d.device})")
    p.add_argument("--compile", action="store_true", default=None,
                   help=f"torch.compile the model ({engines.supported_by('compile')}; default off)")
    p.add_argument("--out", default="out", help="directory for the checkpoint and metrics.jsonl (default out)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--log-every", type=int, default=1, help="print the loss every N steps (default 1)")
    p.add_argument("--stop-after", type=int, help="stop with a checkpoint after this many steps, before --steps; "
                   "continue later with --resume")


def resolve(args) -> tuple[dict, TrainConfig]:
    """Defaults, then the preset, then the flags given explicitly: the model overrides and TrainConfig."""
    values = {**{k: getattr(ModelConfig(), k) for k in MODEL_FIELDS}, **vars(TrainConfig())}
    if args.preset:
        if args.preset not in PRESETS:
            raise UsageError(f"unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS) or '(none)'}")
        values.update(PRESETS[args.preset])
    given = {k: getattr(args, k) for k in values if getattr(args, k, None) is not None}
    values.update(given)
    tcfg = TrainConfig(**{f.name: values[f.name] for f in fields(TrainConfig)})
    return {k: values[k] for k in MODEL_FIELDS}, tcfg


def run(args) -> int:
    model_overrides, tcfg = resolve(args)
    if args.stop_after is not None and args.stop_after <= 0:
        raise UsageError(f"--stop-after must be a positive number of steps (got {args.stop_after})")
    if args.resume and checkpoint.exists(args.out):
        ck = checkpoint.load(args.out)
        saved = ck.train
        for k in (*vars(tcfg), *MODEL_FIELDS):
            flag, kept = getattr(args, k, None), getattr(saved if k in vars(tcfg) else ck.model, k)
            if flag is not None and k not in RESUMABLE_OVERRIDES and flag != kept:
                raise UsageError(f"--{k.replace('_', '-')} {flag} differs from the checkpoint's {kept}; "
                                 f"drop it to resume, or start a new --out")
        tcfg = replace(saved, **{k: getattr(args, k) for k in RESUMABLE_OVERRIDES if getattr(args, k) is not None})
    quiet = rank_and_world()[0] != 0  # under torchrun only rank 0 prints
    with contextlib.redirect_stdout(open(os.devnull, "w")) if quiet else contextlib.nullcontext():
        summary = train(model_overrides, tcfg, args.data, args.out, args.resume, args.log_every, args.stop_after)
    return 130 if summary["status"] == "interrupted" else 0
