//! The PostgreSQL store's reader threads, as the SQLite store's
//! (`store/readers.rs`): [`READER_THREADS`] threads take jobs from one
//! bounded queue and answer through a oneshot channel, each mostly on its
//! own connection. Blocking PostgreSQL reads never run on tokio's shared
//! blocking pool or a worker. The threads end when the last `PgStore`
//! clone is dropped.

use crate::store::{ReadFailure, READER_THREADS, READ_QUEUE};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The queue in front of the reader threads.
#[derive(Clone)]
pub(crate) struct ReaderPool {
    tx: tokio::sync::mpsc::Sender<Job>,
}

impl ReaderPool {
    /// Starts [`READER_THREADS`] threads.
    pub(crate) fn start() -> ReaderPool {
        let (tx, rx) = tokio::sync::mpsc::channel::<Job>(READ_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..READER_THREADS {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("pg-reader-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).blocking_recv();
                    let Some(job) = job else { break };
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                })
                .expect("spawn a PostgreSQL reader thread");
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
