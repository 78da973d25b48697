"""Tests of the progress display: plain lines (atomic.py's format) unless the stream is a terminal,
a live tqdm bar on a terminal, and plain lines again when tqdm is not installed.

    python -m pytest -q tests/test_progress.py
"""

import io
import sys

import pytest

from microgpt.progress import LiveProgress, PlainProgress, make_progress


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    progress = make_progress(1000, 1, stream=out)
    assert isinstance(progress, PlainProgress)
    progress.step(1, 3.36601, 0.01, 0.1, 6)
    progress.val(1, 2.5)
    progress.close()
    assert out.getvalue() == "step    1 / 1000 | loss 3.3660\nstep    1 / 1000 | val loss 2.5000\n"


def test_plain_lines_honour_log_every_and_the_last_step():
    out = io.StringIO()
    progress = make_progress(5, 2, stream=out)
    for step in range(1, 6):
        progress.step(step, 1.0, 0.01, 0.1, 6)
    assert [line.split("|")[0].split()[1] for line in out.getvalue().splitlines()] == ["2", "4", "5"]


def test_live_bar_on_a_terminal():
    pytest.importorskip("tqdm", reason="the live bar needs tqdm: pip install tqdm")
    term = FakeTerminal()
    progress = make_progress(10, 1, stream=term)
    assert isinstance(progress, LiveProgress)
    progress.step(1, 3.36601, 0.01, 0.5, 6)
    progress.step(2, 3.1, 0.01, 0.5, 6)
    progress.val(2, 2.75)
    progress.close()
    screen = term.getvalue().split("\r")[-1]  # what the terminal shows last
    assert screen.startswith("step 2/10 |")
    smoothed = (0.9 * 3.36601 + 3.1) / (0.9 + 1)  # the two losses weighted 0.9 : 1
    assert f"smoothed loss {smoothed:.4f}" in screen and "val 2.7500" in screen and "12 tok/s" in screen
    assert "lr 1.00e-02" in screen and " elapsed" in screen and " left" in screen


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_smoothed_loss_is_a_debiased_moving_average():
    pytest.importorskip("tqdm", reason="the live bar needs tqdm: pip install tqdm")
    progress = LiveProgress(100, stream=FakeTerminal())
    losses = [4.0, 3.0, 3.5, 2.0, 2.5, 2.2]
    for step, loss in enumerate(losses, 1):
        progress.step(step, loss, 0.01, 0.1, 6)
    weights = [0.9 ** (len(losses) - 1 - i) for i in range(len(losses))]  # the latest weighs most
    expected = sum(w * x for w, x in zip(weights, losses)) / sum(weights)
    assert progress.loss_sum / progress.loss_weight == pytest.approx(expected, rel=1e-12)


def test_time_left_leaves_evaluations_out():
    """Steps of 2 s with a 30 s evaluation after step 5: the time left stays 2 s a step."""
    pytest.importorskip("tqdm", reason="the live bar needs tqdm: pip install tqdm")
    clock, term = FakeClock(), FakeTerminal()
    progress = LiveProgress(10, stream=term, clock=clock)
    for step in range(1, 8):
        clock.now += 2.0
        progress.step(step, 3.0, 0.01, 1.0, 6)
        if step == 5:
            clock.now += 30.0
            progress.val(step, 2.9)
    assert progress.time_left(7) == pytest.approx(3 * 2.0)
    progress.close()  # draws the last state (tqdm redraws at most every 0.1 s of real time)
    screen = term.getvalue().split("\r")[-1]
    assert "00:06 left" in screen and "00:44 elapsed" in screen  # 7 steps of 2 s and the evaluation


def test_resumed_run_starts_the_bar_where_it_stopped():
    pytest.importorskip("tqdm", reason="the live bar needs tqdm: pip install tqdm")
    term = FakeTerminal()
    progress = make_progress(10, 1, stream=term)
    progress.step(7, 2.0, 0.01, 0.5, 6)
    progress.close()
    assert term.getvalue().split("\r")[-1].startswith("step 7/10 |")


def test_plain_lines_on_a_terminal_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `from tqdm import tqdm` raise ImportError
    term = FakeTerminal()
    progress = make_progress(10, 1, stream=term)
    assert isinstance(progress, PlainProgress)
    progress.step(1, 3.36601, 0.01, 0.1, 6)
    assert term.getvalue() == "step    1 /   10 | loss 3.3660\n"


def test_streams_without_isatty_get_plain_lines():
    class Bare:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    assert isinstance(make_progress(3, stream=Bare()), PlainProgress)
