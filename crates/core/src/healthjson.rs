//! IETF "Health Check Response Format for HTTP APIs" (health+json), both
//! sides: the response type apps build (see the client crate's builder), and
//! the interpreter the daemon applies to whatever JSON a target returns.
//!
//! The interpreter is lenient on purpose: Spring Boot (`UP`/`DOWN`), Terminus
//! (`ok`/`error`), the seed's Python `HealthCheckResponse` (`releaseID`) and
//! the draft all carry a top-level `status`. Anything it cannot read leaves
//! the HTTP verdict alone.

use crate::health::CheckResult;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The media type of health+json.
pub const CONTENT_TYPE: &str = "application/health+json";

/// `status` of a health+json response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Healthy.
    Pass,
    /// Healthy, with some concerns.
    Warn,
    /// Unhealthy.
    Fail,
}

impl HealthStatus {
    /// The HTTP status code that goes with the status: the draft asks for
    /// 2xx-3xx with pass and warn, 4xx-5xx with fail. We answer 200 and 503.
    pub fn http_status(self) -> u16 {
        match self {
            HealthStatus::Pass | HealthStatus::Warn => 200,
            HealthStatus::Fail => 503,
        }
    }
}

/// One observation of a component (an entry of `checks`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckObservation {
    /// Unique id of the component instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component_id: Option<String>,
    /// Type of the component (`datastore`, `system`, `component`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component_type: Option<String>,
    /// The measured value (any JSON value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_value: Option<serde_json::Value>,
    /// Unit of `observed_value`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_unit: Option<String>,
    /// Status of this component.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<HealthStatus>,
    /// Components this one depends on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected_endpoints: Vec<String>,
    /// When the observation was made (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Human-readable detail, typically on warn/fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Links for this component.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<String, String>,
}

/// A health+json response document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// Overall status.
    pub status: HealthStatus,
    /// Public version of the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Release id of the service (the seed wrote `releaseID`).
    #[serde(skip_serializing_if = "Option::is_none", alias = "releaseID")]
    pub release_id: Option<String>,
    /// Notes about the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Raw error output, on warn/fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Unique id of the service (the seed wrote `serviceID`).
    #[serde(skip_serializing_if = "Option::is_none", alias = "serviceID")]
    pub service_id: Option<String>,
    /// Human-friendly description of the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Component checks, keyed `component:measurement`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, Vec<CheckObservation>>,
    /// Links about the service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<String, String>,
}

/// What the daemon read from a target's body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BodyReport {
    /// The verdict the body states, if it states one we understand.
    pub verdict: Option<CheckResult>,
    /// `output` (or Spring's `error`/`message`), trimmed to [`MAX_TEXT`].
    pub output: Option<String>,
    /// The body's `output`, `notes`, `checks` (and `details`/`components`),
    /// as compact JSON of at most [`MAX_DETAILS`] bytes, for display.
    pub details: Option<String>,
}

/// The longest `output` kept, in bytes: enough for a sentence or a stack
/// trace's first line, small enough for a mail subject line and a table cell.
pub const MAX_TEXT: usize = 500;

/// The most details JSON kept per check, in bytes: 100,000 services keep a
/// thousand checks each, so this bounds the store, not the target.
pub const MAX_DETAILS: usize = 4096;

/// Maps a `status` word to a check result: `pass`/`ok`/`up` pass,
/// `warn` warns, `fail`/`error`/`down` fail (case-insensitive, with the
/// usual synonyms). Unknown words give `None`.
pub fn status_word(word: &str) -> Option<CheckResult> {
    // Lower-cased on the stack: every check of a health+json target reads
    // its word, and none of the known words is longer than 16 bytes.
    let word = word.trim().as_bytes();
    let mut buf = [0u8; 16];
    let lower = buf.get_mut(..word.len())?;
    for (l, b) in lower.iter_mut().zip(word) {
        *l = b.to_ascii_lowercase();
    }
    match &*lower {
        b"pass" | b"ok" | b"up" | b"healthy" | b"green" => Some(CheckResult::Pass),
        b"warn" | b"warning" | b"degraded" | b"yellow" => Some(CheckResult::Warn),
        b"fail" | b"failed" | b"error" | b"down" | b"unhealthy" | b"out_of_service"
        | b"critical" | b"red" => Some(CheckResult::Fail),
        _ => None,
    }
}

