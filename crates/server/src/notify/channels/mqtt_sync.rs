//! MQTT presence sync (SPEC section 13, issue 16): every service that an
//! `mqtt` channel serves appears in Home Assistant by itself, whether or
//! not it ever notified, and disappears when it is deleted.
//!
//! A reconciliation, not a queue: every [`SYNC_EVERY`] (and at once after a
//! notification was published to a channel) each `mqtt` channel's served
//! services are read from the store ([`Store::routed_services`], the same
//! routing as the outbox: the service's `channels`, or the default
//! channels when it names none) and compared with what this task last
//! published to that channel, kept in memory:
//! - a service new to the channel, or whose state, `state_since`, pause,
//!   name or registration changed: its discovery config, attributes and
//!   state are published (retained, QoS 1);
//! - a service deleted or no longer served by the channel: an empty
//!   retained payload on its config, attributes and state topics (Home
//!   Assistant removes the entity on an empty config);
//! - a channel deleted, or whose broker or prefixes changed: what it had
//!   published is cleared the same way with its old settings (retried up
//!   to [`ORPHAN_GIVE_UP`], then left).
//!
//! So the retained state follows every state change within a few seconds,
//! including the ones that do not notify (unknown → healthy, flap-damped
//! ones). Notifications to an `mqtt` channel still publish the same topics
//! (with the notification's reason and delivery id); as such a publication
//! may carry an older state than the sync's (a retried delivery), the
//! dispatcher marks the service ([`Presence::touched`]) and the next round
//! publishes the current state again.
//!
//! Each round connects only when something differs, one connection per
//! [`CHUNK`] services. A failed round (broker down, refused credentials,
//! timeout) changes nothing in memory and is retried with back-off
//! ([`BACKOFF_FIRST`] doubling up to [`BACKOFF_MAX`]); the next successful
//! round catches up with everything that changed meanwhile. Each channel's
//! round runs in a task of its own, so a hanging broker delays only its own
//! channel, never the outbox, the scheduler or another channel. After a
//! restart the memory is empty: every served service is published once
//! again (retained publications are idempotent).

use super::mqtt;
use super::Dispatcher;
use crate::store::{RoutedService, Store};
use healthchecker_core::channel::{Channel, ChannelKind};
use healthchecker_core::{HealthState, ServiceId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the store is compared with what was published.
pub const SYNC_EVERY: Duration = Duration::from_secs(2);
/// The wait after a channel's first failed round; it doubles with each
/// further failure.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(2);
/// The longest wait between two rounds of a failing channel.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long the entities of a deleted (or moved) channel are retried
/// before they are left on the broker.
pub const ORPHAN_GIVE_UP: Duration = Duration::from_secs(24 * 3600);
/// Services published per connection (three publications each).
pub const CHUNK: usize = 100;
/// Services read per page of the store.
const PAGE: usize = 1000;

/// What the dispatcher and the sync share.
#[derive(Default)]
pub struct Presence {
    touched: Mutex<HashSet<(String, ServiceId)>>,
    wake: Notify,
}

impl Presence {
    /// A notification was published to `channel` for `service_id`: the
    /// next round (started now) publishes the service's current state
    /// again, or clears it if the channel no longer serves it.
    pub fn touched(&self, channel: &str, service_id: ServiceId) {
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((channel.to_string(), service_id));
        self.wake.notify_one();
    }

    /// The services touched on `channel` since the last call.
    fn take_touched(&self, channel: &str) -> Vec<ServiceId> {
        let mut t = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        let ids: Vec<ServiceId> = t
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, id)| *id)
            .collect();
        for id in &ids {
            t.remove(&(channel.to_string(), *id));
        }
        ids
    }
}

/// What a channel's broker holds of each service, as far as this task
/// knows: `None` when a notification published it since (contents unknown).
type Published = HashMap<ServiceId, Option<RoutedService>>;

/// The difference between what was published and what should be.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// To publish (new, changed, or unknown on the broker).
    publish: Vec<RoutedService>,
    /// To clear (deleted, or no longer served), by id.
    clear: Vec<ServiceId>,
}

/// What a round has to do to make `published` match `wanted`.
fn plan(published: &Published, wanted: &[RoutedService]) -> Plan {
    let publish = wanted
        .iter()
        .filter(|w| published.get(&w.id).and_then(|p| p.as_ref()) != Some(*w))
        .cloned()
        .collect();
    let keep: HashSet<ServiceId> = wanted.iter().map(|w| w.id).collect();
    let mut clear: Vec<ServiceId> = published
        .keys()
        .filter(|id| !keep.contains(id))
        .copied()
        .collect();
    clear.sort_unstable();
    Plan { publish, clear }
}

/// The wait after `failures` consecutive failed rounds (at least one).
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

/// Whether two settings of a channel publish to the same place: another
/// broker or other prefixes make the old entities orphans.
fn same_place(a: &Channel, b: &Channel) -> bool {
    (&a.url, &a.topic_prefix, &a.discovery_prefix) == (&b.url, &b.topic_prefix, &b.discovery_prefix)
}

