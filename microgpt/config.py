"""Configuration, defined once: the dataclasses (whose defaults are atomic.py's run), the allowed
values, what each engine supports, validate(), the presets, the learning-rate schedule, and how
command-line flags become config fields (also when resuming).

    from microgpt.config import ModelConfig, TrainConfig, validate
    model, tcfg = ModelConfig(n_layer=2), TrainConfig(steps=500)
    validate(model, tcfg)            # a UsageError naming the flag and the fix, or nothing

Every engine, the checkpoint, the run and the command line read these; nothing else writes a default.
"""

import contextlib
import math
import os
import types
from dataclasses import asdict, dataclass, fields, replace

from microgpt.errors import UsageError

MODEL_FIELDS = ("n_layer", "n_embd", "n_head", "block_size")  # the model's shape, set by flags
# Upper bounds on the shape: far past anything this code trains, and small enough that no size computed
# from them (even from a crafted checkpoint) is unbounded before run.py's memory check sees it.
MAX_SIZES = {"n_layer": 1024, "n_embd": 65536, "n_head": 65536, "block_size": 2**20, "vocab_size": 0x110000 + 1}
MAX_SEQUENCES_PER_STEP = 65536  # --batch-size times --grad-accum: each step's sequences are held at once


@dataclass
class ModelConfig:
    vocab_size: int = 0   # from the data: the run fills it in with replace() once the text is read
    n_layer: int = 1
    n_embd: int = 16
    n_head: int = 4
    block_size: int = 16  # longest context; documents longer than this are cut
    init_std: float = 0.08  # every weight starts as gauss(0, init_std), drawn in params.py's order

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass
class TrainConfig:
    seed: int = 42
    steps: int = 1000
    lr: float = 0.01
    beta1: float = 0.85
    beta2: float = 0.99
    eps: float = 1e-8
    batch_size: int = 1        # documents per step
    val_docs: int = 0          # held-out documents, taken from the end of the shuffled list
    eval_every: int = 100      # steps between validation evaluations (and one at the end)
    save_every: int = 500      # steps between checkpoints (and one at the end)
    samples: int = 20
    temperature: float = 0.5
    engine: str = "scalar"
    dtype: str = "float64"
    # Beyond the reference, all off by default (engines.OPTIONS says which engines have each).
    data_mode: str = "lines"     # "lines": one document per line; "stream": the file as one character stream
    lr_schedule: str = "linear"  # "linear" (the reference) or "cosine", from lr down to min_lr
    warmup_steps: int = 0        # steps of linear warmup before the decay
    min_lr: float = 0.0          # the lr at the end of the decay
    weight_decay: float = 0.0    # AdamW's decoupled weight decay
    dropout: float = 0.0
    attn_dropout: float | None = None  # dropout on attention probabilities; None: --dropout's (nanoGPT's)
    grad_clip: float = 0.0       # clip the gradient's global norm to this; 0: no clipping
    grad_accum: int = 1          # micro-batches of batch_size per step (and per process)
    optimizer: str = "adam"      # "adam" (AdamW); "muon": Muon for the blocks' matrices, AdamW for the rest
    ema: float = 0.0             # > 0: the model is this exponential moving average of the trained weights
    device: str = "auto"         # auto: cuda, else mps, else cpu
    compile: bool = False        # torch.compile the model
    threads: int = 0             # CPU threads (torch, compiled engines); 0: the engine's choice (choose_threads)


