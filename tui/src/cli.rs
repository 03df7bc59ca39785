//! The command line of `aegis-tui`: its clap definition, in the library so that its man page
//! and shell completions are generated from what the binary parses (`src/main.rs` runs it).

use std::path::PathBuf;

use clap::Parser;

/// The live console of an AegisFS appliance.
#[derive(Parser)]
#[command(name = "aegis-tui", version)]
pub struct Args {
    /// aegisd's control socket (default: $AEGIS_RUN_DIR/aegisd.sock or /run/aegis/aegisd.sock).
    #[arg(long, env = "AEGIS_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The pool to show first (default: the first mounted pool).
    #[arg(long, value_name = "NAME")]
    pub pool: Option<String>,
    /// No colors: emphasis by bold, dim and reverse only (also with $NO_COLOR set).
    #[arg(long)]
    pub no_color: bool,
}
