//! The store's own reader threads (of either backend: the PostgreSQL
//! store's blocking reads run on a pool of its own, `pg-reader-N`): every
//! read the API, `/health`,
//! `/metrics` and the mail sender make runs here, never on tokio's shared
//! blocking pool, so nothing else (a flood of slow work there) can starve
//! them (SPEC section 12).
//!
//! A fixed set of [`READER_THREADS`] threads takes jobs from one bounded
//! queue and answers through a oneshot channel. Each thread mostly uses its
//! own SQLite reader connection (see `Store::read_conn`), so reads run in
//! parallel under WAL. The threads end when the last `Store` clone (and so
//! the queue's sender) is dropped.

use std::sync::{Arc, Mutex};

/// Reader threads, and reader connections. SQLite reads are CPU work on the
/// page cache: on the small machines the daemon targets (2 to 4 cores) more
/// threads would only take turns on the same cores. Four lets one long read
/// (a dashboard page over every service, a prune page) run while `/health`
/// and single-service reads still get a thread at once.
pub const READER_THREADS: usize = 4;

/// Reads waiting for a thread. A caller beyond it waits (asynchronously) for
/// a slot; the API's own request timeout bounds how long.
pub const READ_QUEUE: usize = 1024;

type Job = Box<dyn FnOnce() + Send>;

/// Why a read got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFailure {
    /// The reader threads have stopped.
    Stopped,
    /// The read panicked (the thread survives it).
    Panicked,
}

/// The queue in front of the reader threads.
#[derive(Clone)]
pub(crate) struct ReaderPool {
    tx: tokio::sync::mpsc::Sender<Job>,
}

impl ReaderPool {
    /// Starts [`READER_THREADS`] threads named `{name}-{i}` (the SQLite
    /// store's `store-reader`, the PostgreSQL store's `pg-reader`).
    pub(crate) fn start(name: &str) -> ReaderPool {
        let (tx, rx) = tokio::sync::mpsc::channel::<Job>(READ_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..READER_THREADS {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job,
                    // never while one runs.
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).blocking_recv();
                    let Some(job) = job else { break };
                    // A panicking read drops its answer channel (the caller
                    // sees `Panicked`); the thread goes on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                })
                .expect("spawn a store reader thread");
        }
        ReaderPool { tx }
    }

    /// Runs `f` on a reader thread and waits for its answer.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ReadFailure> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(f());
        });
        self.tx.send(job).await.map_err(|_| ReadFailure::Stopped)?;
        answered.await.map_err(|_| ReadFailure::Panicked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn store_reads_answer_while_the_blocking_pool_is_full() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("hc.db")).unwrap();
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(Mutex::new(hold));
        rt.block_on(async {
            // Every blocking thread hangs, as on hung getaddrinfo calls.
            for _ in 0..2 {
                let hold = hold.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = hold.lock().unwrap().recv();
                });
            }
            let s = store.clone();
            let starved = tokio::task::spawn_blocking(move || s.ping());
            let starved = tokio::time::timeout(Duration::from_millis(300), starved).await;
            assert!(
                starved.is_err(),
                "negative control: the blocking pool is full"
            );
            let read = tokio::time::timeout(Duration::from_secs(1), store.read(|s| s.ping()));
            assert!(matches!(read.await, Ok(Ok(()))), "store.read answers");
        });
        drop(release);
        rt.shutdown_timeout(Duration::from_secs(1));
    }

    #[tokio::test]
    async fn reads_run_on_the_reader_threads_and_survive_a_panic() {
        let pool = ReaderPool::start("store-reader");
        let name = pool
            .run(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("store-reader-"));
        let r = pool.run(|| -> u8 { panic!("boom") }).await;
        assert_eq!(r, Err(ReadFailure::Panicked));
        // All threads still answer, in parallel.
        let all = futures_util::future::join_all((0..READER_THREADS * 3).map(|i| {
            let pool = pool.clone();
            async move { pool.run(move || i * 2).await }
        }))
        .await;
        assert_eq!(all.len(), READER_THREADS * 3);
        assert!(all.iter().all(|r| r.is_ok()));
    }
}
