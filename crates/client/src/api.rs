//! The daemon's v1 API, typed.

use crate::error::ClientError;
use healthchecker_core::api::{path_segment, Service};
use healthchecker_core::spec::{CertWarnDays, Interval, Threshold, Timeout};
use healthchecker_core::{spec::EmailList, RegisterRequest};
use serde_json::Value;
use std::time::Duration;

mod channels;
mod silences;

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

/// The check parameters of one service (SPEC section 2), as a builder of
/// the one registration type the daemon decodes
/// ([`healthchecker_core::RegisterRequest`]). Unset values take the
/// daemon's defaults; the daemon checks the ranges.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    body: RegisterRequest,
}

impl Registration {
    /// A service `name` checked at `target` (`http://host:port/path`,
    /// `https://…`, `tcp://host:port`, `ssl://host:port`).
    pub fn new(name: impl Into<String>, target: impl Into<String>) -> Self {
        Registration {
            body: RegisterRequest {
                name: Some(name.into()),
                url: Some(target.into()),
                ..Default::default()
            },
        }
    }
    /// Adds a recipient of state-change mails.
    pub fn email(mut self, address: impl Into<String>) -> Self {
        let mut all = match self.body.email.take() {
            Some(EmailList::Many(v)) => v,
            Some(EmailList::One(s)) => vec![s],
            None => Vec::new(),
        };
        all.push(address.into());
        self.body.email = Some(EmailList::Many(all));
        self
    }
    /// Seconds between checks (5–300).
    pub fn interval(mut self, seconds: u32) -> Self {
        self.body.interval = Some(Interval::new(seconds));
        self
    }
    /// Response timeout in seconds (2–60, below the interval).
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.body.timeout = Some(Timeout::new(seconds));
        self
    }
    /// Consecutive successes to become healthy (2–10).
    pub fn healthy(mut self, n: u32) -> Self {
        self.body.healthy_threshold = Some(Threshold::new(n));
        self
    }
    /// Consecutive failures to become unhealthy (2–10).
    pub fn unhealthy(mut self, n: u32) -> Self {
        self.body.unhealthy_threshold = Some(Threshold::new(n));
        self
    }
    /// Acceptable HTTP statuses, e.g. `"200-399"`.
    pub fn expected_status(mut self, s: impl Into<String>) -> Self {
        self.body.expected_status = Some(s.into());
        self
    }
    /// Require a trusted certificate.
    pub fn tls_verify(mut self, on: bool) -> Self {
        self.body.tls_verify = Some(on);
        self
    }
    /// Days before certificate expiry that make a check warn (0: off).
    pub fn cert_warn_days(mut self, days: u32) -> Self {
        self.body.cert_warn_days = Some(CertWarnDays::new(days));
        self
    }
    /// Names of notification channels (SPEC section 13); none: the
    /// daemon's default channels.
    pub fn channel(mut self, name: impl Into<String>) -> Self {
        self.body
            .channels
            .get_or_insert_with(Vec::new)
            .push(name.into());
        self
    }
    /// Adds a tag, for silences (SPEC section 14).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.body.tags.get_or_insert_with(Vec::new).push(tag.into());
        self
    }
    /// Adds a parent service: while it fails, this one's notifications
    /// are held.
    pub fn depends_on(mut self, parent: impl Into<String>) -> Self {
        self.body
            .depends_on
            .get_or_insert_with(Vec::new)
            .push(parent.into());
        self
    }
    /// The service name.
    pub fn name(&self) -> &str {
        self.body.name.as_deref().unwrap_or_default()
    }
    /// The registration as sent.
    pub fn body(&self) -> &RegisterRequest {
        &self.body
    }
}

/// A service as the daemon reports it: the API's [`Service`] (its fields
/// are reachable directly, `info.state`), and the JSON as received.
/// `Debug` shows no token.
#[derive(Clone)]
pub struct ServiceInfo {
    /// The service, typed.
    pub service: Service,
    /// Everything the daemon sent, for `--json` output.
    pub raw: Value,
}

impl std::fmt::Debug for ServiceInfo {
    /// The service's own `Debug` (token redacted); `raw` is left out, as
    /// it holds the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.service.fmt(f)
    }
}

impl std::ops::Deref for ServiceInfo {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

impl ServiceInfo {
    fn from_value(v: Value) -> Result<ServiceInfo, ClientError> {
        let service: Service =
            serde_json::from_value(v.clone()).map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(ServiceInfo { service, raw: v })
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
        format!(
            "{}/api/v1/services/{}{suffix}",
            self.base,
            path_segment(name)
        )
    }

    /// Registers (or updates) a service.
    pub async fn monitor(&self, reg: Registration) -> Result<Monitored, ClientError> {
        let (status, v) = self
            .call(
                self.http
                    .post(format!("{}/api/v1/services", self.base))
                    .json(&reg.body),
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
            Some(w) => format!("/ping/{}", path_segment(w)),
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
    fn a_registration_is_the_core_type_and_the_daemon_accepts_it() {
        let r = Registration::new("web", "http://h:8080/health")
            .email("a@example.com")
            .email("b@example.com")
            .interval(10)
            .timeout(3)
            .healthy(4)
            .unhealthy(2)
            .channel("ops")
            .tag("nas")
            .depends_on("router");
        let v = serde_json::to_value(r.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "web", "url": "http://h:8080/health",
                "email": ["a@example.com", "b@example.com"], "interval": 10, "timeout": 3,
                "healthy_threshold": 4, "unhealthy_threshold": 2, "channels": ["ops"],
                "tags": ["nas"], "depends_on": ["router"]})
        );
        // What the daemon decodes and validates, field for field.
        let back = RegisterRequest::from_json(v.to_string().as_bytes()).unwrap();
        let spec = healthchecker_core::ServiceSpec::try_from(back).unwrap();
        assert_eq!((spec.interval, spec.emails.len()), (10, 2));
        assert_eq!(r.name(), "web");
    }

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
            "name": "a", "url": "http://h/", "protocol": "HTTP", "host": "h", "port": 80,
            "path": "/", "timeout": 5, "interval": 30, "unhealthy_threshold": 2,
            "healthy_threshold": 2, "expected_status": "200", "tls_verify": false,
            "cert_warn_days": 14, "state": "unknown", "monitoring": "active", "paused": false,
            "state_since": "2026-01-01T00:00:00Z", "consecutive_successes": 0,
            "consecutive_failures": 0, "last_check": null, "last_healthy_at": null,
            "last_failure_reason": null, "cert_expires_at": null,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "links": {"self": "/api/v1/services/a", "checks": "/api/v1/services/a/checks",
                "dashboard": "/services/a"},
            "kind": "check", "token": "service-token-secret"
        }))
        .unwrap();
        assert_eq!(s.state, healthchecker_core::HealthState::Unknown);
        let d = format!("{s:?}");
        assert!(
            !d.contains("service-token-secret") && d.contains("<redacted>"),
            "{d}"
        );
    }
}
