"""An independent mDNS peer (python-zeroconf) for healthchecker's tests.
Always bound to 127.0.0.1 and run inside the test's private network namespace.

  mdns_peer.py legacy N   resolve _healthchecker._http._tcp.local. N times, each
                          with a fresh Zeroconf, as the seed's client does;
                          prints {"resolved": k, "first": [...], "ports": [...]}
  mdns_peer.py native     browse _healthchecker._tcp.local. and resolve what is found
  mdns_peer.py watch      print "added NAME" / "removed NAME" as they happen
"""
import json
import sys
import time
import warnings

warnings.simplefilter("ignore")

from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf  # noqa: E402

NATIVE = "_healthchecker._tcp.local."


def legacy(n):
    firsts, ports, resolved = [], [], 0
    for _ in range(n):
        zc = Zeroconf(interfaces=["127.0.0.1"])
        try:
            info = zc.get_service_info("_http._tcp.local.", "_healthchecker._http._tcp.local.", timeout=3000)
            if info:
                resolved += 1
                firsts.append(info.parsed_addresses()[0])
                ports.append(info.port)
        finally:
            zc.close()
    print(json.dumps({"resolved": resolved, "first": firsts, "ports": ports}), flush=True)


def native():
    zc = Zeroconf(interfaces=["127.0.0.1"])
    found = []
    ServiceBrowser(zc, NATIVE, handlers=[lambda zeroconf, service_type, name, state_change: found.append(name)])
    deadline = time.time() + 10
    while not found and time.time() < deadline:
        time.sleep(0.1)
    out = []
    for name in set(found):
        info = zc.get_service_info(NATIVE, name, timeout=3000)
        if info:
            props = {k.decode(): (v.decode() if v is not None else None) for k, v in info.properties.items()}
            out.append({"name": name, "addresses": info.parsed_addresses(), "port": info.port, "properties": props})
    zc.close()
    print(json.dumps(out), flush=True)


def watch():
    zc = Zeroconf(interfaces=["127.0.0.1"])

    def on_change(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Added:
            print("added", name, flush=True)
        elif state_change is ServiceStateChange.Removed:
            print("removed", name, flush=True)

    ServiceBrowser(zc, NATIVE, handlers=[on_change])
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 30)
    zc.close()


if __name__ == "__main__":
    {"legacy": lambda: legacy(int(sys.argv[2])), "native": native, "watch": watch}[sys.argv[1]]()
