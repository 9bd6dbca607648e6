//! The embedded store: one SQLite file in WAL mode (SPEC section 7).
//!
//! It owns the schema and every SQL statement; nothing outside this module
//! writes SQL. Two connections: a writer (registrations, and the batch writer
//! thread that records check results, events and outbox rows together) and a
//! few readers for the API. Both are blocking: reads from async code go
//! through [`Store::read`] (the store's own reader threads, `readers`),
//! writes through the batch writer thread or `spawn_blocking`.
//!
//! Durability: `journal_mode=WAL` with `synchronous=NORMAL`. A committed
//! transaction is in the WAL file (the OS page cache) before `commit`
//! returns, so it survives `kill -9` of the daemon; only a power cut can
//! lose the last transactions. A registration is acknowledged only after
//! its transaction committed.

mod channels;
mod dashboard;
mod readers;
mod rollup;
mod schema;
mod silences;
mod writer;

pub use channels::DeliveryRecord;
pub use dashboard::{CountsCache, ServiceOrder, StateCounts, UptimeWindows};
pub use readers::{ReadFailure, READER_THREADS, READ_QUEUE};
pub use rollup::{Rollup, Uptime, BOUNDS_US, RETAIN_DAYS, RETAIN_HOURS};
pub use schema::VERSION as SCHEMA_VERSION;
pub use writer::{CheckWrite, NotifyWrite, TransitionWrite, Writer, WriterHandle};

use healthchecker_core::spec::{ExpectedStatus, Target};
use healthchecker_core::{CheckResult, HealthState, Protocol, ServiceSpec};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Raw check retention (SPEC section 18): a service keeps its newest this
/// many checks (the default of `--keep-checks`)...
pub const RETAIN_CHECKS: i64 = 100;
/// ...the range `--keep-checks` accepts...
pub const KEEP_CHECKS_RANGE: std::ops::RangeInclusive<i64> = 10..=100_000;
/// ...and its failing and state-changing checks younger than this. Longer
/// history is in the roll-ups (store/rollup.rs).
pub const RETAIN_MS: i64 = 7 * 24 * 3600 * 1000;
/// Most check rows one prune pass looks at (it resumes where the last one
/// stopped, wrapping at the end of the table): the pass's work is bounded
/// whatever the size of the table.
pub const PRUNE_WALK: usize = 5_000_000;
/// Events and sent or failed mails are kept this long (the SPEC is silent;
/// 90 days answers "what happened last quarter" and bounds the file).
pub const RETAIN_EVENTS_MS: i64 = 90 * 24 * 3600 * 1000;
/// ...but at most this many per service, the newest (SPEC section 12): a
/// client that flaps a target or pauses and resumes a service in a loop
/// cannot grow the table without bound. Enforced by [`Store::prune`].
pub const MAX_EVENTS_PER_SERVICE: i64 = 1000;
/// Mails given up on (`failed`) are kept this long, for the operator to see
/// why, then pruned: an SMTP server that refuses for weeks must not fill
/// the file.
pub const RETAIN_FAILED_MAIL_MS: i64 = 7 * 24 * 3600 * 1000;
/// Pending mail this old is given up on when no sender runs (SMTP not
/// configured): the same day the sender itself allows a failing server.
pub const GIVE_UP_UNSENT_MS: i64 = 24 * 3600 * 1000;

/// Creates the database's missing directories `0700` and the database file
/// `0600`, and narrows an existing database, WAL and shared-memory file to
/// `0600` (SQLite gives the WAL and `-shm` files the database file's mode).
/// The database holds service tokens' hashes, recipients and targets: no
/// other user of the machine needs to read it. An existing directory keeps
/// its mode (it may be the user's working directory).
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| StoreError::Io { path: p, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut f = path.as_os_str().to_owned();
        f.push(suffix);
        let f = PathBuf::from(f);
        match std::fs::metadata(&f) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
                    .map_err(io(&f))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused or failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file's schema cannot be used by this build.
    #[error("{0}")]
    Schema(String),
    /// The database directory could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--max-services` reached: a new name is refused.
    #[error("the daemon already monitors its maximum of {0} services")]
    Limit(usize),
    /// A stored row no longer parses (hand-edited or corrupt file).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A read through [`Store::read`] got no answer.
    #[error("store read failed: {0:?}")]
    Read(ReadFailure),
}

/// Shared handle to the database.
#[derive(Clone)]
pub struct Store {
    /// The last write failure (disk full, read-only), cleared by a success.
    write_error: Arc<Mutex<Option<String>>>,
    /// Newest check (id, seq) of each service whose row does not show it
    /// yet: the writer commits checks every batch but the service rows
    /// only with its snapshot. Updated under the writer connection's lock.
    heads: Heads,
    /// `--keep-checks`: raw checks kept per service.
    keep_checks: Arc<std::sync::atomic::AtomicI64>,
    /// Where the next prune pass resumes its walk of `checks` (an id).
    prune_cursor: Arc<std::sync::atomic::AtomicI64>,
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    /// One reader connection per reader thread ([`READER_THREADS`]).
    reader: Arc<[Mutex<Connection>]>,
    /// Hands out reader connections when all are busy.
    next_reader: Arc<std::sync::atomic::AtomicUsize>,
    /// The reader threads behind [`Store::read`].
    readers: readers::ReaderPool,
}

