"""Progress display for training: one plain log line per step (the format atomic.py prints).

    step    1 / 1000 | loss 3.3660
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

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        pass


def make_progress(total_steps: int, log_every: int = 1):
    return PlainProgress(total_steps, log_every)
