"""The seed README's Flask example, driven end to end against a daemon.

Usage: seed_example.py DAEMON_URL|mdns
With a URL the client's discovery is replaced by that URL (the test runs in
the machine's own network namespace, where no mDNS may be sent); with
"mdns" the client discovers the daemon itself (run inside a private network
namespace). Exits 0 when every expectation holds.
"""
import socket
import sys
import threading
import time

import flask
import requests
from werkzeug.serving import make_server

from seed_client import HealthCheckerServer, HealthCheckResponse, HealthStatus

APP_NAME = "Sample HealthChecker App"
healthy = {"on": True}
app = flask.Flask(__name__)


@app.route("/health")
def health():
    if healthy["on"]:
        return HealthCheckResponse().description(APP_NAME).status(HealthStatus.PASS).build()
    # The seed's builder defaults: status fail, HTTP 400.
    return HealthCheckResponse().description(APP_NAME).output("db down").build()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def expect(cond, what):
    if not cond:
        print("FAILED:", what, flush=True)
        sys.exit(1)
    print("ok:", what, flush=True)


def wait_state(api, state, timeout=40):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = requests.get(f"{api}/api/v1/services/Sample%20HealthChecker%20App")
        if r.status_code == 200 and r.json()["state"] == state:
            return True
        time.sleep(0.25)
    return False


def main():
    port = free_port()
    server = make_server("127.0.0.1", port, app)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    if sys.argv[1] == "mdns":
        hcs = HealthCheckerServer(app=APP_NAME, url=f"http://127.0.0.1:{port}")
        expect(hcs.url() != "ServiceNotFound", f"the client found the daemon over mDNS: {hcs.url()}")
    else:
        HealthCheckerServer.discover = lambda self: sys.argv[1].rstrip("/") + "/healthchecker/"
        hcs = HealthCheckerServer(app=APP_NAME, url=f"http://127.0.0.1:{port}")
    api = hcs.url()[: -len("/healthchecker/")]

    expect(hcs.monitor(emailAddr="myEmailAddr@gmail.com") == 201, "monitor() with the client's defaults registers (201)")
    v = requests.get(f"{api}/api/v1/services/Sample%20HealthChecker%20App").json()
    expect(v["url"] == f"http://127.0.0.1:{port}/health", "the daemon polls <url>/health")
    expect((v["timeout"], v["interval"], v["unhealthy_threshold"], v["healthy_threshold"]) == (5, 30, 2, 10), "the client's defaults are kept")
    expect(hcs.monitor(emailAddr="myEmailAddr@gmail.com", timeout=2, interval=5, unhealthy=2, healthy=2) == 200, "re-registration answers 200")
    expect(hcs.info() == 200, "info() is 2xx")
    expect(hcs.pause() == 200, "pause() is 2xx")
    expect(hcs.resume() == 200, "resume() is 2xx")
    expect(wait_state(api, "healthy"), "a passing Flask app is judged healthy")
    healthy["on"] = False
    expect(wait_state(api, "unhealthy"), "the seed's default (fail, HTTP 400) response is judged unhealthy")
    last = requests.get(f"{api}/api/v1/services/Sample%20HealthChecker%20App").json()["last_check"]["reason"]
    expect(last.startswith("HTTP 400"), f"the reason names the status: {last}")
    expect(hcs.stop() == 200, "stop() is 2xx")
    expect(requests.get(f"{api}/api/v1/services/Sample%20HealthChecker%20App").status_code == 404, "stopped")
    del hcs  # the destructor calls stop() again: harmless
    server.shutdown()
    print("all ok", flush=True)


if __name__ == "__main__":
    main()
