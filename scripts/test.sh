#!/usr/bin/env bash
# Install everything the test suite needs, then run it: `bash scripts/test.sh [pytest args]`.
# NumPy, PyTorch (CPU build, pinned: a plain `torch` would pull a multi-GB CUDA build), matplotlib
# and pytest from PyPI; Debian's chromium for the browser test of the HTML report (when run as root
# with apt-get available; otherwise that test skips and says why).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will skip" >&2
fi
python -m pytest -q "$@"