/// Newest check `(id, seq)` per service id, not yet in the service row.
pub(crate) type Heads = Arc<Mutex<std::collections::HashMap<i64, (i64, i64)>>>;

/// The newest `limit` checks of the chain that starts at `head`, newest
/// first (columns as [`check_from_row`] reads them; `details` only when
/// `with_details`).
fn chain_sql(with_details: bool) -> String {
    let details = if with_details { "c.details" } else { "NULL" };
    format!(
        "WITH RECURSIVE h(id, n) AS ( \
           SELECT COALESCE(?1, (SELECT last_check_id FROM services WHERE id = ?2)), 1 \
           UNION ALL \
           SELECT c.prev_id, h.n + 1 FROM h JOIN checks c ON c.id = h.id \
           WHERE h.n < ?3 AND c.prev_id IS NOT NULL) \
         SELECT c.id, c.at, c.duration_us, c.result, c.reason, c.http_status, {details} \
         FROM h JOIN checks c ON c.id = h.id ORDER BY c.id DESC LIMIT ?3"
    )
}

/// Points every service row at its newest check after an unclean stop: the
/// checks committed after the last snapshot (ids above
/// `meta.heads_through`, at most one snapshot period of them) are scanned.
fn recover_heads(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let mark: i64 = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'heads_through'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    rollup::fold_unmarked(&tx)?;
    tx.execute(
        "UPDATE services SET last_check_id = h.m, check_seq = h.s FROM ( \
           SELECT service_id, MAX(id) AS m, MAX(seq) AS s FROM checks WHERE id > ?1 \
           GROUP BY service_id) AS h \
         WHERE h.service_id = services.id AND h.m > COALESCE(services.last_check_id, 0)",
        [mark],
    )?;
    mark_heads(&tx)?;
    tx.commit()
}

/// Records that every check written so far is reflected in its service row.
pub(crate) fn mark_heads(tx: &Connection) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO meta (key, value) \
         VALUES ('heads_through', (SELECT COALESCE(MAX(id), 0) FROM checks))",
    )?
    .execute([])?;
    Ok(())
}

/// The last check of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct LastCheck {
    /// When it ran (Unix ms).
    pub at: i64,
    /// Its result.
    pub result: CheckResult,
    /// Why it failed or warned.
    pub reason: Option<String>,
    /// How long it took (µs).
    pub duration_us: i64,
}

/// A stored service: its spec, monitoring status and health.
#[derive(Debug, Clone)]
pub struct ServiceRecord {
    /// Row id, stable for the service's life.
    pub id: i64,
    /// The validated parameters.
    pub spec: ServiceSpec,
    /// Monitoring paused.
    pub paused: bool,
    /// Current health.
    pub state: HealthState,
    /// Consecutive successes.
    pub successes: u32,
    /// Consecutive failures.
    pub failures: u32,
    /// When the current state began (Unix ms).
    pub state_since: i64,
    /// The latest check.
    pub last_check: Option<LastCheck>,
    /// The latest check that found it healthy.
    pub last_healthy_at: Option<i64>,
    /// The reason of the latest warn or fail.
    pub last_failure_reason: Option<String>,
    /// Expiry of the target's certificate (TLS targets).
    pub cert_expires_at: Option<i64>,
    /// First registration (Unix ms).
    pub created_at: i64,
    /// Latest registration or parameter change.
    pub updated_at: i64,
    /// The delivery slot of the latest notification (flap damping).
    pub last_notified_at: Option<i64>,
    /// A heartbeat's ping id (the credential in `/ping/<id>`).
    pub ping_id: Option<String>,
    /// A heartbeat's latest ping of any kind (Unix ms).
    pub last_ping_at: Option<i64>,
    /// A heartbeat's latest success ping (Unix ms): its deadline counts from it.
    pub last_success_ping_at: Option<i64>,
}

/// One stored check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRecord {
    /// Row id.
    pub id: i64,
    /// When it ran (Unix ms).
    pub at: i64,
    /// How long it took (µs).
    pub duration_us: i64,
    /// Its result.
    pub result: CheckResult,
    /// Why it failed or warned.
    pub reason: Option<String>,
    /// HTTP status, for HTTP(S) checks that got an answer.
    pub http_status: Option<u16>,
    /// The target's health+json `output`/`notes`/`checks`, as JSON text.
    pub details: Option<String>,
}

