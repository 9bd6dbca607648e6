//! What a channel message says (pure): built from the outbox rows of one
//! service and channel, oldest first. Short forms for push channels, the
//! full JSON event for webhooks.

use crate::clock::{human_duration, rfc3339};
use crate::store::DeliveryRecord;
use healthchecker_core::HealthState;

/// One message to one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Stable id: the newest row's delivery id (retries carry the same).
    pub delivery_id: String,
    /// The service's row id (PagerDuty's dedup_key).
    pub service_id: i64,
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
        }
    }

    /// A test message for a channel, sent at `now`.
    pub fn test(now: i64, public_url: &str) -> Message {
        Message {
            delivery_id: format!("hc-test-{now}"),
            service_id: 0,
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
        }
    }

    /// Whether this announces a recovery.
    pub fn recovered(&self) -> bool {
        self.state == HealthState::Healthy
    }

    /// `web is UNHEALTHY` / `web recovered`.
    pub fn title(&self) -> String {
        if self.test {
            return "healthchecker test message".into();
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

fn link(public_url: &str, service: &str) -> String {
    let seg = percent_encoding::utf8_percent_encode(service, percent_encoding::NON_ALPHANUMERIC);
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
            service_id: 7,
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
}
