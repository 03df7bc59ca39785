//! aegis-tui's command line, as a library: the console itself is the `aegis-tui` binary
//! (`src/main.rs`); what it parses is defined here so that the packaging assets (man page,
//! shell completions) are generated from the same definition.

pub mod cli;
