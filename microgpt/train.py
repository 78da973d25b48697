"""The training loop, the same for every engine: a Run (run.py) in, steps, checkpoints and samples out.

    run = Run.fresh(ModelConfig(), TrainConfig(), data_path=None)    # or Run.load(out, with_data=True)
    summary = train(run, out_dir)

`microgpt train` (cli.py) builds the Run from its flags and calls this. With the defaults it is
atomic.py's run: seed 42, one document per step, Adam with linear decay, then 20 samples at
temperature 0.5. It writes DIR/checkpoint.safetensors (at --save-every steps,
at the end, and on Ctrl-C) and DIR/metrics.jsonl: {"step", "loss", "lr", "dt"} for every step and
{"step", "val_loss"} for every evaluation. `--resume` continues from the checkpoint and ends with
the same weights and losses as a run that was never interrupted.

Under torchrun (`torchrun --nproc_per_node=N -m microgpt train --engine torch ...`) every process
runs this loop on its own share of each step's batch; only rank 0 prints, writes metrics.jsonl and
saves checkpoints.
"""

import json
import math
import os
import signal
import time

from microgpt.config import lr_at
from microgpt.data import DocumentData
from microgpt.errors import UsageError
from microgpt.progress import make_progress
from microgpt.run import Run
from microgpt.sample import print_samples


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes, as torchrun sets them; (0, 1) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def evaluate(engine, data: DocumentData, batch_size: int) -> float:
    """Mean loss over every predicted token of the held-out documents."""
    total, count = 0.0, 0
    for seqs in data.val_batches(max(batch_size, 64)):
        n = sum(len(s) - 1 for s in seqs)
        total += float(engine.eval_loss(seqs)) * n
        count += n
    return total / count


def open_metrics(out_dir: str, start_step: int):
    """metrics.jsonl for appending; on resume, drop lines past the checkpoint (they will be redone)."""
    path = os.path.join(out_dir, "metrics.jsonl")
    os.makedirs(out_dir, exist_ok=True)
    if start_step == 0 or not os.path.exists(path):
        return open(path, "w", encoding="utf-8")
    with open(path, encoding="utf-8") as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= start_step]
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)
    return open(path, "a", encoding="utf-8")


class _Interrupt:
    """Ctrl-C sets a flag; the loop saves a checkpoint after the step in flight and stops cleanly."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self.previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def train(run: Run, out_dir: str, log_every: int = 1, stop_after: int | None = None) -> dict:
    """Train `run` from its step to train.steps, then sample. Returns a summary: final loss, val loss,
    samples, status. `stop_after` stops (with a checkpoint) once that many steps are done, as Ctrl-C would."""
    tcfg, data = run.train, run.data
    if data is None:
        raise UsageError("the run's data was not read; load it with Run.load(out_dir, with_data=True)")
    rank, world = rank_and_world()
    if run.data_info.get("world", 1) != world:  # each process's share of a step depends on it
        raise UsageError(f"the checkpoint was trained by {run.data_info.get('world', 1)} processes and this run "
                         f"has {world}; resume with the same number (torchrun --nproc_per_node)")
    engine = run.engine(with_state=run.step > 0)

    def save() -> None:
        if rank == 0:
            run.params, run.state = engine.weights(), engine.state()
            run.save(out_dir)

    metrics = open_metrics(out_dir, run.step) if rank == 0 else open(os.devnull, "w")
    progress = make_progress(tcfg.steps, log_every)
    summary = {"status": "done", "loss": None, "val_loss": None, "samples": [], "out": out_dir}
    try:
        with _Interrupt() as interrupt:
            for step in range(run.step, tcfg.steps):
                seqs = data.batch(step, tcfg.batch_size * tcfg.grad_accum, rank, world)
                lr = lr_at(step, tcfg)
                t0 = time.perf_counter()
                loss = float(engine.train_step(seqs, step, lr))
                dt = time.perf_counter() - t0
                run.step = done = step + 1
                if not math.isfinite(loss):
                    raise UsageError(f"the loss became {loss} at step {done}; lower --lr (now {tcfg.lr})")
                metrics.write(json.dumps({"step": done, "loss": loss, "lr": lr, "dt": dt}) + "\n")
                progress.step(done, loss, lr, dt, sum(len(s) - 1 for s in seqs) * world)
                summary["loss"] = loss
                if data.val and (done % tcfg.eval_every == 0 or done == tcfg.steps):
                    summary["val_loss"] = evaluate(engine, data, tcfg.batch_size)
                    metrics.write(json.dumps({"step": done, "val_loss": summary["val_loss"]}) + "\n")
                    progress.val(done, summary["val_loss"])
                stopping = interrupt.requested or done == stop_after
                if stopping or done == tcfg.steps or done % tcfg.save_every == 0:
                    metrics.flush()
                    save()
                if stopping and done < tcfg.steps:
                    progress.close()
                    print(f"stopped after step {done}: checkpoint saved in {out_dir}; "
                          f"continue with: microgpt train --out {out_dir} --resume", flush=True)
                    summary["status"] = "interrupted" if interrupt.requested else "stopped"
                    return summary
    finally:
        metrics.close()
    progress.close()

    if tcfg.samples and rank == 0:
        print("--- samples ---")
        summary["samples"] = print_samples(engine, run.tokenizer, run.model.block_size, run.rng,
                                           tcfg.samples, tcfg.temperature, stream=tcfg.data_mode == "stream")
    return summary
