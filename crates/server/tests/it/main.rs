//! Integration tests of the daemon: the real daemon on a loopback port,
//! real SQLite, real targets (see healthchecker-testkit).

mod api;
mod browser;
mod channels;
mod cluster;
mod cluster_view;
mod cross_site;
mod dashboard;
mod dashboard_browser;
mod dashboard_forms;
mod dashboard_manage;
mod dashboard_notifications;
mod dashboard_status;
mod dashboard_timing;
mod dependencies;
mod digests;
mod dns;
mod dns_check;
mod heartbeat;
mod html;
mod icmp;
mod legacy;
mod lifecycle;
mod limits;
mod mail;
mod metrics_scrape;
mod mqtt;
mod observe;
mod pg_api;
mod private_files;
mod probes;
mod security;
mod silences;
mod supervision;
mod tls_api;
