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
# The ICMP tests drop echo requests with nftables in their namespace and
# drop CAP_NET_RAW with setpriv (util-linux).
command -v nft >/dev/null || need+=(nftables)
command -v setpriv >/dev/null || need+=(util-linux)
command -v chattr >/dev/null || need+=(e2fsprogs)
# The install tests (crates/cli/tests/it/install.rs): debootstrap makes a
# Debian root for the .deb and the container base; podman with runc (crun
# refuses this machine's hybrid cgroups) builds and runs the image; strip
# (binutils) shrinks the binary copied into it; dpkg-shlibdeps (dpkg-dev)
# gives the package its Depends.
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v strip >/dev/null || need+=(binutils)
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
# The mqtt channel tests start a throwaway Mosquitto broker on 127.0.0.1
# (crates/testkit/src/mosquitto.rs); the package's own service is not used.
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
# The cluster tests start a throwaway PostgreSQL (initdb into a temporary
# directory, as the package's postgres user, on 127.0.0.1:<free port>;
# crates/testkit/src/postgres.rs); the package's own cluster is not used.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# cargo-deb builds the Debian package in the install tests (pinned: its
# flags and its layout are what the test checks).
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb 3.8.0" ]; then
  cargo install cargo-deb --locked --version 3.8.0 --quiet
fi

if ! .venv/bin/python -c 'import aiosmtpd, zeroconf, requests, flask, openapi_spec_validator, prometheus_client, schemathesis' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
export HEALTHCHECKER_TEST_PYTHON="$PWD/.venv/bin/python"

# Most tests wait on real timers (the minimum check interval is 5 s), so
# they run many at a time even on two cores. The first pass puts the test
# daemons on SQLite, whatever the environment says.
HEALTHCHECKER_TEST_DB=sqlite cargo test --workspace "$@" -- --test-threads=8

# The second pass: the server's API suite and the client library's tests
# again, every daemon on PostgreSQL (one throwaway server for the run, a
# database per daemon; testkit's TestDaemon, docs/cluster.md "Tests").
# Tests about SQLite itself print "SKIPPED on postgresql: <why>"; the
# skipped modules already run on PostgreSQL of their own in the first pass.
HEALTHCHECKER_TEST_DB=postgres cargo test -p healthchecker-server -p healthchecker-client --test it "$@" -- \
  --test-threads=8 --skip pg_api:: --skip cluster:: \
  --skip cluster_view::the_postgresql_read --skip cluster_view::notifications_reach