/// Reads a target's body. Never fails: a body that is not JSON, or JSON
/// without a `status` we understand, yields an empty report.
pub fn interpret_body(body: &[u8]) -> BodyReport {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return BodyReport::default();
    }
    // Every check reads its target's body: the members it needs are read
    // borrowed, with no allocation for the usual `{"status":"pass"}`. A
    // body the borrowed read refuses (a member given twice) goes the
    // general way, which gives the same report (`members_read_as_values`).
    match serde_json::from_slice::<Members<'_>>(body) {
        Ok(m) => m.report(),
        Err(_) => interpret_value(body),
    }
}

/// The members of a body [`interpret_body`] looks at, as their raw JSON
/// text (`None`: absent or `null`).
#[derive(Deserialize)]
struct Members<'a> {
    #[serde(borrow, default)]
    status: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    output: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    message: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    notes: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    checks: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    details: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    components: Option<&'a serde_json::value::RawValue>,
}

impl Members<'_> {
    fn report(&self) -> BodyReport {
        use std::borrow::Cow;
        // A member's string value (borrowed unless it has escapes).
        fn text(raw: Option<&serde_json::value::RawValue>) -> Option<Cow<'_, str>> {
            let raw = raw?.get();
            if !raw.starts_with('"') {
                return None;
            }
            match serde_json::from_str::<&str>(raw) {
                Ok(s) => Some(Cow::Borrowed(s)),
                Err(_) => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
            }
        }
        let verdict = text(self.status).and_then(|w| status_word(&w));
        let output = [self.output, self.error, self.message]
            .into_iter()
            .find_map(text)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .map(|s| truncate(&s, MAX_TEXT));
        let mut kept = serde_json::Map::new();
        for (key, raw) in [
            ("output", self.output),
            ("notes", self.notes),
            ("checks", self.checks),
            ("details", self.details),
            ("components", self.components),
        ] {
            if let Some(raw) = raw.filter(|r| r.get() != "\"\"") {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(raw.get()) {
                    kept.insert(key.to_string(), v);
                }
            }
        }
        let details = (!kept.is_empty())
            .then(|| serde_json::Value::Object(kept).to_string())
            .filter(|s| s.len() <= MAX_DETAILS);
        BodyReport {
            verdict,
            output,
            details,
        }
    }
}

