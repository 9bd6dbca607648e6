//! Renders one mail from the outbox rows of one service (pure).
//!
//! Several rows are several transitions coalesced inside the flap gap: the
//! mail states the latest state and lists every transition with its time.

use crate::clock::{human_duration, rfc3339};
use crate::store::NotificationRecord;
use maud::html;

/// A rendered mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    /// Subject line.
    pub subject: String,
    /// Plain-text part.
    pub text: String,
    /// HTML part.
    pub html: String,
    /// Stable Message-ID (angle brackets included): the same rows give the same id.
    pub message_id: String,
    /// Recipients (union over the rows, in order).
    pub recipients: Vec<String>,
}

/// Renders the digest `d` of one recipient (SPEC section 14): its window's
/// notifications, the held ones in full, those already mailed by name.
pub fn render_digest(
    d: &crate::store::DigestRecord,
    items: &[crate::store::DigestItem],
    public_url: &str,
    host: &str,
) -> Mail {
    let m = super::message::Message::digest(d, items, public_url);
    let text = format!(
        "{}\n\n{}\n\n-- \nhealthchecker {}\n",
        m.title(),
        m.short(),
        env!("CARGO_PKG_VERSION")
    );
    let html = html! {
        (maud::DOCTYPE)
        html { body style="font-family: sans-serif" {
            h2 { (m.title()) }
            pre { (m.short()) }
        } }
    }
    .into_string();
    Mail {
        subject: format!("[healthchecker] {}", m.title()),
        text,
        html,
        message_id: format!("<healthchecker.digest.{}.{}@{}>", d.id, d.starts_at, host),
        recipients: vec![d.destination.clone()],
    }
}

fn dashboard_link(public_url: &str, service: &str) -> String {
    let seg = healthchecker_core::api::path_segment(service);
    format!("{}/services/{seg}", public_url.trim_end_matches('/'))
}

/// Renders the mail for `rows` (one service, oldest first, non-empty).
pub fn render(rows: &[NotificationRecord], public_url: &str, host: &str) -> Mail {
    let latest = rows.last().expect("at least one notification");
    let state = latest.to.as_str().to_uppercase();
    let subject = format!("[healthchecker] {} is {}", latest.service, state);
    let link = dashboard_link(public_url, &latest.service);
    let reason = latest
        .reason
        .clone()
        .unwrap_or_else(|| "the latest check passed".to_string());
    let in_previous = latest
        .previous_since
        .map(|s| human_duration(latest.created_at - s))
        .unwrap_or_else(|| "-".into());
    let mut recipients: Vec<String> = Vec::new();
    for r in rows.iter().flat_map(|r| r.recipients.iter()) {
        if !recipients.contains(r) {
            recipients.push(r.clone());
        }
    }
    let mut text = format!(
        "{name} is {state} (was {prev}).\n\n\
         Reason:    {reason}\n\
         Target:    {target}\n\
         Since:     {since}\n\
         Was {prev} for {in_previous}\n\
         Dashboard: {link}\n",
        name = latest.service,
        prev = latest.from,
        target = latest.target,
        since = rfc3339(latest.created_at),
    );
    if rows.len() > 1 {
        text.push_str("\nTransitions since the last mail (oldest first):\n");
        for r in rows {
            text.push_str(&format!(
                "  {}  {} -> {}  {}\n",
                rfc3339(r.created_at),
                r.from,
                r.to,
                r.reason.as_deref().unwrap_or("")
            ));
        }
    }
    text.push_str(&format!(
        "\n-- \nhealthchecker {}\n",
        env!("CARGO_PKG_VERSION")
    ));
    let colour = match latest.to {
        healthchecker_core::HealthState::Healthy => "#1a7f37",
        healthchecker_core::HealthState::Degraded => "#9a6700",
        healthchecker_core::HealthState::Unhealthy => "#cf222e",
        healthchecker_core::HealthState::Unknown => "#57606a",
    };
    let html = html! {
        (maud::DOCTYPE)
        html { body style="font-family: sans-serif" {
            h2 { (latest.service) " is " span style={"color:" (colour)} { (state) } }
            table cellpadding="4" {
                tr { th align="left" { "Reason" } td { (reason) } }
                tr { th align="left" { "Target" } td { code { (latest.target) } } }
                tr { th align="left" { "Since" } td { (rfc3339(latest.created_at)) } }
                tr { th align="left" { "Previous state" } td { (latest.from) " for " (in_previous) } }
            }
            @if rows.len() > 1 {
                h3 { "Transitions since the last mail" }
                ul { @for r in rows {
                    li { (rfc3339(r.created_at)) ": " (r.from) " → " (r.to) " " (r.reason.as_deref().unwrap_or("")) }
                } }
            }
            p { a href=(link) { "Open " (latest.service) " on the dashboard" } }
        } }
    }
    .into_string();
    Mail {
        subject,
        text,
        html,
        message_id: format!(
            "<healthchecker.{}.{}@{}>",
            latest.id, latest.created_at, host
        ),
        recipients,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use healthchecker_core::HealthState::*;

    fn row(
        id: i64,
        from: healthchecker_core::HealthState,
        to: healthchecker_core::HealthState,
        reason: Option<&str>,
        at: i64,
    ) -> NotificationRecord {
        NotificationRecord {
            id,
            event_id: id,
            service_id: healthchecker_core::ServiceId::new(1),
            service: "web <one>".into(),
            created_at: at,
            from,
            to,
            reason: reason.map(str::to_string),
            target: "http://10.0.0.5:9090/health".into(),
            recipients: vec!["ops@example.com".into()],
            previous_since: Some(at - 125_000),
            status: crate::store::NotificationStatus::Pending,
            attempts: 0,
            next_attempt_at: at,
            last_error: None,
            sent_at: None,
            message_id: None,
        }
    }

    #[test]
    fn one_transition_mail() {
        let m = render(
            &[row(
                7,
                Degraded,
                Unhealthy,
                Some("HTTP 503: db down"),
                1_000_000,
            )],
            "http://hc:8484/",
            "host",
        );
        assert_eq!(m.subject, "[healthchecker] web <one> is UNHEALTHY");
        assert!(m.text.contains("Reason:    HTTP 503: db down"));
        assert!(m.text.contains("Was degraded for 2m 5s"));
        assert!(m.text.contains("http://hc:8484/services/web%20%3Cone%3E"));
        assert!(m.html.contains("web &lt;one&gt;"), "escaped: {}", m.html);
        assert_eq!(m.message_id, "<healthchecker.7.1000000@host>");
        assert_eq!(m.recipients, vec!["ops@example.com"]);
    }

    #[test]
    fn coalesced_mail_states_latest_and_lists_all() {
        let rows = [
            row(1, Healthy, Degraded, Some("HTTP 503"), 1_000),
            row(2, Degraded, Unhealthy, Some("HTTP 503"), 2_000),
            row(3, Unhealthy, Healthy, None, 3_000),
        ];
        let m = render(&rows, "http://hc", "h");
        assert!(m.subject.ends_with("is HEALTHY"));
        assert!(m.text.contains("the latest check passed"));
        assert_eq!(m.text.matches(" -> ").count(), 3);
        assert_eq!(m.message_id, "<healthchecker.3.3000@h>");
    }
}
