//! Integration tests of the daemon: the real daemon on a loopback port,
//! real SQLite, real targets (see healthchecker-testkit).

mod api;
mod dashboard;
mod legacy;
mod lifecycle;
mod mail;
mod observe;
mod probes;
mod security;
