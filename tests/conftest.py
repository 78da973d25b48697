"""Shared test fixtures: paths to the repo, the shared reference data, and a CLI runner."""

import json
import os
import signal
import subprocess
import sys

import pytest

import xdist_plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
NAMES = os.path.join(SHARED, "data", "names.txt")
REFERENCE = os.path.join(SHARED, "reference", "reference_run_seed42.json")


@pytest.fixture
def names_path():
    if not os.path.exists(NAMES):
        pytest.skip(f"reference data not found at {NAMES} (the ../shared folder beside the repo)")
    return NAMES


@pytest.fixture
def machine(monkeypatch):
    """A machine with 4 cores, whatever its load is set to (machine(load)); OMP_NUM_THREADS and
    NUMBA_NUM_THREADS unset: what the engines' default thread counts are chosen from."""
    for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)

    def with_load(load):
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    return with_load


@pytest.fixture
def reference():
    if not os.path.exists(REFERENCE) or not os.path.exists(NAMES):
        pytest.skip(f"reference run not found at {REFERENCE} (the ../shared folder beside the repo)")
    with open(REFERENCE) as f:
        return json.load(f)


def pytest_collection_modifyitems(items):
    """In a pytest-xdist worker, the order tests/xdist_plan.py hands the work out in; a plain run keeps
    the files' order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        xdist_plan.order(items)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown, and unused, without it
def pytest_xdist_make_scheduler(config, log):
    """With -n and the default --dist load: tests/xdist_plan.py's grouping; any other --dist is xdist's own."""
    if config.getoption("dist") == "load":
        return xdist_plan.make_scheduler(config, log)
    return None


def default_signals():
    """In a child (preexec_fn): the default action for the stop signals, whatever this process ignores. A
    test run started in the background without job control (`cmd &` in a script, nohup) ignores SIGINT, the
    children inherit that, and train rightly keeps ignoring it."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def run_cli(*args, cwd=None, timeout=600, env=None):
    """Run `python -m microgpt ARGS` in a subprocess, with these environment variables added (env); returns
    the CompletedProcess."""
    env = dict(os.environ, **(env or {}), PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "microgpt", *map(str, args)], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def parse_run(stdout: str) -> dict:
    """Header counts, per-step losses and samples from a training run's printed output."""
    out = {"losses": [], "samples": []}
    for line in stdout.splitlines():
        if line.startswith(("num docs:", "vocab size:", "num params:")):
            key, value = line.split(":")
            out[key.strip().replace(" ", "_")] = int(value)
        elif line.startswith("step ") and "| loss " in line:
            out["losses"].append(float(line.split("| loss ")[1]))
        elif line.startswith("sample "):
            out["samples"].append(line.split(": ", 1)[1] if ": " in line else "")
    return out


from conform_fixtures import atomic_block8_dump, block8_vectors  # noqa: E402,F401  (session fixtures)
