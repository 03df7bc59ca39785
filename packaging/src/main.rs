//! `aegisfs-assets`: writes the man pages and shell completions of `aegis`, `aegisd` and
//! `aegis-tui` into a directory, generated from the same clap definitions the binaries parse
//! (`appliance::cli`, `appliance::daemon::cli`, `tui::cli`), so they cannot drift from the
//! options the programs accept. `packaging/build.sh` runs it before packing the .deb and .rpm.
//!
//! ```text
//! OUT/man/aegis.1 aegis-format.1 … aegis-tier-migrate.1 …   one page per (sub)command
//! OUT/man/aegisd.8 aegis-tui.1
//! OUT/completions/bash/{aegis,aegisd,aegis-tui}              named as bash-completion looks them up
//! OUT/completions/zsh/{_aegis,_aegisd,_aegis-tui}
//! OUT/completions/fish/{aegis,aegisd,aegis-tui}.fish
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{CommandFactory, Parser};
use clap_complete::Shell;

/// Write the man pages and shell completions of aegis, aegisd and aegis-tui.
#[derive(Parser)]
#[command(name = "aegisfs-assets", version)]
struct Args {
    /// The directory to write man/ and completions/ into (created when missing).
    out_dir: PathBuf,
    /// The date the man pages carry, e.g. the release commit's (`git log -1 --format=%cs`),
    /// so that rebuilding the same source gives the same pages.
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    write_assets(&args.out_dir, &args.date)
}

/// Writes `out_dir/man/` and `out_dir/completions/`.
fn write_assets(out_dir: &Path, date: &str) -> anyhow::Result<()> {
    let man = out_dir.join("man");
    fs::create_dir_all(&man).with_context(|| format!("cannot create {}", man.display()))?;

    // aegis: a page for the command and one for every subcommand (aegis-tier-migrate.1, …),
    // each listed in its parent's page.
    let mut aegis = appliance::cli::Cli::command().disable_help_subcommand(true);
    aegis.build();
    man_pages(aegis, "1", date, &man)?;
    // aegisd is a daemon: section 8.
    man_pages(appliance::daemon::cli::Cli::command(), "8", date, &man)?;
    man_pages(tui::cli::Args::command(), "1", date, &man)?;

    let completions = out_dir.join("completions");
    for mut command in [
        appliance::cli::Cli::command(),
        appliance::daemon::cli::Cli::command(),
        tui::cli::Args::command(),
    ] {
        let name = command.get_name().to_owned();
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let file = completions
                .join(shell.to_string())
                .join(completion_file(shell, &name));
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, &name, &mut script);
            write(&file, &script)?;
        }
    }
    Ok(())
}

/// Writes the man page of `command` and of each of its visible subcommands, recursively (as
/// `clap_mangen::generate_to` does, with the footer naming AegisFS and its version on every page
/// rather than the bare subcommand).
fn man_pages(command: clap::Command, section: &str, date: &str, dir: &Path) -> anyhow::Result<()> {
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        man_pages(sub.clone(), section, date, dir)?;
    }
    let page = clap_mangen::Man::new(command)
        .section(section)
        .date(date)
        .source(concat!("AegisFS ", env!("CARGO_PKG_VERSION")))
        .manual("AegisFS Manual");
    let path = dir.join(page.get_filename());
    page.generate_to(dir)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The file name each shell looks a command's completion up by.
fn completion_file(shell: Shell, command: &str) -> String {
    match shell {
        Shell::Zsh => format!("_{command}"),
        Shell::Fish => format!("{command}.fish"),
        _ => command.to_owned(),
    }
}

fn write(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible (sub)command of aegis, like `aegis-tier-migrate`.
    fn page_names(command: &clap::Command, prefix: &str, names: &mut Vec<String>) {
        let name = format!("{prefix}{}", command.get_name());
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            page_names(sub, &format!("{name}-"), names);
        }
        names.push(name);
    }

    #[test]
    fn every_command_gets_a_man_page_and_every_binary_its_completions() {
        let dir = tempfile::tempdir().expect("temporary directory");
        write_assets(dir.path(), "2026-01-01").expect("assets written");

        let mut names = Vec::new();
        let aegis = appliance::cli::Cli::command().disable_help_subcommand(true);
        page_names(&aegis, "", &mut names);
        assert!(
            names.contains(&"aegis-tier-migrate".to_owned()),
            "{names:?}"
        );
        for name in names {
            let page = dir.path().join("man").join(format!("{name}.1"));
            let text = fs::read_to_string(&page).expect("man page written");
            assert!(
                text.contains(".TH aegis") && text.contains("2026-01-01"),
                "{}",
                page.display()
            );
        }
        for page in ["aegisd.8", "aegis-tui.1"] {
            assert!(dir.path().join("man").join(page).is_file(), "{page}");
        }
        for binary in ["aegis", "aegisd", "aegis-tui"] {
            for file in [
                format!("bash/{binary}"),
                format!("zsh/_{binary}"),
                format!("fish/{binary}.fish"),
            ] {
                let path = dir.path().join("completions").join(file);
                assert!(path.is_file(), "{}", path.display());
            }
        }
    }
}
