//! What a channel message says (pure): built from the outbox rows of one
//! service and channel, oldest first. Short forms for push channels, the
//! full JSON event for webhooks.

use crate::clock::{human_duration, rfc3339};
use crate::store::{DeliveryRecord, DigestItem, DigestRecord};
use healthchecker_core::{HealthState, ServiceId};

/// One line of a digest: one message's worth of a service's
/// notifications in the window (SPEC section 14).
#[derive(Debug, Clone, PartialEq)]
pub struct DigestEntry {
    /// Service name.
    pub service: String,
    /// Its latest state in the entry.
    pub state: HealthState,
    /// The state before.
    pub previous: HealthState,
    /// The latest reason, if failing.
    pub reason: Option<String>,
    /// Since when (the latest transition, Unix ms).
    pub since: i64,
    /// Transitions in the entry.
    pub transitions: usize,
    /// Held for the digest (else it was already sent on its own).
    pub held: bool,
    /// The service's dashboard page.
    pub link: String,
}

/// What a digest carries beside the usual fields.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestBody {
    /// The window's start and end (Unix ms).
    pub window: (i64, i64),
    /// Every notification of the window, oldest first.
    pub entries: Vec<DigestEntry>,
}

impl DigestBody {
    /// The entries held for the digest.
    pub fn held(&self) -> impl Iterator<Item = &DigestEntry> {
        self.entries.iter().filter(|e| e.held)
    }
}

/// One message to one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Stable id: the newest row's delivery id (retries carry the same).
    pub delivery_id: String,
    /// The service (PagerDuty's dedup_key).
    pub service_id: ServiceId,
    /// Service name.
    pub service: String,
    /// The latest state.
    pub state: HealthState,
    /// The state before the latest change.
    pub previous: HealthState,
    /// The latest reason, if the latest check failed.
    pub reason: Option<String>,
    /// The target URL.
    pub target: String,
    /// When the latest change happened (Unix ms).
    pub at: i64,
    /// How long the service was in its previous state (ms), if known.
    pub previous_for_ms: Option<i64>,
    /// The service's dashboard page.
    pub link: String,
    /// Every transition, oldest first: (at, from, to, reason).
    pub transitions: Vec<(i64, HealthState, HealthState, Option<String>)>,
    /// A test message (`POST /api/v1/channels/{name}/test`).
    pub test: bool,
    /// Dependents failing with this (parent) service (SPEC section 14).
    pub dependents: Vec<String>,
    /// A digest of several services' notifications (SPEC section 14).
    pub digest: Option<DigestBody>,
}

impl Message {
    /// The message for `rows` (one service and channel, oldest first, non-empty).
    pub fn from_rows(rows: &[DeliveryRecord], public_url: &str) -> Message {
        let latest = rows.last().expect("at least one row");
        Message {
            delivery_id: latest.delivery_id(),
            service_id: latest.service_id,
            service: latest.service.clone(),
            state: latest.to,
            previous: latest.from,
            reason: latest.reason.clone(),
            target: latest.target.clone(),
            at: latest.created_at,
            previous_for_ms: latest.previous_since.map(|s| latest.created_at - s),
            link: link(public_url, &latest.service),
            transitions: rows
                .iter()
                .map(|r| (r.created_at, r.from, r.to, r.reason.clone()))
                .collect(),
            test: false,
            dependents: Vec::new(),
            digest: None,
        }
    }

    /// The digest `d` listing `items` (its window's notifications, oldest
    /// first): one entry per service and decision, held ones in full.
    pub fn digest(d: &DigestRecord, items: &[DigestItem], public_url: &str) -> Message {
        let mut entries: Vec<(ServiceId, i64, bool, DigestEntry)> = Vec::new();
        for i in items {
            let key = (i.service_id, i.due_at, i.held);
            match entries
                .iter_mut()
                .find(|(s, due, held, _)| (*s, *due, *held) == key)
            {
                Some((_, _, _, e)) => {
                    e.state = i.to;
                    e.reason = i.reason.clone();
                    e.since = i.created_at;
                    e.transitions += 1;
                }
                None => entries.push((
                    i.service_id,
                    i.due_at,
                    i.held,
                    DigestEntry {
                        service: i.service.clone(),
                        state: i.to,
                        previous: i.from,
                        reason: i.reason.clone(),
                        since: i.created_at,
                        transitions: 1,
                        held: i.held,
                        link: link(public_url, &i.service),
                    },
                )),
            }
        }
        let entries: Vec<DigestEntry> = entries.into_iter().map(|(.., e)| e).collect();
        let rank = |s: HealthState| match s {
            HealthState::Unhealthy => 3,
            HealthState::Degraded => 2,
            HealthState::Unknown => 1,
            HealthState::Healthy => 0,
        };
        let state = entries
            .iter()
            .filter(|e| e.held)
            .map(|e| e.state)
            .max_by_key(|s| rank(*s))
            .unwrap_or(HealthState::Healthy);
        Message {
            delivery_id: d.delivery_id(),
            // No service: a digest or a test (no row has id 0).
            service_id: ServiceId::new(0),
            service: "digest".into(),
            state,
            previous: HealthState::Unknown,
            reason: None,
            target: public_url.to_string(),
            at: d.starts_at,
            previous_for_ms: None,
            link: public_url.trim_end_matches('/').to_string(),
            transitions: Vec::new(),
            test: false,
            dependents: Vec::new(),
            digest: Some(DigestBody {
                window: (d.starts_at, d.ends_at),
                entries,
            }),
        }
    }

