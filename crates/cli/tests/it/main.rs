//! Tests of the `healthchecker` binary as a user runs it.

mod channels;
mod client_cmds;
mod cluster;
mod cluster_nodes;
mod cluster_tls;
mod daemon;
mod faults;
mod heartbeat;
mod icmp;
mod install;
mod install_container;
mod install_package;
mod lan;
mod mail_outage;
mod mdns;
mod schema_fuzz;
mod serve;
mod status_page;
mod supervision;
mod upgrade;