/// One channel's (or orphan's) sync state.
struct Target {
    /// The settings it publishes with.
    channel: Channel,
    published: Published,
    /// Consecutive failed rounds.
    failures: u32,
    /// No round before this.
    next_at: Instant,
    /// For an orphan: when it became one.
    orphaned_at: Option<Instant>,
}

impl Target {
    fn new(channel: Channel) -> Target {
        Target {
            channel,
            published: Published::new(),
            failures: 0,
            next_at: Instant::now(),
            orphaned_at: None,
        }
    }

    fn failed(&mut self, error: &str) {
        self.failures += 1;
        let wait = backoff(self.failures);
        self.next_at = Instant::now() + wait;
        tracing::warn!(channel = %self.channel.name, attempts = self.failures, error,
            retry_in_s = wait.as_secs(), orphan = self.orphaned_at.is_some(),
            "MQTT presence sync failed; retrying");
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(channel = %self.channel.name, "MQTT presence sync caught up");
        }
        self.failures = 0;
        self.next_at = Instant::now();
    }
}

/// A unique MQTT client id for one connection of the sync.
fn client_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "healthchecker-sync-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The empty retained payloads that remove service `id`'s entity.
fn clearing(channel: &Channel, id: ServiceId) -> [(String, String); 3] {
    let t = mqtt::topics(channel, id);
    [
        (t.config, String::new()),
        (t.attributes, String::new()),
        (t.state, String::new()),
    ]
}

/// Clears `ids` on the target's broker, a chunk per connection; each
/// chunk forgotten once acknowledged.
async fn clear(t: &mut Target, ids: &[ServiceId]) -> Result<(), String> {
    for chunk in ids.chunks(CHUNK) {
        let pubs = chunk
            .iter()
            .flat_map(|id| clearing(&t.channel, *id))
            .collect();
        mqtt::publish(&t.channel, &client_id(), pubs, true)
            .await
            .map_err(|e| e.message)?;
        for id in chunk {
            t.published.remove(id);
        }
    }
    Ok(())
}

/// Every service `channel` serves, by id.
async fn wanted(store: &Store, channel: &str) -> Result<Vec<RoutedService>, String> {
    let mut all = Vec::new();
    let mut after = ServiceId::new(0);
    loop {
        let name = channel.to_string();
        let page = store
            .read(move |s| s.routed_services(&name, after, PAGE))
            .await
            .map_err(|e| format!("cannot read the services: {e}"))?;
        let full = page.len() == PAGE;
        after = page.last().map_or(after, |r| r.id);
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// The retained publications of `r` (config, attributes, state), or
/// `None` if it was deleted meanwhile (the next round clears it).
async fn entity(
    d: &Dispatcher,
    channel: &Channel,
    r: &RoutedService,
) -> Option<Vec<(String, String)>> {
    let name = r.name.clone();
    let rec = match d.store.read(move |s| s.get_service(&name)).await {
        Ok(Some(rec)) if rec.id == r.id => rec,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "MQTT presence sync cannot read a service");
            return None;
        }
    };
    let link = crate::notify::message::link(&d.public_url, &r.name);
    let t = mqtt::topics(channel, r.id);
    let failing = matches!(r.state, HealthState::Unhealthy | HealthState::Degraded);
    let attributes = serde_json::json!({
        "service": r.name,
        "state": r.state.as_str(),
        "reason": if failing { rec.last_failure_reason.clone() } else { None },
        "since": crate::clock::rfc3339(r.state_since),
        "target": rec.spec.target.url(),
        "link": link,
        "paused": r.paused,
    });
    Some(vec![
        (
            t.config.clone(),
            mqtt::discovery_config(&t, r.id, &r.name, &link),
        ),
        (t.attributes, attributes.to_string()),
        (t.state, mqtt::state_payload(r.state).to_string()),
    ])
}

/// One round of a served channel: read, compare, publish the difference.
async fn sync_channel(d: &Dispatcher, t: &mut Target) -> Result<(), String> {
    for id in d.presence.take_touched(&t.channel.name) {
        t.published.insert(id, None);
    }
    let wanted = wanted(&d.store, &t.channel.name).await?;
    let Plan {
        publish,
        clear: gone,
    } = plan(&t.published, &wanted);
    clear(t, &gone).await?;
    for chunk in publish.chunks(CHUNK) {
        let mut pubs = Vec::with_capacity(chunk.len() * 3);
        let mut done = Vec::with_capacity(chunk.len());
        for r in chunk {
            if let Some(p) = entity(d, &t.channel, r).await {
                pubs.extend(p);
                done.push(r.clone());
            }
        }
        if pubs.is_empty() {
            continue;
        }
        mqtt::publish(&t.channel, &client_id(), pubs, true)
            .await
            .map_err(|e| e.message)?;
        for r in done {
            t.published.insert(r.id, Some(r));
        }
    }
    Ok(())
}

