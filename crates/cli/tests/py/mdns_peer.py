"""An independent mDNS peer (python-zeroconf) for healthchecker's tests.
Always bound to 127.0.0.1 and run inside the test's private network namespace.

  mdns_peer.py legacy N   resolve _healthchecker._http._tcp.local. N times, each
                          with a fresh Zeroconf, as the seed's client does;
                          prints {"resolved": k, "first": [...], "ports": [...]}
  mdns_peer.py native     browse _healthchecker._tcp.local. and resolve what is found
  mdns_peer.py watch      print "added NAME" / "removed NAME" as they happen
  mdns_peer.py devices    announce a fake printer (_ipp._tcp), NAS (_smb._tcp and
                          _http._tcp, path=/webman/) and Home Assistant; print
                          "ready", then keep them until stdin closes
  mdns_peer.py txt TYPE   browse TYPE for 3 s; print each instance's TXT strings
                          in wire order: [{"name": ..., "port": ..., "txt": ["k=v", ...]}]
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


def txt(service_type):
    zc = Zeroconf(interfaces=["127.0.0.1"])
    found = []
    ServiceBrowser(zc, service_type, handlers=[lambda zeroconf, service_type, name, state_change: found.append(name)])
    time.sleep(3)
    out = []
    for name in sorted(set(found)):
        info = zc.get_service_info(service_type, name, timeout=3000)
        if info:
            raw, strings, i = info.text or b"", [], 0
            while i < len(raw):
                n = raw[i]
                strings.append(raw[i + 1 : i + 1 + n].decode())
                i += 1 + n
            out.append({"name": name, "port": info.port, "txt": strings})
    zc.close()
    print(json.dumps(out), flush=True)


def devices():
    from zeroconf import ServiceInfo

    zc = Zeroconf(interfaces=["127.0.0.1"])
    addr = [socket_aton("127.0.0.1")]
    infos = [
        ServiceInfo("_ipp._tcp.local.", "Office printer._ipp._tcp.local.", addresses=addr, port=631,
                    properties={"rp": "ipp/print", "ty": "Fake LaserJet"}, server="printer.local."),
        ServiceInfo("_smb._tcp.local.", "nas._smb._tcp.local.", addresses=addr, port=445,
                    properties={}, server="nas.local."),
        ServiceInfo("_http._tcp.local.", "nas._http._tcp.local.", addresses=addr, port=5000,
                    properties={"path": "/webman/"}, server="nas.local."),
        ServiceInfo("_home-assistant._tcp.local.", "Home._home-assistant._tcp.local.", addresses=addr,
                    port=8123, properties={"version": "2026.11.0", "base_url": "http://127.0.0.1:8123"},
                    server="homeassistant.local."),
    ]
    for info in infos:
        zc.register_service(info)
    print("ready", flush=True)
    sys.stdin.read()
    for info in infos:
        zc.unregister_service(info)
    zc.close()


def socket_aton(a):
    import socket

    return socket.inet_aton(a)


if __name__ == "__main__":
    {
        "legacy": lambda: legacy(int(sys.argv[2])),
        "native": native,
        "watch": watch,
        "txt": lambda: txt(sys.argv[2]),
        "devices": devices,
    }[sys.argv[1]]()
