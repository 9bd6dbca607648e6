//! Wake-ups across nodes (SPEC section 19): a registration, update, pause,
//! resume, delete or heartbeat ping served by any node reaches the node
//! whose bucket holds the service within a second, through PostgreSQL's
//! `LISTEN/NOTIFY` on the channel [`CHANNEL`].
//!
//! - The API path calls [`notify`] after its change committed (a
//!   notification sent inside a transaction would be delivered at its
//!   commit; through the pool it is its own statement).
//! - Every node runs one [`Listener`]: a connection of its own (not from a
//!   pool: a pooled connection would be recycled, and `LISTEN` belongs to
//!   its session), `LISTEN hc_services`, each notification decoded into a
//!   [`Wake`] and handed to a callback as [`Event::Wake`]. Notifications a
//!   node sent itself are skipped: its own API path already told its
//!   scheduler.
//! - A connection that breaks (PostgreSQL restarted, the network cut) is
//!   opened again with back-off; notifications sent meanwhile are lost, so
//!   after each reconnection the callback gets [`Event::Resync`]: read
//!   every service again. A silent connection is probed every
//!   [`PROBE_EVERY`], so a cut that sends no reset is noticed too.
//!
//! The payload is JSON, at most [`MAX_PAYLOAD`] bytes (PostgreSQL's limit
//! is 8,000): `{"from": node, "id": 12, "name": "web"}` for a change to a
//! service, with `"ping"` (`""` success, `"start"`, `"fail"` or an exit
//! code, as in the URL), `"at"` (Unix ms) and `"output"` (the last
//! [`MAX_OUTPUT`] bytes of the body, left out if its escapes would pass
//! the limit) for a ping. The receiver reads a changed service by name
//! (`get_service`); not found means deleted.

use super::{ClusterError, PgDb};
use deadpool_postgres::Pool;
use futures_util::future::BoxFuture;
use healthchecker_core::heartbeat::Ping;
use healthchecker_core::{ServiceId, UnixMs};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

/// The notification channel.
pub const CHANNEL: &str = "hc_services";
/// The largest payload sent (PostgreSQL refuses more than 8,000 bytes).
pub const MAX_PAYLOAD: usize = 7_900;
/// The most of a ping's output a notification carries (its last bytes);
/// the rest of the 10 KiB a ping body may hold is cut.
pub const MAX_OUTPUT: usize = 6_000;
/// How often an idle listener checks that its connection still answers.
pub const PROBE_EVERY: Duration = Duration::from_secs(10);
/// How long [`notify`], the `LISTEN` and a probe may take.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait before a reconnection; it doubles up to
/// [`RECONNECT_MAX`].
pub const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two reconnection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// What a notification asks the service's owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// The service was registered, updated, paused, resumed or deleted:
    /// read it again through the store by name and send the scheduler
    /// `Upsert`, or `Remove { id, name }` when it is not found (deleted)
    /// or found under another id (deleted and registered again).
    Service {
        /// Its row id.
        id: ServiceId,
        /// Its name (the scheduler's `Remove` and the metrics need it).
        name: String,
    },
    /// A heartbeat ping served by another node: send the scheduler `Ping`.
    Ping {
        /// The service's row id.
        id: ServiceId,
        /// Its name.
        name: String,
        /// Success, start, fail or an exit code.
        ping: Ping,
        /// When it arrived.
        at: UnixMs,
        /// The end of its body, at most [`MAX_OUTPUT`] bytes.
        output: Option<String>,
    },
}

/// What the [`Listener`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Another node changed a service or received a ping.
    Wake(Wake),
    /// The connection was opened again: notifications may have been
    /// missed, read every service again.
    Resync,
}

/// The listener's callback, awaited for each event in order.
pub type OnEvent = Arc<dyn Fn(Event) -> BoxFuture<'static, ()> + Send + Sync>;

/// The last `max` bytes of `s`, cut at a character boundary.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

