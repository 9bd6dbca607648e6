//! Delivery to named channels (SPEC section 13): the `deliveries` outbox
//! read every second, one task per channel, so that a failing or hanging
//! channel never delays another.
//!
//! Whether to notify and which channels is decided before: the writer
//! inserts one row per notification and channel in the event's
//! transaction. This module only delivers: the pending rows of one service
//! and channel travel together (one message stating the latest state, as
//! mail does), each (service, channel) pair retried on its own with the
//! mail's back-off (5 s doubling, capped at 1 h; `Retry-After` honoured)
//! until its newest row is 24 h old. A row is marked sent only after the
//! receiver's 2xx: delivery is at-least-once, and the delivery id (the
//! Idempotency-Key, the Matrix txn id) lets a receiver drop a repeat.
//!
//! Digests (SPEC section 14): before reading what is due, each pass lets
//! the store decide the newly due rows ([`Store::decide_digests`]): sent on
//! their own, or held (`digested`) for their channel's digest, which goes
//! out as one message when its window ends and is retried like a row.

pub mod kinds;
pub mod mqtt;
pub mod mqtt_sync;

use crate::clock::now_ms;
use crate::metrics::DeliveryOutcome;
use crate::metrics::Metrics;
use crate::notify::message::Message;
use crate::notify::render::Mail;
use crate::notify::sender::{Retry, POLL};
use crate::notify::Mailer;
use crate::store::{DeliveryRecord, DigestRecord, Store};
use healthchecker_core::channel::{Channel, ChannelKind};
use healthchecker_core::policy::DigestRule;
use healthchecker_core::ServiceId;
use kinds::DeliveryError;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most rows read per poll.
const BATCH: usize = 1000;

/// Sends messages to channels; shared by the outbox loop and the API's
/// test route.
pub struct Dispatcher {
    store: Store,
    http: reqwest::Client,
    mailer: Option<Mailer>,
    public_url: String,
    host: String,
    digests: DigestRule,
    /// Shared with the MQTT presence sync ([`mqtt_sync::run`]).
    presence: mqtt_sync::Presence,
}

impl Dispatcher {
    /// A dispatcher; `mailer` is `None` when SMTP is not configured (then
    /// `email` channels fail with that reason and are retried).
    pub fn new(store: Store, mailer: Option<Mailer>, public_url: String) -> Dispatcher {
        let host = crate::host::name_or_default();
        Dispatcher {
            store,
            http: kinds::client(),
            mailer,
            public_url,
            host,
            digests: DigestRule {
                threshold: 0,
                window_ms: 0,
            },
            presence: mqtt_sync::Presence::default(),
        }
    }

    /// Digests with `rule` (`--digest-threshold`, `--digest-window`);
    /// without this call, none are made.
    pub fn with_digests(mut self, rule: DigestRule) -> Dispatcher {
        self.digests = rule;
        self
    }

    /// The daemon's public URL (links in messages).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Sends one message to one channel now.
    pub async fn deliver(&self, channel: &Channel, m: &Message) -> Result<(), DeliveryError> {
        match channel.kind {
            ChannelKind::Email => {
                let Some(mailer) = &self.mailer else {
                    return Err(DeliveryError {
                        message: "smtp not configured".into(),
                        retry_after: None,
                    });
                };
                let text = format!("{}\n\n{}\n", m.title(), m.short());
                let mail = Mail {
                    subject: format!("[healthchecker] {}", m.title()),
                    html: format!("<pre>{}</pre>", maud::html! { (text) }.into_string()),
                    text,
                    message_id: format!("<{}@{}>", m.delivery_id, self.host),
                    recipients: channel.to.iter().map(|a| a.to_string()).collect(),
                };
                mailer.send(&mail).await.map_err(|e| DeliveryError {
                    message: e,
                    retry_after: None,
                })
            }
            ChannelKind::Mqtt => {
                let sent = mqtt::send(channel, m).await;
                if sent.is_ok() && !m.test && m.digest.is_none() {
                    // The sync republishes the current state over it.
                    self.presence.touched(&channel.name, m.service_id);
                }
                sent
            }
            _ => kinds::send(&self.http, channel, m).await,
        }
    }