# ---- allowed values ------------------------------------------------------------------------------
DATA_MODES = ("lines", "stream")
LR_SCHEDULES = ("linear", "cosine")
OPTIMIZERS = ("adam", "muon")
DEVICES = ("auto", "cpu", "cuda", "mps")
# engine -> the dtypes it computes in (the first is its default); engines/__init__.py says where each lives
ENGINE_DTYPES = {
    "scalar": ("float64",),
    "pure": ("float64",),
    "numpy": ("float64", "float32"),
    "compiled": ("float64", "float32"),
    "torch": ("float64", "float32", "bfloat16"),
}
DTYPES = tuple(dict.fromkeys(d for dtypes in ENGINE_DTYPES.values() for d in dtypes))  # every engine's, once
# Training options only some engines implement: TrainConfig field -> (its "off" value, the engines that
# have it). Every other option (data mode, lr schedule, warmup, gradient accumulation) is the loop's and
# works with every engine. DISTRIBUTED: the engines that train under torchrun.
OPTIONS = {
    "weight_decay": (0.0, ("torch",)),
    "dropout": (0.0, ("torch",)),
    "attn_dropout": (None, ("torch",)),
    "grad_clip": (0.0, ("torch",)),
    "ema": (0.0, ("torch",)),
    "optimizer": ("adam", ("torch",)),
    "device": ("auto", ("torch",)),
    "compile": (False, ("torch",)),
    "threads": (0, ("torch", "compiled")),
}
DISTRIBUTED = ("torch",)
# Flags that may differ when resuming: they change how the run is shown or stored, not what it computes.
# --steps too: it extends (or shortens) the run, with a note that its lr schedule then changes (train.py)
RESUMABLE_OVERRIDES = ("engine", "eval_every", "save_every", "samples", "temperature", "device", "compile", "steps",
                       "threads")


def supported_by(option: str) -> str:
    """For --help: which engines implement an option."""
    return "engines: " + ", ".join(OPTIONS[option][1])


