"""The C port (ports/c/microgpt.c, written from SPEC.md) against the reference run and against atomic.py.

The port reproduces Python's random stream itself (MT19937, gauss, shuffle, choices), so nothing is
fed to it: it reads input.txt and must print what `python microgpt/atomic.py` prints, byte for byte.

- On makemore's names (../shared): the header and all 1000 losses against the reference JSON.
  atomic.py's 20 samples on names cost a 2-minute run, so by default they are checked on small files
  instead; MICROGPT_SLOW_TESTS=1 adds the comparison of the complete names run.
- On a small file (short lines, non-ASCII, CRLF and lone CR line ends, Unicode whitespace, blank
  lines, one line cut at the context), the complete output of both programs over 1000 steps, at
  seed 7: atomic.py's random.seed(42) redirected, as tests/test_reference.py does, to check the
  port's -s.
"""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import NAMES, REPO

SOURCE = os.path.join(REPO, "ports", "c", "microgpt.c")
ATOMIC = os.path.join(REPO, "microgpt", "atomic.py")
UTF8_ENV = dict(os.environ, PYTHONUTF8="1", PYTHONIOENCODING="utf-8")


def c_compiler():
    return shutil.which("cc") or shutil.which("gcc")


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    cc = c_compiler()
    if cc is None:
        pytest.skip("no C compiler: neither `cc` nor `gcc` is on PATH")
    exe = tmp_path_factory.mktemp("cport") / "microgpt"
    # The build command SPEC.md and the port's header give.
    out = subprocess.run([cc, "-O2", "-o", str(exe), SOURCE, "-lm"], capture_output=True, text=True)
    assert out.returncode == 0, f"build failed:\n{out.stderr}"
    return str(exe)


def run_port(binary, cwd, *args):
    return subprocess.run([binary, *map(str, args)], cwd=cwd, capture_output=True, timeout=120)


def run_atomic(cwd, seed=None):
    """atomic.py itself on cwd/input.txt; with `seed`, its random.seed(42) call is redirected to it."""
    if seed is None:
        cmd = [sys.executable, ATOMIC]
    else:
        code = ("import random, runpy\n"
                "seed = random.seed\n"
                f"random.seed = lambda _ignored: seed({seed})\n"
                f"runpy.run_path({ATOMIC!r}, run_name='__main__')\n")
        cmd = [sys.executable, "-c", code]
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, env=UTF8_ENV, timeout=600)
    assert out.returncode == 0, out.stderr.decode("utf-8", "replace")
    return out.stdout


def test_builds_as_c99(tmp_path):
    """Strict C99 and libc only: no compiler extensions the port depends on."""
    cc = c_compiler()
    if cc is None:
        pytest.skip("no C compiler: neither `cc` nor `gcc` is on PATH")
    out = subprocess.run([cc, "-std=c99", "-pedantic-errors", "-O2", "-o", str(tmp_path / "m"), SOURCE, "-lm"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_names_matches_reference_run(binary, reference, tmp_path):
    shutil.copy(NAMES, tmp_path / "input.txt")
    out = run_port(binary, tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode("utf-8").splitlines()
    assert lines[:3] == [f"num docs: {reference['num_docs']}", f"vocab size: {reference['vocab_size']}",
                         f"num params: {reference['num_params']}"]
    want = reference["printed_losses_4dp"]
    assert len(want) == 1000
    expected_steps = [f"step {i + 1:4d} / 1000 | loss {loss:.4f}" for i, loss in enumerate(want)]
    got_steps = lines[3:1003]
    mismatches = [(i + 1, g, w) for i, (g, w) in enumerate(zip(got_steps, expected_steps)) if g != w]
    assert not mismatches, f"steps differing from the reference: {mismatches[:5]}"
    assert len(got_steps) == 1000
    assert lines[1003] == "--- samples ---"
    samples = lines[1004:]
    assert [s.split(":")[0] for s in samples] == [f"sample {i:2d}" for i in range(1, 21)]
    assert out.stderr == b""


@pytest.mark.skipif(not os.environ.get("MICROGPT_SLOW_TESTS"),
                    reason="runs atomic.py on names.txt for about 2 minutes; set MICROGPT_SLOW_TESTS=1")
@pytest.mark.slow
def test_names_full_output_equals_atomic(binary, names_path, tmp_path):
    """The reference run itself: atomic.py's complete output on names, samples included."""
    shutil.copy(names_path, tmp_path / "input.txt")
    want = run_atomic(tmp_path)
    got = run_port(binary, tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.stdout == want


# One small file with what a port's reader and tokenizer can get wrong, kept short so that atomic.py's
# 1000 steps take half a minute: code points of 1, 2, 3 and 4 UTF-8 bytes; CRLF and lone CR line
# ends; lines padded with Unicode whitespace (NBSP, U+3000, NEL, U+2028: stripped, and not line
# breaks); whitespace inside a line (a space, a tab, U+001C) kept; blank and whitespace-only lines
# dropped; a BOM, which is not whitespace; a line longer than the context, which both programs cut.
SMALL_TEXT = ("\ufeffé\r\nñ\r\n日本\r🙂\n\n  \u00a0\nß\tø\r\n\u3000Æ \nç\u2028\në\x85\n"
              "α\x1cβ\n \t \nÿ\r\nĳ\n€\n\r\nй\nש\n"
              "A\nC\n a\nb \nd\na b\nB\n-\n" + "q" * 20 + "\n")


@pytest.mark.slow
def test_small_file_equals_atomic_with_seed(binary, tmp_path):
    """The small file at seed 7 (the port's -s), 1000 steps: the complete outputs are identical."""
    (tmp_path / "input.txt").write_bytes(SMALL_TEXT.encode("utf-8"))
    want = run_atomic(tmp_path, seed=7)
    got = run_port(binary, tmp_path, "-s", 7)
    assert got.returncode == 0, got.stderr
    assert got.stdout.decode("utf-8").splitlines() == want.decode("utf-8").splitlines()
    assert got.stdout == want


def test_steps_flag(binary, reference, tmp_path):
    """-n N: N steps with the learning rate decaying over N; step 1 precedes any update."""
    shutil.copy(NAMES, tmp_path / "input.txt")
    out = run_port(binary, tmp_path, "-n", 3)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode("utf-8").splitlines()
    assert lines[3] == f"step    1 /    3 | loss {reference['printed_losses_4dp'][0]:.4f}"
    assert [line[:15] for line in lines[4:6]] == ["step    2 /    ", "step    3 /    "]
    assert lines[6] == "--- samples ---" and len(lines) == 27


def test_missing_input_is_an_error(binary, tmp_path):
    out = run_port(binary, tmp_path)
    assert out.returncode != 0
    assert out.stdout == b""
    assert b"input.txt" in out.stderr


def test_invalid_utf8_is_an_error(binary, tmp_path):
    (tmp_path / "input.txt").write_bytes(b"abc\nd\xffe\n")
    out = run_port(binary, tmp_path)
    assert out.returncode != 0
    assert out.stdout == b""
    assert b"UTF-8" in out.stderr


def test_bad_flags_are_errors(binary, tmp_path):
    (tmp_path / "input.txt").write_text("ab\n")
    for args in (["-n", "0"], ["-n", "x"], ["-s", "4x2"], ["-q"]):
        out = run_port(binary, tmp_path, *args)
        assert out.returncode == 2, args
        assert out.stdout == b"", args