    /// Delivers the due digests, then the due groups of one channel, one
    /// after another.
    async fn deliver_channel(&self, name: &str, work: Work, metrics: &Metrics) {
        let Work { digests, groups } = work;
        let channel = match self
            .store
            .read({
                let n = name.to_string();
                move |s| s.channel(&n)
            })
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a channel");
                return;
            }
        };
        for d in digests {
            let outcome = self.deliver_digest(channel.as_ref(), d).await;
            metrics.count_delivery(outcome);
        }
        for rows in groups {
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let result = match &channel {
                Some(c) => {
                    let mut m = Message::from_rows(&rows, &self.public_url);
                    if !m.recovered() {
                        let name = m.service.clone();
                        m.dependents = self
                            .store
                            .read(move |s| s.failing_dependents(&name))
                            .await
                            .unwrap_or_default();
                    }
                    self.deliver(c, &m).await
                }
                None => Err(DeliveryError {
                    message: "channel deleted".into(),
                    retry_after: None,
                }),
            };
            let now = now_ms();
            let s = self.store.clone();
            let outcome = match result {
                Ok(()) => {
                    tracing::info!(channel = %name, service = %rows[0].service, delivery_id = %rows.last().map(|r| r.delivery_id()).unwrap_or_default(), "notification delivered");
                    let r = tokio::task::spawn_blocking(move || s.mark_delivered(&ids, now)).await;
                    if let Ok(Err(e)) = r {
                        tracing::error!(error = %e, "delivered but not marked; it may be sent again");
                    }
                    DeliveryOutcome::Sent
                }
                Err(e) => {
                    let retry = Retry::after_failure(
                        rows.iter().map(|r| (r.attempts, r.created_at)),
                        now,
                        e.retry_after,
                    );
                    let (attempts, next) = (retry.attempts, retry.next_attempt_at);
                    // A deleted channel is given up at once.
                    let give_up = channel.is_none() || retry.give_up;
                    tracing::warn!(channel = %name, service = %rows[0].service, attempts, error = %e.message, give_up, "channel delivery failed");
                    let msg = e.message.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        s.mark_delivery_failed(&ids, &msg, next, give_up)
                    })
                    .await;
                    DeliveryOutcome::of_failure(give_up)
                }
            };
            metrics.count_delivery(outcome);
        }
    }
}

impl Dispatcher {
    /// Delivers one digest to its channel (`None`: deleted, given up);
    /// returns the metric's outcome.
    async fn deliver_digest(&self, channel: Option<&Channel>, d: DigestRecord) -> DeliveryOutcome {
        let result = match channel {
            Some(c) => {
                let items = {
                    let d = d.clone();
                    self.store.read(move |s| s.digest_items(&d)).await
                };
                match items {
                    Ok(items) => {
                        let m = Message::digest(&d, &items, &self.public_url);
                        self.deliver(c, &m).await
                    }
                    Err(e) => Err(DeliveryError {
                        message: format!("cannot read the digest: {e}"),
                        retry_after: None,
                    }),
                }
            }
            None => Err(DeliveryError {
                message: "channel deleted".into(),
                retry_after: None,
            }),
        };
        let now = now_ms();
        let s = self.store.clone();
        match result {
            Ok(()) => {
                tracing::info!(channel = %d.destination, delivery_id = %d.delivery_id(), "digest delivered");
                let r = tokio::task::spawn_blocking(move || s.mark_digest_sent(d.id, now)).await;
                if let Ok(Err(e)) = r {
                    tracing::error!(error = %e, "digest delivered but not marked; it may be sent again");
                }
                DeliveryOutcome::Sent
            }
            Err(e) => {
                let retry = Retry::after_failure(
                    std::iter::once((d.attempts, d.ends_at)),
                    now,
                    e.retry_after,
                );
                let give_up = channel.is_none() || retry.give_up;
                tracing::warn!(channel = %d.destination, attempts = retry.attempts, error = %e.message, give_up, "digest delivery failed");
                let next = retry.next_attempt_at;
                let _ = tokio::task::spawn_blocking(move || {
                    s.mark_digest_failed(d.id, &e.message, next, give_up)
                })
                .await;
                DeliveryOutcome::of_failure(give_up)
            }
        }
    }
}

