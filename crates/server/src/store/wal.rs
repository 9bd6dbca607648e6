//! The writer connection's WAL hook: counts the bytes every commit appends
//! to the WAL file ([`Store::wal_bytes`](super::Store::wal_bytes), exported
//! as `healthchecker_store_wal_bytes_total`; SPEC section 18's budget is
//! "≤ 200 bytes written (WAL) per check") and checkpoints the WAL as
//! `PRAGMA wal_autocheckpoint` did, which a WAL hook replaces.
//!
//! What is counted: each frame a commit appends (a 24-byte frame header
//! and one page, `PRAGMA page_size`), plus the 32-byte WAL header whenever
//! a commit starts the WAL from its first frame (a new WAL file, or the WAL
//! restarted after a checkpoint copied every frame into the database).
//! Not counted: frames written by a transaction that then rolled back
//! (SQLite overwrites them; the writer's 64 MB cache makes such spills
//! rare), the checkpoints' copies into the database file, and whatever was
//! in the WAL before [`install`].

use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, MAIN_DB};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// WAL frames (pages) after which the writer checkpoints: every ~40 MB of
/// WAL instead of SQLite's default 1,000 pages (~4 MB).
pub(crate) const CHECKPOINT_FRAMES: i32 = 10_000;

/// Bytes of the WAL file's header.
const WAL_HEADER: u64 = 32;
/// Bytes of a frame's header (before its page).
const FRAME_HEADER: u64 = 24;

/// The first 32 bytes of the WAL file (its header), if it has them. A
/// restart of the WAL writes a new header (the checkpoint sequence number
/// and the salts change).
fn wal_header(wal: &Path) -> Option<[u8; 32]> {
    let f = std::fs::File::open(wal).ok()?;
    let mut h = [0u8; 32];
    f.read_exact_at(&mut h, 0).ok()?;
    Some(h)
}

/// What the hook remembers between commits.
struct Tracker {
    /// Bytes of a frame: page size + 24.
    frame: u64,
    /// Frames in the WAL after the last commit (SQLite's `mxFrame`).
    frames: u64,
    /// Set after a checkpoint copied every frame: the WAL's header then.
    /// The next commit may restart the WAL (then it writes a new header)
    /// or, when a reader still uses the old frames, append to them.
    armed: Option<Option<[u8; 32]>>,
    /// The WAL file.
    wal: PathBuf,
}

impl Tracker {
    /// Bytes appended by a commit that left `pages` frames in the WAL.
    fn commit(&mut self, pages: u64) -> u64 {
        // The WAL restarted (its frame count only goes down then), or a
        // header different from the one seen after the last full
        // checkpoint says it did.
        let armed = self.armed.take();
        let restarted =
            pages <= self.frames || armed.is_some_and(|before| wal_header(&self.wal) != before);
        let (appended, header) = if restarted {
            (pages, true)
        } else {
            // Starting from an empty WAL also writes its header.
            (pages - self.frames, self.frames == 0)
        };
        self.frames = pages;
        appended * self.frame + if header { WAL_HEADER } else { 0 }
    }

    /// After a checkpoint that reported `log` frames in the WAL, `done` of
    /// them in the database.
    fn checkpointed(&mut self, log: i32, done: i32) {
        if log >= 0 && log == done {
            self.armed = Some(wal_header(&self.wal));
        }
    }
}

