//! The AegisFS appliance: the `aegis` command line, the standalone serving process of `aegis
//! mount`, and `aegisd`, the daemon that runs pools from a config file with schedules, a state
//! database, metrics and alerts. Both binaries share the control API defined here; their command
//! lines are defined here too (`cli`, `daemon::cli`), so the packaging generates man pages and
//! completions from what they parse.

pub mod api;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod devices;
pub mod http;
pub mod keys;
pub mod serve;
pub mod service;
pub mod smart;
pub mod units;