/// [`interpret_body`] over a body read whole as a JSON value.
fn interpret_value(body: &[u8]) -> BodyReport {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return BodyReport::default();
    };
    let verdict = map
        .get("status")
        .and_then(|v| v.as_str())
        .and_then(status_word);
    let output = ["output", "error", "message"]
        .iter()
        .find_map(|k| map.get(*k).and_then(|v| v.as_str()))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| truncate(s, MAX_TEXT));
    let mut kept = serde_json::Map::new();
    for key in ["output", "notes", "checks", "details", "components"] {
        if let Some(v) = map.get(key) {
            if !v.is_null() && v != &serde_json::json!("") {
                kept.insert(key.to_string(), v.clone());
            }
        }
    }
    let details = (!kept.is_empty())
        .then(|| serde_json::Value::Object(kept).to_string())
        .filter(|s| s.len() <= MAX_DETAILS);
    BodyReport {
        verdict,
        output,
        details,
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_read_as_values() {
        let long = "x".repeat(MAX_DETAILS);
        let bodies = [
            r#"{"status":"pass"}"#.to_string(),
            r#" {"status":"UP","components":{"db":{"status":"UP"}}}"#.into(),
            r#"{"status":"fail","output":"  disk \"full\"  "}"#.into(),
            r#"{"status":"warn","output":"","notes":["a"],"checks":{"c":[{"status":"warn"}]}}"#
                .into(),
            r#"{"status":"error","error":"boom","message":"m"}"#.into(),
            r#"{"status":null,"output":null,"details":null,"message":"only"}"#.into(),
            r#"{"status":5,"output":7,"details":{"k":1}}"#.into(),
            r#"{"status":"pass","status":"fail"}"#.into(),
            r#"{"st\u0061tus":"fail"}"#.into(),
            r#"{"status":"p\u0061ss","other":{"deep":[1,2,{"x":null}]}}"#.into(),
            r#"{"status":"pass"} trailing"#.into(),
            r#"{"status":"pass""#.into(),
            format!(r#"{{"status":"pass","notes":["{long}"]}}"#),
        ];
        for body in &bodies {
            assert_eq!(
                interpret_body(body.as_bytes()),
                interpret_value(body.as_bytes()),
                "{body}"
            );
        }
        assert_eq!(
            interpret_body(br#"{"status":"pass","status":"fail"}"#).verdict,
            Some(CheckResult::Fail),
            "the last of a member given twice, as before"
        );
    }

    #[test]
    fn reads_status_words_of_common_frameworks() {
        let cases: &[(&str, Option<CheckResult>)] = &[
            (r#"{"status":"pass"}"#, Some(CheckResult::Pass)),
            (r#"{"status":"UP"}"#, Some(CheckResult::Pass)),
            (r#"{"status":"ok"}"#, Some(CheckResult::Pass)),
            (r#"{"status":"warn"}"#, Some(CheckResult::Warn)),
            (
                r#"{"status":"fail","output":"db down"}"#,
                Some(CheckResult::Fail),
            ),
            (r#"{"status":"DOWN"}"#, Some(CheckResult::Fail)),
            (r#"{"status":"error"}"#, Some(CheckResult::Fail)),
            (r#"{"status":"banana"}"#, None),
            (r#"{"status":3}"#, None),
            (r#"["status"]"#, None),
            ("not json", None),
            ("{broken", None),
            ("", None),
        ];
        for (body, want) in cases {
            assert_eq!(interpret_body(body.as_bytes()).verdict, *want, "{body}");
        }
    }

    #[test]
    fn keeps_output_and_details() {
        let r = interpret_body(
            br#"{"status":"fail","output":"db down","checks":{"db:ping":[{"status":"fail"}]}}"#,
        );
        assert_eq!(r.output.as_deref(), Some("db down"));
        let d: serde_json::Value = serde_json::from_str(r.details.as_deref().unwrap()).unwrap();
        assert!(d["checks"]["db:ping"].is_array());
    }

    #[test]
    fn truncates_on_char_boundary() {
        let s = "é".repeat(400);
        let t = truncate(&s, MAX_TEXT);
        assert!(t.len() <= MAX_TEXT);
        assert!(t.ends_with("..."));
    }

    #[test]
    fn reads_the_seed_python_response() {
        let body = br#"{"status":"pass","version":"1","releaseID":"1.0.0","serviceID":"","description":"health of x service","notes":"","output":""}"#;
        let r = interpret_body(body);
        assert_eq!(r.verdict, Some(CheckResult::Pass));
        assert_eq!(r.output, None);
    }

    #[test]
    fn response_round_trips_through_the_interpreter() {
        let resp = HealthResponse {
            status: HealthStatus::Warn,
            version: Some("1".into()),
            release_id: Some("1.2.3".into()),
            notes: vec!["n".into()],
            output: Some("slow disk".into()),
            service_id: Some("id".into()),
            description: Some("d".into()),
            checks: BTreeMap::from([(
                "disk:utilization".to_string(),
                vec![CheckObservation {
                    status: Some(HealthStatus::Warn),
                    observed_value: Some(serde_json::json!(93)),
                    observed_unit: Some("percent".into()),
                    ..Default::default()
                }],
            )]),
            links: BTreeMap::new(),
        };
        let json = serde_json::to_vec(&resp).unwrap();
        let back: HealthResponse = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, resp);
        let r = interpret_body(&json);
        assert_eq!(r.verdict, Some(CheckResult::Warn));
        assert_eq!(r.output.as_deref(), Some("slow disk"));
        assert!(String::from_utf8(json).unwrap().contains("\"releaseId\""));
    }
}
