"""One training run, timed, reported as the README's preset table reports it: val loss, wall time,
tokens/s and MFU (model FLOPs utilization).

    python scripts/timed_run.py --out runs/h100 -- --preset shakespeare --data ../shared/data/shakespeare.txt
    python scripts/timed_run.py --out runs/cpu --peak 0.2 -- --preset shakespeare-cpu --data shakespeare.txt

Everything after `--` goes to `microgpt train` unchanged (with --out), in a process of its own, so the
wall time is the whole command's: start-up, reading the data, torch.compile, the evaluations and the
samples. Then it reads the run's metrics.jsonl and checkpoint:

    val loss   the last evaluation's
    steps      the sum and the median of the train_step times (metrics' dt)
    tokens/s   batch size x grad accum x block size over the median step (a stream run's: every step
               predicts that many tokens; a run on lines of documents gets no tokens/s)
    MFU        tokens/s x FLOPs a token / the peak: FLOPs as nanoGPT counts them, 6 N + 12 L T C
               (cost.py), against --peak TFLOP/s, or for a bfloat16 run on a GPU of PEAKS below, its
               dense bfloat16 peak from the vendor's data sheet

Give --out a new directory (or add --force after `--`): the metrics of an earlier run there would mix in.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)
from microgpt.cost import flops_per_step  # noqa: E402
from microgpt.metrics import read_metrics  # noqa: E402
from microgpt.run import Run  # noqa: E402

# dense bfloat16 tensor-core peaks in TFLOP/s (NVIDIA's data sheets), by a part of torch's device name;
# the first that matches wins, so the specific names come before the general ones
PEAKS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0)]


def fail(message: str, code: int = 2):
    print(f"timed_run: {message}", file=sys.stderr)
    sys.exit(code)


def gpu_peak() -> tuple[float, str] | None:
    """The first GPU's dense bfloat16 peak (TFLOP/s) and its name, when torch sees one in PEAKS."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next(((peak, name) for part, peak in PEAKS if part in name), None)


def report(run: Run, out_dir: str, wall: float, peak: float | None, peak_source: str) -> list[str]:
    """The lines that describe `run`, saved in out_dir, which took `wall` seconds."""
    model, tcfg = run.model, run.train
    rows = read_metrics(os.path.join(out_dir, "metrics.jsonl"))
    steps = [row["dt"] for row in rows if "dt" in row]
    vals = [row for row in rows if "val_loss" in row]
    if not steps:
        fail(f"{out_dir}/metrics.jsonl holds no training steps: nothing to report")
    median = statistics.median(steps)
    lines = [f"val loss   {vals[-1]['val_loss']:.4f} (step {vals[-1]['step']})" if vals else
             "val loss   none: the run held nothing out (stream data does; or --val-docs N)",
             f"wall       {wall:.1f} s (the whole command)",
             f"steps      {len(steps)} in {sum(steps):.1f} s of train_step time, median {median * 1e3:.2f} ms a step"]
    if tcfg.data_mode != "stream":
        return lines + ["tokens/s   none: documents of different lengths (stream data: --data-mode stream)"]
    tokens = tcfg.batch_size * tcfg.grad_accum * model.block_size
    flops_per_token = flops_per_step(model, tcfg) / tokens
    lines.append(f"tokens/s   {tokens / median:,.0f} ({tokens} tokens a step / the median step)")
    if peak is None:
        return lines + ["MFU        none: give --peak TFLOPS (this run's device and dtype have no peak in PEAKS)"]
    mfu = tokens / median * flops_per_token / (peak * 1e12)
    return lines + [f"MFU        {100 * mfu:.2f}% ({flops_per_token / 1e6:.4g} MFLOP a token, 6 N + 12 L T C; "
                    f"peak {peak:g} TFLOP/s, {peak_source})"]


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s --out DIR [--peak TFLOPS] -- TRAIN_FLAGS...")
    parser.add_argument("--out", required=True, help="the run's directory (microgpt train --out)")
    parser.add_argument("--peak", type=float, help="the device's peak in TFLOP/s, for MFU (default: PEAKS for "
                                                   "a bfloat16 run on a GPU there)")
    args = parser.parse_args(argv[:cut])
    train_flags = argv[cut + 1:]
    if args.peak is not None and not 0 < args.peak < 1e6:
        fail(f"--peak must be a positive number of TFLOP/s (got {args.peak:g})")
    if "--out" in train_flags or any(flag.startswith("--out=") for flag in train_flags):
        fail("give --out before `--` (it is this script's and train's both)")
    command = [sys.executable, "-m", "microgpt", "train", "--out", args.out, *train_flags]
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    code = subprocess.run(command, env=env).returncode
    wall = time.perf_counter() - start
    if code != 0:
        fail(f"microgpt train exited with {code}: nothing to report", code)
    run = Run.load(args.out, with_state=False)
    peak, source = args.peak, "given by --peak"
    if peak is None and run.train.dtype == "bfloat16" and run.train.device in ("auto", "cuda"):   # auto: cuda first
        found = gpu_peak()
        if found:
            peak, source = found[0], f"dense bfloat16 of {found[1]}"
    print("\n".join(report(run, args.out, wall, peak, source)), flush=True)


if __name__ == "__main__":
    main()