    /// A test message for a channel, sent at `now`.
    pub fn test(now: i64, public_url: &str) -> Message {
        Message {
            delivery_id: format!("hc-test-{now}"),
            // No service: a digest or a test (no row has id 0).
            service_id: ServiceId::new(0),
            service: "healthchecker test".into(),
            state: HealthState::Healthy,
            previous: HealthState::Unknown,
            reason: None,
            target: public_url.to_string(),
            at: now,
            previous_for_ms: None,
            link: public_url.trim_end_matches('/').to_string(),
            transitions: Vec::new(),
            test: true,
            dependents: Vec::new(),
            digest: None,
        }
    }

    /// Whether this announces a recovery (a digest never does).
    pub fn recovered(&self) -> bool {
        self.digest.is_none() && self.state == HealthState::Healthy
    }

    /// `web is UNHEALTHY` / `web recovered`.
    pub fn title(&self) -> String {
        if self.test {
            return "healthchecker test message".into();
        }
        if let Some(d) = &self.digest {
            let held = d.held().count();
            return format!(
                "Digest: {held} notification{} held ({} in {})",
                if held == 1 { "" } else { "s" },
                d.entries.len(),
                human_duration(d.window.1 - d.window.0)
            );
        }
        match self.state {
            HealthState::Healthy => format!("{} recovered", self.service),
            s => format!("{} is {}", self.service, s.as_str().to_uppercase()),
        }
    }

    /// The short form: reason, since when, the target, how long it was
    /// down on recovery, and the link.
    pub fn short(&self) -> String {
        if self.test {
            return format!(
                "Test message from healthchecker: this channel works. ({})",
                self.delivery_id
            );
        }
        if let Some(d) = &self.digest {
            return digest_text(d, &self.link);
        }
        let mut s = String::new();
        if self.recovered() {
            match self.previous_for_ms {
                Some(ms) => s.push_str(&format!(
                    "Back to healthy after {} {}.",
                    human_duration(ms),
                    self.previous
                )),
                None => s.push_str("Back to healthy."),
            }
        } else {
            s.push_str(&format!(
                "{}.",
                self.reason.as_deref().unwrap_or("the latest check failed")
            ));
        }
        s.push_str(&format!(
            "\nSince {}\nTarget {}\n{}",
            rfc3339(self.at),
            self.target,
            self.link
        ));
        if !self.dependents.is_empty() {
            s.push_str(&format!(
                "\nAffected dependents ({}): {}",
                self.dependents.len(),
                self.dependents.join(", ")
            ));
        }
        if self.transitions.len() > 1 {
            let list: Vec<String> = self
                .transitions
                .iter()
                .map(|(at, from, to, _)| format!("{} {from} → {to}", rfc3339(*at)))
                .collect();
            s.push_str(&format!("\nTransitions: {}", list.join("; ")));
        }
        s
    }

    /// The documented webhook event (docs/alerts.md).
    pub fn event_json(&self) -> serde_json::Value {
        if let Some(d) = &self.digest {
            return serde_json::json!({
                "type": "digest",
                "delivery_id": self.delivery_id,
                "state": self.state.as_str(),
                "window": {"start": rfc3339(d.window.0), "end": rfc3339(d.window.1)},
                "link": self.link,
                "title": self.title(),
                "text": self.short(),
                "notifications": d.entries.iter().map(|e| serde_json::json!({
                    "service": e.service, "state": e.state.as_str(),
                    "previous_state": e.previous.as_str(), "reason": e.reason,
                    "since": rfc3339(e.since), "transitions": e.transitions,
                    "status": if e.held { "digested" } else { "sent" }, "link": e.link,
                })).collect::<Vec<_>>(),
            });
        }
        serde_json::json!({
            "type": if self.test { "test" } else { "state_change" },
            "delivery_id": self.delivery_id,
            "service": self.service,
            "state": self.state.as_str(),
            "previous_state": self.previous.as_str(),
            "reason": self.reason,
            "target": self.target,
            "at": rfc3339(self.at),
            "previous_state_ms": self.previous_for_ms,
            "link": self.link,
            "title": self.title(),
            "dependents": self.dependents,
            "text": self.short(),
            "transitions": self.transitions.iter().map(|(at, from, to, reason)| serde_json::json!({
                "at": rfc3339(*at), "from": from.as_str(), "to": to.as_str(), "reason": reason,
            })).collect::<Vec<_>>(),
        })
    }
}

