#!/usr/bin/env python3
"""Times `GET /metrics` of a daemon checking N services (docs/performance.md).

Not part of the test suite and asserts nothing: it starts the benchmark's
HTTP target (`healthchecker-bench target`) and the daemon (`serve --no-mdns`,
fresh database in a temporary directory, registration rate limit off),
registers N HTTP services against the target over 127.0.0.1, waits one
interval so that every service is being checked, then scrapes `/metrics`
with curl, classic text and OpenMetrics in turn, and prints each scrape's
total time and size. Standard library only.

    cargo build --release -p healthchecker -p healthchecker-bench
    python3 crates/bench/scrape_metrics.py --services 100000 --scrapes 5
    python3 crates/bench/scrape_metrics.py --daemon-arg=--metrics-per-service=false
"""
import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ACCEPT = {
    "classic": "text/plain;version=0.0.4",
    # What Prometheus sends by default.
    "openmetrics": "application/openmetrics-text;version=1.0.0,"
    "application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
}


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=100_000)
    p.add_argument("--interval", type=int, default=30)
    p.add_argument("--scrapes", type=int, default=5, help="scrapes per format")
    p.add_argument("--daemon", default=os.path.join(root, "target/release/healthchecker"))
    p.add_argument("--bench", default=os.path.join(root, "target/release/healthchecker-bench"))
    p.add_argument("--daemon-arg", action="append", default=[], help="extra serve option")
    p.add_argument("--formats", default="classic,openmetrics")
    a = p.parse_args()

    procs = []
    try:
        target = subprocess.Popen(
            [a.bench, "target", "--ips", "4", "--ports", "4"], stdout=subprocess.PIPE, text=True
        )
        procs.append(target)
        listen = []
        for line in target.stdout:
            line = line.strip()
            if line.startswith("listen "):
                listen.append(line.split()[1])
            elif line == "ready":
                break
        tmp = tempfile.mkdtemp(prefix="hc-scrape-")
        daemon = subprocess.Popen(
            [a.daemon, "serve", "--no-mdns", "--log-format", "json", "--register-rate-limit", "0",
             "--bind", "127.0.0.1:0", "--db", os.path.join(tmp, "hc.db"), *a.daemon_arg],
            env={**os.environ, "RUST_LOG": "warn,healthchecker_server=info"},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        procs.append(daemon)
        addr = None
        for line in daemon.stderr:
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if v.get("fields", {}).get("message") == "listening":
                addr = v["fields"]["addr"]
                break
        if addr is None:
            sys.exit("the daemon did not start")
        threading.Thread(target=lambda: [None for _ in daemon.stderr], daemon=True).start()
        host, port = addr.rsplit(":", 1)

        started = time.time()
        conns = 16

        def register(c):
            h = http.client.HTTPConnection(host, int(port))
            for i in range(c, a.services, conns):
                body = json.dumps({
                    "name": f"svc-{i:06}",
                    "url": f"http://{listen[i % len(listen)]}/health",
                    "interval": a.interval,
                    "timeout": min(a.interval - 1, 5),
                })
                h.request("POST", "/api/v1/services", body, {"Content-Type": "application/json"})
                r = h.getresponse()
                r.read()
                if r.status >= 300:
                    raise SystemExit(f"registration {i}: {r.status}")
            h.close()

        ts = [threading.Thread(target=register, args=(c,)) for c in range(conns)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        took = time.time() - started
        print(f"registered {a.services} services in {took:.1f} s; waiting {a.interval} s", flush=True)
        time.sleep(a.interval)
        for fmt in a.formats.split(","):
            for _ in range(a.scrapes):
                out = subprocess.run(
                    ["curl", "-s", "-o", "/dev/null", "-H", f"Accept: {ACCEPT[fmt]}",
                     "-w", "%{time_total} %{size_download} %{content_type}",
                     f"http://{addr}/metrics"],
                    capture_output=True, text=True, check=True,
                ).stdout.split(" ", 2)
                print(f"{fmt}: {float(out[0]) * 1000:.1f} ms, {int(out[1]):,} bytes, {out[2]}", flush=True)
                time.sleep(1)
        rss = [l for l in open(f"/proc/{daemon.pid}/status") if l.startswith("VmRSS")]
        print(rss[0].strip(), flush=True)
    finally:
        for pr in reversed(procs):
            pr.kill()
            pr.wait()


if __name__ == "__main__":
    main()
