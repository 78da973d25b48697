"""The command line: `microgpt <command> ...` (installed) or `python -m microgpt <command> ...`.

`train` and `sample` are defined here; the tools (check, trace, report, bench) each live in a module
of microgpt/tools/ that provides `add_arguments(parser)` and `run(args) -> int`. Every command builds
its run with run.Run (fresh or loaded) and its config with config.py. Bad input raises UsageError
and is printed as one line, `microgpt: error: ...`, with exit status 2.
"""

import argparse
import contextlib
import errno
import importlib
import os
import random
import re
import sys

from microgpt import __version__
from microgpt.config import (DATA_MODES, DEVICES, DTYPES, ENGINE_DTYPES, LR_SCHEDULES, OPTIMIZERS, PRESETS,
                             ModelConfig, TrainConfig, fit_preset_to_engine, resolve, resolve_resume,
                             scale_preset, supported_by, validate, validate_sampling)
from microgpt.data import add_max_data_argument
from microgpt.configfile import config_argv
from microgpt.errors import UsageError, WriteFailed
from microgpt.explog import LOGS
from microgpt.install import DISTRIBUTION

# command -> (module, one-line help); the module provides add_arguments(parser) and run(args)
COMMANDS = {
    "train": ("microgpt.cli", "train a GPT on a text file (default: the embedded names) and print samples"),
    "sample": ("microgpt.cli", "print samples from a trained checkpoint"),
    "check": ("microgpt.tools.check", "compare every engine's gradients with finite differences and the scalar engine"),
    "trace": ("microgpt.tools.trace", "print every intermediate of one training step on one document, as atomic.py computes it"),
    "report": ("microgpt.tools.report", "write DIR/report.html: loss curves, attention maps, embeddings, samples"),
    "bench": ("microgpt.tools.bench", "time the installed engines side by side on the default job"),
    "web": ("microgpt.tools.web", "serve the browser page (Pyodide runs this package: train, sample, look inside)"),
    "export": ("microgpt.tools.export", "write a run's weights alone (FILE.safetensors) and config.json beside it"),
    "vectors": ("microgpt.tools.vectors", "write the conformance vectors: every stage of the reference, for ports"),
    "conform": ("microgpt.tools.conform", "check a port against the vectors and name its first divergence"),
}


