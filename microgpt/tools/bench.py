"""`microgpt bench`: the installed engines side by side on the default job, timed as training times them,
and set against what this CPU's arithmetic allows.

    microgpt bench [--scalar-steps 50] [--steps 1000] [--batch-size 256] [--batched-steps 200]
                   [--dtype float64,float32] [--engines scalar,numpy,compiled] [--threads 1,2]
                   [--preset names] [--peak 48,96] [--rounds 3] [--json]

Each row is a real `microgpt train` run (train.train, into a temporary directory, samples off) and
its times are the `dt` column of that run's metrics.jsonl: the wall time of engine.train_step. The
scalar engine runs a few steps at batch 1; every other installed engine runs many steps at batch 1
and a batched row (the compiled and torch engines' batched rows once per --threads count, shown as the count
the engine ran: one past what it can run here gets fewer, as in train; 0: the engine's own choice, train's
default, shown as auto). The rows take turns
for --rounds rounds and report the median step over all of them, so a machine that is busier at one
moment than another slows every row alike. Speedups are against the scalar row of the same run.

The ideal. `flops_per_doc` counts the multiply-adds of a training step from the config (forward,
and twice that for the backward) over the very documents a row trains on, plus Adam's per-parameter
work; divided by the CPU's peak it is the time the arithmetic alone needs. The peak is --peak (GFLOP/s
of one core, float64[,float32]) or, by default, measured: one-thread matrix products through NumPy's
BLAS, which reach close to a core's peak. `x ideal` = measured time / that ideal time.

The first step of an engine in this process is timed apart ("first call"): for the compiled engine
it is Numba compiling the kernels, or loading them from its disk cache when an earlier run compiled
them. With a C compiler on the PATH the C port (ports/c/microgpt.c, built with cc -O2) gets a row
too (unless --engines leaves out `c`): its time per step is the difference between a long and a short run, divided by their steps.
Progress goes to stderr, one line per row and round.
"""

import contextlib
import gc
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

from microgpt import engines
from microgpt.config import (DTYPES, ENGINE_DTYPES, MODEL_FIELDS, OPTIONS, PRESETS, ModelConfig, TrainConfig, resolve,
                             scale_preset)
from microgpt.data import EMBEDDED_NAMES
from microgpt.errors import UsageError
from microgpt.params import num_params
from microgpt.run import Run
from microgpt.train import Stopped, train

ADAM_FLOPS_PER_PARAM = 12   # m: 3 (2 mul, 1 add); v: 4; update: sqrt, add, div, mul, sub = 5
C_PORT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "ports", "c", "microgpt.c")


# ---- the arithmetic a step needs ----------------------------------------------------------------
def flops_per_doc(cfg: ModelConfig, predicted: int) -> int:
    """Floating-point operations to train on one document of `predicted` positions (forward and
    backward; multiply-adds count 2): every matrix product, and attention's q.k and weighted sums.
    The backward does each product twice (the input's gradient, the weight's), hence the 3."""
    C, V, L = cfg.n_embd, cfg.vocab_size, cfg.n_layer
    products = predicted * (V * C + L * 12 * C * C)   # lm_head; q, k, v, o (4 C^2) and the MLP (8 C^2)
    attention = L * 2 * C * predicted * (predicted + 1) // 2   # position t: q.k and sum a v over t + 1 keys
    return 3 * 2 * (products + attention)


def step_flops(cfg: ModelConfig, seqs_per_step: list[list[list[int]]]) -> float:
    """Mean FLOPs of a step over the given steps' batches, Adam included."""
    total = sum(flops_per_doc(cfg, len(s) - 1) for batch in seqs_per_step for s in batch)
    return total / len(seqs_per_step) + ADAM_FLOPS_PER_PARAM * num_params(cfg)


def measured_peak(dtype: str) -> float:
    """GFLOP/s of one core in `dtype`: the best of a few one-thread BLAS matrix products."""
    from microgpt.engines import numpy as numpy_engine   # sets numpy's BLAS to one thread, if numpy is not loaded
    np = numpy_engine.np
    n = 256   # ~1 ms a product: short, so that the best of many escapes a busy machine's other work
    a = np.random.default_rng(0).random((n, n)).astype(dtype)
    best = float("inf")
    for _ in range(50):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def peaks(args, dtypes) -> tuple[dict, str]:
    if args.peak:
        try:
            values = [float(v) for v in args.peak.split(",")]
        except ValueError:
            values = []
        if not 1 <= len(values) <= 2 or not all(0 < v < math.inf for v in values):   # nan fails both
            raise UsageError(f"--peak takes one core's GFLOP/s as FLOAT64[,FLOAT32], e.g. 48,96 (got {args.peak!r})")
        # float32 vectors hold twice the numbers: without a second figure, twice float64's
        return {"float64": values[0], "float32": values[-1] if len(values) == 2 else 2 * values[0]}, "--peak"
    if not engines.is_available("numpy"):
        return {}, "none (no numpy to measure it; give --peak)"
    return {d: measured_peak(d) for d in dtypes}, "measured: one-thread BLAS matrix product"


