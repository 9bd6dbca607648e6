//! Dashboard logins in `--auth token` mode (SPEC section 17: the forms are
//! "behind the admin token").
//!
//! A browser cannot add `Authorization: Bearer` to a plain form post, and
//! HTTP Basic credentials (the `--private` login) are refused for changes
//! because the browser resends them on requests other sites trigger. So the
//! dashboard's login form takes the admin token once and sets a session
//! cookie: a random 256-bit id, `HttpOnly`, `SameSite=Strict`, `Secure` when
//! the daemon serves HTTPS. The id maps to an expiry in memory here (a
//! restart logs everyone out); the cookie is honoured only on dashboard form
//! routes, which the cross-site guard has already passed. What this module
//! must not do: decide what a session may change (that is `auth`, which sees
//! a session as the admin token).

use std::collections::HashMap;
use std::sync::Mutex;

/// The cookie's name.
pub const COOKIE: &str = "hc_session";
/// How long a login lasts: a working day, after which the token is asked
/// again (a forgotten browser on a shared machine does not stay admin).
pub const TTL_MS: i64 = 12 * 3_600_000;
/// Most live sessions kept: a bound on memory whoever keeps logging in;
/// past it the oldest session is dropped.
pub const MAX_SESSIONS: usize = 1_000;

/// Live sessions: id -> expiry (Unix ms).
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, i64>>);

impl Sessions {
    /// A new session valid until `now + TTL_MS`; returns its id.
    pub fn create(&self, now: i64) -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let id = hex::encode(bytes);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, exp| *exp > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), now + TTL_MS);
        Ok(id)
    }

    /// Whether `id` names a live session at `now`.
    pub fn valid(&self, id: &str, now: i64) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).is_some_and(|exp| *exp > now)
    }

    /// Ends a session (logout).
    pub fn remove(&self, id: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// The session id a request's `Cookie` header carries, if any.
pub fn cookie_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
}

/// The `Set-Cookie` value for a new session.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        TTL_MS / 1000,
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends the session in the browser.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_end_on_logout() {
        let s = Sessions::default();
        let id = s.create(1_000).unwrap();
        assert_eq!(id.len(), 64);
        assert!(s.valid(&id, 1_000 + TTL_MS - 1));
        assert!(!s.valid(&id, 1_000 + TTL_MS));
        assert!(!s.valid("forged", 1_000));
        s.remove(&id);
        assert!(!s.valid(&id, 1_001));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("cookie", "a=1; hc_session=abc ; b=2".parse().unwrap());
        assert_eq!(cookie_id(&h).as_deref(), Some("abc"));
        assert!(set_cookie("abc", true).contains("HttpOnly; SameSite=Strict"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
    }
}
