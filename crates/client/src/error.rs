//! What can go wrong talking to a daemon.

use std::time::Duration;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon answered with an error (its message and field kept).
    #[error("{message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Machine-readable code (`invalid_field`, `not_found`, ...).
        code: String,
        /// The daemon's message.
        message: String,
        /// The field it names, if any.
        field: Option<String>,
    },
    /// The daemon could not be reached.
    #[error("cannot reach the daemon at {url}: {reason}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// No daemon answered on the network within the timeout.
    #[error("no healthchecker daemon found on the network within {0:?}")]
    NotFound(Duration),
    /// The daemon URL is not usable.
    #[error("invalid daemon URL {0:?}")]
    InvalidUrl(String),
    /// The answer did not parse.
    #[error("unexpected answer from the daemon: {0}")]
    Decode(String),
    /// A token would have gone to a daemon that merely answered over mDNS:
    /// anyone on the LAN can answer there, so a token goes only to a daemon
    /// the user named.
    #[error("not sending the token to {0}, a daemon found over mDNS: name the daemon (--server URL, HEALTHCHECKER_SERVER or HealthChecker::at) to use a token")]
    TokenToUnnamedDaemon(String),
}

impl ClientError {
    /// True for errors where the daemon answered (it refused the request).
    pub fn is_refused(&self) -> bool {
        matches!(self, ClientError::Refused { .. })
    }
}
