//! Notifications: the mail outbox sender and the mail renderer (SPEC
//! section 4), and delivery to named channels (`channels`, SPEC section 13).
//!
//! The decision *which* transitions notify is pure and lives in the core
//! crate; the scheduler writes the outbox row in the same transaction as
//! the event; this module only renders and delivers.

pub mod channels;
pub mod message;
pub mod render;
pub mod sender;
pub mod smtp;

pub use sender::Mailer;
pub use smtp::{SmtpConfig, SmtpTls, SmtpUrl};

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
}
