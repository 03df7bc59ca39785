//! `aegisd`: the AegisFS daemon. Reads its config, mounts the pools it names, runs their
//! schedules and serves the control API until SIGTERM. See `appliance::daemon`.

use std::io::IsTerminal;
use std::process::ExitCode;

use appliance::daemon::cli::Cli;
use appliance::daemon::config::Config;
use clap::Parser;

/// Logs to stderr: plain lines without timestamps under systemd (the journal adds its own),
/// colour on a terminal. RUST_LOG overrides the config's level.
fn init_logging(level: &str) {
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!under_journal && std::io::stderr().is_terminal());
    if under_journal {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.check_config {
        return match appliance::daemon::check_config(&cli.config) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("aegisd: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("aegisd: {err}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&config.daemon.log_level);
    match appliance::daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("aegisd: {err:#}");
            ExitCode::FAILURE
        }
    }
}
