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
//!
//! Layout (docs/storage.md, "The store's code"): this file holds the
//! [`Store`] handle, opening, errors and retention as a whole; each table
//! or concern has its own file, with its record types, its one row-decoding
//! function (columns read by name, through `decode`) and its statements:
//! `services`, `pings`, `checks`, `events`, `outbox` (mail), `channels`
//! (channel outbox), `digests`, `silences`, `rollup` (uptime and latency),
//! `dashboard` (the dashboard's reads), `writer` (the batch writer),
//! `readers` (reader threads), `schema` (migrations).

mod channels;
mod checks;
mod dashboard;
mod decode;
mod digests;
mod events;
mod outbox;
mod pings;
mod readers;
mod rollup;
pub(crate) use rollup::pack as roll_pack;
mod schema;
mod services;
mod silences;
mod wal;
mod writer;
mod writes;

pub use channels::{DeliveryRecord, RoutedService};
pub use checks::{CheckRecord, Head, KEEP_CHECKS_RANGE, PRUNE_WALK, RETAIN_CHECKS, RETAIN_MS};
pub use dashboard::{CountsCache, DayUptime, ServiceOrder, TaggedPage, UptimeWindows};
pub use decode::Corruption;
pub use digests::{DigestItem, DigestRecord};
pub use events::{EventKind, EventRecord, MAX_EVENTS_PER_SERVICE, RETAIN_EVENTS_MS};
pub use outbox::{
    NotificationRecord, NotificationStatus, GIVE_UP_UNSENT_MS, RETAIN_FAILED_MAIL_MS,
};
pub use pings::{PingTarget, StoredPing};
pub(crate) use readers::ReaderPool;
pub use readers::{ReadFailure, READER_THREADS, READ_QUEUE};
pub use rollup::{Rollup, Uptime, BOUNDS_US, RETAIN_DAYS, RETAIN_HOURS};
pub use schema::VERSION as SCHEMA_VERSION;
pub use services::{LastCheck, Registered, ServiceFilter, ServiceRecord, StateCounts};
pub use writer::{CheckWrite, NotifyWrite, TransitionWrite, Writer, WriterHandle};

pub(crate) use checks::{mark_heads, Heads};
pub(crate) use services::SERVICE_COLUMNS;

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

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
    Sqlite(#[source] rusqlite::Error),
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
    /// A stored value does not decode (a hand-edited or corrupt file):
    /// which table, row and column.
    #[error("corrupt row: {0}")]
    Corrupt(Corruption),
    /// The system's random source failed (a new ping id).
    #[error("{0}")]
    Random(String),
    /// A read through [`Store::read`] got no answer.
    #[error("store read failed: {0:?}")]
    Read(ReadFailure),
    /// PostgreSQL refused or failed (`--db postgres://…`): the message,
    /// with its causes.
    #[error("postgresql: {0}")]
    Postgres(String),
}

impl From<rusqlite::Error> for StoreError {
    /// A [`Corruption`] raised inside a row-mapping closure travels
    /// wrapped in a `rusqlite::Error`; it comes out as
    /// [`StoreError::Corrupt`].
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::ToSqlConversionFailure(b) if b.is::<Corruption>() => {
                match b.downcast::<Corruption>() {
                    Ok(c) => StoreError::Corrupt(*c),
                    Err(b) => StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(b)),
                }
            }
            e => StoreError::Sqlite(e),
        }
    }
}

