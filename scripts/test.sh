#!/usr/bin/env bash
# Set up a virtual environment (./.venv) with everything the tests need, then run the test suite.
# Usage: bash scripts/test.sh [pytest args...]      (the README's test command; .ci/run calls it too)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DYNSEL_VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# torch first, pinned: the CPU build on disk. An unpinned torch would pull a multi-GB CUDA build.
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q -e '.[test]'

# The HTML report test drives a real headless browser; install Debian's chromium where we can (as root).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the HTML browser test will be skipped" >&2
fi

export TRITON_INTERPRET=1  # Triton kernels run on the CPU in tests; no GPU is needed
exec "$VENV/bin/python" -m pytest "$@"
