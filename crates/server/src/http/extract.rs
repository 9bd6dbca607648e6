//! Extractors that turn raw requests into our types, mapping every
//! rejection to an [`ApiError`] that names what was wrong.

use super::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use bytes::Bytes;

/// Largest request body accepted (SPEC section 12: 64 KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// The raw body, at most [`MAX_BODY`] bytes (413 beyond).
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(r) if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::TooLarge(MAX_BODY))
            }
            Err(r) => Err(ApiError::bad("body", r.body_text())),
        }
    }
}

/// The `{name}` path segment, percent-decoded (names may hold spaces and
/// any Unicode). Bad percent-encoding or UTF-8 is a 400 naming `name`.
pub struct ServiceName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ServiceName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(n)| ServiceName(n))
            .map_err(|e| {
                ApiError::bad(
                    "name",
                    format!("invalid service name in path: {}", e.body_text()),
                )
            })
    }
}

/// Parses a body that must be one JSON object (the channel and silence
/// routes); anything else is a 400 naming `body`.
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("body", format!("malformed JSON body: {e}")))?;
    match value {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(ApiError::bad("body", "the body must be a JSON object")),
    }
}

/// Decodes `application/x-www-form-urlencoded` text (a query or a form
/// body) into pairs, refusing bad percent-encoding and bad UTF-8 instead of
/// replacing characters.
pub fn form_pairs(raw: &[u8], what: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match part.iter().position(|b| *b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &[][..]),
        };
        let decode = |s: &[u8]| -> Result<String, ApiError> {
            let plus: Vec<u8> = s
                .iter()
                .map(|b| if *b == b'+' { b' ' } else { *b })
                .collect();
            percent_encoding::percent_decode(&plus)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| ApiError::bad(what, format!("the {what} is not valid UTF-8")))
        };
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

/// The request's query string as pairs.
pub struct Query(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        form_pairs(q.as_bytes(), "query").map(Query)
    }
}

/// The last value of `key` among decoded form or query `pairs` (a field
/// given twice counts as given last, as browsers and the seed's client
/// expect).
pub fn last_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl Query {
    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        last_value(&self.0, key)
    }

    /// `key` as a count from 0 (`offset`, `page`); absent or empty is 0.
    pub fn count(&self, key: &str) -> Result<usize, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| ApiError::bad(key, format!("invalid {key} {v:?}"))),
        }
    }

    /// `key` as a number in `1..=max`, or `default`.
    pub fn limit(&self, key: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::bad(key, format!("invalid {key} {v:?} (valid: 1 to {max})"))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_forms_and_refuses_bad_utf8() {
        let p = form_pairs(b"appname=My+App&url=http%3A%2F%2Fh%3A1&x", "form").unwrap();
        assert_eq!(p[0], ("appname".into(), "My App".into()));
        assert_eq!(p[1].1, "http://h:1");
        assert_eq!(p[2], ("x".into(), "".into()));
        assert!(form_pairs(b"appname=%FF%FE", "form").is_err());
    }
}