/// One stored event: a state change or a change made through the API.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Row id, increasing.
    pub id: i64,
    /// When (Unix ms).
    pub at: i64,
    /// The service's row id.
    pub service_id: i64,
    /// The service's name at the time.
    pub service: String,
    /// `state`, `registered`, `updated`, `paused`, `resumed` or `deleted`.
    pub kind: String,
    /// Previous state (state events).
    pub from: Option<HealthState>,
    /// New state (state events).
    pub to: Option<HealthState>,
    /// The check that caused it (state events).
    pub check_id: Option<i64>,
    /// The check's reason, or what changed.
    pub reason: Option<String>,
}

/// One row of the mail outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRecord {
    /// Row id.
    pub id: i64,
    /// The state event it announces.
    pub event_id: i64,
    /// The service's row id.
    pub service_id: i64,
    /// The service's name.
    pub service: String,
    /// When the event happened (Unix ms).
    pub created_at: i64,
    /// Previous state.
    pub from: HealthState,
    /// New state.
    pub to: HealthState,
    /// The reason of the check that caused it.
    pub reason: Option<String>,
    /// The target URL, for the mail.
    pub target: String,
    /// Recipient addresses.
    pub recipients: Vec<String>,
    /// When the previous state began (Unix ms).
    pub previous_since: Option<i64>,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// Earliest next attempt (Unix ms).
    pub next_attempt_at: i64,
    /// The last SMTP error, or why it is not sent.
    pub last_error: Option<String>,
    /// When the SMTP server accepted it.
    pub sent_at: Option<i64>,
    /// The mail's Message-ID once built.
    pub message_id: Option<String>,
}

/// Filter for listing services.
#[derive(Debug, Clone, Default)]
pub struct ServiceFilter {
    /// Only this state.
    pub state: Option<HealthState>,
    /// Names containing this text (case-insensitive).
    pub name_contains: Option<String>,
    /// At most this many (0: no limit).
    pub limit: usize,
    /// Skip this many (ordered by name).
    pub offset: usize,
    /// Only names after this one (the cursor of a paginated list).
    pub after: Option<String>,
}

impl ServiceFilter {
    /// Appends its state and name conditions to `sql` (a query ending in
    /// `WHERE 1=1`), numbering their parameters after those in `args`:
    /// shared by the API's list and the dashboard's.
    fn push_conditions(&self, sql: &mut String, args: &mut Vec<Box<dyn rusqlite::ToSql>>) {
        if let Some(st) = self.state {
            args.push(Box::new(st.as_str()));
            sql.push_str(&format!(" AND state = ?{}", args.len()));
        }
        if let Some(q) = self.name_contains.as_ref().filter(|q| !q.is_empty()) {
            let escaped = q
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            args.push(Box::new(format!("%{escaped}%")));
            sql.push_str(&format!(" AND name LIKE ?{} ESCAPE '\\'", args.len()));
        }
    }
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves SQLite consistent (the
    // transaction rolls back on drop), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

const SERVICE_COLUMNS: &str = "id, name, protocol, host, port, path, emails, timeout, interval, \
    unhealthy_threshold, healthy_threshold, expected_status, tls_verify, cert_warn_days, paused, \
    state, successes, failures, state_since, last_check_at, last_result, last_reason, \
    last_duration_us, last_healthy_at, last_failure_reason, cert_expires_at, created_at, updated_at, \
    last_notified_at, period, grace, ping_id, last_ping_at, last_success_ping_at, channels, tags, depends_on";

fn corrupt(what: String) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(StoreError::Corrupt(what)))
}

fn service_from_row(r: &Row<'_>) -> rusqlite::Result<ServiceRecord> {
    let protocol: String = r.get(2)?;
    let protocol: Protocol = protocol
        .parse()
        .map_err(|_| corrupt(format!("protocol {protocol}")))?;
    let emails: String = r.get(6)?;
    let emails: Vec<String> = serde_json::from_str(&emails).unwrap_or_default();
    let emails = emails.iter().filter_map(|e| e.parse().ok()).collect();
    let expected: String = r.get(11)?;
    let expected_status: ExpectedStatus = expected.parse().unwrap_or_default();
    let state: String = r.get(15)?;
    let heartbeat = match protocol {
        Protocol::Heartbeat => {
            use healthchecker_core::heartbeat::{Heartbeat, DEFAULT_GRACE, DEFAULT_PERIOD};
            Some(Heartbeat {
                period: r.get::<_, Option<u32>>(29)?.unwrap_or(DEFAULT_PERIOD),
                grace: r.get::<_, Option<u32>>(30)?.unwrap_or(DEFAULT_GRACE),
            })
        }
        _ => None,
    };
    let last_check = match r.get::<_, Option<i64>>(19)? {
        Some(at) => {
            let res: String = r.get(20)?;
            Some(LastCheck {
                at,
                result: res.parse().unwrap_or(CheckResult::Fail),
                reason: r.get(21)?,
                duration_us: r.get::<_, Option<i64>>(22)?.unwrap_or(0),
            })
        }
        None => None,
    };
    Ok(ServiceRecord {
        id: r.get(0)?,
        spec: ServiceSpec {
            name: r.get(1)?,
            target: Target {
                protocol,
                host: r.get(3)?,
                port: r.get(4)?,
                path: r.get(5)?,
            },
            emails,
            timeout: r.get(7)?,
            interval: r.get(8)?,
            unhealthy_threshold: r.get(9)?,
            healthy_threshold: r.get(10)?,
            expected_status,
            tls_verify: r.get(12)?,
            cert_warn_days: r.get(13)?,
            heartbeat,
            channels: serde_json::from_str(&r.get::<_, String>(34)?)
                .map_err(|_| corrupt("services.channels".into()))?,
            tags: serde_json::from_str(&r.get::<_, String>(35)?)
                .map_err(|_| corrupt("services.tags".into()))?,
            depends_on: serde_json::from_str(&r.get::<_, String>(36)?)
                .map_err(|_| corrupt("services.depends_on".into()))?,
        },
        paused: r.get(14)?,
        state: state.parse().unwrap_or(HealthState::Unknown),
        successes: r.get(16)?,
        failures: r.get(17)?,
        state_since: r.get(18)?,
        last_check,
        last_healthy_at: r.get(23)?,
        last_failure_reason: r.get(24)?,
        cert_expires_at: r.get(25)?,
        created_at: r.get(26)?,
        updated_at: r.get(27)?,
        last_notified_at: r.get(28)?,
        ping_id: r.get(31)?,
        last_ping_at: r.get(32)?,
        last_success_ping_at: r.get(33)?,
    })
}

