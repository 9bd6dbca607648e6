//! Supervision of the daemon's essential tasks (SPEC section 12): the
//! scheduler loop, the store writer thread and, when SMTP is configured,
//! the mail sender.
//!
//! Each essential has a token that is cancelled when it stops for any
//! reason (return or panic). `/health` reports each one and fails when one
//! has stopped; [`run`](crate::run) then exits with an error after
//! [`EXIT_GRACE`], so that the process supervisor (systemd, Docker)
//! restarts the daemon instead of leaving it half alive. This module only
//! observes: it never restarts a task itself, because a fresh scheduler or
//! writer would start from state the dead one may have left inconsistent.

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How long the daemon keeps answering (with `/health` failing) after an
/// essential task stopped, before `run` returns the error: long enough for
/// a health probe or a scrape to see why, short enough that the restart
/// comes soon.
pub const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The essential tasks, each with the token cancelled when it stops.
#[derive(Clone, Default)]
pub struct Essentials {
    tasks: Arc<Vec<(&'static str, CancellationToken)>>,
}

impl Essentials {
    /// Watches `tasks`: a name and the token cancelled when it stops.
    pub fn new(tasks: Vec<(&'static str, CancellationToken)>) -> Self {
        Essentials {
            tasks: Arc::new(tasks),
        }
    }

    /// Each task's name and whether it still runs, in order.
    pub fn status(&self) -> impl Iterator<Item = (&'static str, bool)> + '_ {
        self.tasks.iter().map(|(n, t)| (*n, !t.is_cancelled()))
    }

    /// The names of the tasks that have stopped.
    pub fn stopped(&self) -> Vec<&'static str> {
        self.status()
            .filter(|(_, up)| !up)
            .map(|(n, _)| n)
            .collect()
    }

    /// Completes with the name of the first task to stop (never, when there
    /// are none).
    pub async fn first_stopped(&self) -> &'static str {
        if self.tasks.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.tasks.iter().map(|(n, t)| {
            let t = t.clone();
            let n = *n;
            Box::pin(async move {
                t.cancelled().await;
                n
            })
        });
        futures_util::future::select_all(waits).await.0
    }
}

/// The text of a panic payload (`panic!("...")` carries a `&str` or a
/// `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_stopped_task_is_named() {
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        let e = Essentials::new(vec![("scheduler", a.clone()), ("writer", b.clone())]);
        assert!(e.stopped().is_empty());
        drop(b.drop_guard());
        assert_eq!(e.first_stopped().await, "writer");
        assert_eq!(e.stopped(), vec!["writer"]);
        assert_eq!(
            e.status().collect::<Vec<_>>(),
            vec![("scheduler", true), ("writer", false)]
        );
    }
}
