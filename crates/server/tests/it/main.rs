//! Integration tests of the daemon: the real daemon on a loopback port,
//! real SQLite, real targets (see healthchecker-testkit).

mod api;
mod channels;
mod cross_site;
mod dashboard;
mod dashboard_browser;
mod dashboard_forms;
mod dashboard_status;
mod dashboard_timing;
mod dependencies;
mod dns;
mod dns_check;
mod heartbeat;
mod icmp;
mod legacy;
mod lifecycle;
mod limits;
mod mail;
mod mqtt;
mod observe;
mod private_files;
mod probes;
mod security;
mod silences;
mod supervision;
mod tls_api;
