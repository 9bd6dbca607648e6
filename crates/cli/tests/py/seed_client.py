"""The seed's Python client and response builder, as its README and its
wire protocol describe them (written here from that description; the daemon
must serve it unchanged).

HealthCheckerServer finds the daemon with python-zeroconf
(get_service_info("_http._tcp.local.", "_healthchecker._http._tcp.local."),
first parsed address), then speaks the form API under /healthchecker/:
monitor is a form POST, stop/pause/resume/info are GETs with appname in
the query; every call returns only the HTTP status code (503 when the
daemon is unknown or unreachable). Its destructor calls stop().
"""
import json

import requests


class HealthStatus:
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


class HealthCheckResponse:
    """Builds a health+json answer the way the seed's Flask example does."""

    def __init__(self):
        self.doc = {"status": HealthStatus.FAIL, "version": "1"}
        self.httpcode = 400

    def status(self, stat=HealthStatus.PASS, httpcode=200):
        self.doc["status"] = str(stat)
        self.httpcode = httpcode
        return self

    def description(self, app=""):
        self.doc["description"] = f"health of {app} service"
        return self

    def releaseID(self, relid="1.0.0"):
        self.doc["releaseID"] = relid
        return self

    def serviceID(self, servid="1.0.0"):
        self.doc["serviceID"] = servid
        return self

    def output(self, out=""):
        self.doc["output"] = out
        return self

    def notes(self, note=""):
        self.doc["notes"] = note
        return self

    def build(self):
        import flask

        res = flask.make_response(json.dumps(self.doc), self.httpcode)
        res.headers["Content-Type"] = "application/health+json"
        res.headers["Cache-Control"] = "max-age=3600"
        return res


class HealthCheckerServer:
    TYPE = "_http._tcp.local."
    SERVICE_NAME = "_healthchecker"

    def __init__(self, app: str, url: str):
        self.appname = app
        self.monitorUrl = url
        self.healthCheckerUrl = self.discover()

    def discover(self):
        from zeroconf import Zeroconf

        r = Zeroconf(interfaces=["127.0.0.1"])
        try:
            info = r.get_service_info(self.TYPE, f"{self.SERVICE_NAME}.{self.TYPE}", timeout=3000)
            if info:
                return f"http://{info.parsed_addresses()[0]}:{info.port}/healthchecker/"
            return "ServiceNotFound"
        finally:
            r.close()

    def url(self):
        return self.healthCheckerUrl

    def post(self, endpoint, form):
        if self.healthCheckerUrl == "ServiceNotFound":
            return 503
        try:
            return requests.post(self.healthCheckerUrl + endpoint, data=form, headers={"Cache-Control": "no-cache"}).status_code
        except Exception:
            return 503

    def get(self, endpoint, params):
        if self.healthCheckerUrl == "ServiceNotFound":
            return 503
        try:
            return requests.get(self.healthCheckerUrl + endpoint, params=params, headers={"Cache-Control": "no-cache"}).status_code
        except Exception:
            return 503

    def monitor(self, emailAddr: str = "", timeout: int = 5, interval: int = 30, unhealthy: int = 2, healthy: int = 10):
        return self.post("monitor", {
            "appname": self.appname, "url": self.monitorUrl, "email": emailAddr, "timeout": timeout,
            "interval": interval, "unhealthy_threshold": unhealthy, "healthy_threshold": healthy,
        })

    def stop(self):
        return self.get("stop", {"appname": self.appname})

    def pause(self):
        return self.get("pause", {"appname": self.appname})

    def resume(self):
        return self.get("resume", {"appname": self.appname})

    def info(self):
        return self.get("info", {"appname": self.appname})

    def __del__(self):
        self.stop()
