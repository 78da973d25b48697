#!/usr/bin/env bash
# Install everything the test suite needs, then run it: `bash scripts/test.sh [pytest args]`.
# NumPy, PyTorch (CPU build, pinned: a plain `torch` would pull a multi-GB CUDA build), matplotlib
# and pytest from PyPI; Debian's chromium for the browser tests of the HTML report and the web page (when
# run as root with apt-get available; otherwise those tests skip and say why); Pyodide for the page by npm.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
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
python -m pytest -q "$@"