/// Installs the WAL hook on `conn` (the writer connection of the database
/// at `db`): every commit adds the bytes it appended to the WAL to `bytes`,
/// and a commit that leaves `checkpoint_at` frames or more in the WAL runs
/// a PASSIVE checkpoint, as SQLite's auto-checkpoint (itself a WAL hook,
/// replaced by this one) does. Frames already in the WAL (a daemon killed
/// before a checkpoint) are not counted; they are read from a NOOP
/// checkpoint (no work: SQLite only reports the WAL's frame counts).
pub(crate) fn install(
    conn: &mut Connection,
    db: &Path,
    checkpoint_at: i32,
    bytes: Arc<AtomicU64>,
) -> rusqlite::Result<()> {
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    // Should SQLite not answer (busy with another process's recovery),
    // the store still opens: the first commit then counts the frames
    // already in the WAL too, once.
    let (log, done) = conn
        .wal_checkpoint_v2(Some(MAIN_DB), CheckpointMode::NOOP)
        .unwrap_or((-1, -1));
    let mut tracker = Tracker {
        frame: page_size.max(0) as u64 + FRAME_HEADER,
        frames: log.max(0) as u64,
        armed: None,
        wal: PathBuf::from(wal),
    };
    tracker.checkpointed(log, done);
    conn.wal_hook(Some(move |wal: &mut Wal, pages: i32| {
        bytes.fetch_add(tracker.commit(pages.max(0) as u64), Ordering::Relaxed);
        if pages >= checkpoint_at {
            // As SQLite's auto-checkpoint: PASSIVE (never waits for
            // readers or the busy handler), its failure ignored (the next
            // commit tries again). An error returned here would fail the
            // statement although its commit happened.
            if let Ok((log, done)) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                tracker.checkpointed(log, done);
            }
        }
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The WAL file as SQLite left it: its header, and how many frames
    /// from the start carry the header's salts (the current WAL's frames;
    /// frames after them are left over from before a restart).
    fn parse_wal(path: &Path, frame: u64) -> ([u8; 32], u64) {
        let data = std::fs::read(path).unwrap();
        let header: [u8; 32] = data[..32].try_into().unwrap();
        let salts = &header[16..24];
        let mut n = 0;
        while let Some(f) = data.get((32 + n * frame) as usize..(32 + (n + 1) * frame) as usize) {
            if &f[8..16] != salts {
                break;
            }
            n += 1;
        }
        (header, n)
    }

    fn page_size(conn: &Connection) -> u64 {
        let page: i64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap();
        page as u64
    }

    fn wal_conn(db: &Path) -> Connection {
        let conn = Connection::open(db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn
    }

    /// Every commit adds exactly the frames it appended (as the WAL file
    /// shows them) times page size + 24, plus 32 for each new WAL header;
    /// and the hook still checkpoints: the WAL restarts from its first
    /// frame again and again instead of growing.
    #[test]
    fn counts_frames_and_headers_and_still_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wal.db");
        let wal = dir.path().join("wal.db-wal");
        let mut conn = wal_conn(&db);
        let bytes = Arc::new(AtomicU64::new(0));
        const AT: i32 = 20;
        install(&mut conn, &db, AT, bytes.clone()).unwrap();
        let page = page_size(&conn);
        let frame = page + 24;

        conn.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let (mut header, mut frames) = parse_wal(&wal, frame);
        // A new WAL: everything in the file was written since the hook.
        assert_eq!(bytes.load(Ordering::Relaxed), 32 + frames * frame);
        assert_eq!(
            bytes.load(Ordering::Relaxed),
            std::fs::metadata(&wal).unwrap().len()
        );
        let mut expected = bytes.load(Ordering::Relaxed);
        let (mut restarts, mut largest_commit) = (0, 0);
        for i in 0..60u64 {
            // One to three pages of blob a commit, sometimes a delete
            // (each statement its own commit, checked on its own).
            let size = (page * (i % 3 + 1)) as i64 - 100;
            let mut commits = vec![format!("INSERT INTO t VALUES (zeroblob({size}))")];
            if i % 7 == 6 {
                commits.push("DELETE FROM t WHERE rowid % 2 = 0".into());
            }
            for sql in commits {
                conn.execute(&sql, []).unwrap();
                let (h, n) = parse_wal(&wal, frame);
                let appended = if h != header {
                    restarts += 1;
                    expected += 32;
                    n
                } else {
                    n - frames
                };
                assert!(appended > 0, "{sql}: no frame appended");
                largest_commit = largest_commit.max(appended);
                expected += appended * frame;
                assert_eq!(
                    bytes.load(Ordering::Relaxed),
                    expected,
                    "{sql} (commit {i}): {appended} frames, restart: {}",
                    h != header
                );
                (header, frames) = (h, n);
            }
        }
        // About two pages a commit (plus the statement's other pages):
        // 60 commits are far more than AT frames, so without checkpoints
        // the WAL would never restart and keep growing.
        assert!(restarts >= 3, "{restarts} restarts");
        let len = std::fs::metadata(&wal).unwrap().len();
        assert!(
            len <= 32 + (AT as u64 + largest_commit) * frame,
            "WAL file of {len} bytes"
        );
        assert!(bytes.load(Ordering::Relaxed) > 2 * len);
    }

    /// Frames left in the WAL (a killed daemon) are not counted, and not
    /// checkpointed at install. A WAL whose frames were all checkpointed
    /// but which a reader still uses is appended to, not restarted: the
    /// hook tells the two apart by the WAL's header. Once the reader is
    /// gone and a checkpoint ran, the next commit restarts the WAL.
    #[test]
    fn frames_already_in_the_wal_and_a_reader_holding_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("old.db");
        let wal = dir.path().join("old.db-wal");
        // Another connection wrote (and stays open: the last connection
        // to close would checkpoint the WAL and delete it).
        let other = wal_conn(&db);
        other
            .execute_batch("CREATE TABLE t (x BLOB); INSERT INTO t VALUES (zeroblob(10000));")
            .unwrap();
        let frame = page_size(&other) + 24;
        // A reader holds the WAL's current frames.
        let reader = wal_conn(&db);
        reader.execute_batch("BEGIN").unwrap();
        let n: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        // Every frame is copied into the database (the reader needs none
        // of them back), but the reader still holds the WAL.
        let (log, done) = other
            .wal_checkpoint_v2(Some(MAIN_DB), CheckpointMode::PASSIVE)
            .unwrap();
        assert!(log > 2 && log == done, "{log} {done}");
        let (old_header, old_frames) = parse_wal(&wal, frame);
        assert_eq!(old_frames, log as u64);

        let mut conn = wal_conn(&db);
        let bytes = Arc::new(AtomicU64::new(0));
        install(&mut conn, &db, CHECKPOINT_FRAMES, bytes.clone()).unwrap();
        assert_eq!(bytes.load(Ordering::Relaxed), 0);
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let (header, frames) = parse_wal(&wal, frame);
        assert_eq!(
            header, old_header,
            "the reader kept the WAL from restarting"
        );
        assert!(frames > old_frames);
        let counted = (frames - old_frames) * frame;
        assert_eq!(bytes.load(Ordering::Relaxed), counted);

        // The reader ends, a checkpoint copies every frame: the next
        // commit restarts the WAL (new header, frames from the first).
        reader.execute_batch("COMMIT").unwrap();
        let (log, done) = other
            .wal_checkpoint_v2(Some(MAIN_DB), CheckpointMode::PASSIVE)
            .unwrap();
        assert_eq!(log, done);
        conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
        let (header, frames) = parse_wal(&wal, frame);
        assert_ne!(header, old_header, "the WAL restarted");
        assert_eq!(
            bytes.load(Ordering::Relaxed),
            counted + 32 + frames * frame,
            "{frames} frames"
        );
    }

    /// The store's writer counts from its first commit: on a new database
    /// the counter is the WAL file's size, migrations included.
    #[test]
    fn store_counts_the_writers_wal_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hc.db");
        let wal = dir.path().join("hc.db-wal");
        let store = crate::store::Store::open(&db).unwrap();
        let after_open = store.wal_bytes();
        assert!(after_open > 32, "{after_open}");
        assert_eq!(after_open, std::fs::metadata(&wal).unwrap().len());
        store
            .with_writer(|c| {
                c.execute_batch("CREATE TABLE wal_probe (x); INSERT INTO wal_probe VALUES (1);")
            })
            .unwrap();
        assert!(store.wal_bytes() > after_open);
        assert_eq!(store.wal_bytes(), std::fs::metadata(&wal).unwrap().len());
    }
}