impl Wake {
    /// The notification payload sent by node `from`. A ping's output
    /// whose JSON form would take the payload past [`MAX_PAYLOAD`] (escapes
    /// of control characters take up to six bytes each) is left out; the
    /// name always fits (at most 200 characters, SPEC section 2).
    pub fn payload(&self, from: &str) -> String {
        let mut v = match self {
            Wake::Service { id, name } => {
                serde_json::json!({ "from": from, "id": id.get(), "name": name })
            }
            Wake::Ping {
                id,
                name,
                ping,
                at,
                output,
            } => serde_json::json!({
                "from": from, "id": id.get(), "name": name, "ping": ping.suffix(),
                "at": at.get(), "output": output.as_deref().map(|o| tail(o, MAX_OUTPUT)),
            }),
        };
        let mut text = v.to_string();
        if text.len() > MAX_PAYLOAD {
            v["output"] = serde_json::Value::Null;
            text = v.to_string();
        }
        text
    }

    /// Decodes a payload: the sending node and what it asks.
    pub fn parse(payload: &str) -> Result<(String, Wake), String> {
        let v: serde_json::Value =
            serde_json::from_str(payload).map_err(|e| format!("not JSON: {e}"))?;
        let from = v["from"].as_str().ok_or("no \"from\"")?.to_string();
        let id = ServiceId::new(v["id"].as_i64().ok_or("no \"id\"")?);
        let name = v["name"].as_str().unwrap_or_default().to_string();
        let wake = match v.get("ping") {
            None => Wake::Service { id, name },
            Some(p) => Wake::Ping {
                id,
                name,
                ping: Ping::parse(Some(p.as_str().ok_or("\"ping\" is not text")?))?,
                at: UnixMs::new(v["at"].as_i64().ok_or("no \"at\"")?),
                output: v["output"].as_str().map(str::to_string),
            },
        };
        Ok((from, wake))
    }
}

/// Tells every node that `wake` happened on node `from` (`pg_notify`
/// through `pool`): call it after the change committed.
pub async fn notify(pool: &Pool, from: &str, wake: &Wake) -> Result<(), ClusterError> {
    let payload = wake.payload(from);
    let work = async {
        let client = pool.get().await?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await?;
        Ok::<(), ClusterError>(())
    };
    tokio::time::timeout(STATEMENT_TIMEOUT, work)
        .await
        .unwrap_or(Err(ClusterError::Timeout("notify")))
}

/// What the API path of a clustered node needs to wake the owner of a
/// service it changed: the pool and the node's id ([`notify`]).
#[derive(Clone)]
pub struct Notifier {
    /// The node's pool.
    pub pool: Pool,
    /// The node's id (its own notifications are skipped by its listener).
    pub node: String,
}

impl Notifier {
    /// [`notify`], a failure logged rather than returned: the change is
    /// committed, and a lost notification is covered by the owner's
    /// resync after its listener reconnects.
    pub async fn send(&self, wake: Wake) {
        if let Err(e) = notify(&self.pool, &self.node, &wake).await {
            tracing::warn!(error = %e, "cannot notify the other nodes of a change");
        }
    }
}

/// One connection listening on [`CHANNEL`].
struct Session {
    client: tokio_postgres::Client,
    /// Notification payloads, until the connection ends.
    rx: mpsc::Receiver<String>,
}

impl Session {
    async fn open(db: &PgDb) -> Result<Session, ClusterError> {
        let work = async {
            let (client, mut conn) = db.config().connect(db.tls()).await?;
            let (tx, rx) = mpsc::channel(1024);
            // Drives the connection; ends (closing `rx`) when it breaks.
            tokio::spawn(async move {
                let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                while let Some(m) = futures_util::StreamExt::next(&mut messages).await {
                    match m {
                        Ok(AsyncMessage::Notification(n)) if n.channel() == CHANNEL => {
                            if tx.send(n.payload().to_string()).await.is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "wake-up connection ended");
                            break;
                        }
                    }
                }
            });
            client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
            Ok::<Session, ClusterError>(Session { client, rx })
        };
        tokio::time::timeout(STATEMENT_TIMEOUT * 2, work)
            .await
            .unwrap_or(Err(ClusterError::Timeout("LISTEN")))
    }

    /// Whether the connection still answers.
    async fn answers(&self) -> bool {
        matches!(
            tokio::time::timeout(STATEMENT_TIMEOUT, self.client.simple_query("SELECT 1")).await,
            Ok(Ok(_))
        )
    }
}

