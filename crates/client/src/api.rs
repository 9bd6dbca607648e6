//! The daemon's v1 API, typed.

use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

mod channels;
mod silences;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon answered with an error (its message and field kept).
    #[error("{message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Machine-readable code (`invalid_field`, `not_found`, ...).
        code: String,
        /// The daemon's message.
        message: String,
        /// The field it names, if any.
        field: Option<String>,
    },
    /// The daemon could not be reached.
    #[error("cannot reach the daemon at {url}: {reason}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// No daemon answered on the network within the timeout.
    #[error("no healthchecker daemon found on the network within {0:?}")]
    NotFound(Duration),
    /// The daemon URL is not usable.
    #[error("invalid daemon URL {0:?}")]
    InvalidUrl(String),
    /// The answer did not parse.
    #[error("unexpected answer from the daemon: {0}")]
    Decode(String),
    /// A token would have gone to a daemon that merely answered over mDNS:
    /// anyone on the LAN can answer there, so a token goes only to a daemon
    /// the user named.
    #[error("not sending the token to {0}, a daemon found over mDNS: name the daemon (--server URL, HEALTHCHECKER_SERVER or HealthChecker::at) to use a token")]
    TokenToUnnamedDaemon(String),
}

impl ClientError {
    /// True for errors where the daemon answered (it refused the request).
    pub fn is_refused(&self) -> bool {
        matches!(self, ClientError::Refused { .. })
    }
}

/// A healthchecker daemon's API.
#[derive(Clone)]
pub struct HealthChecker {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    /// Named by the user ([`HealthChecker::at`]), not found over mDNS: only
    /// then is `token` sent.
    named: bool,
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("named", &self.named)
            .finish()
    }
}

/// The check parameters of one service (SPEC section 2). Unset values take
/// the daemon's defaults.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    name: String,
    target: String,
    email: Vec<String>,
    interval: Option<u32>,
    timeout: Option<u32>,
    healthy: Option<u32>,
    unhealthy: Option<u32>,
    expected_status: Option<String>,
    tls_verify: Option<bool>,
    cert_warn_days: Option<u32>,
}

impl Registration {
    /// A service `name` checked at `target` (`http://host:port/path`,
    /// `https://…`, `tcp://host:port`, `ssl://host:port`).
    pub fn new(name: impl Into<String>, target: impl Into<String>) -> Self {
        Registration {
            name: name.into(),
            target: target.into(),
            ..Default::default()
        }
    }
    /// Adds a recipient of state-change mails.
    pub fn email(mut self, address: impl Into<String>) -> Self {
        self.email.push(address.into());
        self
    }
    /// Seconds between checks (5–300).
    pub fn interval(mut self, seconds: u32) -> Self {
        self.interval = Some(seconds);
        self
    }
    /// Response timeout in seconds (2–60, below the interval).
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout = Some(seconds);
        self
    }
    /// Consecutive successes to become healthy (2–10).
    pub fn healthy(mut self, n: u32) -> Self {
        self.healthy = Some(n);
        self
    }
    /// Consecutive failures to become unhealthy (2–10).
    pub fn unhealthy(mut self, n: u32) -> Self {
        self.unhealthy = Some(n);
        self
    }
    /// Acceptable HTTP statuses, e.g. `"200-399"`.
    pub fn expected_status(mut self, s: impl Into<String>) -> Self {
        self.expected_status = Some(s.into());
        self
    }
    /// Require a trusted certificate.
    pub fn tls_verify(mut self, on: bool) -> Self {
        self.tls_verify = Some(on);
        self
    }
    /// Days before certificate expiry that make a check warn (0: off).
    pub fn cert_warn_days(mut self, days: u32) -> Self {
        self.cert_warn_days = Some(days);
        self
    }
    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn to_json(&self) -> Value {
        let mut v = json!({"name": self.name, "url": self.target});
        let mut set = |k: &str, val: Value| {
            if !val.is_null() {
                v[k] = val;
            }
        };
        if !self.email.is_empty() {
            set("email", json!(self.email));
        }
        set("interval", json!(self.interval));
        set("timeout", json!(self.timeout));
        set("healthy_threshold", json!(self.healthy));
        set("unhealthy_threshold", json!(self.unhealthy));
        set("expected_status", json!(self.expected_status));
        set("tls_verify", json!(self.tls_verify));
        set("cert_warn_days", json!(self.cert_warn_days));
        v
    }
}

/// The latest check of a service.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct LastCheck {
    /// When (RFC 3339).
    pub at: String,
    /// `pass`, `warn` or `fail`.
    pub result: String,
    /// Why it warned or failed.
    pub reason: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: f64,
}

