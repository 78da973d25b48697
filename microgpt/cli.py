"""The command line: `microgpt <command> ...` (installed) or `python -m microgpt <command> ...`.

`train` and `sample` are defined here; the tools (check, trace, report, bench) each live in a module
of microgpt/tools/ that provides `add_arguments(parser)` and `run(args) -> int`. Every command builds
its run with run.Run (fresh or loaded) and its config with config.py. Bad input raises UsageError
and is printed as one line, `microgpt: error: ...`, with exit status 2.
"""

import argparse
import contextlib
import importlib
import os
import random
import sys

from microgpt.config import (DATA_MODES, ENGINE_DTYPES, LR_SCHEDULES, OPTIMIZERS, PRESETS,
                             ModelConfig, TrainConfig, resolve, resolve_resume, supported_by, validate,
                             validate_sampling)
from microgpt.errors import UsageError

# command -> (module, one-line help); the module provides add_arguments(parser) and run(args)
COMMANDS = {
    "train": ("microgpt.cli", "train a GPT on a text file (default: the embedded names) and print samples"),
    "sample": ("microgpt.cli", "print samples from a trained checkpoint"),
    "check": ("microgpt.tools.check", "compare every engine's gradients with finite differences and the scalar engine"),
    "trace": ("microgpt.tools.trace", "print every intermediate of one training step on one document, as atomic.py computes it"),
    "report": ("microgpt.tools.report", "write DIR/report.html: loss curves, attention maps, embeddings, samples"),
    "bench": ("microgpt.tools.bench", "time the installed engines side by side on the default job"),
    "vectors": ("microgpt.tools.vectors", "write the conformance vectors: every stage of the reference, for ports"),
    "conform": ("microgpt.tools.conform", "check a port against the vectors and name its first divergence"),
}


