//! The PostgreSQL store (SPEC section 19): everything the daemon's SQLite
//! [`Store`](crate::store::Store) does, with the same method names,
//! arguments and record types, on the database of `--db postgres://…`.
//!
//! Like the SQLite store it is synchronous: its methods block on the
//! `postgres` crate (the blocking wrapper of tokio-postgres) and run on the
//! store's own reader threads ([`PgStore::read`]) or the writer's thread,
//! never on a tokio worker (the blocking client starts a small runtime of
//! its own per connection, which would panic there). One connection per
//! reader thread ([`READER_THREADS`]), one for the writer thread and up to
//! four (`API_WRITERS`) for the API's writes, each re-opened on its next use
//! after the connection broke; docs/cluster.md ("The
//! PostgreSQL store") says why connections of our own rather than a pool.
//!
//! Layout, one file per table as in `store/`: `services`, `pings`,
//! `checks`, `events`, `outbox` (mail, with the claim), `channels` (and
//! the channel outbox, with its claim), `silences`, `rollup`, `dashboard`,
//! `writer` (the batch of check results, fenced), `batcher` (the writer
//! thread that batches the scheduler's results), `row` (decoding columns
//! into the store's record types). The reader threads are the SQLite
//! store's pool (`store::ReaderPool`), named `pg-reader-N`.
//!
//! Not the same as SQLite, by design:
//! - Check rows are written per batch ([`PgStore::write_held`]); a
//!   service's row is written with a state change (or a new failure
//!   reason or certificate expiry), its other per-check fields and its
//!   roll-ups once per period ([`PgStore::flush_held`]). There is no
//!   in-memory overlay: reads on every node take the last check and the
//!   counters from the newest check row and add the checks above each
//!   service's roll-up mark (`services.rolled_through`) to the roll-ups.
//! - A batch is fenced: its services' buckets must be held by this node
//!   at the epochs it names, or that bucket's checks are dropped (the
//!   rest commits).
//! - Outbox rows are claimed by one node before delivery
//!   ([`PgStore::claim_notifications`], [`PgStore::claim_deliveries`]).

mod batcher;
mod channels;
mod checks;
mod dashboard;
mod digests;
mod events;
mod outbox;
mod pings;
mod rollup;
mod row;
mod services;
mod silences;
mod writer;

pub use batcher::{PgFence, PgWriter, PgWriterHandle, PgWriterTiming};
pub use outbox::CLAIM_FOR;
pub use writer::{Fencing, Hold, Written};

use super::{schema, with_causes, PgDb};
use crate::store::{StoreError, READER_THREADS};
use postgres::{GenericClient, Statement};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A PostgreSQL failure as a [`StoreError::Postgres`], with its causes.
pub(crate) fn pg(e: postgres::Error) -> StoreError {
    StoreError::Postgres(with_causes(&e))
}

/// One connection and its prepared statements.
pub(crate) struct Conn {
    client: postgres::Client,
    cache: StmtCache,
    /// When it was last handed out (`PgStore::ready`).
    last_used: std::time::Instant,
}

/// Connections for the API's writes ([`PgStore::api_conn`]).
pub(crate) const API_WRITERS: usize = 4;

/// How long an API write waits at most for a writer thread far behind
/// ([`PgStore::api_conn`]). A quarter of the writer's bound (16,384 checks
/// by default) is 5 s of results at 100,000 services and 30 s, 1 s at
/// 16,000 checks a second; the writer commits about once a second, so a
/// backlog of a second is its normal state.
const WAIT_FOR_WRITER: std::time::Duration = std::time::Duration::from_secs(2);

/// A connection unused for longer is checked before it is handed out.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);
/// How long that check waits for the server's answer.
const VALID_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

impl Conn {
    fn open(db: &PgDb) -> Result<Conn, StoreError> {
        let client = postgres::Config::from(db.config().clone())
            .connect(db.tls())
            .map_err(pg)?;
        Ok(Conn {
            client,
            last_used: std::time::Instant::now(),
            cache: StmtCache(HashMap::new()),
        })
    }

    /// The client, and the statement cache to use with it.
    pub(crate) fn parts(&mut self) -> (&mut postgres::Client, &mut StmtCache) {
        (&mut self.client, &mut self.cache)
    }
}

