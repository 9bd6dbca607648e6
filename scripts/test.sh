#!/usr/bin/env bash
# Runs the whole test suite, on a fresh machine too: installs the real peers
# the tests talk to (aiosmtpd, python-zeroconf, the seed's requests/Flask
# into .venv; Chromium for the dashboard test), then runs cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c 'import aiosmtpd, zeroconf, requests, flask' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
export HEALTHCHECKER_TEST_PYTHON="$PWD/.venv/bin/python"

# Most tests wait on real timers (the minimum check interval is 5 s), so
# they run many at a time even on two cores.
cargo test --workspace "$@" -- --test-threads=8
