//! Tests of the `healthchecker` binary as a user runs it.

mod client_cmds;
mod daemon;
mod faults;
mod mail_outage;
mod mdns;
mod schema_fuzz;
mod serve;