/// The SQLite backend of [`Store`]: the database file, its writer and
/// reader connections, and the writer's overlay.
#[derive(Clone)]
pub(crate) struct SqliteStore {
    /// The last write failure (disk full, read-only), cleared by a success.
    write_error: Arc<Mutex<Option<String>>>,
    /// Newest check ([`Head`]) of each service whose row does not show it
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
    /// [`Store::wal_bytes`], added to by the writer's WAL hook.
    wal_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// Set by the first [`SqliteStore::decide_digests`]: from then on the
    /// due reads take only rows a decision reached (store/digests.rs).
    decides_digests: Arc<std::sync::atomic::AtomicBool>,
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

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        create_private(path)?;
        let mut writer = open_conn(path)?;
        // Checkpoint every ~40 MB of WAL instead of ~4 MB: a page rewritten
        // by many batches is copied into the database once per checkpoint.
        // The WAL hook does it (PASSIVE, as `wal_autocheckpoint`, which it
        // replaces) and counts the bytes every commit appends to the WAL
        // (`wal_bytes`), migrations included.
        let wal_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        wal::install(&mut writer, path, wal::CHECKPOINT_FRAMES, wal_bytes.clone())?;
        schema::migrate(&mut writer)?.map_err(StoreError::Schema)?;
        let unrolled = checks::recover_heads(&mut writer)?;
        // The writer touches the tail of `checks` every batch and the
        // service rows and roll-ups once per snapshot (5 minutes): 16 MB
        // holds the tail and the tables' upper pages; the rest is read from
        // the OS's cache once per snapshot. (64 MB paid off when every
        // service row was rewritten every 10 s; since the snapshot period
        // is 5 minutes it only held pages in the daemon's RSS:
        // docs/performance.md.)
        writer.pragma_update(None, "cache_size", -16_384)?;
        let reader = (0..READER_THREADS)
            .map(|_| open_conn(path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SqliteStore {
            write_error: Arc::new(Mutex::new(None)),
            heads: Arc::new(Mutex::new(writer::Overlay::recovered(unrolled))),
            keep_checks: Arc::new(RETAIN_CHECKS.into()),
            prune_cursor: Arc::default(),
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(writer)),
            reader: reader.into(),
            next_reader: Arc::default(),
            readers: readers::ReaderPool::start("store-reader"),
            wal_bytes,
            decides_digests: Arc::default(),
        })
    }

    /// Bytes the writer connection appended to the WAL since the store was
    /// opened: frames (page size + 24 bytes each) and WAL headers (32 bytes
    /// each time the WAL starts again), not the checkpoints' copies into
    /// the database (store/wal.rs). `/metrics` exports it as
    /// `healthchecker_store_wal_bytes_total`.
    pub fn wal_bytes(&self) -> u64 {
        self.wal_bytes.load(std::sync::atomic::Ordering::Relaxed)
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

    /// True when the database answers a trivial query.
    pub fn ping(&self) -> Result<(), StoreError> {
        let conn = self.read_conn();
        conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    /// Deletes checks beyond the retention rule (SPEC section 18,
    /// [`Store::prune_checks`]), roll-ups beyond theirs, events beyond
    /// [`RETAIN_EVENTS_MS`] and [`MAX_EVENTS_PER_SERVICE`], and finished
    /// mail and channel deliveries. Returns the number of checks removed.
    pub fn prune(&self, now: i64) -> Result<usize, StoreError> {
        let removed = self.prune_checks(now)?;
        rollup::prune(self, now)?;
        let conn = lock(&self.writer);
        events::prune_events(&conn, now)?;
        outbox::prune_outbox(&conn, now)?;
        Ok(removed)
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

    /// Whether `sql` (a `SELECT 1 … LIMIT 1` with `now` as `?1`) finds a
    /// row, asked of a reader: most background passes find nothing, and
    /// those then never take the writer.
    fn any_row_at(&self, sql: &str, now: i64) -> Result<bool, StoreError> {
        use rusqlite::OptionalExtension;
        let any: Option<i64> = self
            .read_conn()
            .prepare_cached(sql)?
            .query_row([now], |r| r.get(0))
            .optional()?;
        Ok(any.is_some())
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

    /// Runs `f` on a reader connection (tests).
    #[cfg(test)]
    pub(crate) fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.read_conn();
        Ok(f(&conn)?)
    }
}

mod backend;
pub use backend::Store;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod history_tests;
#[cfg(test)]
mod size_tests;

#[cfg(test)]
mod decode_tests;
