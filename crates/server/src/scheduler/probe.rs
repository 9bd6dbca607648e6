//! How the scheduler runs one check: the real [`Prober`] behind a panic
//! guard, or (in this crate's tests) a scripted outcome, so that the
//! scheduler's timing is tested on tokio's paused clock without sockets.

use crate::probe::{ProbeOutcome, Prober};
use healthchecker_core::ServiceSpec;

/// The reason recorded for a check whose probe panicked.
pub const INTERNAL_ERROR: &str = "internal error";

/// A scripted check for the scheduler's tests: the outcome of one check of
/// a service (it may sleep, on the paused clock, to take time).
#[cfg(test)]
pub(super) type Script = std::sync::Arc<
    dyn Fn(&ServiceSpec) -> futures_util::future::BoxFuture<'static, ProbeOutcome> + Send + Sync,
>;

/// What checks a service.
#[derive(Clone)]
pub(super) enum Checker {
    /// Real sockets.
    Real(Prober),
    /// A test's script.
    #[cfg(test)]
    Script(Script),
}

impl Checker {
    /// Runs one check started at `at` (Unix ms). A panic inside it becomes
    /// a failed check with reason [`INTERNAL_ERROR`] (the panic is logged)
    /// instead of a task that never reports back, which would leave the
    /// service's in-flight flag set and the service never checked again.
    pub async fn check(&self, spec: &ServiceSpec, at: i64) -> ProbeOutcome {
        use futures_util::FutureExt;
        let started = std::time::Instant::now();
        let probe = async {
            #[cfg(any(test, feature = "fault-injection"))]
            crate::fault::before_probe(spec);
            match self {
                Checker::Real(prober) => prober.probe(spec, at).await,
                #[cfg(test)]
                Checker::Script(script) => script(spec).await,
            }
        };
        match std::panic::AssertUnwindSafe(probe).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => {
                tracing::error!(
                    service = %spec.name,
                    panic = %crate::supervisor::panic_message(&*panic),
                    "probe panicked; recorded as a failed check"
                );
                let mut outcome = ProbeOutcome::fail(INTERNAL_ERROR);
                outcome.duration = started.elapsed();
                outcome
            }
        }
    }
}
