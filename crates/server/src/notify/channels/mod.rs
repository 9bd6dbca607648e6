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

pub mod kinds;
pub mod message;
pub mod mqtt;

use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::notify::render::Mail;
use crate::notify::sender::{count_outcome, outcome_of_failure, Retry, POLL};
use crate::notify::Mailer;
use crate::store::{DeliveryRecord, Store};
use healthchecker_core::channel::{Channel, ChannelKind};
use kinds::DeliveryError;
use message::Message;
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
}

impl Dispatcher {
    /// A dispatcher; `mailer` is `None` when SMTP is not configured (then
    /// `email` channels fail with that reason and are retried).
    pub fn new(store: Store, mailer: Option<Mailer>, public_url: String) -> Dispatcher {
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "healthchecker".into());
        Dispatcher {
            store,
            http: kinds::client(),
            mailer,
            public_url,
            host,
        }
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
            ChannelKind::Mqtt => mqtt::send(channel, m).await,
            _ => kinds::send(&self.http, channel, m).await,
        }
    }

    /// Delivers the due groups of one channel, one after another.
    async fn deliver_channel(
        &self,
        name: &str,
        groups: Vec<Vec<DeliveryRecord>>,
        metrics: &Metrics,
    ) {
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
                    "sent"
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
                    outcome_of_failure(give_up)
                }
            };
            count_outcome(metrics, outcome);
        }
    }
}

/// Groups due rows by channel, then by service (each group oldest first).
fn group(rows: Vec<DeliveryRecord>) -> BTreeMap<String, Vec<Vec<DeliveryRecord>>> {
    let mut by: BTreeMap<String, BTreeMap<i64, Vec<DeliveryRecord>>> = BTreeMap::new();
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
        let due = match d.store.read(|s| s.due_deliveries(now_ms(), BATCH)).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the channel outbox");
                continue;
            }
        };
        for (channel, groups) in group(due) {
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
