"""Engines: interchangeable implementations of the one algorithm in atomic.py.

Each engine module defines `Engine`, a subclass of engines/base.py's Engine (the interface, described
there). This file says where each engine lives and what it needs; config.py says which dtypes and
options each supports. Engines are imported lazily, so the core needs only the standard library.
"""

import importlib
import importlib.util

from microgpt.errors import UsageError
from microgpt.install import hint

# engine name -> (module, the library it needs or None, how to install that library)
ENGINES = {
    "scalar": ("microgpt.engines.scalar", None, None),
    "pure": ("microgpt.engines.pure", None, None),
    "numpy": ("microgpt.engines.numpy", "numpy", hint("numpy", "numpy")),
    "compiled": ("microgpt.engines.compiled", "numba", hint("compiled", "numba")),
    "torch": ("microgpt.engines.torch", "torch", hint("torch", "torch")),
}


def is_available(name: str) -> bool:
    module, lib, _ = ENGINES[name]
    if importlib.util.find_spec(module) is None:
        return False
    return lib is None or importlib.util.find_spec(lib) is not None


def available() -> list[str]:
    return [name for name in ENGINES if is_available(name)]


def from_flag(engines_flag: str | None) -> list[str]:
    """The engines named by a comma-separated --engines (None: every installed one); empty is an error."""
    if engines_flag is None:
        return available()
    names = [n.strip() for n in engines_flag.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--engines is empty; name at least one, comma-separated, from: {', '.join(ENGINES)}, "
                         f"or leave it out for every installed one")
    return names


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


def best_available(preferred: str) -> str:
    """`preferred` when it is installed, else numpy, else pure: the fastest way to run a model here
    (every engine computes the same function)."""
    return next(name for name in (preferred, "numpy", "pure") if is_available(name))
