"""`microgpt bench`: the installed engines side by side on the default job, timed as training times them.

    microgpt bench [--scalar-steps 50] [--steps 1000] [--batch-size 256] [--batched-steps 200]
                   [--dtype float64,float32] [--engines scalar,numpy] [--rounds 3] [--json] [--threads 0,2]

Each row is a real `microgpt train` run (train.train, into a temporary directory, samples off) and
its times are the `dt` column of that run's metrics.jsonl: the wall time of engine.train_step. The
scalar engine runs a few steps at batch 1; every other installed engine runs many steps at batch 1
and a batched row. The rows take turns for --rounds rounds and report the median step over all of
them, so a machine that is busier at one moment than another slows every row alike. Speedups are
against the scalar row of the same run: per step, and per document. `--threads 0,2` runs the torch
rows once per thread count (0: the engine's own choice), to show what threads cost on this machine.
"""

import contextlib
import gc
import io
import json
import os
import statistics
import tempfile

from microgpt import engines
from microgpt.config import ModelConfig, TrainConfig
from microgpt.errors import UsageError
from microgpt.run import Run
from microgpt.train import train


def measure(engine: str, batch_size: int, steps: int, data: str | None, dtype: str,
            threads: int = 0) -> tuple[list[float], float]:
    """One training run: the `dt` of each step (seconds) and the final loss."""
    tcfg = TrainConfig(engine=engine, batch_size=batch_size, steps=steps, samples=0, dtype=dtype,
                       save_every=steps, threads=threads)
    # Python's garbage collector rescans every live object, and the scalar engine's graphs trigger it
    # thousands of times per step: freeze what earlier rows and imports (torch's are large) left
    # alive, so a row costs what it would in a process of its own.
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        summary = train(Run.fresh(ModelConfig(), tcfg, data), out, log_every=steps)  # the default model
        with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
            dts = [json.loads(line)["dt"] for line in f if '"dt"' in line]
    gc.unfreeze()
    return dts, summary["loss"]


def rows_to_run(args) -> list[tuple[str, int, int, str, int]]:
    """(engine, batch, steps, dtype, threads) for every row, scalar first: it is what the others compare to."""
    names = engines.from_flag(args.engines)
    for name in names:
        if name not in engines.ENGINES:
            raise UsageError(f"unknown engine {name!r} in --engines; choose from: {', '.join(engines.ENGINES)}")
        if not engines.is_available(name):
            engines.get(name)  # raises the error that says what to install
    thread_counts = [int(n) for n in args.threads.split(",")] if args.threads else [0]
    if min(thread_counts) < 0:
        raise UsageError(f"--threads takes counts >= 0, comma-separated (got {args.threads})")
    rows = [("scalar", 1, args.scalar_steps, "float64", 0)] if "scalar" in names else []
    for name in names:
        for dtype in ([] if name == "scalar" else args.dtype.split(",")):
            for threads in (thread_counts if name == "torch" else [0]):
                rows += [(name, 1, args.steps, dtype, threads), (name, args.batch_size, args.batched_steps, dtype,
                                                                 threads)]
    return rows


def table(results: list[dict]) -> str:
    base = next((r for r in results if r["engine"] == "scalar"), None)
    head = ("engine", "dtype", "threads", "batch", "steps", "ms/step", "µs/doc", "x/step", "x/doc", "final loss")
    lines = [head]
    for r in results:
        per_step = f"{base['ms_per_step'] / r['ms_per_step']:.0f}" if base else "-"
        per_doc = f"{base['us_per_doc'] / r['us_per_doc']:.0f}" if base else "-"
        lines.append((r["engine"], r["dtype"], str(r["threads"] or "auto"),
                      str(r["batch"]), str(r["steps"]), f"{r['ms_per_step']:.4f}",
                      f"{r['us_per_doc']:.1f}", per_step, per_doc, f"{r['final_loss']:.4f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines)


# ---- the command line -----------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--engines", help="comma-separated engines to run (default: every installed one)")
    p.add_argument("--scalar-steps", type=int, default=50, help="steps for the scalar engine (default 50)")
    p.add_argument("--steps", type=int, default=1000, help="steps at batch 1 for the other engines (default 1000)")
    p.add_argument("--batch-size", type=int, default=256, help="documents per step of the batched rows (default 256)")
    p.add_argument("--batched-steps", type=int, default=200, help="steps of the batched rows (default 200)")
    p.add_argument("--dtype", default="float64",
                   help="dtype(s) of the non-scalar engines, comma-separated: float64,float32 (default float64)")
    p.add_argument("--data", help="text file, one document per line (default: the embedded baby names)")
    p.add_argument("--rounds", type=int, default=3, help="times each row runs, the rows taking turns (default 3)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--threads", help="torch rows once per CPU thread count, comma-separated, e.g. 0,2 "
                   "(0, the default: the engine's choice)")


def run(args) -> int:
    for flag in ("scalar_steps", "steps", "batch_size", "batched_steps"):
        if getattr(args, flag) <= 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be a positive integer (got {getattr(args, flag)})")
    if args.rounds <= 0:
        raise UsageError(f"--rounds must be a positive integer (got {args.rounds})")
    rows = rows_to_run(args)
    dts, losses = {row: [] for row in rows}, {}
    # The rows take turns, round after round, so that a machine busier at one moment than another
    # weighs on every engine alike; each row's median is over the steps of all its rounds.
    for i in range(args.rounds):
        for row in rows:
            row_dts, losses[row] = measure(*row[:3], args.data, row[3], row[4])
            dts[row] += row_dts
            if not args.json:
                print(f"round {i + 1}/{args.rounds}: {row[0]} {row[3]} threads {row[4] or 'auto'} batch {row[1]}: "
                      f"{statistics.median(row_dts) * 1e3:.4f} ms/step", flush=True)
    results = []
    for (engine, batch, steps, dtype, threads), times in dts.items():
        step_s = statistics.median(times)
        results.append({"engine": engine, "dtype": dtype, "threads": threads,
                        "batch": batch, "steps": steps, "rounds": args.rounds,
                        "ms_per_step": step_s * 1e3, "us_per_doc": step_s / batch * 1e6,
                        "final_loss": losses[engine, batch, steps, dtype, threads]})
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(table(results))
    return 0
