//! The command line of `aegisd`: its clap definition, in the library so that its man page and
//! shell completions are generated from what the binary parses (`src/bin/aegisd.rs` runs it).

use std::path::PathBuf;

use clap::Parser;

use super::config::DEFAULT_PATH;

#[derive(Parser)]
#[command(name = "aegisd", version, about = "The AegisFS daemon")]
pub struct Cli {
    /// The config file.
    #[arg(long, default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Check the config and exit: 0 when valid, 1 with the file, line and field otherwise.
    #[arg(long)]
    pub check_config: bool,
}
