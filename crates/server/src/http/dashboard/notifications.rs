//! A service's notifications on its page: the mails of its `email` field
//! and its deliveries to named channels, each with its status and reason
//! (`pending`, `sent`, `failed`, and the alert policy's `held`,
//! `suppressed` and `digested`, SPEC section 14). Rendering only: the
//! page reads the rows.

use super::when;
use crate::store::{DeliveryRecord, NotificationRecord};
use healthchecker_core::HealthState;
use maud::{html, Markup};

/// Rows shown per outbox.
pub(super) const ROWS: usize = 30;

/// One row of the table, from either outbox.
struct Row<'a> {
    at: i64,
    from: HealthState,
    to: HealthState,
    via: String,
    status: &'a str,
    attempts: i64,
    reason: String,
}

/// What a status means, for the `title` of its cell.
fn meaning(status: &str) -> &'static str {
    match status {
        "pending" => "waiting for delivery or a retry",
        "sent" => "delivered",
        "failed" => "given up",
        "held" => "held by a silence or a failing parent",
        "suppressed" => "not sent: nothing left to announce when its hold ended",
        "digested" => "listed in a digest instead of sent on its own",
        _ => "",
    }
}

/// The reason shown: the row's own (`last_error`), preceded by what the
/// policy did when the row's status is the policy's and its text does not
/// say so already (a held mail row's note is "smtp not configured").
fn reason(status: &str, last_error: Option<&str>) -> String {
    let policy = matches!(status, "held" | "suppressed" | "digested");
    match last_error {
        Some(e) if !policy || e.starts_with(status) || e.starts_with("held") => e.to_string(),
        Some(e) => format!("{} ({e})", meaning(status)),
        None if policy => meaning(status).to_string(),
        None => String::new(),
    }
}

/// The section: mail and channel rows together, newest first.
pub(super) fn section(mails: &[NotificationRecord], deliveries: &[DeliveryRecord]) -> Markup {
    let mut rows: Vec<Row<'_>> = mails
        .iter()
        .map(|n| Row {
            at: n.created_at,
            from: n.from,
            to: n.to,
            via: format!("mail to {}", n.recipients.join(", ")),
            status: n.status.as_str(),
            attempts: n.attempts,
            reason: reason(n.status.as_str(), n.last_error.as_deref()),
        })
        .chain(deliveries.iter().map(|d| Row {
            at: d.created_at,
            from: d.from,
            to: d.to,
            via: format!("channel {}", d.channel),
            status: &d.status,
            attempts: d.attempts,
            reason: reason(&d.status, d.last_error.as_deref()),
        }))
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.at));
    html! {
        section {
            h2 { "Notifications" }
            @if rows.is_empty() {
                p class="reason" { "None yet: a notification is made when the service becomes degraded or unhealthy, or recovers." }
            } @else {
                div class="scroll" {
                    table class="notifications" id="notifications" {
                        thead { tr { th { "time" } th { "change" } th { "via" } th { "status" } th { "attempts" } th { "reason" } } }
                        tbody {
                            @for r in &rows {
                                tr {
                                    td { (when(r.at)) }
                                    td { (r.from.as_str()) " → " (r.to.as_str()) }
                                    td { (r.via) }
                                    td class={"status " (r.status)} title=(meaning(r.status)) { (r.status) }
                                    td { (r.attempts) }
                                    td class="reason" { (r.reason) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_status_always_says_why() {
        assert_eq!(
            reason("held", Some("smtp not configured")),
            "held by a silence or a failing parent (smtp not configured)"
        );
        assert_eq!(
            reason("held", Some("held: parent router is degraded")),
            "held: parent router is degraded"
        );
        assert_eq!(
            reason("suppressed", None),
            "not sent: nothing left to announce when its hold ended"
        );
        assert_eq!(reason("pending", Some("HTTP 503: busy")), "HTTP 503: busy");
        assert_eq!(reason("sent", None), "");
    }
}