/// The prepared statements of one connection, by SQL text: each is parsed
/// once per connection, then only bound and executed (one round trip).
pub(crate) struct StmtCache(HashMap<String, Statement>);

impl StmtCache {
    /// The statement for `sql`, prepared on `c` the first time.
    pub(crate) fn get(
        &mut self,
        c: &mut impl GenericClient,
        sql: &str,
    ) -> Result<Statement, StoreError> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let s = c.prepare(sql).map_err(pg)?;
        self.0.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

struct Inner {
    db: PgDb,
    writer: Mutex<Option<Conn>>,
    readers: Box<[Mutex<Option<Conn>>]>,
    next_reader: std::sync::atomic::AtomicUsize,
    /// The API's writes ([`PgStore::api_conn`]), opened on first use.
    api: Box<[Mutex<Option<Conn>>]>,
    next_api: std::sync::atomic::AtomicUsize,
    /// The count of services the registration limit reads.
    service_count: services::ServiceCount,
    /// The writer thread's backlog and its bound, once a writer started
    /// ([`PgStore::writer_behind`]).
    writer_backlog: Mutex<Option<(Arc<std::sync::atomic::AtomicUsize>, usize)>>,
    pool: crate::store::ReaderPool,
    keep_checks: std::sync::atomic::AtomicI64,
    write_error: Mutex<Option<String>>,
    /// This node decides digests (`decide_digests` was called): it claims
    /// only outbox rows already decided (cluster/store/digests.rs).
    decides_digests: std::sync::atomic::AtomicBool,
}

impl Drop for Inner {
    /// Closing a blocking connection blocks on its runtime, which panics on
    /// a tokio worker (where the last handle is often dropped, at the end of
    /// `run`): the connections are closed on a thread of their own.
    fn drop(&mut self) {
        let mut conns: Vec<Conn> = self
            .readers
            .iter_mut()
            .chain(self.api.iter_mut())
            .filter_map(|m| m.get_mut().unwrap_or_else(|e| e.into_inner()).take())
            .collect();
        conns.extend(
            self.writer
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        if conns.is_empty() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("hc-pg-close".into())
                .spawn(move || drop(conns));
        } else {
            drop(conns);
        }
    }
}

/// Shared handle to the PostgreSQL store (cheap to clone).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

/// A connection of the store, opened again if it broke.
pub(crate) struct ConnGuard<'a> {
    guard: MutexGuard<'a, Option<Conn>>,
}

thread_local! {
    /// Set when a connection handed out on this thread was found ended by
    /// the server as it was given back (`ConnGuard`'s drop): what
    /// [`PgStore::once_more`] asks after a failure.
    static ENDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// True inside [`PgStore::once_more`] on this thread: an inner call
    /// runs its operation once, the outermost one decides.
    static IN_ONCE_MORE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        if self.guard.as_ref().is_some_and(|c| c.client.is_closed()) {
            ENDED.set(true);
        }
    }
}

/// Clears [`IN_ONCE_MORE`] when the outermost `once_more` ends, also when
/// its operation panics.
struct OnceMoreScope;

impl Drop for OnceMoreScope {
    fn drop(&mut self) {
        IN_ONCE_MORE.set(false);
    }
}

impl ConnGuard<'_> {
    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut Conn {
        self.guard
            .as_mut()
            .expect("a lease holds an open connection")
    }
}