/// What one channel's task delivers in a pass.
#[derive(Default)]
struct Work {
    digests: Vec<DigestRecord>,
    groups: Vec<Vec<DeliveryRecord>>,
}

/// Groups due rows by channel, then by service (each group oldest first).
fn group(rows: Vec<DeliveryRecord>) -> BTreeMap<String, Vec<Vec<DeliveryRecord>>> {
    let mut by: BTreeMap<String, BTreeMap<ServiceId, Vec<DeliveryRecord>>> = BTreeMap::new();
    for r in rows {
        by.entry(r.channel.clone())
            .or_default()
            .entry(r.service_id)
            .or_default()
            .push(r);
    }
    by.into_iter()
        .map(|(c, services)| {
            let mut groups: Vec<Vec<DeliveryRecord>> = services.into_values().collect();
            for g in &mut groups {
                g.sort_by_key(|r| r.id);
            }
            groups.sort_by_key(|g| g[0].id);
            (c, groups)
        })
        .collect()
}

/// Frees a channel for the next poll when its task ends, even by panic.
struct Release(Arc<Mutex<HashSet<String>>>, String);

impl Drop for Release {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

/// Runs the channel outbox until `cancel` fires: every [`POLL`], the due
/// rows of each channel that is not still busy go to a task of its own.
pub async fn run(d: Arc<Dispatcher>, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let tasks = TaskTracker::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(POLL) => {}
        }
        // Silences that ended: release (or suppress) what they held, mail
        // and channel rows alike, before reading what is due.
        let s = d.store.clone();
        match tokio::task::spawn_blocking(move || s.release_held(now_ms())).await {
            Ok(Ok((released, suppressed))) if released + suppressed > 0 => {
                tracing::info!(
                    released,
                    suppressed,
                    "silence ended: held notifications decided"
                )
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot release held notifications"),
            _ => {}
        }
        if d.digests.enabled() {
            let (s, rule) = (d.store.clone(), d.digests);
            match tokio::task::spawn_blocking(move || s.decide_digests("channel", now_ms(), rule))
                .await
            {
                Ok(Ok((_, held))) if held > 0 => {
                    tracing::info!(held, "channel notifications held for a digest")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot decide digests"),
                _ => {}
            }
        }
        let due = match d.store.read(|s| s.due_deliveries(now_ms(), BATCH)).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the channel outbox");
                continue;
            }
        };
        let digests = d
            .store
            .read(|s| s.due_digests("channel", now_ms(), BATCH))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the due digests");
                Vec::new()
            });
        let mut work: BTreeMap<String, Work> = BTreeMap::new();
        for dg in digests {
            work.entry(dg.destination.clone())
                .or_default()
                .digests
                .push(dg);
        }
        for (channel, groups) in group(due) {
            work.entry(channel).or_default().groups = groups;
        }
        for (channel, groups) in work {
            if !busy
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(channel.clone())
            {
                continue; // Still delivering: its rows wait for the next poll.
            }
            let (d, metrics, busy) = (d.clone(), metrics.clone(), busy.clone());
            tasks.spawn(async move {
                let _release = Release(busy, channel.clone());
                d.deliver_channel(&channel, groups, &metrics).await;
            });
        }
    }
    tasks.close();
    // Deliveries in flight end by their own timeout; they are not awaited
    // past shutdown (a row not marked is sent again after restart).
}
