//! The seed's registration form (`appname`, `url`, `email`, `timeout`,
//! `interval`, `unhealthy_threshold`, `healthy_threshold`), turned into the
//! one [`RegisterRequest`]: the legacy API answers exactly as the seed did.

use super::{RegisterRequest, SpecError, DEFAULT_PATH};
use serde_json::{Map, Value};

impl RegisterRequest {
    /// Decodes the seed's form. As the original server did, the target is
    /// `url` + `/health`; empty optional fields are absent.
    pub fn from_legacy_form(pairs: &[(String, String)]) -> Result<Self, SpecError> {
        let get = |k: &str| {
            pairs
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let url = get("url").ok_or_else(|| {
            SpecError::missing(
                "url",
                "missing url (the base URL of the app, e.g. http://host:9090)",
            )
        })?;
        let mut map = Map::new();
        if let Some(name) = get("appname") {
            map.insert("name".into(), Value::String(name));
        }
        map.insert("url".into(), Value::String(health_url(&url)));
        for k in [
            "email",
            "timeout",
            "interval",
            "unhealthy_threshold",
            "healthy_threshold",
        ] {
            if let Some(v) = get(k).filter(|v| !v.trim().is_empty()) {
                map.insert(k.into(), Value::String(v));
            }
        }
        RegisterRequest::from_map(map)
    }
}

/// The seed's target: `/health` at the end of the path, before a query; a
/// fragment (never sent to a server) is dropped; no scheme means `http://`.
fn health_url(url: &str) -> String {
    let url = url.trim();
    let without_fragment = url.split('#').next().unwrap_or("");
    let (head, query) = match without_fragment.find('?') {
        Some(i) => without_fragment.split_at(i),
        None => (without_fragment, ""),
    };
    let head = head.trim_end_matches('/');
    let base = if head.contains("://") {
        head.to_string()
    } else {
        format!("http://{head}")
    };
    format!("{base}{DEFAULT_PATH}{query}")
}
