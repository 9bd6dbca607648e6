//! A builder for the health+json answer of an app's `/health` endpoint.

use healthchecker_core::healthjson::{
    CheckObservation, HealthResponse, HealthStatus, CONTENT_TYPE,
};
use std::collections::BTreeMap;

/// Builds a health+json response (draft-inadarei-api-health-check): the
/// status maps to the HTTP status (pass and warn: 200; fail: 503) and the
/// content type is `application/health+json`.
///
/// ```
/// use healthchecker_client::{HealthCheckResponse, CheckObservation, HealthStatus};
/// let r = HealthCheckResponse::pass()
///     .description("Sample HealthChecker App")
///     .version("1")
///     .release_id("1.0.0")
///     .check("db:responseTime", CheckObservation {
///         status: Some(HealthStatus::Pass),
///         observed_value: Some(12.into()),
///         observed_unit: Some("ms".into()),
///         ..Default::default()
///     });
/// assert_eq!(r.status_code(), 200);
/// assert!(r.to_json().contains("\"releaseId\":\"1.0.0\""));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheckResponse {
    doc: HealthResponse,
}

impl HealthCheckResponse {
    /// A response with `status`.
    pub fn new(status: HealthStatus) -> Self {
        HealthCheckResponse {
            doc: HealthResponse {
                status,
                version: None,
                release_id: None,
                notes: Vec::new(),
                output: None,
                service_id: None,
                description: None,
                checks: BTreeMap::new(),
                links: BTreeMap::new(),
            },
        }
    }
    /// Healthy.
    pub fn pass() -> Self {
        Self::new(HealthStatus::Pass)
    }
    /// Healthy with concerns (the daemon marks the service degraded).
    pub fn warn() -> Self {
        Self::new(HealthStatus::Warn)
    }
    /// Unhealthy.
    pub fn fail() -> Self {
        Self::new(HealthStatus::Fail)
    }
    /// Sets the status.
    pub fn status(mut self, status: HealthStatus) -> Self {
        self.doc.status = status;
        self
    }
    /// Public version of the service.
    pub fn version(mut self, v: impl Into<String>) -> Self {
        self.doc.version = Some(v.into());
        self
    }
    /// Release id.
    pub fn release_id(mut self, v: impl Into<String>) -> Self {
        self.doc.release_id = Some(v.into());
        self
    }
    /// Adds a note.
    pub fn note(mut self, v: impl Into<String>) -> Self {
        self.doc.notes.push(v.into());
        self
    }
    /// Error output (shown as the reason of a warn or fail).
    pub fn output(mut self, v: impl Into<String>) -> Self {
        self.doc.output = Some(v.into());
        self
    }
    /// Unique id of the service.
    pub fn service_id(mut self, v: impl Into<String>) -> Self {
        self.doc.service_id = Some(v.into());
        self
    }
    /// Human-friendly description.
    pub fn description(mut self, v: impl Into<String>) -> Self {
        self.doc.description = Some(v.into());
        self
    }
    /// Adds an observation under `component:measurement`.
    pub fn check(mut self, key: impl Into<String>, obs: CheckObservation) -> Self {
        self.doc.checks.entry(key.into()).or_default().push(obs);
        self
    }
    /// Adds a link.
    pub fn link(mut self, rel: impl Into<String>, href: impl Into<String>) -> Self {
        self.doc.links.insert(rel.into(), href.into());
        self
    }
    /// The HTTP status to answer with.
    pub fn status_code(&self) -> u16 {
        self.doc.status.http_status()
    }
    /// The `Content-Type` to answer with.
    pub fn content_type(&self) -> &'static str {
        CONTENT_TYPE
    }
    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.doc).expect("health+json serialises")
    }
    /// The document.
    pub fn document(&self) -> &HealthResponse {
        &self.doc
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for HealthCheckResponse {
    fn into_response(self) -> axum::response::Response {
        let status = axum::http::StatusCode::from_u16(self.status_code())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            [
                (axum::http::header::CONTENT_TYPE, CONTENT_TYPE),
                (axum::http::header::CACHE_CONTROL, "no-cache"),
            ],
            self.to_json(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use healthchecker_core::healthjson::interpret_body;
    use healthchecker_core::CheckResult;

    #[test]
    fn status_maps_to_http_ranges_and_round_trips() {
        for (r, code, verdict) in [
            (HealthCheckResponse::pass(), 200, CheckResult::Pass),
            (
                HealthCheckResponse::warn().output("slow"),
                200,
                CheckResult::Warn,
            ),
            (
                HealthCheckResponse::fail().output("db down"),
                503,
                CheckResult::Fail,
            ),
        ] {
            assert_eq!(r.status_code(), code);
            let json = r.to_json();
            let back: HealthResponse = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, r.document());
            assert_eq!(interpret_body(json.as_bytes()).verdict, Some(verdict));
        }
    }

    #[test]
    fn every_field_is_written_in_draft_names() {
        let r = HealthCheckResponse::pass()
            .version("1")
            .release_id("1.2")
            .note("n")
            .output("o")
            .service_id("s")
            .description("d")
            .check(
                "cpu:utilization",
                CheckObservation {
                    observed_value: Some(3.into()),
                    ..Default::default()
                },
            )
            .link("about", "http://x/");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        for k in [
            "status",
            "version",
            "releaseId",
            "notes",
            "output",
            "serviceId",
            "description",
            "checks",
            "links",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {v}");
        }
        assert_eq!(v["checks"]["cpu:utilization"][0]["observedValue"], 3);
    }
}
