//! The SMTP settings (`--smtp-url`, `--smtp-from`, the password), owned
//! here because the mail sender is what uses them: the URL is parsed and
//! checked once, by [`SmtpUrl::from_str`], when the configuration is read;
//! the sender, the credential warning and the logs use the parsed value.

use std::fmt;
use std::str::FromStr;

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtps://`: TLS from the first byte (port 465 by default).
    Implicit,
    /// `?tls=starttls` (or `required`): STARTTLS or no mail (587).
    Required,
    /// `?tls=opportunistic`: STARTTLS when offered, else plain text (25).
    Opportunistic,
    /// `smtp://` without `tls` (or `tls=none`): plain text, for a local relay (25).
    None,
}

/// A valid SMTP URL: `smtp://[user@]host[:port][?tls=starttls|opportunistic|none]`
/// or `smtps://[user@]host[:port]`; never a password (SPEC section 12).
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl(url::Url);

impl FromStr for SmtpUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
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
        Ok(SmtpUrl(u))
    }
}

impl SmtpUrl {
    /// The server's host name or address (without IPv6 brackets).
    pub fn host(&self) -> &str {
        self.0
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
    }

    /// How the connection is protected.
    pub fn tls(&self) -> SmtpTls {
        if self.0.scheme() == "smtps" {
            return SmtpTls::Implicit;
        }
        let tls = self.0.query_pairs().find(|(k, _)| k == "tls");
        match tls.as_ref().map(|(_, v)| v.as_ref()) {
            Some("starttls" | "required") => SmtpTls::Required,
            Some("opportunistic") => SmtpTls::Opportunistic,
            _ => SmtpTls::None,
        }
    }

    /// The port: the URL's, else the usual one for [`SmtpUrl::tls`].
    pub fn port(&self) -> u16 {
        self.0.port().unwrap_or(match self.tls() {
            SmtpTls::Implicit => 465,
            SmtpTls::Required => 587,
            SmtpTls::Opportunistic | SmtpTls::None => 25,
        })
    }

    /// The user to log in as (percent-decoded), if any.
    pub fn user(&self) -> Option<String> {
        let u = self.0.username();
        (!u.is_empty()).then(|| {
            percent_encoding::percent_decode_str(u)
                .decode_utf8_lossy()
                .into_owned()
        })
    }

    /// The URL without its user, for logs.
    pub fn without_user(&self) -> String {
        let mut u = self.0.clone();
        let _ = u.set_username("");
        u.to_string()
    }

    /// Why these settings could send the password in clear, if they could:
    /// a user with `tls=none` (or no `tls`) on `smtp://`, or with
    /// `tls=opportunistic`, which falls back to plain text when a server (or
    /// a man in the middle stripping `STARTTLS`) does not offer TLS.
    pub fn credential_warning(&self) -> Option<String> {
        self.user()?;
        match self.tls() {
            SmtpTls::Implicit | SmtpTls::Required => None,
            SmtpTls::Opportunistic => Some(
                "SMTP credentials may travel unencrypted: tls=opportunistic sends them in clear when the server (or someone in between) offers no STARTTLS; use ?tls=starttls or smtps://".into(),
            ),
            SmtpTls::None => Some(
                "SMTP credentials will travel unencrypted: add ?tls=starttls or use smtps://".into(),
            ),
        }
    }
}

impl fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmtpUrl({})", self.0)
    }
}

/// SMTP settings for the mail sender. `Debug` shows no password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// The server.
    pub url: SmtpUrl,
    /// The From address.
    pub from: String,
    /// The password (from `HEALTHCHECKER_SMTP_PASSWORD` or a file).
    pub password: Option<String>,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("url", &self.url)
            .field("from", &self.from)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> SmtpUrl {
        s.parse().unwrap()
    }

    #[test]
    fn urls_are_checked_once_and_read_from_then_on() {
        let e = "smtp://me:secret@host:587".parse::<SmtpUrl>().unwrap_err();
        assert!(e.contains("HEALTHCHECKER_SMTP_PASSWORD"), "{e}");
        assert!("http://host".parse::<SmtpUrl>().is_err());
        assert!("smtp://host?tls=maybe".parse::<SmtpUrl>().is_err());
        let u = url("smtp://me%40x.com@[::1]?tls=starttls");
        assert_eq!(
            (u.host(), u.port(), u.tls()),
            ("::1", 587, SmtpTls::Required)
        );
        assert_eq!(u.user().as_deref(), Some("me@x.com"));
        assert_eq!(url("smtps://mail.example").port(), 465);
        assert_eq!(url("smtp://relay.lan:2525").port(), 2525);
        assert_eq!(
            url("smtp://me@relay.lan:25").without_user(),
            "smtp://relay.lan:25"
        );
    }

    #[test]
    fn credentials_that_could_travel_in_clear_are_warned_about() {
        let warn = |s: &str| url(s).credential_warning();
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
        let c = SmtpConfig {
            url: url("smtp://me@mail.example"),
            from: "a@b.c".into(),
            password: Some("hunter2".into()),
        };
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && d.contains("<redacted>"), "{d}");
    }
}
