"""The training loop, the same for every engine: a Run (run.py) in, steps, checkpoints and samples out.

    run = Run.fresh(ModelConfig(), TrainConfig(), data_path=None)    # or Run.load(out, with_data=True)
    summary = train(run, out_dir)

`microgpt train` (cli.py) builds the Run from its flags and calls this. With the defaults it is
atomic.py's run: seed 42, one document per step, Adam with linear decay, then 20 samples at
temperature 0.5. It writes DIR/checkpoint.safetensors (at --save-every steps,
at the end, and on a stop signal) and DIR/metrics.jsonl: {"step", "loss", "lr", "dt"} for every step and
{"step", "val_loss"} for every evaluation. `--resume` continues from the checkpoint and ends with
the same weights and losses as a run that was never interrupted.

Ctrl-C, SIGTERM and SIGHUP stop the run after the step in flight, with a checkpoint; a second one
stops at once (not under torchrun), except during a save, which always completes. The command then
exits with 128 + the signal's number.

Under torchrun (`torchrun --nproc_per_node=N -m microgpt train --engine torch ...`) every process
runs this loop on its own share of each step's batch; only rank 0 prints, writes metrics.jsonl and
saves checkpoints.
"""

import contextlib
import json
import math
import os
import signal
import sys
import time

from microgpt import checkpoint, durable
from microgpt.config import TrainConfig, lr_at
from microgpt.data import DocumentData
from microgpt.engines import base
from microgpt.errors import UsageError, WriteFailed
from microgpt.metrics import read_metrics
from microgpt.explog import TensorBoardLog
from microgpt.progress import make_progress
from microgpt.run import Run
from microgpt.sample import print_samples


def evaluate(engine, data: DocumentData, batch_size: int) -> float:
    """Mean loss over every predicted token of the held-out documents."""
    total, count = 0.0, 0
    for seqs in data.val_batches(max(batch_size, 64)):
        n = sum(len(s) - 1 for s in seqs)
        total += float(engine.eval_loss(seqs)) * n
        count += n
    return total / count


def open_metrics(out_dir: str, start_step: int):
    """metrics.jsonl for appending; on resume, drop lines past the checkpoint (they will be redone)
    and any line a killed run left torn (metrics.py warns once)."""
    path = os.path.join(out_dir, "metrics.jsonl")
    os.makedirs(out_dir, exist_ok=True)
    if start_step == 0 or not os.path.exists(path):
        return open(path, "w", encoding="utf-8")
    rows = [row for row in read_metrics(path) if row["step"] <= start_step]
    last = max((row["step"] for row in rows if "loss" in row), default=0)
    if last < start_step:   # a checkpoint copied in from another run, or a log cut short by hand
        print(f"warning: {path} ends at step {last}, but the checkpoint is at step {start_step}: the log lacks steps "
              f"{last + 1} to {start_step} (is the checkpoint from another run?)", file=sys.stderr)
    kept = "".join(json.dumps(row) + "\n" for row in rows)
    durable.replace_file(path, lambda f: f.write(kept.encode("utf-8")))
    return open(path, "a", encoding="utf-8")


