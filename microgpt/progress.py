"""Progress display for training: a live bar on a terminal, plain log lines everywhere else.

Plain lines are the format atomic.py prints (tests and scripts parse them):

    step    1 / 1000 | loss 3.3660

On a terminal, with tqdm installed (`pip install 'microgpt[progress]'`), one bar shows the step,
the loss, the latest validation loss, tokens per second and the time left instead.
"""

import sys


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
    """A tqdm bar: step, loss, val loss, tokens/s (of training compute) and the time left."""

    def __init__(self, total_steps: int, log_every: int = 1, stream=None):
        from tqdm import tqdm  # optional: make_progress falls back to plain lines without it
        self.stream = stream or sys.stdout
        self.bar = tqdm(total=total_steps, file=self.stream, dynamic_ncols=True, leave=True, smoothing=0.1,
                        bar_format="step {n_fmt}/{total_fmt} |{bar}| {desc} | {remaining} left")
        self.loss = self.val_loss = None
        self.tokens, self.seconds, self.started = 0, 0.0, False

    def step(self, step: int, loss: float, lr: float, dt: float, tokens: int) -> None:
        if not self.started:  # a resumed run starts past 0: count its rate from here
            self.bar.n = self.bar.last_print_n = self.bar.initial = step - 1
            self.started = True
        self.loss, self.tokens, self.seconds = loss, self.tokens + tokens, self.seconds + dt
        self.bar.set_description_str(self._status(), refresh=False)
        self.bar.update(step - self.bar.n)

    def val(self, step: int, val_loss: float) -> None:
        self.val_loss = val_loss
        self.bar.set_description_str(self._status())

    def _status(self) -> str:
        parts = [f"loss {self.loss:.4f}" if self.loss is not None else "loss -"]
        if self.val_loss is not None:
            parts.append(f"val {self.val_loss:.4f}")
        if self.seconds > 0:
            parts.append(f"{self.tokens / self.seconds:,.0f} tok/s")
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