# ---- microgpt train -----------------------------------------------------------------------------
def train_arguments(p) -> None:
    """train's flags, grouped as --help shows them; a --config file may set any of them."""
    d = TrainConfig()
    m = ModelConfig()
    p.add_argument("--preset", choices=PRESETS, help="named settings; a --config file and explicit flags override them")
    p.add_argument("--config", metavar="FILE.toml", help="a TOML file of these flags without the dashes (n_layer = 4), "
                   "at the top or under [data], [model], ...; explicit flags override it")
    p.add_argument("--seed", type=int, help=f"random seed for shuffle, init and sampling (default {d.seed})")
    data = p.add_argument_group("data")
    data.add_argument("--data", help="text file, one document per line (default: the embedded baby names)")
    data.add_argument("--data-mode", choices=DATA_MODES, help="lines: one document per line (the default); stream: the "
                      "file as one character stream, random windows of --block-size + 1 from its first 90%%, the last "
                      "10%% held out for val loss (all engines)")
    add_max_data_argument(data)
    data.add_argument("--val-docs", type=int, help="held-out documents from the end of the shuffled list, for "
                      f"validation loss (default {d.val_docs}: keeps every document for training, as the reference)")
    model = p.add_argument_group("model")
    model.add_argument("--n-layer", type=int, help=f"transformer layers (default {m.n_layer})")
    model.add_argument("--n-embd", type=int, help=f"embedding width (default {m.n_embd})")
    model.add_argument("--n-head", type=int, help=f"attention heads; must divide --n-embd (default {m.n_head})")
    model.add_argument("--block-size", type=int, help=f"context length in tokens (default {m.block_size})")
    model.add_argument("--init-std", type=float,
                       help=f"standard deviation of the initial weights (default {m.init_std})")
    model.add_argument("--dropout", type=float,
                       help=f"dropout probability ({supported_by('dropout')}; default {d.dropout})")
    model.add_argument("--attn-dropout", type=float, help="dropout probability on the attention weights alone; "
                       f"default: the same as --dropout, as nanoGPT ({supported_by('attn_dropout')})")
    optim = p.add_argument_group("optimization")
    optim.add_argument("--steps", type=int, help=f"training steps (default {d.steps})")
    optim.add_argument("--lr", type=float, help=f"peak learning rate, decayed to --min-lr (default {d.lr})")
    optim.add_argument("--lr-schedule", choices=LR_SCHEDULES, help=f"decay from --lr to --min-lr after the warmup: "
                       f"linear (the reference) or cosine (all engines; default {d.lr_schedule})")
    optim.add_argument("--warmup-steps", type=int, help=f"steps of linear lr warmup (all engines; default {d.warmup_steps})")
    optim.add_argument("--min-lr", type=float, help=f"lr at the end of the decay (all engines; default {d.min_lr})")
    optim.add_argument("--batch-size", type=int, help=f"sequences per step, per process under torchrun (default {d.batch_size})")
    optim.add_argument("--grad-accum", type=int, help="micro-batches of --batch-size per step, gradients summed: the "
                       f"same step as one batch that many times larger (all engines; default {d.grad_accum})")
    optim.add_argument("--weight-decay", type=float, help=f"AdamW's decoupled weight decay ({supported_by('weight_decay')}; "
                       f"default {d.weight_decay})")
    optim.add_argument("--grad-clip", type=float, help="clip the gradient's global norm to this; 0: off "
                       f"({supported_by('grad_clip')}; default {d.grad_clip})")
    optim.add_argument("--optimizer", choices=OPTIMIZERS, help="adam: AdamW for every matrix (the reference's Adam "
                       "without --weight-decay); muon: Muon for the transformer blocks' matrices (momentum, "
                       "orthogonalized), AdamW for wte, wpe and lm_head "
                       f"({supported_by('optimizer')}; default {d.optimizer})")
    optim.add_argument("--ema", type=float, help="keep an exponential moving average of the weights with this decay "
                       "(e.g. 0.999): it is what is evaluated, sampled and saved as the model; 0: off "
                       f"({supported_by('ema')}; default {d.ema})")
    evals = p.add_argument_group("evaluation")
    evals.add_argument("--eval-every", type=int, help=f"steps between validation evaluations (default {d.eval_every})")
    evals.add_argument("--samples", type=int, help=f"samples printed after training (default {d.samples})")
    evals.add_argument("--temperature", type=float, help=f"sampling temperature, >= 0; 0: greedy (default {d.temperature})")
    output = p.add_argument_group("output")
    output.add_argument("--out", default="out", help="directory for the checkpoint and metrics.jsonl (default out)")
    output.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    output.add_argument("--force", action="store_true", help="start a fresh run in an --out that holds one, after "
                        "moving the old checkpoint and metrics into --out/previous-<time>/")
    output.add_argument("--log-every", type=int, default=1, help="print the loss every N steps (default 1)")
    output.add_argument("--save-every", type=int, help=f"steps between checkpoints (default {d.save_every})")
    output.add_argument("--stop-after", type=int, help="stop with a checkpoint after this many steps, before --steps; "
                        "continue later with --resume")
    output.add_argument("--log", choices=LOGS, help="also log the metrics for TensorBoard, in DIR/tensorboard "
                        "(needs tensorboardX: the extra tensorboard)")
    engine = p.add_argument_group("engine")
    engine.add_argument("--engine", choices=ENGINE_DTYPES, help=f"which engine computes the model (default {d.engine})")
    engine.add_argument("--dtype", choices=DTYPES, help="float64 or float32 (numpy/torch engines), bfloat16 (autocast; "
                        f"torch engine, for GPUs) (default {d.dtype})")
    engine.add_argument("--device", choices=DEVICES, help=f"auto: cuda, else mps, else cpu ({supported_by('device')}; "
                        f"default {d.device})")
    engine.add_argument("--compile", action="store_true", default=None,
                        help=f"torch.compile the model ({supported_by('compile')}; default off)")
    engine.add_argument("--threads", type=int, help="CPU threads (default: OMP_NUM_THREADS for torch or "
                        "NUMBA_NUM_THREADS for compiled if set; torch: 1 for a small model; else the cores the "
                        f"machine's load leaves idle; training says which; {supported_by('threads')})")