/// One round of a target: a served channel's sync, or an orphan's clearing.
async fn round(d: Arc<Dispatcher>, mut t: Target) -> Target {
    let result = match t.orphaned_at {
        None => sync_channel(&d, &mut t).await,
        Some(_) => {
            let ids: Vec<ServiceId> = t.published.keys().copied().collect();
            clear(&mut t, &ids).await
        }
    };
    match result {
        Ok(()) => t.succeeded(),
        Err(e) => t.failed(&e),
    }
    t
}

/// Makes `t` an orphan: what it published is cleared with its settings.
fn orphan(orphans: &mut Vec<Target>, mut t: Target) {
    if t.published.is_empty() {
        return;
    }
    tracing::info!(channel = %t.channel.name, entities = t.published.len(),
        "MQTT channel deleted or moved: clearing its Home Assistant entities");
    t.orphaned_at = Some(Instant::now());
    t.next_at = Instant::now();
    orphans.push(t);
}

/// A new target for `c`; an idle orphan publishing to the same place (a
/// channel renamed, or moved back) is taken over rather than cleared, so
/// that it never clears what the new one publishes.
fn adopt(orphans: &mut Vec<Target>, c: Channel) -> Target {
    let mut t = Target::new(c);
    if let Some(i) = orphans
        .iter()
        .position(|o| same_place(&o.channel, &t.channel))
    {
        t.published = orphans.swap_remove(i).published;
    }
    t
}

/// Where a target's round is.
enum Slot {
    Idle(Box<Target>),
    Busy,
}

/// Runs the presence sync until `cancel` fires.
pub async fn run(d: Arc<Dispatcher>, cancel: CancellationToken) {
    let mut channels: HashMap<String, Slot> = HashMap::new();
    let mut orphans: Vec<Target> = Vec::new();
    let mut rounds: JoinSet<(Option<String>, Target)> = JoinSet::new();
    // A round's task id → its channel (`None`: an orphan), for a panic.
    let mut running: HashMap<tokio::task::Id, Option<String>> = HashMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(SYNC_EVERY) => {}
            _ = d.presence.wake.notified() => {}
            Some(done) = rounds.join_next_with_id() => {
                match done {
                    Ok((id, (name, t))) => {
                        running.remove(&id);
                        match name {
                            Some(name) => { channels.insert(name, Slot::Idle(Box::new(t))); }
                            None => orphans.push(t),
                        }
                    }
                    Err(e) => {
                        // A panicked round: its memory is lost, so the
                        // channel starts afresh (publishes everything).
                        tracing::error!(error = %e, "MQTT presence sync round failed");
                        if let Some(Some(name)) = running.remove(&e.id()) {
                            channels.remove(&name);
                        }
                    }
                }
                continue;
            }
        }
        let current = match d.store.read(|s| s.channels()).await {
            Ok(all) => all
                .into_iter()
                .filter(|c| c.kind == ChannelKind::Mqtt)
                .map(|c| (c.name.clone(), c))
                .collect::<HashMap<_, _>>(),
            Err(e) => {
                tracing::warn!(error = %e, "MQTT presence sync cannot read the channels");
                continue;
            }
        };
        // Channels deleted (idle ones; a busy one is seen when it is back).
        let deleted: Vec<String> = channels
            .iter()
            .filter(|(n, s)| matches!(s, Slot::Idle(_)) && !current.contains_key(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for name in deleted {
            if let Some(Slot::Idle(t)) = channels.remove(&name) {
                orphan(&mut orphans, *t);
            }
        }
        let now = Instant::now();
        for (name, c) in current {
            let slot = channels
                .entry(name.clone())
                .or_insert_with(|| Slot::Idle(Box::new(adopt(&mut orphans, c.clone()))));
            let Slot::Idle(t) = slot else { continue };
            if !same_place(&t.channel, &c) {
                let old = std::mem::replace(&mut **t, Target::new(c.clone()));
                orphan(&mut orphans, old);
                **t = adopt(&mut orphans, c);
            } else if t.channel != c {
                // New credentials: try at once.
                t.channel = c;
                t.next_at = now;
            }
            if t.next_at > now {
                continue;
            }
            let Slot::Idle(t) = std::mem::replace(slot, Slot::Busy) else {
                unreachable!()
            };
            let handle = rounds.spawn({
                let (d, name) = (d.clone(), name.clone());
                async move { (Some(name), round(d, *t).await) }
            });
            running.insert(handle.id(), Some(name));
        }
        let (due, wait): (Vec<Target>, Vec<Target>) = std::mem::take(&mut orphans)
            .into_iter()
            .partition(|t| t.next_at <= now);
        orphans = wait;
        for t in due {
            if t.published.is_empty() {
                continue;
            }
            if t.orphaned_at
                .is_some_and(|at| at.elapsed() > ORPHAN_GIVE_UP)
            {
                tracing::warn!(channel = %t.channel.name, entities = t.published.len(),
                    "MQTT presence sync gives up clearing a deleted channel's entities");
                continue;
            }
            let handle = rounds.spawn({
                let d = d.clone();
                async move { (None, round(d, t).await) }
            });
            running.insert(handle.id(), None);
        }
    }
    rounds.abort_all();
}

#[cfg(test)]
mod tests;