fn check_from_row(r: &Row<'_>) -> rusqlite::Result<CheckRecord> {
    let res: String = r.get(3)?;
    Ok(CheckRecord {
        id: r.get(0)?,
        at: r.get(1)?,
        duration_us: r.get(2)?,
        result: res.parse().unwrap_or(CheckResult::Fail),
        reason: r.get(4)?,
        http_status: r.get(5)?,
        details: r.get(6)?,
    })
}

fn state_opt(s: Option<String>) -> Option<HealthState> {
    s.and_then(|s| s.parse().ok())
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        id: r.get(0)?,
        at: r.get(1)?,
        service_id: r.get(2)?,
        service: r.get(3)?,
        kind: r.get(4)?,
        from: state_opt(r.get(5)?),
        to: state_opt(r.get(6)?),
        check_id: r.get(7)?,
        reason: r.get(8)?,
    })
}

pub(crate) const NOTIFICATION_COLUMNS: &str =
    "id, event_id, service_id, service, created_at, from_state, \
    to_state, reason, target, recipients, previous_since, status, attempts, next_attempt_at, \
    last_error, sent_at, message_id";

pub(crate) fn notification_from_row(r: &Row<'_>) -> rusqlite::Result<NotificationRecord> {
    let recipients: String = r.get(9)?;
    Ok(NotificationRecord {
        id: r.get(0)?,
        event_id: r.get(1)?,
        service_id: r.get(2)?,
        service: r.get(3)?,
        created_at: r.get(4)?,
        from: state_opt(r.get(5)?).unwrap_or(HealthState::Unknown),
        to: state_opt(r.get(6)?).unwrap_or(HealthState::Unknown),
        reason: r.get(7)?,
        target: r.get(8)?,
        recipients: serde_json::from_str(&recipients).unwrap_or_default(),
        previous_since: r.get(10)?,
        status: r.get(11)?,
        attempts: r.get(12)?,
        next_attempt_at: r.get(13)?,
        last_error: r.get(14)?,
        sent_at: r.get(15)?,
        message_id: r.get(16)?,
    })
}

fn insert_event(
    conn: &Connection,
    at: i64,
    service_id: i64,
    service: &str,
    kind: &str,
    reason: Option<&str>,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO events (at, service_id, service, kind, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![at, service_id, service, kind, reason])?;
    Ok(conn.last_insert_rowid())
}

/// A new ping id: 128 random bits, hex (SPEC section 15).
fn new_ping_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Corrupt(format!("no randomness for a ping id: {e}")))?;
    Ok(hex::encode(bytes))
}

/// The service a ping id belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingTarget {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
}