def train_command(args) -> int:
    from microgpt import checkpoint, durable, engines
    from microgpt.explog import check_board_dir, summary_writer
    from microgpt.lock import RunLock
    from microgpt.metrics import check_regular, is_a_runs_log
    from microgpt.run import Run, check_out_dir
    from microgpt.engines.base import rank_and_world
    from microgpt.train import extension_note, train

    if args.stop_after is not None and args.stop_after <= 0:
        raise UsageError(f"--stop-after must be a positive number of steps (got {args.stop_after})")
    if args.log_every <= 0:
        raise UsageError(f"--log-every must be a positive number of steps (got {args.log_every}); "
                         f"a large one prints less, e.g. --log-every 100")
    flags = {k: v for k, v in vars(args).items() if k not in ("data", "preset", "out", "resume", "log_every",
                                                               "stop_after", "command", "config", "log", "max_data_mb", "force")}
    if args.log == "tensorboard":
        summary_writer()  # a missing library is the first error, before any work
    rank, world = rank_and_world()
    if args.resume and args.force:
        raise UsageError("--resume continues the run in --out and --force starts a new one there; pass one of them")
    check_out_dir(args.out)
    if args.log == "tensorboard":
        check_board_dir(args.out)
    if args.resume and not checkpoint.exists(args.out):
        Run.load(args.out)  # its error: no checkpoint there, and how to make one
    if not args.resume:
        model, tcfg = resolve(flags, args.preset)
        tcfg, notes = scale_preset(args.preset, flags, tcfg)
        tcfg, fitted = fit_preset_to_engine(args.preset, flags, tcfg)
        notes += fitted
        validate(model, tcfg, world)
        engines.get(tcfg.engine)  # an unavailable engine is the first error, before the data is read
    # one training run per directory (rank 0 holds the lock for all of a torchrun job's processes)
    with RunLock(args.out) if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            for name in (checkpoint.FILENAME, "metrics.jsonl"):
                durable.remove_leftovers(args.out, name)  # temp files of a run killed mid-write
        note = None
        if args.resume:
            run = Run.load(args.out)
            check_regular(os.path.join(args.out, "metrics.jsonl"))   # before any output: it is read to resume
            saved = run.train
            run.train = resolve_resume(flags, run.model, run.train)
            if run.train.steps < run.step:
                raise UsageError(f"the checkpoint in {args.out} is at step {run.step}, past --steps "
                                 f"{run.train.steps}; give --steps larger than {run.step} to train further")
            validate(run.model, run.train, world)  # the flags that may change on a resume are checked too
            if run.train.steps != saved.steps:
                note = extension_note(saved, run.train, run.step)
            engines.get(run.train.engine)  # an unavailable engine is the first error, before any work
            run.read_data(args.data, args.max_data_mb)
        else:
            kept = f"--force to start over (the old run is kept in {args.out}/previous-<time>/), or choose another --out"
            found = checkpoint.path_in(args.out)
            if (standing := durable.not_a_file(found)) and not args.force:
                raise UsageError(f"{found} is {standing}, not a checkpoint, and a run writes its checkpoint there; "
                                 f"move it, or pass {kept}")
            if checkpoint.exists(args.out) and not args.force:
                raise UsageError(f"{args.out} already holds a checkpoint; pass --resume to continue it, {kept}")
            metrics_path = os.path.join(args.out, "metrics.jsonl")   # which a fresh run replaces
            foreign = os.path.lexists(metrics_path) and not is_a_runs_log(metrics_path)
            if foreign and not args.force:
                raise UsageError(f"{metrics_path} is not a training run's metrics, and a run writes its own there; "
                                 f"move it, or pass {kept}")
            run = Run.fresh(model, tcfg, args.data, world, args.max_data_mb)
            if (os.path.lexists(found) or foreign) and rank == 0:  # --force, and the new run is ready
                notes.append(f"--force: the previous run in {args.out} was moved to {checkpoint.move_aside(args.out)}")
            if notes and rank == 0:
                print("\n".join(notes), flush=True)
            from microgpt.cost import gpu_preset_warning
            warning = gpu_preset_warning(args.preset, run.model, run.train) if rank == 0 else None
            if warning:
                print(warning, file=sys.stderr, flush=True)
        quiet = rank != 0  # under torchrun only rank 0 prints
        with contextlib.redirect_stdout(open(os.devnull, "w")) if quiet else contextlib.nullcontext():
            print("\n".join(run.header() + ([note] if note else [])), flush=True)
            summary = train(run, args.out, args.log_every, args.stop_after, args.log)
    return 128 + summary["signal"] if summary["signal"] else 0


# ---- microgpt sample ----------------------------------------------------------------------------
def sample_arguments(p) -> None:
    p.add_argument("--out", default="out", help="directory holding the checkpoint (default out)")
    p.add_argument("--num", type=int, default=20, help="how many samples (default 20)")
    p.add_argument("--temperature", type=float, help="sampling temperature, >= 0; 0: always the most likely "
                   "token (greedy) (default: the run's, 0.5)")
    p.add_argument("--top-k", type=int, help="sample only among the k most likely tokens (default: all)")
    p.add_argument("--prompt", default="", help="the start every sample continues (e.g. 'em')")
    p.add_argument("--seed", type=int, help="random seed (default: continue the run's own random stream, "
                   "which repeats the samples printed after training)")
    p.add_argument("--engine", choices=ENGINE_DTYPES, help="engine to sample with (default: the one that trained it, "
                   "else scalar)")
    p.add_argument("--max-new-tokens", type=int, help="tokens drawn per sample; past the block size the context "
                   "slides, keeping the last --block-size tokens (default: the block size for line data, "
                   "less the prompt; 500 for stream data)")