/// A service as the daemon reports it. `Debug` shows no token.
#[derive(Clone, Deserialize)]
pub struct ServiceInfo {
    /// Name.
    pub name: String,
    /// Target URL.
    pub url: String,
    /// `unknown`, `healthy`, `degraded` or `unhealthy`.
    pub state: String,
    /// `active` or `paused`.
    pub monitoring: String,
    /// When the state began (RFC 3339).
    pub state_since: String,
    /// Seconds between checks.
    pub interval: u32,
    /// Response timeout.
    pub timeout: u32,
    /// Healthy threshold.
    pub healthy_threshold: u32,
    /// Unhealthy threshold.
    pub unhealthy_threshold: u32,
    /// Mail recipients.
    #[serde(default)]
    pub email: Vec<String>,
    /// The latest check.
    pub last_check: Option<LastCheck>,
    /// Uptime ratios (`24h`, `7d`, `30d`, `90d`), when listed.
    #[serde(default)]
    pub uptime: Option<std::collections::BTreeMap<String, Option<f64>>>,
    /// The token issued by a registration (only in its answer).
    #[serde(default)]
    pub token: Option<String>,
    /// `check` (polled) or `heartbeat` (pushed).
    #[serde(default)]
    pub kind: Option<String>,
    /// Heartbeat: seconds between runs.
    #[serde(default)]
    pub period: Option<u32>,
    /// Heartbeat: seconds of lateness tolerated.
    #[serde(default)]
    pub grace: Option<u32>,
    /// Heartbeat: its ping URL path (only in the answer to a registration).
    #[serde(default)]
    pub ping_url: Option<String>,
    /// Everything the daemon sent, for `--json` output.
    #[serde(skip)]
    pub raw: Value,
}

impl std::fmt::Debug for ServiceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceInfo")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("state", &self.state)
            .field("monitoring", &self.monitoring)
            .field("state_since", &self.state_since)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("healthy_threshold", &self.healthy_threshold)
            .field("unhealthy_threshold", &self.unhealthy_threshold)
            .field("email", &self.email)
            .field("last_check", &self.last_check)
            .field("uptime", &self.uptime)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl ServiceInfo {
    fn from_value(v: Value) -> Result<ServiceInfo, ClientError> {
        let mut s: ServiceInfo =
            serde_json::from_value(v.clone()).map_err(|e| ClientError::Decode(e.to_string()))?;
        s.raw = v;
        Ok(s)
    }
}

/// A registered service: its daemon, name and token.
#[derive(Clone, Debug)]
pub struct Monitored {
    checker: HealthChecker,
    /// What the daemon answered to the registration.
    pub service: ServiceInfo,
    /// True when the name was new (201), false for an update (200).
    pub created: bool,
}

impl Monitored {
    /// The service's name.
    pub fn name(&self) -> &str {
        &self.service.name
    }
    /// The service's own token (for a daemon in `--auth token` mode).
    pub fn token(&self) -> Option<&str> {
        self.service.token.as_deref()
    }
    /// Stops monitoring (deletes the service on the daemon).
    pub async fn stop(&self) -> Result<(), ClientError> {
        self.checker.stop(self.name()).await
    }
    /// Pauses checks; the state is frozen.
    pub async fn pause(&self) -> Result<ServiceInfo, ClientError> {
        self.checker.pause(self.name()).await
    }
    /// Resumes checks.
    pub async fn resume(&self) -> Result<ServiceInfo, ClientError> {
        self.checker.resume(self.name()).await
    }
    /// The service's current state and last check.
    pub async fn info(&self) -> Result<ServiceInfo, ClientError> {
        self.checker.info(self.name()).await
    }
}