# ---- one row -------------------------------------------------------------------------------------
# With --preset, the rows train the preset's model (its shape and init) on its learning-rate schedule, sized
# to each row's steps as `train --preset --steps` sizes it (config.scale_preset). The preset's engine-specific
# options (config.OPTIONS: the names preset's Muon, dropout and EMA) are left off, so that every row runs Adam,
# the one computation all engines share; and a bench times steps: no held-out documents to evaluate.
def bench_configs(preset: str | None) -> tuple[ModelConfig, TrainConfig]:
    """The model a bench times and the TrainConfig its rows start from: atomic.py's, or the preset's."""
    model, tcfg = resolve({}, preset)
    return model, replace(tcfg, val_docs=0, **{name: off for name, (off, _) in OPTIONS.items()})


def measure(model: ModelConfig, row: dict, data: str | None,
            preset: str | None = None) -> tuple[list[float], float, int | None]:
    """One training run: the `dt` of each step (seconds), the final loss, and the threads the engine ran
    (its own choice or cap: a row's --threads past the cores, or past Numba's threads, runs fewer)."""
    tcfg = replace(bench_configs(preset)[1], engine=row["engine"], batch_size=row["batch"], steps=row["steps"],
                   samples=0, dtype=row["dtype"], save_every=row["steps"],
                   threads=row["threads"] or 0)   # None: an engine without threads
    tcfg, _ = scale_preset(preset, {"steps": row["steps"]}, tcfg)
    # Python's garbage collector rescans every live object, and the scalar engine's graphs trigger it
    # thousands of times per step: freeze what earlier rows and imports (torch's are large) left
    # alive, so a row costs what it would in a process of its own.
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        # the engine's note on its threads only where the row lets it choose: the others show their count
        summary = train(Run.fresh(model, tcfg, data), out, log_every=row["steps"], show_note=row["threads"] == 0)
        with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
            dts = [json.loads(line)["dt"] for line in f if '"dt"' in line]
    gc.unfreeze()
    if summary["signal"]:   # Ctrl-C or a kill: train stopped the row early; the bench stops, not the row alone
        raise Stopped(summary["signal"])
    return dts, summary["loss"], summary["threads"]


def rows_to_run(args) -> list[dict]:
    """Every row, scalar first: it is what the others compare to."""
    named = engines.from_flag(args.engines)
    names = [n for n in named if n != "c"]
    for name in names:
        if name not in engines.ENGINES:
            raise UsageError(f"unknown engine {name!r} in --engines; choose from: {', '.join(engines.ENGINES)}")
        if not engines.is_available(name):
            engines.get(name)  # raises the error that says what to install
    dtypes = [d.strip() for d in args.dtype.split(",")]
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise UsageError(f"unknown dtype {dtype!r} in --dtype; choose from: {', '.join(DTYPES)}")
    row = lambda engine, batch, steps, dtype, threads=None: dict(engine=engine, batch=batch, steps=steps,
                                                               dtype=dtype, threads=threads)
    rows = [row("scalar", 1, args.scalar_steps, "float64")] if "scalar" in names else []
    for name in names:
        for dtype in [d for d in dtypes if d in ENGINE_DTYPES[name] and name != "scalar"]:
            if name in ("compiled", "torch"):  # the batched row once per thread count
                rows.append(row(name, 1, args.steps, dtype, 1))
                rows += [row(name, args.batch_size, args.batched_steps, dtype, n) for n in args.thread_counts]
            else:
                rows += [row(name, 1, args.steps, dtype), row(name, args.batch_size, args.batched_steps, dtype)]
    if not rows and "c" not in named:
        raise UsageError(f"no engine in --engines {args.engines} runs --dtype {args.dtype}: "
                         + "; ".join(f"{n} runs {', '.join(ENGINE_DTYPES[n])}" for n in names))
    return rows