def from_dict(cls, d: dict):
    """Build a config dataclass from a dict, ignoring keys it does not know (older checkpoints)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def to_dict(cfg) -> dict:
    return asdict(cfg)


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


# ---- validation ----------------------------------------------------------------------------------
def validate(model: ModelConfig, tcfg: TrainConfig, world: int = 1) -> None:
    """Every check that needs no data: a UsageError naming the first bad setting and its fix."""
    validate_types(model)
    validate_types(tcfg)
    for name in MODEL_FIELDS:
        if not 0 < getattr(model, name) <= MAX_SIZES[name]:
            raise UsageError(f"{flag(name)} must be a positive integer up to {MAX_SIZES[name]} "
                             f"(got {getattr(model, name)})")
    if not 0 <= model.vocab_size <= MAX_SIZES["vocab_size"]:  # 0: not known yet (no data read)
        raise UsageError(f"vocab_size must be from 1 to {MAX_SIZES['vocab_size']} (got {model.vocab_size})")
    if not (0 <= tcfg.beta1 < 1 and 0 <= tcfg.beta2 < 1 and tcfg.eps > 0):
        raise UsageError(f"Adam's beta1 and beta2 must be in [0, 1) and eps > 0 (got {tcfg.beta1}, {tcfg.beta2}, "
                         f"{tcfg.eps})")
    if not 0 < model.init_std < 10:
        raise UsageError(f"--init-std must be in (0, 10) (got {model.init_std}); the reference uses 0.08")
    if model.n_embd % model.n_head:
        raise UsageError(f"--n-embd {model.n_embd} is not divisible by --n-head {model.n_head}; "
                         f"pick a head count that divides it (e.g. --n-head {math.gcd(model.n_embd, 4)})")
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
    for name, allowed in (("data_mode", DATA_MODES), ("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES),
                          ("device", DEVICES)):
        if getattr(tcfg, name) not in allowed:
            raise UsageError(f"{flag(name)} must be one of {', '.join(allowed)} (got {getattr(tcfg, name)!r})")
    if tcfg.engine not in ENGINE_DTYPES:
        raise UsageError(f"unknown engine {tcfg.engine!r}; choose one of: {', '.join(ENGINE_DTYPES)}")
    if tcfg.dtype not in ENGINE_DTYPES[tcfg.engine]:
        raise UsageError(f"--engine {tcfg.engine} computes in {', '.join(ENGINE_DTYPES[tcfg.engine])}, not "
                         f"--dtype {tcfg.dtype}; drop --dtype or pick an engine that has it")
    if tcfg.data_mode == "stream" and tcfg.val_docs:
        raise UsageError("--val-docs counts documents of --data-mode lines; stream mode holds out the last 10% "
                         "of the text by itself: drop --val-docs")
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
    if tcfg.lr * tcfg.weight_decay >= 1:   # decoupled decay scales the weights by 1 - lr x decay each step
        raise UsageError(f"--weight-decay {tcfg.weight_decay:g} with --lr {tcfg.lr:g} would scale the weights by "
                         f"1 - lr x decay = {1 - tcfg.lr * tcfg.weight_decay:g} each step, flipping or zeroing them; "
                         f"keep the decay below 1 / lr = {1 / tcfg.lr:g} (0.1 is usual)")
    if not 0 <= tcfg.ema < 1:
        raise UsageError(f"--ema must be in [0, 1) (got {tcfg.ema}); 0.999 averages over about 1000 steps")
    if tcfg.threads < 0:
        raise UsageError(f"--threads must be >= 0 (got {tcfg.threads}); 0 lets the engine choose")
    if tcfg.grad_accum <= 0:
        raise UsageError(f"--grad-accum must be a positive integer (got {tcfg.grad_accum})")
    if tcfg.batch_size * tcfg.grad_accum > MAX_SEQUENCES_PER_STEP:
        raise UsageError(f"--batch-size {tcfg.batch_size} times --grad-accum {tcfg.grad_accum} is more than "
                         f"{MAX_SEQUENCES_PER_STEP} sequences per step; lower them")
    for option, (off, supported) in OPTIONS.items():
        if getattr(tcfg, option) != off and tcfg.engine not in supported:
            raise UsageError(f"{flag(option)} is not implemented by --engine {tcfg.engine}; "
                             f"drop it or use --engine {' or '.join(supported)}")
    if world > 1 and tcfg.engine not in DISTRIBUTED:
        raise UsageError(f"--engine {tcfg.engine} trains in one process only, but WORLD_SIZE is {world}; "
                         f"run it without torchrun, or use --engine {' or '.join(DISTRIBUTED)}")
    validate_sampling(tcfg.temperature, None, "", model.block_size)


def validate_types(cfg) -> None:
    """Each field of a config dataclass has its declared type (an int is a float too, a bool is not an
    int), and each float is finite: nan or inf is named by its flag, before any work starts."""
    for f in fields(cfg):
        value, allowed = getattr(cfg, f.name), _allowed_types(f.type)
        if allowed and type(value) not in allowed:
            words = "a number" if float in allowed else " or ".join(
                _TYPE_WORDS.get(t, t.__name__) for t in allowed if t is not type(None))
            raise UsageError(f"{flag(f.name)} must be {words} (got {value!r})")
        if type(value) is float and not math.isfinite(value):
            raise UsageError(f"{flag(f.name)} must be a finite number (got {value})")


def _allowed_types(annotation) -> tuple:
    """The exact types a field declared so may hold (an int where a float is declared); () if unknown."""
    if isinstance(annotation, types.UnionType):
        return sum((_allowed_types(a) for a in annotation.__args__), ())
    if not isinstance(annotation, type):
        return ()
    return (float, int) if annotation is float else (annotation,)


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def validate_sampling(temperature: float, top_k: int | None, prompt: str, block_size: int) -> None:
    if not math.isfinite(temperature):
        raise UsageError(f"--temperature must be a finite number (got {temperature}); try 0.5")
    if temperature < 0:
        raise UsageError(f"--temperature must be >= 0 (got {temperature}); try 0.5, or 0 for the most likely tokens")
    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k must be >= 1 (got {top_k}); leave it out to sample from all tokens")
    if len(prompt) >= block_size:
        raise UsageError(f"--prompt is {len(prompt)} characters but the context holds {block_size} tokens "
                         f"with BOS; use at most {block_size - 1} characters")


def memory_limit() -> int | None:
    """Bytes this process may use: the machine's memory, or a lower limit set with ulimit -v."""
    limits = []
    with contextlib.suppress(ValueError, OSError, AttributeError):
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource  # not on Windows
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    return min(limits) if limits else None