fn segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl HealthChecker {
    /// The daemon at `url` (e.g. `http://nas.local:8484`).
    pub fn at(url: &str) -> Result<HealthChecker, ClientError> {
        let parsed = url::Url::parse(url).map_err(|_| ClientError::InvalidUrl(url.into()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ClientError::InvalidUrl(url.into()));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            // The daemon closes a keep-alive connection idle for 10 s; a
            // request sent on it at that moment would fail.
            .pool_idle_timeout(Duration::from_secs(5))
            .user_agent(concat!("healthchecker-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: url.into(),
                reason: e.to_string(),
            })?;
        Ok(HealthChecker {
            base: url.trim_end_matches('/').to_string(),
            http,
            token: None,
            named: true,
        })
    }

    /// Sends `token` (the admin token, or a service's own token) as
    /// `Authorization: Bearer` on every call, for a daemon in `--auth token`
    /// mode. Only to a daemon named with [`HealthChecker::at`]: with a
    /// daemon found by [`HealthChecker::discover`] every call fails with
    /// [`ClientError::TokenToUnnamedDaemon`] instead.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Finds a daemon on the local network over mDNS (the first to answer
    /// within `timeout`).
    pub async fn discover(timeout: Duration) -> Result<HealthChecker, ClientError> {
        let found = crate::discover::discover_all(timeout, true).await?;
        match found.first() {
            Some(d) => HealthChecker::at(&d.url).map(|hc| HealthChecker { named: false, ..hc }),
            None => Err(ClientError::NotFound(timeout)),
        }
    }

    /// The daemon's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value), ClientError> {
        let req = match &self.token {
            Some(_) if !self.named => {
                return Err(ClientError::TokenToUnnamedDaemon(self.base.clone()))
            }
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let v: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body).unwrap_or(Value::String(body))
        };
        if status >= 400 {
            let e = &v["error"];
            return Err(ClientError::Refused {
                status,
                code: e["code"].as_str().unwrap_or("error").to_string(),
                message: e["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("HTTP {status}")),
                field: e["field"].as_str().map(str::to_string),
            });
        }
        Ok((status, v))
    }

    fn service_url(&self, name: &str, suffix: &str) -> String {
        format!("{}/api/v1/services/{}{suffix}", self.base, segment(name))
    }

    /// Registers (or updates) a service.
    pub async fn monitor(&self, reg: Registration) -> Result<Monitored, ClientError> {
        let (status, v) = self
            .call(
                self.http
                    .post(format!("{}/api/v1/services", self.base))
                    .json(&reg.to_json()),
            )
            .await?;
        Ok(Monitored {
            checker: self.clone(),
            service: ServiceInfo::from_value(v)?,
            created: status == 201,
        })
    }

    /// Stops monitoring `name`.
    pub async fn stop(&self, name: &str) -> Result<(), ClientError> {
        self.call(self.http.delete(self.service_url(name, "")))
            .await
            .map(|_| ())
    }

    /// Pauses `name`.
    pub async fn pause(&self, name: &str) -> Result<ServiceInfo, ClientError> {
        let (_, v) = self
            .call(self.http.post(self.service_url(name, "/pause")))
            .await?;
        ServiceInfo::from_value(v)
    }

    /// Resumes `name`.
    pub async fn resume(&self, name: &str) -> Result<ServiceInfo, ClientError> {
        let (_, v) = self
            .call(self.http.post(self.service_url(name, "/resume")))
            .await?;
        ServiceInfo::from_value(v)
    }

    /// Pings the heartbeat service `name` (SPEC section 15): `what` is
    /// `None` (success), `Some("start")`, `Some("fail")` or an exit code
    /// (`Some("1")`); `output` (the job's output, at most its last 10 KiB
    /// is kept) becomes the check's output. By name, a change like
    /// [`HealthChecker::pause`]: in `--auth token` mode it needs a token.
    pub async fn ping(
        &self,
        name: &str,
        what: Option<&str>,
        output: Vec<u8>,
    ) -> Result<(), ClientError> {
        let suffix = match what {
            Some(w) => format!("/ping/{}", segment(w)),
            None => "/ping".to_string(),
        };
        self.call(self.http.post(self.service_url(name, &suffix)).body(output))
            .await
            .map(|_| ())
    }

    /// What the daemon found on the LAN and does not monitor yet (SPEC
    /// section 16): the `discovered` list of `GET /api/v1/discovered`, each
    /// with its `type`, `name`, `addresses`, `port` and `suggested`
    /// `{name, url}` (to give to [`HealthChecker::monitor`]).
    pub async fn discovered(&self) -> Result<Vec<Value>, ClientError> {
        let (_, v) = self
            .call(self.http.get(format!("{}/api/v1/discovered", self.base)))
            .await?;
        Ok(v["discovered"].as_array().cloned().unwrap_or_default())
    }

    /// One service's parameters, state and last check.
    pub async fn info(&self, name: &str) -> Result<ServiceInfo, ClientError> {
        let (_, v) = self.call(self.http.get(self.service_url(name, ""))).await?;
        ServiceInfo::from_value(v)
    }

    /// Every service: the daemon answers a page (at most 1,000) at a time
    /// and names the next page in `next`, which this follows to the end.
    pub async fn list(&self) -> Result<Vec<ServiceInfo>, ClientError> {
        let mut out = Vec::new();
        let mut path = "/api/v1/services".to_string();
        loop {
            let (_, v) = self
                .call(self.http.get(format!("{}{path}", self.base)))
                .await?;
            for s in v["services"]
                .as_array()
                .ok_or_else(|| ClientError::Decode("no services list".into()))?
            {
                out.push(ServiceInfo::from_value(s.clone())?);
            }
            match v["next"].as_str() {
                // Only a path on the same daemon: a token is never sent elsewhere.
                Some(next) if next.starts_with('/') && !next.starts_with("//") => {
                    path = next.to_string()
                }
                Some(next) => {
                    return Err(ClientError::Decode(format!(
                        "unexpected next page {next:?} (expected a path)"
                    )))
                }
                None => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_no_token() {
        let hc = HealthChecker::at("http://127.0.0.1:1")
            .unwrap()
            .with_token("admin-token-0123456789abcdef");
        let d = format!("{hc:?}");
        assert!(
            !d.contains("admin-token") && d.contains("<redacted>"),
            "{d}"
        );
        let s = ServiceInfo::from_value(serde_json::json!({
            "name": "a", "url": "http://h/", "state": "unknown", "monitoring": "active",
            "state_since": "2026-01-01T00:00:00Z", "interval": 30, "timeout": 5,
            "healthy_threshold": 2, "unhealthy_threshold": 2,
            "last_check": null, "token": "service-token-secret"
        }))
        .unwrap();
        let d = format!("{s:?}");
        assert!(
            !d.contains("service-token-secret") && d.contains("<redacted>"),
            "{d}"
        );
    }
}
