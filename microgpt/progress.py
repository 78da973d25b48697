"""Progress display for training: a live bar on a terminal, plain log lines everywhere else.

Plain lines are the format atomic.py prints (tests and scripts parse them):

    step    1 / 1000 | loss 3.3660

On a terminal, with tqdm installed (`pip install tqdm`, or the extra `progress`), one bar shows the step,
the smoothed loss, the latest validation loss, the lr, tokens per second, the time elapsed and the
time left instead (LiveProgress says how the last two are counted).
"""

import sys
import time


class PlainProgress:
    def __init__(self, total_steps: int, log_every: int = 1, stream=None):
        self.total, self.log_every = total_steps, max(1, log_every)
        self.stream = stream or sys.stdout

    def step(self, step: int, loss: float, lr: float, dt: float, tokens: int) -> None:
        """`step` is 1-based: the number of steps completed."""
        if step % self.log_every == 0 or step == self.total:
            print(f"step {step:4d} / {self.total:4d} | loss {loss:.4f}", file=self.stream, flush=True)

    def val(self, step: int, val_loss: float) -> None:
        print(f"step {step:4d} / {self.total:4d} | val loss {val_loss:.4f}", file=self.stream, flush=True)


    def close(self) -> None:
        pass


class LiveProgress:
    """A tqdm bar: step, the smoothed loss, the latest validation loss, lr, tokens per second (of training
    compute), time elapsed and time left.

    The loss shown is an exponential moving average over about 10 steps (debiased, as Adam's moments
    are), since one batch's loss jumps. The time left is the steps to go times the average wall time of
    a step, counted between step() calls with each evaluation's time (from step() to val()) left out:
    an evaluation neither makes the estimate jump nor counts as a step's cost."""

    SMOOTHING = 0.9  # the weight of the average so far; 1 / (1 - 0.9) = a memory of about 10 steps

    def __init__(self, total_steps: int, log_every: int = 1, stream=None, clock=time.monotonic):
        from tqdm import tqdm  # optional: make_progress falls back to plain lines without it
        self.stream = stream or sys.stdout
        self.bar = tqdm(total=total_steps, file=self.stream, dynamic_ncols=True, leave=True,
                        bar_format="step {n_fmt}/{total_fmt} |{bar}| {desc}")
        self.format_interval = tqdm.format_interval
        self.clock = clock
        self.begun = self.mark = clock()  # mark: the end of the last step (or evaluation)
        self.loss_sum = self.loss_weight = 0.0  # the moving average is loss_sum / loss_weight
        self.val_loss = self.lr = None
        self.tokens, self.seconds, self.started = 0, 0.0, False  # seconds: engine time (dt), for tokens/s
        self.step_seconds, self.timed_steps = 0.0, 0  # wall time of steps, evaluations left out

    def step(self, step: int, loss: float, lr: float, dt: float, tokens: int) -> None:
        now = self.clock()
        if not self.started:  # a resumed run starts past 0: count its rate from here
            self.bar.n = self.bar.last_print_n = self.bar.initial = step - 1
            self.started = True
        self.step_seconds, self.timed_steps, self.mark = self.step_seconds + now - self.mark, self.timed_steps + 1, now
        self.loss_sum = self.SMOOTHING * self.loss_sum + (1 - self.SMOOTHING) * loss
        self.loss_weight = self.SMOOTHING * self.loss_weight + (1 - self.SMOOTHING)
        self.lr, self.tokens, self.seconds = lr, self.tokens + tokens, self.seconds + dt
        self.bar.set_description_str(self._status(step), refresh=False)
        self.bar.update(step - self.bar.n)

    def val(self, step: int, val_loss: float) -> None:
        self.val_loss, self.mark = val_loss, self.clock()  # from the step's end to here: evaluation time
        self.bar.set_description_str(self._status(step))

    def time_left(self, step: int) -> float:
        return (self.bar.total - step) * self.step_seconds / self.timed_steps

    def _status(self, step: int) -> str:
        parts = [f"smoothed loss {self.loss_sum / self.loss_weight:.4f}"]
        if self.val_loss is not None:
            parts.append(f"val {self.val_loss:.4f}")
        parts.append(f"lr {self.lr:.2e}")
        if self.seconds > 0:
            parts.append(f"{self.tokens / self.seconds:,.0f} tok/s")
        parts.append(f"{self.format_interval(self.clock() - self.begun)} elapsed")
        parts.append(f"{self.format_interval(self.time_left(step))} left")
        return ", ".join(parts)

    def close(self) -> None:
        self.bar.close()


def is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def make_progress(total_steps: int, log_every: int = 1, stream=None):
    """A live bar when `stream` (default stdout) is a terminal and tqdm is installed, else plain lines."""
    stream = stream or sys.stdout
    if is_terminal(stream):
        try:
            return LiveProgress(total_steps, log_every, stream)
        except ImportError:
            pass
    return PlainProgress(total_steps, log_every, stream)


class WorkProgress:
    """Progress of a long command other than training (report, check), on stderr so that stdout keeps
    only the command's output: a tqdm bar on a terminal, else one line as each piece of work starts,

        report [3/9] sample 2 of 3

    Call it with what starts next; close() when all is done."""

    def __init__(self, command: str, total: int, stream=None):
        self.command, self.total, self.started = command, max(1, total), 0
        self.stream = stream or sys.stderr
        self.bar = None
        if is_terminal(self.stream):
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=self.total, file=self.stream, leave=False, dynamic_ncols=True,
                                bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} [{elapsed}]")
            except ImportError:
                pass

    def __call__(self, what: str) -> None:
        self.started += 1
        if self.bar is None:
            print(f"{self.command} [{self.started}/{self.total}] {what}", file=self.stream, flush=True)
        else:
            self.bar.n = self.started - 1  # pieces finished
            self.bar.set_description_str(f"{self.command}: {what}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