def sample_command(args) -> int:
    from microgpt import engines
    from microgpt.run import Run
    from microgpt.sample import print_samples

    run = Run.load(args.out, with_state=False)
    temperature = run.train.temperature if args.temperature is None else args.temperature
    stream = run.train.data_mode == "stream"  # a stream's context slides, so its prompt may be any length
    validate_sampling(temperature, args.top_k, "" if stream else args.prompt, run.model.block_size)
    if args.num < 0:
        raise UsageError(f"--num must be >= 0 (got {args.num})")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})")
    run.tokenizer.encode(args.prompt)  # a clear error for characters outside the vocabulary
    name = args.engine or (run.train.engine if engines.is_available(run.train.engine) else "scalar")
    engines.get(name)
    engine = run.engine(name, device="auto")  # sample on what is here, whichever device trained it
    rng = run.rng if args.seed is None else random.Random(args.seed)  # default: the run's own stream
    print_samples(engine, run.tokenizer, run.model.block_size, rng, args.num, temperature, args.top_k, args.prompt,
                  args.max_new_tokens, stream)
    return 0


# ---- dispatch -----------------------------------------------------------------------------------
LOCAL = {"train": (train_arguments, train_command), "sample": (sample_arguments, sample_command)}


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported as one line and a pointer to --help (not the usage block), and a
    negative number in any notation taken as a flag's value."""

    help_hint = ""  # main sets it to the command's own --help when the command is known
    # argparse takes a word starting with "-" for a flag unless this matches it; its own pattern (before
    # Python 3.13) matches -1 and -0.5 only, so `--lr -1e-3` was "expected one argument" instead of --lr's
    # range error. Set here, it holds for every command's parser: add_subparsers makes them of this class.
    NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = self.NEGATIVE_NUMBER

    def error(self, message):
        self.exit(2, f"microgpt: error: {message} (see: {self.help_hint or self.prog + ' --help'})\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="microgpt", description="Train and sample a GPT from first principles.")
    parser.add_argument("--version", action="version", version=f"microgpt {__version__} ({DISTRIBUTION})")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    parser.commands = {}  # name -> its parser (a --config file is read against train's)
    for name, (module, help_text) in COMMANDS.items():
        p = parser.commands[name] = sub.add_parser(name, help=help_text, description=help_text)
        (LOCAL[name][0] if name in LOCAL else importlib.import_module(module).add_arguments)(p)
    return parser


def refuse_empty(args, parser) -> None:
    """A flag given an empty value (--json "", --config "", --out=) is a UsageError naming it. Left alone, ""
    was read as "not given" in some places (--config, --json, --build, --configs silently did the default)
    and as a path in others (an OSError naming neither the flag nor the fix). A flag whose default is ""
    (sample's --prompt) takes it as a value."""
    for action in parser._actions:
        if action.option_strings and action.default != "" and getattr(args, action.dest, None) == "":
            flag = action.option_strings[-1]
            leave = "" if action.required else ", or leave it out for its default"
            raise UsageError(f"{flag} is empty; give it a value{leave} (see: {parser.prog} --help)")


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):   # a character the terminal's encoding lacks (PYTHONIOENCODING=ascii,
        if hasattr(stream, "reconfigure"):   # LANG=C) prints as an escape, \xe9, not a UnicodeEncodeError
            stream.reconfigure(errors="backslashreplace")
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        parser = build_parser()   # (it imports the commands' modules: a Ctrl-C may land here too)
        if argv and argv[0] in COMMANDS:
            parser.help_hint = f"microgpt {argv[0]} --help"
        args = parser.parse_args(argv)
        refuse_empty(args, parser.commands[args.command])
        if getattr(args, "config", None):  # the file's flags first, so that explicit ones override them
            at = argv.index(args.command) + 1
            args = parser.parse_args(argv[:at] + config_argv(args.config, parser.commands[args.command]) + argv[at:])
            refuse_empty(args, parser.commands[args.command])  # a key the file gave as ""
        if args.command in LOCAL:
            return LOCAL[args.command][1](args)
        return importlib.import_module(COMMANDS[args.command][0]).run(args)
    except UsageError as e:
        print(f"microgpt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a second stop signal (train.Stopped) or Ctrl-C outside training
        print("microgpt: interrupted", file=sys.stderr)
        return 128 + getattr(e, "signum", 2)
    except BrokenPipeError:
        return 0
    except OSError as e:  # a file that could not be written or read: a missing folder, no permission, a full disk
        where = f": {e.filename}" if e.filename else ""
        room = "; free some space, then run it again" \
            if e.errno == errno.ENOSPC and not isinstance(e, WriteFailed) else ""
        print(f"microgpt: error: {e.strerror or e}{where}{room}", file=sys.stderr)
        return 1
    except MemoryError:
        print("microgpt: error: out of memory; use a smaller model (--n-layer, --n-embd, --block-size) or "
              "--batch-size", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
