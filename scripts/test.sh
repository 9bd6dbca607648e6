#!/usr/bin/env bash
# Runs the whole test suite, on a fresh machine too: installs the real peers
# the tests talk to (aiosmtpd, python-zeroconf, the seed's requests/Flask
# into .venv; Chromium for the dashboard test), then runs cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: tcpdump and iproute2 (the mDNS tests capture packets in
# a private network namespace), Chromium and its driver (the dashboard test).
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v ip >/dev/null || need+=(iproute2)
command -v chattr >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! .venv/bin/python -c 'import aiosmtpd, zeroconf, requests, flask, openapi_spec_validator, prometheus_client, schemathesis' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
export HEALTHCHECKER_TEST_PYTHON="$PWD/.venv/bin/python"

# Most tests wait on real timers (the minimum check interval is 5 s), so
# they run many at a time even on two cores.
cargo test --workspace "$@" -- --test-threads=8