/// A digest's text: the held notifications in full (service, state,
/// reason, since, link), then those already sent on their own, by name.
fn digest_text(d: &DigestBody, link: &str) -> String {
    let mut s = format!(
        "Notifications from {} to {}.\n",
        rfc3339(d.window.0),
        rfc3339(d.window.1)
    );
    for e in d.held() {
        let what = match e.state {
            HealthState::Healthy => "recovered".to_string(),
            st => st.as_str().to_uppercase(),
        };
        s.push_str(&format!(
            "\n- {} {what} since {}: {}",
            e.service,
            rfc3339(e.since),
            e.reason.as_deref().unwrap_or("the latest check passed")
        ));
        if e.transitions > 1 {
            s.push_str(&format!(" ({} transitions)", e.transitions));
        }
        s.push_str(&format!("\n  {}", e.link));
    }
    let sent: Vec<String> = d
        .entries
        .iter()
        .filter(|e| !e.held)
        .map(|e| format!("{} ({})", e.service, e.state))
        .collect();
    if !sent.is_empty() {
        s.push_str(&format!(
            "\n\nAlready sent individually ({}): {}",
            sent.len(),
            sent.join(", ")
        ));
    }
    s.push_str(&format!("\n\n{link}"));
    s
}

/// The dashboard page of `service` under `public_url`.
pub(crate) fn link(public_url: &str, service: &str) -> String {
    let seg = healthchecker_core::api::path_segment(service);
    format!("{}/services/{seg}", public_url.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, at: i64, from: HealthState, to: HealthState) -> DeliveryRecord {
        DeliveryRecord {
            id,
            channel: "phone".into(),
            event_id: id,
            service_id: ServiceId::new(7),
            service: "nas web".into(),
            created_at: at,
            from,
            to,
            reason: (to != HealthState::Healthy).then(|| "connection refused".into()),
            target: "http://nas:80/health".into(),
            previous_since: Some(at - 90_000),
            status: "pending".into(),
            attempts: 0,
            next_attempt_at: at,
            last_error: None,
            sent_at: None,
        }
    }

    #[test]
    fn a_failure_and_a_recovery_say_what_people_act_on() {
        let down = Message::from_rows(
            &[row(
                1,
                1_000_000,
                HealthState::Healthy,
                HealthState::Unhealthy,
            )],
            "http://hc:8080/",
        );
        assert_eq!(down.title(), "nas web is UNHEALTHY");
        assert!(down.short().contains("connection refused"));
        assert!(down.short().contains("http://hc:8080/services/nas%20web"));
        assert_eq!(down.delivery_id, "hc-1-1000000");
        let up = Message::from_rows(
            &[
                row(1, 1_000_000, HealthState::Healthy, HealthState::Unhealthy),
                row(2, 1_090_000, HealthState::Unhealthy, HealthState::Healthy),
            ],
            "http://hc:8080",
        );
        assert_eq!(up.title(), "nas web recovered");
        assert!(
            up.short().contains("after 1m 30s unhealthy"),
            "{}",
            up.short()
        );
        assert_eq!(up.delivery_id, "hc-2-1090000");
        assert_eq!(up.event_json()["transitions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_digest_lists_the_held_in_full_and_names_the_sent() {
        let d = DigestRecord {
            id: 3,
            outbox: "channel".into(),
            destination: "phone".into(),
            starts_at: 1_000_000,
            ends_at: 1_030_000,
            status: "pending".into(),
            attempts: 0,
            next_attempt_at: 1_030_000,
            last_error: None,
            sent_at: None,
        };
        let item = |id: i64, service: &str, to: HealthState, held: bool| DigestItem {
            id,
            service_id: ServiceId::new(id),
            service: service.into(),
            created_at: 1_000_000 + id,
            from: HealthState::Healthy,
            to,
            reason: Some(format!("{service} refused")),
            due_at: 1_000_000 + id,
            held,
        };
        let m = Message::digest(
            &d,
            &[
                item(1, "web", HealthState::Unhealthy, false),
                item(2, "db", HealthState::Degraded, true),
                item(3, "nas", HealthState::Unhealthy, true),
            ],
            "http://hc:8080",
        );
        assert_eq!(m.delivery_id, "hc-digest-3-1000000");
        assert_eq!(m.title(), "Digest: 2 notifications held (3 in 30s)");
        assert_eq!(m.state, HealthState::Unhealthy, "the worst held state");
        let text = m.short();
        assert!(text.contains("- nas UNHEALTHY since"), "{text}");
        assert!(text.contains("nas refused"), "{text}");
        assert!(text.contains("http://hc:8080/services/db"), "{text}");
        assert!(
            text.contains("Already sent individually (1): web (unhealthy)"),
            "{text}"
        );
        assert!(!m.recovered());
        let ev = m.event_json();
        assert_eq!(ev["type"], "digest");
        assert_eq!(ev["notifications"].as_array().unwrap().len(), 3);
        assert_eq!(ev["notifications"][0]["status"], "sent");
        assert_eq!(ev["notifications"][2]["status"], "digested");
    }
}
