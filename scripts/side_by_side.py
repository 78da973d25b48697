"""Helpers of the side-by-side benchmarks in scripts/ (bench_packing.py, bench_optimizers.py).

Not run on its own.
"""

import argparse
import os
import sys
import time

import torch

from microgpt.config import resolve
from microgpt.run import Run

SHARED_NAMES = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "names.txt")


WARMUP = 20   # steps run but not timed, first


def parse_args() -> argparse.Namespace:
    """--threads (torch's, set here) and --steps, the flags every side-by-side benchmark takes."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2, help="torch's CPU threads (default 2)")
    ap.add_argument("--steps", type=int, default=300, help=f"steps, the first {WARMUP} untimed (default 300)")
    args = ap.parse_args()
    if args.threads < 1:
        usage_error(f"--threads must be 1 or more (got {args.threads})")
    if args.steps <= WARMUP:
        usage_error(f"--steps must be more than the {WARMUP} untimed warm-up steps (got {args.steps})")
    torch.set_num_threads(args.threads)
    return args


def usage_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def names_preset_run() -> Run:
    """The names preset's fresh run (its model, data and init) on ../shared/data/names.txt when
    present, else on the embedded names: what `microgpt train --preset names` starts from."""
    model, tcfg = resolve({}, "names")
    return Run.fresh(model, tcfg, SHARED_NAMES if os.path.exists(SHARED_NAMES) else None)


def seconds_per_step(steps: int, contenders: dict, warmup: int = WARMUP) -> dict[str, float]:
    """Run every contender (name -> function of the step number) once per step, taking turns, so all
    see the same machine; their mean seconds per step after `warmup` steps."""
    seconds = dict.fromkeys(contenders, 0.0)
    for step in range(steps):
        for name, run in contenders.items():
            t0 = time.perf_counter()
            run(step)
            if step >= warmup:
                seconds[name] += time.perf_counter() - t0
    return {name: s / (steps - warmup) for name, s in seconds.items()}


def print_ms_per_step(seconds: dict[str, float]) -> None:
    for name, s in seconds.items():
        print(f"{name}: {s * 1e3:.1f} ms/step")
