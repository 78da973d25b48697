"""Session fixtures shared by tests/test_vectors.py and tests/test_conform.py (registered by conftest.py):
the vectors of the `block8` config, written once, and a dump of atomic.py itself run on that config.

    block8_vectors        the folder of `microgpt vectors --configs block8` (conform adds configs into it)
    atomic_block8_dump    tests/atomic_dump.py's JSON dump of atomic.py, run as a program on block8
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, run_cli

ATOMIC = os.path.join(REPO, "microgpt", "atomic.py")
DUMPER = os.path.join(REPO, "tests", "atomic_dump.py")


def setting(config_dir) -> list[tuple[str, str]]:
    """The edits that set atomic.py to a config of the vectors: its model shape, seed and steps."""
    with open(os.path.join(config_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    m, t = cfg["model"], cfg["train"]
    return [("n_layer, n_embd, block_size, n_head = 1, 16, 16, 4",
             f"n_layer, n_embd, block_size, n_head = {m['n_layer']}, {m['n_embd']}, {m['block_size']}, {m['n_head']}"),
            ("num_steps = 1000", f"num_steps = {t['steps']}"), ("random.seed(42)", f"random.seed({t['seed']})")]


def edited_atomic(path, substitutions) -> str:
    """A copy of atomic.py with each (old, new) replaced; each `old` must occur exactly once."""
    with open(ATOMIC, encoding="utf-8") as f:
        text = f.read()
    for old, new in substitutions:
        assert text.count(old) == 1, f"atomic.py no longer has exactly one {old!r}"
        text = text.replace(old, new)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def atomic_dump(vectors_dir, folder, substitutions=(), steps=None, config="block8") -> str:
    """tests/atomic_dump.py on a copy of atomic.py set to `config` and edited by `substitutions`, in
    `folder` with the config's data as input.txt; with `steps`, stopped after that many."""
    config_dir = os.path.join(vectors_dir, config)
    program = edited_atomic(folder / "atomic_copy.py", setting(config_dir) + list(substitutions))
    data = os.path.join(config_dir, "input.txt")
    shutil.copy(data if os.path.exists(data) else os.path.join(REPO, "microgpt", "data", "names.txt"),
                folder / "input.txt")
    cmd = [sys.executable, DUMPER, program, str(folder / "dump.json"), config_dir]
    out = subprocess.run(cmd + ([str(steps)] if steps else []), cwd=folder, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr
    return str(folder / "dump.json")


@pytest.fixture(scope="session")
def block8_vectors(tmp_path_factory):
    out = tmp_path_factory.mktemp("vectors")
    result = run_cli("vectors", "--out", out, "--configs", "block8")
    assert result.returncode == 0, result.stderr
    return str(out)


@pytest.fixture(scope="session")
def atomic_block8_dump(block8_vectors, tmp_path_factory):
    return atomic_dump(block8_vectors, tmp_path_factory.mktemp("atomic"))