# ---- the C port ----------------------------------------------------------------------------------
def build_c_port(tmp: str, cfg: ModelConfig) -> str | None:
    """ports/c/microgpt.c built with cc -O2 for this model's shape, or None without a C compiler."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None or not os.path.exists(C_PORT):
        return None
    exe = os.path.join(tmp, "microgpt_c")
    shape = [f"-D{f.upper()}={getattr(cfg, f)}" for f in MODEL_FIELDS]
    subprocess.run([cc, "-O2", *shape, "-o", exe, C_PORT, "-lm"], check=True, capture_output=True)
    return exe


def time_c_port(exe: str, data: str, short: int, long: int) -> tuple[float, float]:
    """(seconds per step, the last loss printed): the time of a long run less a short one, per step.
    The port's set-up (reading, shuffling, init) and its 20 samples cost both runs alike."""
    times, last = [], ""
    for steps in (short, long):
        t = time.perf_counter()
        out = subprocess.run([exe, "-n", str(steps), "-i", data], capture_output=True, text=True, check=True).stdout
        times.append(time.perf_counter() - t)
        last = [line for line in out.splitlines() if "| loss " in line][-1]
    return (times[1] - times[0]) / (long - short), float(last.split("| loss ")[1])


# ---- the table -----------------------------------------------------------------------------------
def threads_shown(row: dict) -> str:
    """A row's threads in words: '-' for an engine without threads, 'auto' for the engine's own choice (its
    note says what it chose), else the count the engine ran: --threads past what it can run gets fewer."""
    if row["threads"] is None:
        return "-"
    return str(row.get("threads_run") or row["threads"]) if row["threads"] else "auto"


