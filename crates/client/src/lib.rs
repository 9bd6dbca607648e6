//! Register a program with a healthchecker daemon, and answer its checks.
//!
//! ```no_run
//! use healthchecker_client::{HealthChecker, Registration};
//! # async fn demo() -> Result<(), healthchecker_client::ClientError> {
//! let hc = HealthChecker::at("http://nas.local:8484")?;
//! let me = hc
//!     .monitor(Registration::new("my app", "http://192.168.1.30:9090/health").email("me@example.com").interval(10))
//!     .await?;
//! println!("monitored: {}", me.info().await?.state);
//! me.stop().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`HealthChecker`]: a daemon's API (found by URL or by mDNS).
//! - [`Registration`]: the check parameters of SPEC section 2, as a builder.
//! - [`Monitored`]: a registered service, to pause, resume, inspect or stop.
//! - [`HealthCheckResponse`]: builds the health+json answer of a `/health`
//!   endpoint (with the `axum` feature, it is an `IntoResponse`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod discover;
mod error;
mod response;

pub use api::{HealthChecker, Monitored, Registration, ServiceInfo};
pub use discover::{discover_all, Discovered};
pub use error::ClientError;
pub use healthchecker_core::api::{LastCheck, Monitoring, Service, ServiceKind, Uptime};
pub use healthchecker_core::healthjson::{CheckObservation, HealthStatus};
pub use healthchecker_core::{CheckResult, HealthState, SERVICE_TYPE};
pub use response::HealthCheckResponse;
