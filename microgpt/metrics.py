"""DIR/metrics.jsonl: one JSON object per line, {"step", "loss", "lr", "dt"} for each training step and
{"step", "val_loss"} for each evaluation. The training loop (train.py) writes it; this reads it.

    rows = read_metrics("out/metrics.jsonl")    # [] when the file is absent

A run killed mid-write, or two writers before the lock (lock.py) existed, can leave a torn or garbage
line. Reading skips every such line, and every line that lacks a key of its kind (ROWS), and says so
once, on stderr, so neither `--resume` nor `report` is blocked by it.
"""

import json
import os
import sys

from microgpt.errors import UsageError

ROWS = ({"step", "loss", "lr"}, {"step", "val_loss"})  # the keys a training row and an evaluation row need


def read_metrics(path: str, stream=None) -> list[dict]:
    """Every readable row of the file, in order; one warning for all the lines skipped."""
    if not os.path.lexists(path):
        return []
    check_regular(path)
    rows, skipped = [], 0
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                row = None
            if is_row(row):
                rows.append(row)
            else:
                skipped += 1
    if skipped:
        print(f"warning: skipped {skipped} line{'s' * (skipped > 1)} of {path} that {'are' if skipped > 1 else 'is'} "
              f"not a metrics row (torn by a killed run, or written by something else)", file=stream or sys.stderr)
    return rows


def check_regular(path: str) -> None:
    """A metrics.jsonl that is there must be a regular file: a FIFO would block its read, /dev/zero never end it,
    and a link to nowhere would be written through."""
    if os.path.lexists(path) and not os.path.isfile(path):
        raise UsageError(f"{path} is not a regular file (a folder, pipe, device or broken link), so it is no run's "
                         f"metrics; move it aside and run again")


def is_row(row) -> bool:
    """Whether a parsed line is a row of ours: a step number and numbers, with the keys of its kind (ROWS)."""
    return isinstance(row, dict) and isinstance(row.get("step"), int) and \
        all(isinstance(v, (int, float)) for v in row.values()) and any(k <= row.keys() for k in ROWS)


def is_a_runs_log(path: str) -> bool:
    """Whether the file at `path` is a training run's metrics (empty, or a row of ours first): what a fresh
    run may replace when no checkpoint stands beside it (a run killed before its first save). Anything else
    there (another file of that name, a folder) is the user's."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        first = f.readline(1 << 16)
    try:
        return not first.strip() or is_row(json.loads(first.decode("utf-8")))
    except (UnicodeDecodeError, ValueError):
        return False
