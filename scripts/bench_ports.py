"""Other people's compiled ports of microgpt beside our compiled and numpy engines, on the same job.

    python scripts/bench_ports.py --microgpt-cpp ~/src/microgpt.cpp --rust-microgpt ~/src/rust-microgpt \
        --microgpts ~/src/microgpts [--data names.txt] [--rounds 5]

It fetches nothing: point it at local checkouts (git clone them yourself) of
    Charbel199/microgpt.cpp   built as its README says: g++ -std=c++17 -DDEBUG -Ofast -march=native
    mplekh/rust-microgpt      cargo build --release (its README: cargo run --release)
    1duo/microgpts            C/microgpt.c with its run.sh's clang -O3 -std=c2x (cc if there is no clang),
                              Rust/microgpt.rs with its run.sh's rustc --edition=2021 -O
Each is built into a temporary directory, never into the checkout.

The job is the reference run: 1000 steps at batch 1 of the default model on the names (every port
hard-codes it and reads input.txt from its working directory), then 20 samples. A port's time is its
whole process's wall time, so its start-up, data reading and sampling count against it (a few ms);
ours is the sum of the 1000 train_step times of `microgpt train` run in this process (engines already
compiled: see `microgpt bench` for the first-call time). The implementations take turns, round after
round; the table gives each one's median over the rounds and its ratio to our engines'.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from microgpt import engines  # noqa: E402
from microgpt.config import ModelConfig  # noqa: E402
from microgpt.data import EMBEDDED_NAMES  # noqa: E402
from microgpt.errors import UsageError  # noqa: E402
from microgpt.tools.bench import measure  # noqa: E402

STEPS = 1000   # what every port hard-codes


def c_compiler(preferred: str) -> str:
    found = shutil.which(preferred) or shutil.which("cc")
    if found is None:
        raise UsageError(f"no C compiler: install {preferred} (or cc)")
    return found


# ---- the ports: how each is built, from its own README or run.sh --------------------------------
def build_microgpt_cpp(src: str, out: str) -> list[tuple[str, str, str]]:
    exe = os.path.join(out, "microgpt_cpp")
    subprocess.run([c_compiler("g++"), "-std=c++17", "-DDEBUG", "-Ofast", "-march=native",
                    os.path.join(src, "microgpt.cpp"), "-o", exe], check=True, capture_output=True, text=True)
    return [("Charbel199/microgpt.cpp", "g++ -std=c++17 -DDEBUG -Ofast -march=native", exe)]


def build_rust_microgpt(src: str, out: str) -> list[tuple[str, str, str]]:
    target = os.path.join(out, "rust-target")
    subprocess.run(["cargo", "build", "--release", "--offline", "--quiet", "--target-dir", target],
                   cwd=src, check=True, capture_output=True, text=True)
    exe = os.path.join(target, "release", "rust-microgpt")
    return [("mplekh/rust-microgpt", "cargo build --release", exe)]


def build_microgpts(src: str, out: str) -> list[tuple[str, str, str]]:
    c_exe, rust_exe = os.path.join(out, "microgpts_c"), os.path.join(out, "microgpts_rust")
    cc = c_compiler("clang")
    subprocess.run([cc, "-O3", "-std=c2x", "-o", c_exe, os.path.join(src, "C", "microgpt.c"), "-lm"],
                   check=True, capture_output=True, text=True)
    subprocess.run(["rustc", "--edition=2021", "-O", os.path.join(src, "Rust", "microgpt.rs"), "-o", rust_exe],
                   check=True, capture_output=True, text=True)
    return [("1duo/microgpts C", f"{os.path.basename(cc)} -O3 -std=c2x", c_exe),
            ("1duo/microgpts Rust", "rustc --edition=2021 -O", rust_exe)]


PORTS = {  # flag -> (what to point it at, builder)
    "microgpt_cpp": ("a checkout of Charbel199/microgpt.cpp", build_microgpt_cpp),
    "rust_microgpt": ("a checkout of mplekh/rust-microgpt", build_rust_microgpt),
    "microgpts": ("a checkout of 1duo/microgpts", build_microgpts),
}


def run_port(exe: str, workdir: str) -> tuple[float, float | None]:
    """(wall seconds, the last loss it printed) of one whole run in workdir (which holds input.txt)."""
    t = time.perf_counter()
    done = subprocess.run([exe], cwd=workdir, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise UsageError(f"{exe} failed (exit {done.returncode}): {done.stderr.strip()[:200]}")
    losses = re.findall(r"loss\s*:?\s*([0-9]+\.[0-9]+)", done.stdout + done.stderr)
    return seconds, float(losses[-1]) if losses else None


def our_row(engine: str, dtype: str, steps: int) -> dict:
    """A bench row of ours at batch 1: one thread for the compiled engine (numpy has no --threads)."""
    return dict(engine=engine, batch=1, steps=steps, dtype=dtype, threads=1 if engine == "compiled" else None)


def run_ours(engine: str, dtype: str, data: str) -> tuple[float, float]:
    dts, loss, _ = measure(ModelConfig(), our_row(engine, dtype, STEPS), data)
    return sum(dts), loss


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, (what, _) in PORTS.items():
        p.add_argument("--" + flag.replace("_", "-"), metavar="DIR", help=what)
    p.add_argument("--data", default=EMBEDDED_NAMES, help="the documents (default: the embedded names)")
    p.add_argument("--rounds", type=int, default=5, help="rounds, the implementations taking turns (default 5)")
    args = p.parse_args(argv)
    try:
        return bench(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def bench(args) -> int:
    chosen = {flag: getattr(args, flag) for flag in PORTS if getattr(args, flag)}
    if not chosen:
        raise UsageError("point at least one port's checkout: " + ", ".join("--" + f.replace("_", "-") for f in PORTS))
    if args.rounds <= 0:
        raise UsageError(f"--rounds must be a positive integer (got {args.rounds})")
    for flag, path in chosen.items():
        if not os.path.isdir(path):
            raise UsageError(f"--{flag.replace('_', '-')} {path}: not a directory; give {PORTS[flag][0]}")
    ours = [("compiled", "float64"), ("compiled", "float32"), ("numpy", "float64")]
    ours = [(e, d) for e, d in ours if engines.is_available(e)]
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(args.data, os.path.join(tmp, "input.txt"))
        ports = []
        for flag, path in chosen.items():
            print(f"building {flag} from {path} ...", file=sys.stderr, flush=True)
            try:
                ports += PORTS[flag][1](os.path.abspath(path), tmp)
            except (subprocess.CalledProcessError, FileNotFoundError) as e:
                detail = getattr(e, "stderr", "") or str(e)
                raise UsageError(f"building {path} failed: {detail.strip()[:300]}") from None
        for engine, dtype in ours:   # compile (or load) the engines before any timing
            measure(ModelConfig(), our_row(engine, dtype, 2), args.data)
        times = {name: [] for name in [p[0] for p in ports] + [f"microgpt {e} {d}" for e, d in ours]}
        losses = {}
        for round_ in range(args.rounds):
            for name, _, exe in ports:
                seconds, losses[name] = run_port(exe, tmp)
                times[name].append(seconds)
                print(f"round {round_ + 1}/{args.rounds}: {name}: {seconds:.3f} s", file=sys.stderr, flush=True)
            for engine, dtype in ours:
                name = f"microgpt {engine} {dtype}"
                seconds, losses[name] = run_ours(engine, dtype, args.data)
                times[name].append(seconds)
                print(f"round {round_ + 1}/{args.rounds}: {name}: {seconds:.3f} s", file=sys.stderr, flush=True)
    builds = {name: how for name, how, _ in ports}
    print(table(times, losses, builds))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    return 0


def table(times, losses, builds) -> str:
    median = {name: statistics.median(ts) for name, ts in times.items()}
    refs = [name for name in ("microgpt compiled float64", "microgpt numpy float64") if name in median]
    head = ("implementation", "built with", f"s / {STEPS} steps", "µs/step", *[f"x {r.split()[1]}" for r in refs],
            "last loss")
    lines = [head]
    for name, s in sorted(median.items(), key=lambda kv: kv[1]):
        loss = losses.get(name)
        lines.append((name, builds.get(name, "-"), f"{s:.3f}", f"{s / STEPS * 1e6:.1f}",
                      *[f"{s / median[r]:.2f}" for r in refs], f"{loss:.4f}" if loss is not None else "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    note = ("x compiled / x numpy: this row's time over that engine's (above 1: slower than our engine)")
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines) + "\n" + note


if __name__ == "__main__":
    sys.exit(main())
