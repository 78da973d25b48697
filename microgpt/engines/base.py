"""The engine interface: what every engine (scalar, numpy, torch, ...) offers the loop and the tools.

An engine is built as `Engine(model_cfg, train_cfg, params)`, with `params` a dict name -> Tensor under
params.py's names and shapes. A sequence is [BOS] + chars + [BOS] cut to block_size + 1 tokens:
position t predicts token t + 1. The loss of a batch is the mean over every predicted token in it.

The checkpoint stores what `weights()` and `state()` return and nothing else: an engine names its own
state (`adam.m.<param>`, `muon.momentum.<param>`, `ema.trained.<param>`, ...), and the training loop
never asks what is inside it. `load_state` takes back exactly what `state()` gave, and refuses
(UsageError) a state that lacks any tensor it needs, so a resume is exact or it does not happen.
"""

import os

from microgpt.errors import UsageError
from microgpt.tensor import Tensor


class Engine:
    name = "base"
    note = ""  # one line on how the engine runs here (torch, compiled: their CPU threads), printed before training
    threads = None  # the CPU threads it runs on, where it chooses them (torch, compiled); None for the others

    def __init__(self, model_cfg, train_cfg, params: dict[str, Tensor]):
        raise NotImplementedError

    # ---- training ----------------------------------------------------------------------------
    def train_step(self, seqs: list[list[int]], step: int, lr: float) -> float:
        """One optimizer step on a batch; returns its loss. `step` is 0-based (Adam's bias
        correction uses step + 1)."""
        raise NotImplementedError

    def eval_loss(self, seqs: list[list[int]]) -> float:
        """The loss of the model (`weights()`), without touching any parameter or state."""
        raise NotImplementedError

    def loss_and_grads(self, seqs: list[list[int]]) -> tuple[float, dict[str, Tensor]]:
        """The loss and d(loss)/d(param) for every parameter, name -> Tensor, with no update."""
        raise NotImplementedError

    def largest_over_processes(self, value: int) -> int:
        """The largest of `value` over the processes of a torchrun job, so that all agree (e.g. to
        stop at the same step); an engine that trains in one process returns `value`."""
        return value

    def leave_processes(self) -> None:
        """The end of a torchrun job's training, in every process: each waits here for the others (rank 0
        samples and saves alone), then leaves the process group; an engine that trains in one process
        does nothing."""

    # ---- what the checkpoint holds -----------------------------------------------------------
    def weights(self) -> dict[str, Tensor]:
        """The model: what is evaluated, sampled and saved under the parameters' own names."""
        raise NotImplementedError

    def state(self) -> dict[str, Tensor]:
        """Everything else an exact resume needs, under this engine's own names."""
        raise NotImplementedError

    def load_state(self, state: dict[str, Tensor]) -> None:
        raise NotImplementedError

    # ---- sampling ----------------------------------------------------------------------------
    def new_cache(self):
        """An empty KV cache for `logits`."""
        raise NotImplementedError

    def logits(self, cache, token_id: int, pos_id: int) -> list[float]:
        """Next-token logits at one position; appends that position's keys and values to the cache."""
        raise NotImplementedError

    def forward_logits(self, cache, token_ids: list[int], start_pos: int = 0) -> list[list[float]]:
        """The logits at each of several consecutive positions from start_pos on, appending them all to
        the cache: what `logits` gives one position at a time (an engine may do it in one pass)."""
        return [self.logits(cache, t, start_pos + i) for i, t in enumerate(token_ids)]


def checked_train_step(engine: Engine, seqs: list[list[int]], step: int, lr: float) -> float:
    """engine.train_step, with the float errors of a diverging run in the pure-Python engines (exp
    overflowing, log of 0) as one UsageError; a non-finite loss is for the caller to report."""
    try:
        return float(engine.train_step(seqs, step, lr))
    except (OverflowError, ZeroDivisionError, ValueError) as e:
        if isinstance(e, ValueError) and "math domain error" not in str(e):
            raise
        raise UsageError(f"the loss diverged at step {step + 1} ({e}); lower --lr") from None


def adam_state(m: dict[str, Tensor], v: dict[str, Tensor]) -> dict[str, Tensor]:
    """Adam's moments under their checkpoint names, adam.m.<param> and adam.v.<param>."""
    return {**{f"adam.m.{n}": t for n, t in m.items()}, **{f"adam.v.{n}": t for n, t in v.items()}}


def take(state: dict[str, Tensor], prefix: str, names) -> dict[str, Tensor]:
    """{name: state[prefix + name]} for every name, or a UsageError naming the first one missing."""
    missing = [prefix + n for n in names if prefix + n not in state]
    if missing:
        raise UsageError(f"the checkpoint lacks {missing[0]} ({len(missing)} optimizer tensors missing), so the "
                         f"run cannot resume exactly; restore the checkpoint or start a new --out")
    return {n: state[prefix + n] for n in names}


def env_int(name: str, default: int, least: int, most: int | None, fix: str) -> int:
    """The environment variable `name` as a whole number from least to most (None: no bound), default when it
    is unset or blank; else a UsageError naming it, its value and `fix`, where int() would be a traceback."""
    text = os.environ.get(name, "")
    if not text.strip():
        return default
    if not text.strip().lstrip("+-").isdigit() or int(text) < least or (most is not None and int(text) > most):
        bounds = f"from {least} to {most}" if most is not None else f"of at least {least}"
        raise UsageError(f"{name} must be a whole number {bounds} (got {text!r}); {fix}")
    return int(text)


MAX_THREADS = 4096   # far past any machine's cores; Numba crashed (a segfault) starting 100000


def check_thread_count(name: str) -> None:
    """A thread count the engine's library reads from the environment when it is imported (NUMBA_NUM_THREADS,
    OMP_NUM_THREADS), checked before that import: a whole number from 1 to MAX_THREADS, or unset. Left to the
    library, text is ignored with a warning (libgomp's, Numba's) and the engine says it took the variable, 0
    raises in Numba, and a huge count crashes it starting the threads."""
    env_int(name, 0, 1, MAX_THREADS, "unset it to let the engine choose")


TORCHRUN = "torchrun sets it for each process; unset it to train in one process"


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes, as torchrun sets them; (0, 1) without it."""
    world = env_int("WORLD_SIZE", 1, 1, None, TORCHRUN)
    return env_int("RANK", 0, 0, world - 1, TORCHRUN), world


def local_rank() -> int:
    """This process's GPU on its machine, as torchrun sets it (LOCAL_RANK); 0 without it."""
    return env_int("LOCAL_RANK", 0, 0, None, TORCHRUN)


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def idle_cores() -> tuple[int, str]:
    """The cores that the last minute's load average leaves idle, at least 1, and in words how many cores
    there are, the load, and the flag that chooses otherwise: an engine's default thread count (torch,
    compiled), since threads that wait on busy cores slow every step."""
    cores_here = cores()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0  # runnable processes, last minute
    idle = max(1, min(cores_here, round(cores_here - load)))
    return idle, f"{cores_here} cores, load {load:.1f}; --threads N to choose"
