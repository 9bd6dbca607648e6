//! Notifications: the mail outbox sender and the mail renderer (SPEC section 4).
//!
//! The decision *which* transitions notify is pure and lives in the core
//! crate; the scheduler writes the outbox row in the same transaction as
//! the event; this module only renders and delivers.

pub mod render;
pub mod sender;

pub use sender::Mailer;

/// Checks an SMTP URL: `smtp://[user@]host[:port][?tls=starttls|none]` or
/// `smtps://[user@]host[:port]` (implicit TLS).
pub fn validate_smtp_url(s: &str) -> Result<(), String> {
    let u = url::Url::parse(s)
        .map_err(|e| format!("expected smtp://host:port or smtps://host:port: {e}"))?;
    match u.scheme() {
        "smtp" | "smtps" => {}
        other => {
            return Err(format!(
                "unsupported scheme {other:?} (expected smtp or smtps)"
            ))
        }
    }
    if u.password().is_some() {
        return Err("do not put the password in the URL: use HEALTHCHECKER_SMTP_PASSWORD or --smtp-password-file".into());
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("missing host".into());
    }
    for (k, v) in u.query_pairs() {
        match (k.as_ref(), v.as_ref()) {
            ("tls", "starttls" | "none" | "required" | "opportunistic") => {}
            _ => {
                return Err(format!(
                    "unsupported parameter {k}={v} (expected tls=starttls|opportunistic|none)"
                ))
            }
        }
    }
    Ok(())
}