fn lock(m: &Mutex<Option<Conn>>) -> MutexGuard<'_, Option<Conn>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PgStore {
    /// Connects to `db`, applies the migrations (cluster/schema.rs) and
    /// opens the writer's and the readers' connections. Blocking: call it
    /// from a thread that is not a tokio worker (`spawn_blocking`).
    pub fn open(db: &PgDb) -> Result<PgStore, StoreError> {
        migrate_blocking(db)?;
        let writer = Conn::open(db)?;
        let readers = (0..READER_THREADS)
            .map(|_| Conn::open(db).map(|c| Mutex::new(Some(c))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PgStore {
            inner: Arc::new(Inner {
                db: db.clone(),
                writer: Mutex::new(Some(writer)),
                readers: readers.into(),
                next_reader: Default::default(),
                api: (0..API_WRITERS).map(|_| Mutex::new(None)).collect(),
                next_api: Default::default(),
                service_count: Default::default(),
                writer_backlog: Mutex::new(None),
                pool: crate::store::ReaderPool::start("pg-reader"),
                keep_checks: crate::store::RETAIN_CHECKS.into(),
                write_error: Mutex::new(None),
                decides_digests: false.into(),
            }),
        })
    }

    /// The database (its URL without the password).
    pub fn db(&self) -> &PgDb {
        &self.inner.db
    }

    /// Opens `slot`'s connection again when it is missing or broke.
    fn ready<'a>(&self, m: &'a Mutex<Option<Conn>>) -> Result<ConnGuard<'a>, StoreError> {
        let mut guard = lock(m);
        // The blocking client reads its socket only while it runs a
        // statement, so a connection the server ended while it sat idle (a
        // PostgreSQL restart, a failover) still looks open and would fail
        // the next statement. A connection idle for a while is asked first
        // (`is_valid`: an empty query), and opened again if it does not
        // answer; a busy one costs nothing extra.
        let broken = guard.as_mut().is_some_and(|c| {
            c.last_used.elapsed() > IDLE_CHECK && c.client.is_valid(VALID_WITHIN).is_err()
        });
        if broken || guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = None;
            *guard = Some(Conn::open(&self.inner.db)?);
        }
        if let Some(c) = guard.as_mut() {
            c.last_used = std::time::Instant::now();
        }
        Ok(ConnGuard { guard })
    }

    /// The writer's connection (the batches of checks, the outbox, roll-ups
    /// and pruning); the API writes on [`PgStore::api_conn`].
    pub(crate) fn write_conn(&self) -> Result<ConnGuard<'_>, StoreError> {
        self.ready(&self.inner.writer)
    }

    /// Runs `op`, and once more if it failed because a connection it used
    /// had been ended by the server: a connection used within
    /// [`IDLE_CHECK`] is not asked first, so after a PostgreSQL restart
    /// its next statement fails, and whichever read or write comes first
    /// would answer an error (a 500) for a database that is back. Every
    /// `Store` method on PostgreSQL runs through it (`store/backend.rs`),
    /// so reads inside `Store::read` closures are covered call by call;
    /// nested calls run once, the outermost retries. For operations that
    /// may run twice: each is one transaction or several that each
    /// commit, and a statement sent on a connection the server had ended
    /// never ran (a commit whose answer was lost with the connection could
    /// run twice; the registration is an upsert, the writes that mark rows
    /// are idempotent, a kept ping doubled is judged once).
    pub(crate) fn once_more<T>(
        &self,
        op: impl Fn(&PgStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if IN_ONCE_MORE.get() {
            return op(self);
        }
        IN_ONCE_MORE.set(true);
        let _scope = OnceMoreScope;
        ENDED.set(false);
        match op(self) {
            Err(e @ StoreError::Postgres(_)) if ENDED.get() => {
                tracing::info!(error = %e, "PostgreSQL connection ended by the server; once more on a new one");
                op(self)
            }
            r => r,
        }
    }

    /// A free reader connection, else the next one in turn.
    pub(crate) fn read_conn(&self) -> Result<ConnGuard<'_>, StoreError> {
        self.free_or_next(&self.inner.readers, &self.inner.next_reader)
    }

    /// A connection for the API's writes (registrations, pauses,
    /// deletions, channels, silences, pings), one of [`API_WRITERS`]: a
    /// free one, else the next in turn. Not the writer's connection, so
    /// that concurrent registrations run side by side on the server
    /// rather than one after another and behind the writer thread's
    /// batches (they already run side by side across the nodes of a
    /// cluster).
    /// While the writer thread is behind ([`PgStore::writer_behind`]) they
    /// all take the first one, one after another: a storm of
    /// registrations (2,000 a second) took the server's CPU from the
    /// writer until its backlog reached its bound and the node gave up its
    /// leases (20 s of checks at 100,000 services and 30 s).
    /// Behind means past a quarter of its bound; further behind (half of
    /// it), each waits first, up to
    /// [`WAIT_FOR_WRITER`], for the writer to come back within that mark.
    pub(crate) fn api_conn(&self) -> Result<ConnGuard<'_>, StoreError> {
        if self.writer_behind(4) {
            let until = std::time::Instant::now() + WAIT_FOR_WRITER;
            while self.writer_behind(2) && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            return self.ready(&self.inner.api[0]);
        }
        self.free_or_next(&self.inner.api, &self.inner.next_api)
    }

    /// Tells the store the writer thread's backlog (its depth, shared) and
    /// its bound ([`PgWriter::start`]).
    pub(crate) fn watch_backlog(&self, depth: Arc<std::sync::atomic::AtomicUsize>, bound: usize) {
        *self
            .inner
            .writer_backlog
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((depth, bound));
    }

    /// Whether the writer thread's backlog is past a `part`th of its bound.
    pub(crate) fn writer_behind(&self, part: usize) -> bool {
        let w = self
            .inner
            .writer_backlog
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        w.as_ref().is_some_and(|(depth, bound)| {
            depth.load(std::sync::atomic::Ordering::Acquire) > *bound / part
        })
    }

    fn free_or_next<'a>(
        &self,
        slots: &'a [Mutex<Option<Conn>>],
        next: &std::sync::atomic::AtomicUsize,
    ) -> Result<ConnGuard<'a>, StoreError> {
        for m in slots {
            if let Ok(g) = m.try_lock() {
                drop(g);
                return self.ready(m);
            }
        }
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.ready(&slots[i % slots.len()])
    }

    /// Runs `f` on one of the store's reader threads and waits for it: the
    /// way async code reads, as `Store::read`.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&PgStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        self.inner
            .pool
            .run(move || f(&store))
            .await
            .map_err(StoreError::Read)?
    }

    /// Runs `f` on one of the store's reader threads and waits for it
    /// (the dispatching `Store::read`).
    pub(crate) async fn run_on_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, crate::store::ReadFailure> {
        self.inner.pool.run(f).await
    }

    /// True when the database answers a trivial query.
    pub fn ping(&self) -> Result<(), StoreError> {
        let mut l = self.read_conn()?;
        let (c, _) = l.conn().parts();
        c.simple_query("SELECT 1").map_err(pg)?;
        Ok(())
    }

    /// Why the last write failed, if it did (cleared by the next success).
    pub fn write_error(&self) -> Option<String> {
        self.inner
            .write_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the outcome of a write, for `/health`: a database failure
    /// is kept until the next success.
    pub fn note_write<T>(&self, r: &Result<T, StoreError>) {
        let mut w = self
            .inner
            .write_error
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match r {
            Err(e @ StoreError::Postgres(_)) => *w = Some(e.to_string()),
            Ok(_) => *w = None,
            Err(_) => {}
        }
    }

    /// Deletes checks beyond the retention rule (SPEC section 18), folds
    /// the past hours' roll-ups into their days (`fold_hours`), deletes
    /// roll-ups beyond their retention, events beyond `RETAIN_EVENTS_MS` and
    /// `MAX_EVENTS_PER_SERVICE`, and finished mail and channel deliveries.
    /// Returns the number of checks removed.
    pub fn prune(&self, now: i64) -> Result<usize, StoreError> {
        let removed = self.prune_checks(now)?;
        self.fold_hours(now)?;
        self.prune_rollups(now)?;
        self.prune_events(now)?;
        self.prune_outbox(now)?;
        Ok(removed)
    }

    /// Whether the query (`SELECT 1 … LIMIT 1` with `now` as `$1`) finds a
    /// row, on a reader.
    pub(crate) fn any_row_at(&self, sql: &str, now: i64) -> Result<bool, StoreError> {
        let mut l = self.read_conn()?;
        let (c, cache) = l.conn().parts();
        let s = cache.get(c, sql)?;
        Ok(c.query_opt(&s, &[&now]).map_err(pg)?.is_some())
    }
}

/// [`schema::migrate`] on a connection of its own, from blocking code.
fn migrate_blocking(db: &PgDb) -> Result<(), StoreError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Postgres(format!("a runtime to migrate: {e}")))?;
    rt.block_on(async {
        let (mut client, conn) = db.config().connect(db.tls()).await?;
        let conn = tokio::spawn(conn);
        let r = schema::migrate(&mut client).await;
        drop(client);
        let _ = conn.await;
        r
    })
    .map_err(|e| StoreError::Schema(e.to_string()))
}

#[cfg(test)]
mod tests;
