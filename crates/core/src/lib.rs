//! The pure domain of healthchecker: what a service is, how its health is
//! judged, and which state changes deserve a mail.
//!
//! Nothing here does I/O: no sockets, no clocks, no SQL, no logging. Time is
//! passed in as an argument. That is why this is its own crate: the daemon,
//! the client library and the tests all share exactly one definition of a
//! valid registration, of the state machine and of health+json.
//!
//! # Layout
//! - [`spec`]: the one typed registration ([`spec::RegisterRequest`], the
//!   wire contract) validated once into a [`spec::ServiceSpec`], with errors
//!   naming the field.
//! - [`api`]: the v1 API's response bodies (services, checks, events,
//!   notifications, errors), shared by the daemon and the client.
//! - [`SERVICE_TYPE`]: the DNS-SD type daemons announce and clients browse.
//! - [`ids`]: [`ServiceId`] and [`UnixMs`], the id and the wall time that
//!   cross the daemon's module boundaries.
//! - [`health`]: the ELB-style state machine ([`health::HealthTracker`]).
//! - [`monitor`]: one check outcome and its time in, what to write and
//!   when to notify out (state machine, event, flap damping).
//! - [`notify`]: which transitions send a mail.
//! - [`channel`]: notification channels as named objects, validated.
//! - [`cluster`]: the work split of a cluster on PostgreSQL: a service's
//!   bucket, a node's fair share, the lease round's decisions.
//! - [`policy`]: alert policy decisions (silences, dependencies, digests);
//!   not wired into the daemon yet.
//! - [`healthjson`]: the IETF health+json response type and the interpreter
//!   of a target's JSON body.
//! - [`schedule`]: deterministic jitter and next-due arithmetic.
//! - [`heartbeat`]: push services: pings, period and grace, the deadline.
//! - [`icmp`]: the verdict of an ICMP check from its echo replies.
//! - [`lan`]: what to monitor of a device found over DNS-SD.
#![forbid(unsafe_code)]

pub mod api;
pub mod channel;
pub mod cluster;
pub mod health;
pub mod healthjson;
pub mod heartbeat;
pub mod icmp;
pub mod ids;
pub mod lan;
pub mod monitor;
pub mod notify;
pub mod policy;
pub mod schedule;
pub mod spec;

pub use health::{CheckResult, HealthState, HealthTracker, Thresholds, Transition};
pub use ids::{ServiceId, UnixMs};
pub use spec::{Protocol, RegisterRequest, ServiceSpec, SpecError, Target};

/// The DNS-SD service type a daemon announces and a client browses for
/// (SPEC section 6).
pub const SERVICE_TYPE: &str = "_healthchecker._tcp.local.";