/// A node's listener (module docs). [`Listener::connect`] opens the
/// connection and starts listening, [`Listener::spawn`] then delivers:
/// load the services and start the scheduler between the two, and nothing
/// committed meanwhile is missed (notifications wait in the connection).
pub struct Listener {
    db: PgDb,
    me: String,
    session: Session,
}

impl Listener {
    /// Connects to `db` and listens, as node `me` (its own notifications
    /// are skipped). Fails if PostgreSQL cannot be reached.
    pub async fn connect(db: &PgDb, me: impl Into<String>) -> Result<Listener, ClusterError> {
        Ok(Listener {
            db: db.clone(),
            me: me.into(),
            session: Session::open(db).await?,
        })
    }

    /// Delivers every notification of another node to `on` until
    /// `cancel`, reconnecting (and sending [`Event::Resync`]) after a
    /// broken connection.
    pub fn spawn(self, on: OnEvent, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(on, cancel))
    }

    async fn run(mut self, on: OnEvent, cancel: CancellationToken) {
        loop {
            // Deliver until the connection breaks.
            loop {
                let got = tokio::select! {
                    _ = cancel.cancelled() => return,
                    got = tokio::time::timeout(PROBE_EVERY, self.session.rx.recv()) => got,
                };
                match got {
                    Ok(Some(payload)) => match Wake::parse(&payload) {
                        Ok((from, _)) if from == self.me => {}
                        Ok((_, wake)) => on(Event::Wake(wake)).await,
                        Err(e) => {
                            tracing::warn!(error = %e, payload, "unreadable wake-up notification")
                        }
                    },
                    Ok(None) => break,
                    Err(_idle) => {
                        if !self.session.answers().await {
                            break;
                        }
                    }
                }
            }
            tracing::warn!("wake-up connection to PostgreSQL lost; reconnecting");
            let mut wait = RECONNECT_FIRST;
            self.session = loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                match Session::open(&self.db).await {
                    Ok(s) => break s,
                    Err(e) => {
                        tracing::debug!(error = %e, "wake-up reconnection failed");
                        wait = (wait * 2).min(RECONNECT_MAX);
                    }
                }
            };
            tracing::info!("wake-up connection to PostgreSQL open again; resynchronising");
            on(Event::Resync).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let wakes = [
            Wake::Service {
                id: ServiceId::new(12),
                name: "web \"1\"".into(),
            },
            Wake::Ping {
                id: ServiceId::new(3),
                name: "backup".into(),
                ping: Ping::Exit(3),
                at: UnixMs::new(1_800_000_000_000),
                output: Some("done\n".into()),
            },
            Wake::Ping {
                id: ServiceId::new(3),
                name: "backup".into(),
                ping: Ping::Success,
                at: UnixMs::new(1),
                output: None,
            },
        ];
        for w in wakes {
            let (from, back) = Wake::parse(&w.payload("node-a")).unwrap();
            assert_eq!((from.as_str(), back), ("node-a", w));
        }
    }

    #[test]
    fn payloads_stay_under_the_limit() {
        let w = Wake::Ping {
            id: ServiceId::new(3),
            name: "n".repeat(200),
            ping: Ping::Fail,
            at: UnixMs::new(1),
            // 6,000 bytes that JSON escapes to 36,000.
            output: Some("\u{1}".repeat(6_000)),
        };
        let p = w.payload("a");
        assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
        let (_, back) = Wake::parse(&p).unwrap();
        let Wake::Ping { name, output, .. } = back else {
            panic!("a ping")
        };
        // Too long with its output: sent without it.
        assert_eq!((name, output), ("n".repeat(200), None));
        let short = Wake::Ping {
            id: ServiceId::new(3),
            name: "n".into(),
            ping: Ping::Fail,
            at: UnixMs::new(1),
            output: Some(format!("{}end", "é".repeat(5_000))),
        };
        let (_, back) = Wake::parse(&short.payload("a")).unwrap();
        let Wake::Ping {
            output: Some(o), ..
        } = back
        else {
            panic!("a ping with output")
        };
        assert!(o.len() <= MAX_OUTPUT && o.ends_with("éend"), "{}", o.len());
        assert!(Wake::parse("{\"from\": \"a\"}").is_err());
        assert!(Wake::parse("nope").is_err());
    }
}
