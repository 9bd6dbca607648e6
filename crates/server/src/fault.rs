//! Test-only fault hooks (SPEC section 12: supervision), compiled in only
//! with the `fault-injection` feature, which only the dev-dependencies of
//! this crate and of the CLI enable: a release build has none of this.
//!
//! The hooks are reached through the public API, so the same test works
//! in process and against the real binary: a service whose target host is
//! one of the names below triggers its fault when the scheduler checks it
//! (the `.invalid` names never resolve, so nothing leaves the machine), and
//! [`PANIC_ROUTE`] panics in its handler.

use healthchecker_core::ServiceSpec;

/// Checking a service with this target host panics inside the probe task.
pub const PANIC_PROBE_HOST: &str = "panic-probe.fault.invalid";

/// Checking a service with this target host makes the store writer thread
/// exit, as a crash of the writer would.
pub const STOP_WRITER_HOST: &str = "stop-writer.fault.invalid";

/// `GET` on this path panics inside the handler.
pub const PANIC_ROUTE: &str = "/_fault/panic";

/// Called by the probe task before probing `spec`.
pub(crate) fn before_probe(spec: &ServiceSpec) {
    if spec.target.host == PANIC_PROBE_HOST {
        panic!("injected fault: probe of {:?} panics", spec.name);
    }
}

/// True when checking `spec` should stop the store writer.
pub(crate) fn stops_writer(spec: &ServiceSpec) -> bool {
    spec.target.host == STOP_WRITER_HOST
}
