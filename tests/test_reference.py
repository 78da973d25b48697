"""The atomic file and the package's scalar engine against the reference run, and against each other.

The reference figures (../shared/reference) are what the original microgpt printed with seed 42 on
makemore's names.txt; a faithful implementation prints the same 1000 losses to 4 decimals.
"""

import os
import random
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, parse_run, run_cli

ATOMIC = os.path.join(REPO, "microgpt", "atomic.py")
pytestmark = pytest.mark.slow  # scripts/test.sh --fast leaves this module out


@pytest.fixture(scope="module")
def atomic_on_names(tmp_path_factory):
    from conftest import NAMES
    if not os.path.exists(NAMES):
        pytest.skip(f"reference data not found at {NAMES}")
    d = tmp_path_factory.mktemp("atomic")
    shutil.copy(NAMES, d / "input.txt")  # read as input.txt, as the reference run did
    out = subprocess.run([sys.executable, ATOMIC], cwd=d, capture_output=True, text=True, check=True)
    return parse_run(out.stdout)


@pytest.fixture(scope="module")
def package_on_names(tmp_path_factory):
    from conftest import NAMES
    if not os.path.exists(NAMES):
        pytest.skip(f"reference data not found at {NAMES}")
    d = tmp_path_factory.mktemp("pkg")
    out = run_cli("train", "--engine", "scalar", "--data", NAMES, "--seed", 42, "--steps", 1000, "--out", d / "run")
    assert out.returncode == 0, out.stderr
    return parse_run(out.stdout)


def check_against_reference(run, reference):
    assert run["num_docs"] == reference["num_docs"]
    assert run["vocab_size"] == reference["vocab_size"]
    assert run["num_params"] == reference["num_params"]
    assert len(run["losses"]) == 1000
    mismatches = [(i + 1, got, want) for i, (got, want) in
                  enumerate(zip(run["losses"], reference["printed_losses_4dp"])) if f"{got:.4f}" != f"{want:.4f}"]
    assert not mismatches, f"steps differing from the reference: {mismatches[:5]}"


def test_atomic_reproduces_reference(atomic_on_names, reference):
    check_against_reference(atomic_on_names, reference)
    assert len(atomic_on_names["samples"]) == 20


def test_scalar_engine_reproduces_reference(package_on_names, reference):
    check_against_reference(package_on_names, reference)


def test_package_samples_equal_atomic(atomic_on_names, package_on_names):
    assert package_on_names["samples"] == atomic_on_names["samples"]


def run_atomic_with_seed(input_text: str, seed: int, cwd) -> dict:
    """atomic.py's own main(), on another input.txt and with random.seed(42) redirected to `seed`."""
    (cwd / "input.txt").write_text(input_text, encoding="utf-8")
    code = ("import random, runpy, sys\n"
            "seed = random.seed\n"
            f"random.seed = lambda _ignored: seed({seed})\n"
            f"runpy.run_path({ATOMIC!r}, run_name='__main__')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return parse_run(out.stdout)


def test_package_equals_atomic_on_other_file_and_seed(tmp_path):
    """Another file (short documents, mixed case, spaces, non-ASCII, one longer than the block) and seed 7:
    every one of the 1000 steps prints the same loss, and the samples are the same."""
    rng = random.Random(3)
    alphabet = "abAB é-"
    docs = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))).strip() or "a" for _ in range(40)]
    docs.append("x" * 20)  # longer than the block: both cut it the same way
    text = "\n\n".join(docs) + "\n  \n"
    atomic = run_atomic_with_seed(text, 7, tmp_path)
    data = tmp_path / "docs.txt"
    data.write_text(text, encoding="utf-8")
    out = run_cli("train", "--data", data, "--seed", 7, "--steps", 1000, "--out", tmp_path / "run")
    assert out.returncode == 0, out.stderr
    pkg = parse_run(out.stdout)
    assert (pkg["num_docs"], pkg["vocab_size"], pkg["num_params"]) == \
           (atomic["num_docs"], atomic["vocab_size"], atomic["num_params"])
    assert pkg["losses"] == atomic["losses"]
    assert pkg["samples"] == atomic["samples"]
    assert "cut to fit" in out.stdout