def table(results: list[dict]) -> str:
    base = next((r for r in results if r["engine"] == "scalar"), None)
    head = ("engine", "dtype", "batch", "threads", "ms/step", "µs/doc", "x/step", "x/doc",
            "ideal µs/doc", "x ideal", "final loss")
    lines = [head]
    for r in results:
        per_step = f"{base['ms_per_step'] / r['ms_per_step']:.0f}" if base else "-"
        per_doc = f"{base['us_per_doc'] / r['us_per_doc']:.0f}" if base else "-"
        ideal = r.get("ideal_us_per_doc")
        lines.append((r["engine"], r["dtype"], str(r["batch"]), threads_shown(r),
                      f"{r['ms_per_step']:.4f}", f"{r['us_per_doc']:.1f}", per_step, per_doc,
                      f"{ideal:.2f}" if ideal else "-", f"{r['us_per_doc'] / ideal:.1f}" if ideal else "-",
                      f"{r['final_loss']:.4f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines)


# ---- the command line ----------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--engines", help="comma-separated engines to run, and `c` for the C port (default: every "
                                     "installed one, and the C port when there is a C compiler)")
    p.add_argument("--scalar-steps", type=int, default=50, help="steps for the scalar engine (default 50)")
    p.add_argument("--steps", type=int, default=1000, help="steps at batch 1 for the other engines (default 1000)")
    p.add_argument("--batch-size", type=int, default=256, help="documents per step of the batched rows (default 256)")
    p.add_argument("--batched-steps", type=int, default=200, help="steps of the batched rows (default 200)")
    p.add_argument("--dtype", default="float64",
                   help="dtype(s) of the non-scalar engines, comma-separated: float64,float32 (default float64); "
                        "each engine runs those it has")
    p.add_argument("--threads", default=None,
                   help="thread counts of the compiled and torch engines' batched rows, comma-separated, 0 for "
                        "the engine's own choice (train --threads 0; shown as auto) (default: 1 and every core)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="time a preset's model (layers, width, heads, block, init) and lr schedule instead of "
                        "atomic.py's, the schedule sized to each row's steps; every engine runs Adam (the preset's "
                        "torch-only options are left off)")
    p.add_argument("--peak", help="one core's peak GFLOP/s, FLOAT64[,FLOAT32] (default: measured)")
    p.add_argument("--data", help="text file, one document per line (default: the embedded baby names)")
    p.add_argument("--rounds", type=int, default=3, help="times each row runs, the rows taking turns (default 3)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


def parse_threads(text: str | None) -> list[int]:
    if text is None:
        cores = os.cpu_count() or 1
        return [1, cores] if cores > 1 else [1]
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 0:
        raise UsageError(f"--threads takes thread counts, comma-separated, 0 for the engine's own choice, e.g. 1,2 "
                         f"or 0,2 (got {text!r})")
    return counts


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args) -> int:
    for flag in ("scalar_steps", "steps", "batch_size", "batched_steps", "rounds"):
        if getattr(args, flag) <= 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be a positive integer (got {getattr(args, flag)})")
    args.thread_counts = parse_threads(args.threads)
    model, base = bench_configs(args.preset)
    rows = rows_to_run(args)
    if any(r["engine"] == "compiled" for r in rows):
        engines.get("compiled")   # imported through the engine, which first keeps numpy's BLAS to one thread
    probe = Run.fresh(model, base, args.data)   # the rows' data, once, for the FLOP counts
    model = replace(model, vocab_size=probe.model.vocab_size)
    peak, peak_source = peaks(args, sorted({r["dtype"] for r in rows}))
    progress(f"peak GFLOP/s of one core: {', '.join(f'{d} {g:.1f}' for d, g in peak.items()) or '-'} ({peak_source})")

    dts, losses, first_call = {i: [] for i in range(len(rows))}, {}, {}
    # The rows take turns, round after round, so that a machine busier at one moment than another
    # weighs on every engine alike; each row's median is over the steps of all its rounds.
    for round_ in range(args.rounds):
        for i, row in enumerate(rows):
            row_dts, losses[i], row["threads_run"] = measure(model, row, args.data, args.preset)
            key = (row["engine"], row["dtype"])
            if key not in first_call:   # this process's first step of this engine: compile or load time
                first_call[key] = row_dts[0]
            dts[i] += row_dts[1:] if len(row_dts) > 1 else row_dts
            progress(f"round {round_ + 1}/{args.rounds}: {row['engine']} {row['dtype']} batch {row['batch']}"
                     f"{' threads ' + threads_shown(row) if row['threads'] is not None else ''}: "
                     f"{statistics.median(row_dts) * 1e3:.4f} ms/step")

    results = []
    for i, row in enumerate(rows):
        step_s = statistics.median(dts[i])
        batches = [probe.data.batch(s, row["batch"]) for s in range(row["steps"])]
        ideal_s = step_flops(model, batches) / (peak[row["dtype"]] * 1e9) if row["dtype"] in peak else None
        results.append(dict(row, rounds=args.rounds, ms_per_step=step_s * 1e3, us_per_doc=step_s / row["batch"] * 1e6,
                            ideal_us_per_doc=ideal_s / row["batch"] * 1e6 if ideal_s else None,
                            peak_gflops=peak.get(row["dtype"]), first_call_s=first_call[row["engine"], row["dtype"]],
                            final_loss=losses[i]))
    with_c_port = args.engines is None or "c" in engines.from_flag(args.engines)
    c_port = c_port_row(args, model, probe, peak) if with_c_port and not args.preset else None
    if c_port:
        results.append(c_port)

    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(table(results))
    print(f"peak GFLOP/s of one core: {', '.join(f'{d} {g:.1f}' for d, g in peak.items()) or '-'} ({peak_source}); "
          f"model {', '.join(f'{f} {getattr(model, f)}' for f in MODEL_FIELDS)}, {num_params(model)} params")
    print("first call (compile, or load from the disk cache): " +
          ", ".join(f"{e} {d} {s * 1e3:.0f} ms" for (e, d), s in first_call.items()))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    return 0


def c_port_row(args, model, probe, peak) -> dict | None:
    """The C port's row, timed in rounds of its own after the others (it runs as a separate process)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            exe = build_c_port(tmp, model)
        except subprocess.CalledProcessError as e:
            progress(f"C port: the build failed, row left out: {e.stderr.strip()[:200]}")
            return None
        if exe is None:
            progress("C port: no C compiler (cc) on the PATH, row left out")
            return None
        data = args.data or EMBEDDED_NAMES
        short, long = 20, 20 + args.steps
        per_step, loss = [], None
        for round_ in range(args.rounds):
            s, loss = time_c_port(exe, data, short, long)
            per_step.append(s)
            progress(f"round {round_ + 1}/{args.rounds}: C port (cc -O2) float64 batch 1: {s * 1e3:.4f} ms/step")
    step_s = statistics.median(per_step)
    batches = [probe.data.batch(s, 1) for s in range(args.steps)]
    ideal = step_flops(model, batches) / (peak["float64"] * 1e9) * 1e6 if "float64" in peak else None
    return dict(engine="C port", dtype="float64", batch=1, threads=1, threads_run=1, steps=args.steps,
                rounds=args.rounds, ms_per_step=step_s * 1e3, us_per_doc=step_s * 1e6, ideal_us_per_doc=ideal,
                peak_gflops=peak.get("float64"), first_call_s=None, final_loss=loss)
