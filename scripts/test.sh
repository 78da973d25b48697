#!/usr/bin/env bash
# The tests, in a virtual environment of their own: `bash scripts/test.sh [--fast] [pytest args]`.
#
# Uses the active virtual environment if there is one ($VIRTUAL_ENV), else makes ./.venv (once, with
# `python3 -m venv`; PYTHON=... picks another interpreter) and uses it, so nothing is installed into the
# system's Python. Into it: requirements-test.txt (NumPy, PyTorch pinned to the CPU build: a plain
# `torch` would pull a multi-GB CUDA build; matplotlib, tqdm, tensorboardX, pytest, pytest-xdist). As root with
# apt-get, also Debian's chromium for the browser tests of the HTML report and the web page (else they
# skip, saying why); by npm, the pinned Pyodide for the page (web/package-lock.json). --fast leaves out the tests marked slow (`-m "not slow"`): the edit-test loop, under 2 minutes;
# CI (.ci/run) runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
marks=()
if [ "${1:-}" = "--fast" ]; then
  marks=(-m "not slow")
  shift
fi
if [ -n "${VIRTUAL_ENV:-}" ]; then
  python="$VIRTUAL_ENV/bin/python"
else
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  python=.venv/bin/python
fi
"$python" -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will skip" >&2
fi
if command -v npm >/dev/null 2>&1; then  # the pinned Pyodide for the browser page's tests (web/package-lock.json)
  npm ci --prefix web --no-audit --no-fund --silent \
    || echo "warning: npm ci --prefix web failed; tests/test_web.py will skip" >&2
else
  echo "warning: npm not found; tests/test_web.py will skip (install Node.js, then: npm ci --prefix web)" >&2
fi
echo "testing with $("$python" -c 'import sys; print(sys.prefix)')" >&2
# One pytest-xdist worker per core, the work spread as tests/xdist_plan.py says; MICROGPT_TEST_WORKERS=0
# runs every test in this one process instead.
"$python" -m pytest -q -n "${MICROGPT_TEST_WORKERS:-auto}" ${marks[@]+"${marks[@]}"} "$@"
