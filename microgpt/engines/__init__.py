"""Engines: interchangeable implementations of the one algorithm in atomic.py.

Each engine module defines `Engine`, constructed as `Engine(model_cfg, train_cfg, params)` with
`params` a dict name -> checkpoint.Tensor (model.py's names and shapes), and offering:

    train_step(seqs, step, lr) -> float   one Adam step on a batch of token sequences; the loss is the
                                          mean over every predicted token of the batch; `step` is
                                          0-based (Adam's bias correction uses step + 1)
    eval_loss(seqs) -> float              the same loss, without touching parameters or moments
    loss_and_grads(seqs) -> (float, dict) the loss and d(loss)/d(param) as name -> Tensor, no update
    export() -> (params, adam_m, adam_v)  each a dict name -> Tensor, for the checkpoint
    load_adam(adam_m, adam_v)             restore Adam's moments from a checkpoint
    train_params(), load_train_params(d)  with --ema (torch only): the weights Adam trains, which the
                                          checkpoint keeps beside the averaged ones export() gives
    new_cache() -> cache                  an empty KV cache for sampling
    logits(cache, token_id, pos_id) -> list[float]   next-token logits; appends to the cache

A sequence is [BOS] + chars + [BOS] cut to block_size + 1 tokens: position t predicts token t + 1.
Engines are imported lazily so that the core needs only the standard library.
"""

import importlib
import importlib.util

from microgpt.errors import UsageError

# engine name -> (module, the library it needs or None, how to install that library)
ENGINES = {
    "scalar": ("microgpt.engines.scalar", None, None),
    "numpy": ("microgpt.engines.numpy", "numpy", "pip install 'microgpt[numpy]' (or: pip install numpy)"),
    "torch": ("microgpt.engines.torch", "torch", "pip install 'microgpt[torch]' (or: pip install torch)"),
}


# Training options only some engines implement: TrainConfig field -> (its "off" value, the engines that
# have it). Every other option (data mode, lr schedule, warmup, gradient accumulation) is the loop's
# and works with every engine. `torchrun` is data-parallel training across processes.
OPTIONS = {
    "weight_decay": (0.0, ("torch",)),
    "dropout": (0.0, ("torch",)),
    "attn_dropout": (None, ("torch",)),
    "grad_clip": (0.0, ("torch",)),
    "ema": (0.0, ("torch",)),
    "optimizer": ("adam", ("torch",)),
    "device": ("auto", ("torch",)),
    "compile": (False, ("torch",)),
}
DISTRIBUTED = ("torch",)


def check_options(name: str, tcfg, world: int = 1) -> None:
    """A UsageError naming the first option asked for that engine `name` does not implement."""
    for field, (off, supported) in OPTIONS.items():
        if getattr(tcfg, field) != off and name not in supported:
            raise UsageError(f"--{field.replace('_', '-')} is not implemented by --engine {name}; "
                             f"drop it or use --engine {' or '.join(supported)}")
    if world > 1 and name not in DISTRIBUTED:
        raise UsageError(f"--engine {name} trains in one process only, but WORLD_SIZE is {world}; "
                         f"run it without torchrun, or use --engine {' or '.join(DISTRIBUTED)}")


def supported_by(field: str) -> str:
    """For --help: which engines implement an option."""
    return "engines: " + ", ".join(OPTIONS[field][1])


def is_available(name: str) -> bool:
    module, lib, _ = ENGINES[name]
    if importlib.util.find_spec(module) is None:
        return False
    return lib is None or importlib.util.find_spec(lib) is not None


def available() -> list[str]:
    return [name for name in ENGINES if is_available(name)]


def get(name: str):
    """The Engine class for `name`, or a UsageError saying what to install or choose."""
    if name not in ENGINES:
        raise UsageError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    module, lib, install = ENGINES[name]
    if lib is not None and importlib.util.find_spec(lib) is None:
        raise UsageError(f"engine {name!r} needs {lib}, which is not installed: {install}")
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"engine {name!r} is not part of this version of microgpt; use --engine scalar")
    return importlib.import_module(module).Engine