class Stopped(KeyboardInterrupt):
    """A second stop signal during a step: stop at once, without a save (the last checkpoint stays)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


PIPE_CLOSED = 13   # SIGPIPE's number: a run stopped as its stdout closed exits 128 + 13, as a shell reports a
#                   process that a closed pipe killed

# Ctrl-C, `kill`/Slurm pre-emption/`docker stop`, a closed terminal (no SIGHUP on Windows)
STOP_SIGNALS = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]


class _Interrupt:
    """A stop signal sets `signum`; the loop saves a checkpoint after the step in flight and stops
    cleanly. A second one stops at once, unless a save is under way: that save always completes.
    Under torchrun (at_once=False) a second one is ignored: a worker gets each Ctrl-C or scancel
    twice, from the terminal or Slurm and again from torchrun, which kills it itself 30 s later."""

    def __init__(self, at_once: bool = True):
        self.signum, self.saving, self.at_once, self.previous = None, False, at_once, {}

    def __enter__(self):
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is signal.SIG_IGN:  # e.g. SIGHUP under nohup: keep ignoring it
                continue
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and not self.saving and self.at_once:
            raise Stopped(signum)
        self.signum = self.signum or signum

    @contextlib.contextmanager
    def save_in_progress(self):
        self.saving = True
        try:
            yield
        finally:
            self.saving = False

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)


def extension_note(saved: TrainConfig, tcfg: TrainConfig, step: int) -> str | None:
    """What a resume with another --steps changes, in words; None if --steps is the saved one."""
    if tcfg.steps == saved.steps or step == 0:
        return None
    change = "extends" if tcfg.steps > saved.steps else "shortens"
    return (f"note: --steps {tcfg.steps} {change} the run from {saved.steps} steps: the lr schedule is stretched to "
            f"end at step {tcfg.steps}, so the lr goes from {lr_at(step - 1, saved):.4g} (step {step}) to "
            f"{lr_at(step, tcfg):.4g} (step {step + 1}); the result is therefore not an uninterrupted {tcfg.steps}-step "
            f"run's, which would have followed the stretched schedule from step 1 (lr {lr_at(step - 1, tcfg):.4g} "
            f"at step {step})")


def write_failed(e: OSError, what: str, out_dir: str, saved_step: int, run) -> WriteFailed:
    """The one-line error for a write that failed mid-run (a full disk, a folder removed): what is safe, and
    how to go on (cli.py prints an OSError's strerror)."""
    if saved_step:
        then = (f"the checkpoint there (step {saved_step}) is whole; once {out_dir} can be written again, continue "
                f"with: {run.resume_command(out_dir)}")
    else:
        then = f"no checkpoint was saved yet; once {out_dir} can be written again, start the run again"
    return WriteFailed(e.errno, f"could not write {what} in {out_dir} at step {run.step} ({e.strerror or e}); {then}")


def train(run: Run, out_dir: str, log_every: int = 1, stop_after: int | None = None, log: str | None = None,
          show_note: bool = True) -> dict:
    """Train `run` from its step to train.steps, then sample. Returns a summary: final loss, val loss,
    samples, status, and the engine's CPU threads (None for an engine that does not choose them).
    `stop_after` stops (with a checkpoint) once that many steps are done, as Ctrl-C would.
    `log="tensorboard"` also writes the metrics as TensorBoard scalars (explog.py). show_note=False leaves
    out the engine's note (its thread count) on stderr."""
    tcfg, data = run.train, run.data
    if data is None:
        raise UsageError("the run's data was not read; load it with Run.load(out_dir, with_data=True)")
    rank, world = base.rank_and_world()
    if run.data_info.get("world", 1) != world:  # each process's share of a step depends on it
        raise UsageError(f"the checkpoint was trained by {run.data_info.get('world', 1)} processes and this run "
                         f"has {world}; resume with the same number (torchrun --nproc_per_node)")
    engine = run.engine(with_state=run.step > 0)
    if engine.note and show_note:  # on stderr: stdout keeps atomic.py's format (ports and `microgpt conform` read it)
        print(engine.note, file=sys.stderr, flush=True)
    if run.step and rank == 0:
        print(f"resuming from step {run.step} of {tcfg.steps}", flush=True)

    saved_step = run.step   # the step of the checkpoint in out_dir (0: none yet), for a write that fails

    @contextlib.contextmanager
    def writing(what: str):
        """An OSError in the block (a full disk, a folder removed) as write_failed's one line."""
        try:
            yield
        except OSError as e:
            raise write_failed(e, what, out_dir, saved_step, run) from None

    def save() -> None:
        nonlocal saved_step
        if rank == 0:
            with writing("metrics.jsonl"):
                metrics.flush()
                os.fsync(metrics.fileno())
            run.params, run.state = engine.weights(), engine.state()
            with writing("the checkpoint"):   # durable.py leaves the last checkpoint whole
                run.save(out_dir)
            saved_step = run.step

    with writing("metrics.jsonl"):
        metrics = open_metrics(out_dir, run.step) if rank == 0 else open(os.devnull, "w")
    board = TensorBoardLog(out_dir, run.step) if log == "tensorboard" and rank == 0 else None

    def record(entry: dict) -> None:
        metrics.write(json.dumps(entry) + "\n")
        if board:
            board.write(entry)

    progress = make_progress(tcfg.steps, log_every)
    summary = {"status": "done", "loss": None, "val_loss": None, "samples": [], "out": out_dir, "signal": None,
               "threads": engine.threads}
    stdout_closed = False   # stdout's reader went away (`train | head`)

    def show(report, *args) -> None:
        """A progress line. If stdout's reader is gone, stdout becomes /dev/null and the run stops after this
        step as at a signal, its checkpoint saved (Python would otherwise end with the run unsaved)."""
        nonlocal stdout_closed
        try:
            report(*args)
        except BrokenPipeError:
            stdout_closed = True
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):   # a stdout with no file descriptor (a test's capture)
                pass
    try:
        with _Interrupt(at_once=world == 1) as interrupt:
            for step in range(run.step, tcfg.steps):
                seqs = data.batch(step, tcfg.batch_size * tcfg.grad_accum, rank, world)
                lr = lr_at(step, tcfg)
                t0 = time.perf_counter()
                loss = base.checked_train_step(engine, seqs, step, lr)
                dt = time.perf_counter() - t0
                run.step = done = step + 1
                if not math.isfinite(loss):
                    raise UsageError(f"the loss became {loss} at step {done}; lower --lr (now {tcfg.lr})")
                record({"step": done, "loss": loss, "lr": lr, "dt": dt})
                show(progress.step, done, loss, lr, dt, sum(len(s) - 1 for s in seqs) * world)
                summary["loss"] = loss
                if data.val and (done % tcfg.eval_every == 0 or done == tcfg.steps):
                    summary["val_loss"] = evaluate(engine, data, tcfg.batch_size)
                    record({"step": done, "val_loss": summary["val_loss"]})
                    show(progress.val, done, summary["val_loss"])
                try:   # (not `with writing(...)`: a context manager costs a microsecond, every step)
                    metrics.flush()
                except OSError as e:
                    raise write_failed(e, "metrics.jsonl", out_dir, saved_step, run) from None
                # under torchrun a signal may reach one process only, and a closed stdout only rank 0 (the others
                # print nowhere): all stop at the same step. A closed stdout is agreed on as PIPE_CLOSED, SIGPIPE's
                # number, which no process here gets as a signal (Python ignores SIGPIPE)
                signum = interrupt.signum
                if world > 1:
                    agreed = engine.largest_over_processes(signum or (PIPE_CLOSED if stdout_closed else 0))
                    signum, stdout_closed = (None, True) if agreed == PIPE_CLOSED else (agreed, stdout_closed)
                stopping = bool(signum) or done == stop_after or stdout_closed
                if stopping or done == tcfg.steps or done % tcfg.save_every == 0:
                    with interrupt.save_in_progress():
                        save()
                    signum = signum or (interrupt.signum if world == 1 else None)  # one came during the save
                    stopping = stopping or bool(signum)
                if stopping and (done < tcfg.steps or signum or stdout_closed):
                    progress.close()
                    why = f" by {signal.Signals(signum).name}" if signum else \
                        " as stdout was closed" if stdout_closed else ""
                    gone = stdout_closed and rank == 0   # (the other ranks' stdout is /dev/null: they print nowhere)
                    print(f"stopped{why} after step {done}: checkpoint saved in {out_dir}; continue with: "
                          f"{run.resume_command(out_dir)}", file=sys.stderr if gone else sys.stdout, flush=True)
                    summary["status"], summary["signal"] = ("interrupted", signum) if signum else \
                        ("stopped", PIPE_CLOSED if stdout_closed else None)
                    engine.leave_processes()
                    return summary
    finally:
        metrics.close()
        if board:
            board.close()
    progress.close()

    if tcfg.samples and rank == 0:
        print("--- samples ---")
        summary["samples"] = print_samples(engine, run.tokenizer, run.model.block_size, run.rng,
                                           tcfg.samples, tcfg.temperature, stream=tcfg.data_mode == "stream")
    if rank == 0:
        print(f"checkpoint: {checkpoint.path_in(out_dir)}", flush=True)
    engine.leave_processes()   # under torchrun: all together, once rank 0 has sampled and saved
    return summary