/// What a registration did.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The stored service after the registration.
    pub record: ServiceRecord,
    /// True for a new name, false for an update of an existing one.
    pub created: bool,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        create_private(path)?;
        let mut writer = open_conn(path)?;
        schema::migrate(&mut writer)?.map_err(StoreError::Schema)?;
        recover_heads(&mut writer)?;
        // The writer touches the tail of `checks` and the services rows: with SQLite's default 2 MB cache those pages
        // are re-read from the OS for every batch. 64 MB holds them for
        // 100,000 services (measured: docs/performance.md).
        writer.pragma_update(None, "cache_size", -65_536)?;
        // Checkpoint every ~40 MB of WAL instead of ~4 MB: a page rewritten
        // by many batches is copied into the database once per checkpoint.
        writer.pragma_update(None, "wal_autocheckpoint", 10_000)?;
        let reader = (0..READER_THREADS)
            .map(|_| open_conn(path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Store {
            write_error: Arc::new(Mutex::new(None)),
            heads: Arc::default(),
            keep_checks: Arc::new(RETAIN_CHECKS.into()),
            prune_cursor: Arc::default(),
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(writer)),
            reader: reader.into(),
            next_reader: Arc::default(),
            readers: readers::ReaderPool::start(),
        })
    }

    /// Why the last write failed, if it did (cleared by the next success).
    pub fn write_error(&self) -> Option<String> {
        self.write_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets or clears the last write failure (the batch writer).
    pub(crate) fn set_write_error(&self, e: Option<String>) {
        *self.write_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// Records the outcome of a write, for `/health`.
    pub fn note_write<T>(&self, r: &Result<T, StoreError>) {
        let mut w = self.write_error.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Err(StoreError::Sqlite(e)) => *w = Some(e.to_string()),
            Ok(_) => *w = None,
            Err(_) => {}
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Registers a new service or updates an existing one of the same name,
    /// keeping its state, counters and history. Records a `registered` or
    /// `updated` event. Committed before it returns.
    pub fn register(
        &self,
        spec: &ServiceSpec,
        token_hash: &str,
        now: i64,
        max_services: usize,
    ) -> Result<Registered, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM services WHERE name = ?1",
                [&spec.name],
                |r| r.get(0),
            )
            .optional()?;
        if existing.is_none() {
            let n: i64 = tx.query_row("SELECT COUNT(*) FROM services", [], |r| r.get(0))?;
            if n as usize >= max_services {
                return Err(StoreError::Limit(max_services));
            }
        }
        let emails = serde_json::to_string(
            &spec
                .emails
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".into());
        // A heartbeat keeps its ping id across re-registrations (the job's
        // ping URL stays valid); a new one gets 128 random bits.
        let new_ping_id = match spec.heartbeat {
            Some(_) => Some(new_ping_id()?),
            None => None,
        };
        let t = &spec.target;
        let values = params![
            spec.name,
            t.protocol.as_str(),
            t.host,
            t.port,
            t.path,
            emails,
            spec.timeout,
            spec.interval,
            spec.unhealthy_threshold,
            spec.healthy_threshold,
            spec.expected_status.to_string(),
            spec.tls_verify,
            spec.cert_warn_days,
            token_hash,
            now,
            spec.heartbeat.map(|h| h.period),
            spec.heartbeat.map(|h| h.grace),
            new_ping_id,
        ];
        let (id, created) = match existing {
            Some(id) => {
                tx.execute(
                    "UPDATE services SET name=?1, protocol=?2, host=?3, port=?4, path=?5, emails=?6, \
                     timeout=?7, interval=?8, unhealthy_threshold=?9, healthy_threshold=?10, \
                     expected_status=?11, tls_verify=?12, cert_warn_days=?13, token_hash=?14, \
                     updated_at=?15, period=?16, grace=?17, \
                     ping_id = CASE WHEN ?18 IS NULL THEN NULL ELSE COALESCE(ping_id, ?18) END \
                     WHERE id=?19",
                    rusqlite::params_from_iter(values.iter().copied().chain([&id as &dyn rusqlite::ToSql])),
                )?;
                (id, false)
            }
            None => {
                // A new id is above every id ever deleted: a result still
                // queued or in flight for a deleted service, its pending
                // mail or its scheduler entry can never be taken for the
                // new service's (SQLite alone reuses the highest id).
                tx.execute(
                    "INSERT INTO services (id, name, protocol, host, port, path, emails, timeout, \
                     interval, unhealthy_threshold, healthy_threshold, expected_status, tls_verify, \
                     cert_warn_days, token_hash, state_since, created_at, updated_at, period, grace, \
                     ping_id) \
                     VALUES (1 + MAX((SELECT COALESCE(MAX(id), 0) FROM services), \
                       COALESCE((SELECT value FROM meta WHERE key = 'retired_service_id'), 0)), \
                     ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?15, \
                     ?16, ?17, ?18)",
                    values,
                )?;
                (tx.last_insert_rowid(), true)
            }
        };
        tx.execute(
            "UPDATE services SET channels = ?1, tags = ?2, depends_on = ?3 WHERE id = ?4",
            params![
                serde_json::to_string(&spec.channels).unwrap_or_else(|_| "[]".into()),
                serde_json::to_string(&spec.tags).unwrap_or_else(|_| "[]".into()),
                serde_json::to_string(&spec.depends_on).unwrap_or_else(|_| "[]".into()),
                id
            ],
        )?;
        let kind = if created { "registered" } else { "updated" };
        insert_event(&tx, now, id, &spec.name, kind, Some(&spec.target.url()))?;
        let record = tx.query_row(
            &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = ?1"),
            [id],
            service_from_row,
        )?;
        tx.commit()?;
        Ok(Registered { record, created })
    }

    /// Pauses or resumes a service; `None` if the name is unknown. Records a
    /// `paused`/`resumed` event when the flag changes.
    pub fn set_paused(
        &self,
        name: &str,
        paused: bool,
        now: i64,
    ) -> Result<Option<ServiceRecord>, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let Some((id, was)): Option<(i64, bool)> = tx
            .query_row(
                "SELECT id, paused FROM services WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
        else {
            return Ok(None);
        };
        if was != paused {
            tx.execute(
                "UPDATE services SET paused = ?1, updated_at = ?2 WHERE id = ?3",
                params![paused, now, id],
            )?;
            let kind = if paused { "paused" } else { "resumed" };
            insert_event(&tx, now, id, name, kind, None)?;
        }
        let rec = tx.query_row(
            &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = ?1"),
            [id],
            service_from_row,
        )?;
        tx.commit()?;
        Ok(Some(rec))
    }

    /// Deletes a service and its check history; events and the outbox stay.
    /// Returns its id, or `None` if the name is unknown.
    pub fn delete(&self, name: &str, now: i64) -> Result<Option<i64>, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let Some(id): Option<i64> = tx
            .query_row("SELECT id FROM services WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?
        else {
            return Ok(None);
        };
        // The history is the chain from the newest check.
        let fresh = self
            .heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        tx.execute(
            "WITH RECURSIVE h(id) AS ( \
               SELECT COALESCE(?1, (SELECT last_check_id FROM services WHERE id = ?2)) \
               UNION ALL \
               SELECT c.prev_id FROM h JOIN checks c ON c.id = h.id WHERE c.prev_id IS NOT NULL) \
             DELETE FROM checks WHERE id IN (SELECT id FROM h)",
            params![fresh.map(|h| h.0), id],
        )?;
        tx.execute("DELETE FROM services WHERE id = ?1", [id])?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('retired_service_id', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
            [id],
        )?;
        // Its roll-ups age out with their retention (ids are never
        // reused; a delete by service would scan the period-keyed tables).
        insert_event(&tx, now, id, name, "deleted", None)?;
        tx.commit()?;
        Ok(Some(id))
    }

    /// Every service, for the scheduler at start-up.
    pub fn load_all(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        self.list_services(&ServiceFilter::default())
    }

    /// Services matching `filter`, ordered by name.
    pub fn list_services(&self, filter: &ServiceFilter) -> Result<Vec<ServiceRecord>, StoreError> {
        let conn = self.read_conn();
        let mut sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE 1=1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        filter.push_conditions(&mut sql, &mut args);
        if let Some(after) = &filter.after {
            args.push(Box::new(after.clone()));
            sql.push_str(&format!(" AND name > ?{}", args.len()));
        }
        sql.push_str(" ORDER BY name");
        if filter.limit > 0 || filter.offset > 0 {
            let limit = if filter.limit == 0 {
                -1
            } else {
                filter.limit as i64
            };
            sql.push_str(&format!(" LIMIT {limit} OFFSET {}", filter.offset));
        }
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), service_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of services by state, and how many are paused.
    pub fn count_by_state(&self) -> Result<(Vec<(HealthState, i64)>, i64), StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM services GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out: Vec<(HealthState, i64)> = HealthState::ALL.iter().map(|s| (*s, 0)).collect();
        for row in rows {
            let (s, n) = row?;
            if let Some(e) = out.iter_mut().find(|(st, _)| st.as_str() == s) {
                e.1 = n;
            }
        }
        let paused = conn.query_row("SELECT COUNT(*) FROM services WHERE paused = 1", [], |r| {
            r.get(0)
        })?;
        Ok((out, paused))
    }

    /// The heartbeat service whose ping id is `ping_id`.
    pub fn service_by_ping_id(&self, ping_id: &str) -> Result<Option<PingTarget>, StoreError> {
        let conn = self.read_conn();
        let found = conn
            .prepare_cached("SELECT id, name FROM services WHERE ping_id = ?1")?
            .query_row([ping_id], |r| {
                Ok(PingTarget {
                    id: r.get(0)?,
                    name: r.get(1)?,
                })
            })
            .optional()?;
        Ok(found)
    }

    /// Records a heartbeat's ping time (and, for a success, its new
    /// deadline base); the check itself goes through the batch writer.
    pub fn record_ping(&self, id: i64, at: i64, success: bool) -> Result<(), StoreError> {
        let conn = lock(&self.writer);
        conn.prepare_cached(
            "UPDATE services SET last_ping_at = ?2, \
             last_success_ping_at = CASE WHEN ?3 THEN ?2 ELSE last_success_ping_at END \
             WHERE id = ?1",
        )?
        .execute(params![id, at, success])?;
        Ok(())
    }

    /// One service by name.
    pub fn get_service(&self, name: &str) -> Result<Option<ServiceRecord>, StoreError> {
        let conn = self.read_conn();
        Ok(conn
            .query_row(
                &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE name = ?1"),
                [name],
                service_from_row,
            )
            .optional()?)
    }

    /// The stored token hash of a service (for the token auth mode).
    pub fn token_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        let conn = self.read_conn();
        Ok(conn
            .query_row(
                "SELECT token_hash FROM services WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The newest `limit` checks of a service, newest first.
    pub fn checks(&self, service_id: i64, limit: usize) -> Result<Vec<CheckRecord>, StoreError> {
        // The fresh head is read before the reader's transaction starts: the
        // writer drops it only after the service row shows it.
        let head = self.fresh_head(service_id);
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&chain_sql(true))?;
        let rows = stmt.query_map(params![head, service_id, limit as i64], check_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn fresh_head(&self, service_id: i64) -> Option<i64> {
        let heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        heads.get(&service_id).map(|h| h.0)
    }

    /// The newest `limit` events, newest first, optionally of one service.
    pub fn events(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let conn = self.read_conn();
        let cols = "id, at, service_id, service, kind, from_state, to_state, check_id, reason";
        let rows = match service {
            Some(s) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {cols} FROM events WHERE service = ?1 ORDER BY id DESC LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![s, limit as i64], event_from_row)?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {cols} FROM events ORDER BY id DESC LIMIT ?1"
                ))?;
                let rows = stmt.query_map(params![limit as i64], event_from_row)?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(rows)
    }

    /// Outbox rows, newest first, optionally of one status and one service.
    pub fn notifications(
        &self,
        status: Option<&str>,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications \
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR service = ?2) \
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![status, service, limit as i64],
            notification_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest `n` checks of each service in `ids` (durations and
    /// results, oldest first), for sparklines.
    pub fn recent_checks_of(
        &self,
        ids: &[i64],
        n: usize,
    ) -> Result<std::collections::HashMap<i64, Vec<CheckRecord>>, StoreError> {
        let fresh: Vec<Option<i64>> = ids.iter().map(|id| self.fresh_head(*id)).collect();
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&chain_sql(false))?;
        let mut out = std::collections::HashMap::new();
        for (id, head) in ids.iter().zip(fresh) {
            let mut rows: Vec<CheckRecord> = stmt
                .query_map(params![head, id, n as i64], check_from_row)?
                .collect::<Result<_, _>>()?;
            rows.reverse();
            out.insert(*id, rows);
        }
        Ok(out)
    }

    /// True when the database answers a trivial query.
    pub fn ping(&self) -> Result<(), StoreError> {
        let conn = self.read_conn();
        conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    /// Sets how many raw checks each service keeps (`--keep-checks`,
    /// within [`KEEP_CHECKS_RANGE`]; the default is [`RETAIN_CHECKS`]).
    pub fn set_keep_checks(&self, n: i64) {
        self.keep_checks
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Deletes checks beyond the retention rule (SPEC section 18), roll-ups
    /// beyond theirs, and old events and mail. Returns the number of checks
    /// removed.
    ///
    /// A check goes when its service is gone, or when it is not among its
    /// service's newest `--keep-checks` and is either older than
    /// [`RETAIN_MS`] or a pass that changed nothing. The walk goes over
    /// `checks` in id order in pages on a reader and deletes in small
    /// writer transactions, so that pruning never holds the writer long; it
    /// looks at most [`PRUNE_WALK`] rows per pass and resumes there on the
    /// next. History reads walk a service's chain from its newest check, so
    /// they see the newest `--keep-checks` (never pruned); the failing and
    /// state-changing checks kept beyond them are reached from their events.
    pub fn prune(&self, now: i64) -> Result<usize, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let cutoff = now - RETAIN_MS;
        let keep = self.keep_checks.load(Relaxed);
        let mut removed = 0;
        let mut cursor = self.prune_cursor.load(Relaxed);
        // Only checks already in the roll-ups (a fast service may have more
        // than N checks in one roll-up period).
        let rolled: i64 = self.read_conn().query_row(
            "SELECT COALESCE((SELECT value FROM meta WHERE key = 'rolled_through'), 0)",
            [],
            |r| r.get(0),
        )?;
        let mut walked = 0;
        while walked < PRUNE_WALK {
            let mut doomed = Vec::new();
            let mut seen = 0;
            {
                let conn = self.read_conn();
                let mut stmt = conn.prepare_cached(
                    "SELECT c.id, s.id IS NULL OR (c.seq <= s.check_seq - ?2 \
                       AND (c.at < ?3 OR (c.result = 'pass' AND c.changed IS NULL))) \
                     FROM checks c LEFT JOIN services s ON s.id = c.service_id \
                     WHERE c.id > ?1 AND c.id <= ?4 ORDER BY c.id LIMIT 5000",
                )?;
                let mut rows = stmt.query(params![cursor, keep, cutoff, rolled])?;
                while let Some(r) = rows.next()? {
                    seen += 1;
                    let (id, beyond): (i64, bool) = (r.get(0)?, r.get(1)?);
                    cursor = id;
                    if beyond {
                        doomed.push(id);
                    }
                }
            }
            walked += seen;
            if !doomed.is_empty() {
                let mut conn = lock(&self.writer);
                let tx = conn.transaction()?;
                {
                    let mut stmt = tx.prepare_cached("DELETE FROM checks WHERE id = ?1")?;
                    for id in &doomed {
                        removed += stmt.execute([id])?;
                    }
                }
                tx.commit()?;
            }
            if seen < 5000 {
                // The end of the table: the next pass starts over.
                cursor = 0;
                break;
            }
        }
        self.prune_cursor.store(cursor, Relaxed);
        rollup::prune(self, now)?;
        let conn = lock(&self.writer);
        // Events and finished mails are kept for RETAIN_EVENTS_MS.
        let cutoff = now - RETAIN_EVENTS_MS;
        conn.execute("DELETE FROM events WHERE at < ?1", [cutoff])?;
        conn.execute(
            "DELETE FROM notifications WHERE status != 'pending' AND created_at < ?1",
            [cutoff],
        )?;
        conn.execute(
            "DELETE FROM notifications WHERE status = 'failed' AND created_at < ?1",
            [now - RETAIN_FAILED_MAIL_MS],
        )?;
        // Channel deliveries: as mail.
        conn.execute(
            "DELETE FROM deliveries WHERE (status != 'pending' AND created_at < ?1) \
             OR (status = 'failed' AND created_at < ?2)",
            [cutoff, now - RETAIN_FAILED_MAIL_MS],
        )?;
        // Only the newest MAX_EVENTS_PER_SERVICE events of each service
        // (the index on (service, id) answers both statements).
        let crowded: Vec<String> = conn
            .prepare("SELECT service FROM events GROUP BY service HAVING COUNT(*) > ?1")?
            .query_map([MAX_EVENTS_PER_SERVICE], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for service in crowded {
            conn.execute(
                "DELETE FROM events WHERE service = ?1 AND id < \
                 (SELECT id FROM events WHERE service = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![service, MAX_EVENTS_PER_SERVICE - 1],
            )?;
        }
        Ok(removed)
    }

    /// Marks pending mail older than [`GIVE_UP_UNSENT_MS`] `failed` with
    /// `why` as its error: for a daemon without a sender (SMTP not
    /// configured), whose outbox would otherwise only grow. [`Store::prune`]
    /// removes it after [`RETAIN_FAILED_MAIL_MS`]. Returns the rows given up.
    pub fn give_up_unsent(&self, now: i64, why: &str) -> Result<usize, StoreError> {
        let conn = lock(&self.writer);
        Ok(conn.execute(
            "UPDATE notifications SET status = 'failed', last_error = ?1 \
             WHERE status = 'pending' AND created_at < ?2",
            params![why, now - GIVE_UP_UNSENT_MS],
        )?)
    }

    /// Every pending notification of each service that has one due at
    /// `now`, oldest first. A service's pending rows always travel together
    /// (one mail), so a retried older row can never overtake a newer state.
    pub fn due_notifications(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let conn = self.read_conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications \
             WHERE status = 'pending' AND service_id IN \
               (SELECT service_id FROM notifications WHERE status = 'pending' AND next_attempt_at <= ?1) \
             ORDER BY id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![now, limit as i64], notification_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks notifications sent (the SMTP server accepted the mail).
    pub fn mark_sent(&self, ids: &[i64], message_id: &str, at: i64) -> Result<(), StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE notifications SET status = 'sent', sent_at = ?1, message_id = ?2, \
                 attempts = attempts + 1, last_error = NULL, batch_id = ?3 WHERE id = ?4",
            )?;
            let batch = ids.iter().max().copied();
            for id in ids {
                stmt.execute(params![at, message_id, batch, id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a failed delivery: retry at `next_attempt_at`, or give up.
    pub fn mark_failed_attempt(
        &self,
        ids: &[i64],
        error: &str,
        next_attempt_at: i64,
        give_up: bool,
    ) -> Result<(), StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE notifications SET attempts = attempts + 1, last_error = ?1, \
                 next_attempt_at = ?2, status = CASE WHEN ?3 THEN 'failed' ELSE status END WHERE id = ?4",
            )?;
            for id in ids {
                stmt.execute(params![error, next_attempt_at, give_up, id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn writer_conn(&self) -> Arc<Mutex<Connection>> {
        self.writer.clone()
    }

    pub(crate) fn heads(&self) -> Heads {
        self.heads.clone()
    }

    /// Runs `f` on the writer connection (tests).
    #[cfg(test)]
    pub(crate) fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = lock(&self.writer);
        Ok(f(&mut conn)?)
    }

    /// Runs `f` on one of the store's reader threads (never on tokio's
    /// shared blocking pool) and waits for it: the way async code reads.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        self.readers
            .run(move || f(&store))
            .await
            .map_err(StoreError::Read)?
    }

    /// A free reader connection, else the next one in turn (waiting for
    /// it): with one connection per reader thread, reads rarely wait.
    fn read_conn(&self) -> MutexGuard<'_, Connection> {
        for m in self.reader.iter() {
            match m.try_lock() {
                Ok(g) => return g,
                Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        let i = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.reader[i % self.reader.len()])
    }

    /// Runs `f` on a reader connection.
    pub(crate) fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.read_conn();
        Ok(f(&conn)?)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod history_tests;
