"""Profile the numpy engine's training step on the default job (embedded names, default model).

    python scripts/bench_numpy.py [--batch-size 1] [--steps 2000] [--dtype float64] [--profile]

Prints the median time of engine.train_step (the `dt` of metrics.jsonl) and, with --profile, where
the time goes (cProfile, sorted by own time). For the side-by-side table use `microgpt bench`.
"""

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from microgpt.config import ModelConfig, TrainConfig, lr_at  # noqa: E402
from microgpt.errors import UsageError  # noqa: E402
from microgpt.run import Run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--engine", default="numpy")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    tcfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, dtype=args.dtype, engine=args.engine)
    run = Run.fresh(ModelConfig(), tcfg)  # what `microgpt train` starts from
    data, engine = run.data, run.engine()

    times, loss = [], None
    def run():
        nonlocal loss
        for step in range(tcfg.steps):
            seqs = data.batch(step, tcfg.batch_size)
            t0 = time.perf_counter()
            loss = engine.train_step(seqs, step, lr_at(step, tcfg))
            times.append(time.perf_counter() - t0)
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(run)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    else:
        run()
    med = statistics.median(times)
    print(f"{args.engine} {args.dtype} batch {args.batch_size}: {med * 1e3:.4f} ms/step median, "
          f"{med / args.batch_size * 1e6:.2f} us/doc, final loss {loss:.4f}")


if __name__ == "__main__":
    try:
        main()
    except UsageError as e:   # a bad flag, in the config's own words
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
