"""Two versions of the compiled engine's kernels, side by side in one process: which is faster, batched.

    git worktree add ../before HEAD~1          (any two checkouts of this repo)
    python scripts/ab_kernels.py ../before . --dtype float64 [--rounds 15] [--batches 20]
    python scripts/ab_kernels.py . . --dtype float32 --tiles 256x8,512x4   (one version, two tile sizes)

Loads compiled_kernels.py from each checkout as a module of its own, gives each its own copy of one
engine's parameters and work space (aligned to 64-byte lines, as the engine's are), and times one
training step of each (step_parallel on one thread, batches of 256 names) in turn, batch after batch:
a host that slows down for a moment slows both alike. Prints each version's µs a document (best and
median round), the ratio B/A (median of the rounds' ratios, with their range) and both last losses,
which should agree to round-off. --tiles AxM,BxN gives version A tiles of A rows and M chunks a batch,
and version B tiles of B rows and N chunks (default: the engine's own for both, compiled.py's TILE_ROWS
and chunk_count). The kernels compile on the first call, into a cache directory of this script's own
(NUMBA_CACHE_DIR, default a temporary one): Numba keys its disk cache on the source file alone, and an
entry written under this script's module names would break the engine's.
"""

import argparse
import importlib.util
import inspect
import os
import statistics
import sys
import tempfile
import time

os.environ["NUMBA_NUM_THREADS"] = "1"
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "microgpt_ab_kernels_cache"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from microgpt.config import ModelConfig, TrainConfig  # noqa: E402
from microgpt.engines.compiled import aligned_zeros, chunk_count  # noqa: E402
from microgpt.errors import UsageError  # noqa: E402
from microgpt.run import Run  # noqa: E402


def load_kernels(checkout: str, name: str):
    path = os.path.join(checkout, "microgpt", "engines", "compiled_kernels.py")
    if not os.path.isfile(path):
        raise UsageError(f"{checkout} has no microgpt/engines/compiled_kernels.py: give two checkouts of this repo")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def aligned_copy(x: np.ndarray) -> np.ndarray:
    y = aligned_zeros(x.shape, x.dtype)
    y[...] = x
    return y


def packed(batch) -> tuple[np.ndarray, np.ndarray]:
    """A DocumentData batch as the kernels take it: its tokens end to end, and where each document starts."""
    lengths = np.frombuffer(batch.lengths, np.int64)
    starts = np.zeros(len(batch) + 1, np.int64)
    np.cumsum(lengths, out=starts[1:])
    return np.frombuffer(batch.tokens, np.int64), starts


def parse_tiles(text, rows: int, chunks: int, block_size: int) -> list[tuple[int, int]]:
    """--tiles 'AxM,BxN' as [(A, M), (B, N)]; without it, the engine's own tile rows and chunks, twice."""
    if text is None:
        return [(int(rows), chunks)] * 2
    try:
        tiles = [tuple(int(n) for n in part.split("x")) for part in text.split(",")]
    except ValueError:
        tiles = []
    if len(tiles) != 2 or any(len(t) != 2 or t[0] < block_size or not 1 <= t[1] <= 8 for t in tiles):
        raise UsageError(f"--tiles takes two ROWSxCHUNKS, rows at least the block size ({block_size}) and 1 to 8 "
                         f"chunks, e.g. --tiles 256x8,512x4 (got {text!r})")
    return tiles


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="checkout A (the baseline)")
    p.add_argument("b", help="checkout B")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--batches", type=int, default=20, help="batches of 256 names a round")
    p.add_argument("--data", default=None, help="the training text (default: the embedded names)")
    p.add_argument("--tiles", default=None, help="ROWSxCHUNKS,ROWSxCHUNKS: A's and B's tile rows and chunks a batch")
    args = p.parse_args(argv)
    if args.rounds <= 0 or args.batches <= 0:
        raise UsageError("--rounds and --batches must be positive integers")
    kernels = [load_kernels(args.a, "ab_kernels_a"), load_kernels(args.b, "ab_kernels_b")]
    run = Run.fresh(ModelConfig(), TrainConfig(engine="compiled", dtype=args.dtype, batch_size=256), args.data)
    engine = run.engine()
    hyper = engine.hyper
    hyper[[kernels[0].LR, kernels[0].C1, kernels[0].C2]] = 0.01, 1 - 0.85, 1 - 0.99   # Adam, its second step
    batches = [packed(run.data.batch(s, 256)) for s in range(args.batches)]
    tiles = parse_tiles(args.tiles, engine.dims[kernels[0].R_], chunk_count(256, engine.chunk_docs), engine.cfg.block_size)
    states = []
    for k, (rows, _) in zip(kernels, tiles):
        dims = engine.dims.copy()
        dims[k.R_] = rows
        states.append((aligned_copy(engine.flat), aligned_zeros((1, k.work_size(dims)), engine.dtype),
                       np.zeros((1, k.INTS, rows), np.int64), dims))

    # kernels from before step_parallel took the thread count go without it (looked up once, not per step)
    threads = [(1,) if "threads" in inspect.signature(k.step_parallel.py_func).parameters else () for k in kernels]

    def step(i, tokens, starts):
        k, (flat, work, ints, dims) = kernels[i], states[i]
        return k.step_parallel(flat, engine.offsets, dims, hyper, tokens, starts, work, ints, k.TRAIN,
                               tiles[i][1], *threads[i])

    for i in range(2):   # compile, or load from the cache
        step(i, *batches[0])
    per_doc = [[], []]
    losses = [0.0, 0.0]
    for _ in range(args.rounds):
        spent = [0.0, 0.0]
        for tokens, starts in batches:
            for i in range(2):
                t0 = time.perf_counter()
                losses[i] = step(i, tokens, starts)
                spent[i] += time.perf_counter() - t0
        for i in range(2):
            per_doc[i].append(spent[i] / (len(batches) * 256) * 1e6)
    ratios = sorted(b / a for a, b in zip(*per_doc))
    for name, times in zip("AB", per_doc):
        print(f"{name}: {min(times):.3f} µs a document (best round), median {statistics.median(times):.3f}")
    print(f"tiles: A {tiles[0][0]} rows x {tiles[0][1]} chunks, B {tiles[1][0]} x {tiles[1][1]}")
    print(f"B/A: {statistics.median(ratios):.3f} (rounds {ratios[0]:.3f}..{ratios[-1]:.3f}); {args.dtype}, one thread, "
          f"{args.rounds} rounds of {args.batches} batches of 256; last losses {losses[0]:.6f} {losses[1]:.6f}; "
          f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
