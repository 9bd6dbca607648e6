//! Notifications: the mail outbox sender and the mail renderer (SPEC
//! section 4), and delivery to named channels (`channels`, SPEC section 13).
//!
//! The decision *which* transitions notify is pure and lives in the core
//! crate; the scheduler writes the outbox row in the same transaction as
//! the event; this module only renders and delivers.

pub mod channels;
pub mod render;
pub mod sender;

pub use sender::Mailer;

/// `url` without its password, for errors and logs: a password put in
/// the URL by mistake is never echoed (SPEC section 12). A URL that does not
/// parse loses everything between `:` and `@` in its user part.
pub fn without_password(url: &str) -> String {
    if let Ok(mut u) = url::Url::parse(url) {
        if u.password().is_some() {
            let _ = u.set_password(None);
        }
        return u.to_string();
    }
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[start..];
    match (rest.find('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}{}", &url[..start], &rest[..colon], &rest[at..])
        }
        _ => url.to_string(),
    }
}

/// Why the SMTP settings could send the password in clear, if they could:
/// a user with `tls=none` (or no `tls`) on `smtp://`, or with
/// `tls=opportunistic`, which falls back to plain text when a server (or a
/// man in the middle stripping `STARTTLS`) does not offer TLS.
pub fn credential_warning(smtp: &crate::config::SmtpConfig) -> Option<String> {
    let u = url::Url::parse(&smtp.url).ok()?;
    if u.username().is_empty() || u.scheme() == "smtps" {
        return None;
    }
    let tls = u
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    match tls.as_deref() {
        Some("starttls" | "required") => None,
        Some("opportunistic") => Some(
            "SMTP credentials may travel unencrypted: tls=opportunistic sends them in clear when the server (or someone in between) offers no STARTTLS; use ?tls=starttls or smtps://".into(),
        ),
        _ => Some(
            "SMTP credentials will travel unencrypted: add ?tls=starttls or use smtps://".into(),
        ),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_never_echoed() {
        for (url, shown) in [
            (
                "smtp://me:hunter2@mail.example:587",
                "smtp://me@mail.example:587",
            ),
            (
                "smtp://me:hunter2@mail.example:99999",
                "smtp://me@mail.example:99999",
            ),
            ("smtps://mail.example", "smtps://mail.example"),
        ] {
            assert_eq!(without_password(url), shown);
            assert!(!without_password(url).contains("hunter2"));
        }
    }

    #[test]
    fn credentials_that_could_travel_in_clear_are_warned_about() {
        let warn = |url: &str| {
            credential_warning(&crate::config::SmtpConfig {
                url: url.into(),
                from: "a@b.c".into(),
                password: Some("secret".into()),
            })
        };
        assert!(warn("smtp://me@mail.example?tls=opportunistic")
            .unwrap()
            .contains("opportunistic"));
        assert!(warn("smtp://me@mail.example").is_some());
        assert!(warn("smtp://me@mail.example?tls=none").is_some());
        assert!(warn("smtp://me@mail.example?tls=starttls").is_none());
        assert!(warn("smtps://me@mail.example").is_none());
        assert!(warn("smtp://relay.lan?tls=opportunistic").is_none());
    }

    #[test]
    fn smtp_settings_debug_shows_no_password() {
        let c = crate::config::SmtpConfig {
            url: "smtp://me@mail.example".into(),
            from: "a@b.c".into(),
            password: Some("hunter2".into()),
        };
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && d.contains("<redacted>"), "{d}");
    }
}