# ---- the learning-rate schedule ------------------------------------------------------------------
def lr_at(step: int, tcfg: TrainConfig) -> float:
    """The lr of a 0-based step: warmup (none by default), then decay from lr to min_lr over the rest.

    With the defaults (linear, no warmup, min_lr 0) it is atomic.py's lr * (1 - step / steps)."""
    if step < tcfg.warmup_steps:
        return tcfg.lr * (step + 1) / (tcfg.warmup_steps + 1)
    progress = (step - tcfg.warmup_steps) / (tcfg.steps - tcfg.warmup_steps)  # 0 -> 1 after warmup
    if tcfg.lr_schedule == "cosine":
        return tcfg.min_lr + (tcfg.lr - tcfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    return tcfg.min_lr + (tcfg.lr - tcfg.min_lr) * (1 - progress)


# ---- flags -> fields -----------------------------------------------------------------------------
def resolve(flags: dict, preset: str | None = None) -> tuple[ModelConfig, TrainConfig]:
    """Defaults, then the preset, then the flags given (field -> value, None: not given)."""
    values = {**asdict(ModelConfig()), **asdict(TrainConfig())}
    if preset:
        if preset not in PRESETS:
            raise UsageError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    values.update({k: v for k, v in flags.items() if k in values and v is not None})
    return from_dict(ModelConfig, values), from_dict(TrainConfig, values)


def scale_preset(preset: str | None, flags: dict, tcfg: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """A preset's warmup and EMA are sized for its own step count. With a shorter --steps they shrink
    by the same factor (the warmup stays the same share of the run; the EMA averages over the same
    share of it), unless given explicitly. Returns the config and a note saying what changed."""
    full = PRESETS.get(preset or "", {}).get("steps")
    if full is None or flags.get("steps") is None or tcfg.steps >= full:
        return tcfg, []
    ratio, changes = tcfg.steps / full, {}
    if flags.get("warmup_steps") is None and tcfg.warmup_steps:
        changes["warmup_steps"] = min(tcfg.steps - 1, round(tcfg.warmup_steps * ratio))
    if flags.get("ema") is None and tcfg.ema:
        horizon = ratio / (1 - tcfg.ema)  # the steps the average spans, scaled
        changes["ema"] = round(1 - 1 / horizon, 4) if horizon > 1 else 0.0
    if not changes:
        return tcfg, []
    said = ", ".join(f"{flag(k)} {getattr(tcfg, k)} -> {v}" for k, v in changes.items())
    return replace(tcfg, **changes), [f"note: --steps {tcfg.steps} is shorter than the {preset} preset's {full}, "
                                      f"so its schedule shrinks with it: {said} (give them to choose otherwise)"]


def fit_preset_to_engine(preset: str | None, flags: dict, tcfg: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """A preset run on an --engine other than its own: the preset's values that engine does not run (its
    dtype, the options of OPTIONS) are set off, with a note, and the model and schedule stay the preset's.
    Flags given explicitly are left as they are, for validate to judge. Returns the config and the note."""
    values = PRESETS.get(preset or "", {})
    if flags.get("engine") is None or tcfg.engine not in ENGINE_DTYPES or not values:
        return tcfg, []
    given = {k for k, v in flags.items() if v is not None}
    changes = {k: OPTIONS[k][0] for k in values if k in OPTIONS and k not in given
               and tcfg.engine not in OPTIONS[k][1] and getattr(tcfg, k) != OPTIONS[k][0]}
    if "dtype" in values and "dtype" not in given and tcfg.dtype not in ENGINE_DTYPES[tcfg.engine]:
        changes["dtype"] = ENGINE_DTYPES[tcfg.engine][0]
    if not changes:
        return tcfg, []
    said = ", ".join(f"{flag(k)} {getattr(tcfg, k)} -> {'off' if v in (None, 0) else v}" for k, v in changes.items())
    return replace(tcfg, **changes), [f"note: --engine {tcfg.engine} does not run all of the {preset} preset "
                                      f"(made for --engine {values.get('engine', 'scalar')}), so: {said}"]


def resolve_resume(flags: dict, model: ModelConfig, tcfg: TrainConfig) -> TrainConfig:
    """The saved run's TrainConfig with the flags that may change on --resume; any other flag given
    must equal the saved value (else a UsageError: it would no longer be the same run)."""
    for k, given in flags.items():
        kept = getattr(tcfg, k, getattr(model, k, None))
        if given is not None and k not in RESUMABLE_OVERRIDES and k != "vocab_size" and given != kept:
            raise UsageError(f"{flag(k)} {given} differs from the checkpoint's {kept}; "
                             f"drop it to resume, or start a new --out")
    resumed = replace(tcfg, **{k: flags[k] for k in RESUMABLE_OVERRIDES if flags.get(k) is not None})
    if resumed.dtype not in ENGINE_DTYPES.get(resumed.engine, (resumed.dtype,)):   # the engine changed
        raise UsageError(f"the checkpoint trained in {tcfg.dtype}, and --engine {resumed.engine} computes in "
                         f"{', '.join(ENGINE_DTYPES[resumed.engine])} only; resume with an engine that has "
                         f"{tcfg.dtype}: {', '.join(e for e, d in ENGINE_DTYPES.items() if tcfg.dtype in d)}")
    return resumed


# name -> {config field: value}; explicit command-line flags override a preset's values. The figures
# each reaches on the machines we have, beside its anchor, are in README.md ("Presets").
_NANOGPT_CHAR = dict(  # nanoGPT's shakespeare_char training recipe, on the stream of the file
    engine="torch", data_mode="stream", lr=1e-3, min_lr=1e-4, lr_schedule="cosine", warmup_steps=100,
    beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0, eval_every=250, samples=3)
PRESETS: dict[str, dict] = {
    # the names model: the best held-out loss we found for at most 5 minutes of 2 CPU cores (makemore's
    # 200K-parameter transformer: ~1.92; the target: <= 1.90). Muon trains the blocks' matrices; past
    # about 12 epochs of the names the held-out loss rises again, hence the few steps and light dropout
    "names": dict(engine="torch", dtype="float32", n_layer=4, n_embd=96, n_head=4, block_size=16,
                  batch_size=64, steps=6000, lr=2.5e-3, min_lr=2.5e-4, lr_schedule="cosine", warmup_steps=200,
                  optimizer="muon", weight_decay=0.1, dropout=0.05, attn_dropout=0.0, ema=0.999,
                  val_docs=1000, eval_every=2000),
    # nanoGPT's CPU settings for tiny shakespeare (use with --data shakespeare.txt): val ~1.88
    "shakespeare-cpu": dict(_NANOGPT_CHAR, dtype="float32", n_layer=4, n_head=4, n_embd=128, block_size=64,
                            batch_size=12, steps=2000, dropout=0.0),
    # nanoGPT's baby GPT for one GPU (use with --data shakespeare.txt; nanoGPT: val 1.4697 in ~3 minutes on
    # an A100). Our model has no final norm before lm_head, so at width 384 atomic.py's init (0.08) starts
    # with huge logits: init 0.02 and the schedule compressed to 2500 steps (past ~2000 the held-out loss
    # rises again at a constant lr) reach val 1.464 (README, "Presets")
    "shakespeare": dict(_NANOGPT_CHAR, dtype="bfloat16", compile=True, n_layer=6, n_head=6, n_embd=384,
                        block_size=256, batch_size=64, steps=2500, dropout=0.2, init_std=0.02),
}