# ---- microgpt train -----------------------------------------------------------------------------
def train_arguments(p) -> None:
    d = TrainConfig()
    m = ModelConfig()
    p.add_argument("--data", help="text file, one document per line (default: the embedded baby names)")
    p.add_argument("--engine", help=f"which engine computes the model: {', '.join(ENGINE_DTYPES)} (default {d.engine})")
    p.add_argument("--preset", help=f"named settings; explicit flags override them ({', '.join(PRESETS) or 'none yet'})")
    p.add_argument("--seed", type=int, help=f"random seed for shuffle, init and sampling (default {d.seed})")
    p.add_argument("--steps", type=int, help=f"training steps (default {d.steps})")
    p.add_argument("--n-layer", type=int, help=f"transformer layers (default {m.n_layer})")
    p.add_argument("--n-embd", type=int, help=f"embedding width (default {m.n_embd})")
    p.add_argument("--n-head", type=int, help=f"attention heads; must divide --n-embd (default {m.n_head})")
    p.add_argument("--block-size", type=int, help=f"context length in tokens (default {m.block_size})")
    p.add_argument("--init-std", type=float, help=f"standard deviation of the initial weights (default {m.init_std})")
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
    p.add_argument("--weight-decay", type=float, help=f"AdamW's decoupled weight decay ({supported_by('weight_decay')}; "
                   f"default {d.weight_decay})")
    p.add_argument("--dropout", type=float, help=f"dropout probability ({supported_by('dropout')}; default {d.dropout})")
    p.add_argument("--attn-dropout", type=float, help="dropout probability on the attention weights alone; "
                   f"default: the same as --dropout, as nanoGPT ({supported_by('attn_dropout')})")
    p.add_argument("--grad-clip", type=float, help="clip the gradient's global norm to this; 0: off "
                   f"({supported_by('grad_clip')}; default {d.grad_clip})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="adam: AdamW for every matrix (the reference's Adam "
                   "without --weight-decay); muon: Muon for the transformer blocks' matrices (momentum, "
                   "orthogonalized), AdamW for wte, wpe and lm_head "
                   f"({supported_by('optimizer')}; default {d.optimizer})")
    p.add_argument("--ema", type=float, help="keep an exponential moving average of the weights with this decay "
                   "(e.g. 0.999): it is what is evaluated, sampled and saved as the model; 0: off "
                   f"({supported_by('ema')}; default {d.ema})")
    p.add_argument("--device", help=f"auto (cuda, else mps, else cpu), cpu, cuda, mps ({supported_by('device')}; "
                   f"default {d.device})")
    p.add_argument("--compile", action="store_true", default=None,
                   help=f"torch.compile the model ({supported_by('compile')}; default off)")
    p.add_argument("--out", default="out", help="directory for the checkpoint and metrics.jsonl (default out)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--log-every", type=int, default=1, help="print the loss every N steps (default 1)")
    p.add_argument("--stop-after", type=int, help="stop with a checkpoint after this many steps, before --steps; "
                   "continue later with --resume")




def train_command(args) -> int:
    from microgpt import engines
    from microgpt.run import Run
    from microgpt.train import rank_and_world, train

    if args.stop_after is not None and args.stop_after <= 0:
        raise UsageError(f"--stop-after must be a positive number of steps (got {args.stop_after})")
    flags = {k: v for k, v in vars(args).items() if k not in ("data", "preset", "out", "resume", "log_every",
                                                               "stop_after", "command")}
    rank, world = rank_and_world()
    if args.resume:
        run = Run.load(args.out)
        run.train = resolve_resume(flags, run.model, run.train)
        engines.get(run.train.engine)  # an unavailable engine is the first error, before any work
        run.read_data(args.data or run.data_info.get("path"))
    else:
        from microgpt import checkpoint
        if checkpoint.exists(args.out):
            raise UsageError(f"{args.out} already holds a checkpoint; pass --resume to continue it, "
                             f"or choose another --out")
        model, tcfg = resolve(flags, args.preset)
        validate(model, tcfg, world)
        engines.get(tcfg.engine)  # an unavailable engine is the first error, before the data is read
        run = Run.fresh(model, tcfg, args.data, world)
    quiet = rank != 0  # under torchrun only rank 0 prints
    with contextlib.redirect_stdout(open(os.devnull, "w")) if quiet else contextlib.nullcontext():
        print("\n".join(run.header()), flush=True)
        summary = train(run, args.out, args.log_every, args.stop_after)
    return 130 if summary["status"] == "interrupted" else 0


# ---- microgpt sample ----------------------------------------------------------------------------
def sample_arguments(p) -> None:
    p.add_argument("--out", default="out", help="directory holding the checkpoint (default out)")
    p.add_argument("--num", type=int, default=20, help="how many samples (default 20)")
    p.add_argument("--temperature", type=float, help="sampling temperature, > 0 (default: the run's, 0.5)")
    p.add_argument("--top-k", type=int, help="sample only among the k most likely tokens (default: all)")
    p.add_argument("--prompt", default="", help="the start every sample continues (e.g. 'em')")
    p.add_argument("--seed", type=int, help="random seed (default: continue the run's own random stream, "
                   "which repeats the samples printed after training)")
    p.add_argument("--engine", help="engine to sample with (default: the one that trained it, else scalar)")


def sample_command(args) -> int:
    from microgpt import engines
    from microgpt.run import Run
    from microgpt.sample import print_samples

    run = Run.load(args.out)
    temperature = run.train.temperature if args.temperature is None else args.temperature
    validate_sampling(temperature, args.top_k, args.prompt, run.model.block_size)
    if args.num < 0:
        raise UsageError(f"--num must be >= 0 (got {args.num})")
    run.tokenizer.encode(args.prompt)  # a clear error for characters outside the vocabulary
    name = args.engine or (run.train.engine if engines.is_available(run.train.engine) else "scalar")
    engines.get(name)
    engine = run.engine(name, device="auto")  # sample on what is here, whichever device trained it
    rng = run.rng if args.seed is None else random.Random(args.seed)  # default: the run's own stream
    print_samples(engine, run.tokenizer, run.model.block_size, rng, args.num, temperature, args.top_k, args.prompt)
    return 0


# ---- dispatch -----------------------------------------------------------------------------------
LOCAL = {"train": (train_arguments, train_command), "sample": (sample_arguments, sample_command)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microgpt", description="Train and sample a GPT from first principles.")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        (LOCAL[name][0] if name in LOCAL else importlib.import_module(module).add_arguments)(p)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in LOCAL:
            return LOCAL[args.command][1](args)
        return importlib.import_module(COMMANDS[args.command][0]).run(args)
    except UsageError as e:
        print(f"microgpt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("microgpt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
