//! Secrets of encrypted pools on the command line: keyfiles, terminal prompts, passphrases
//! piped on stdin and `systemd-ask-password`. A secret never appears in arguments or the
//! environment (where `ps` and `/proc` show them): the detached serving process receives it
//! through a pipe.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use fs_core::pool::Secret;
use zeroize::Zeroizing;

/// Keyfiles larger than this are refused (a key is a few dozen bytes; this is not one).
const MAX_KEYFILE: u64 = 1 << 20;
/// ZFS's minimum passphrase length.
const MIN_PASSPHRASE: usize = 8;

/// Where the secret of an encrypted pool comes from.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KeyArgs {
    /// Read the key from this file (all of its bytes) instead of asking for a passphrase.
    #[arg(long, value_name = "PATH")]
    pub keyfile: Option<PathBuf>,
    /// Ask for the passphrase through systemd-ask-password (boot-time mounts under systemd).
    #[arg(long, conflicts_with = "keyfile")]
    pub ask_password: bool,
}

/// A keyfile's bytes.
pub fn read_keyfile(path: &Path) -> anyhow::Result<Secret> {
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot open keyfile {}", path.display()))?;
    let mut bytes = Zeroizing::new(Vec::new());
    (&mut file)
        .take(MAX_KEYFILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read keyfile {}", path.display()))?;
    if bytes.is_empty() {
        bail!("keyfile {} is empty", path.display());
    }
    if bytes.len() as u64 > MAX_KEYFILE {
        bail!("keyfile {} is larger than 1 MiB", path.display());
    }
    Ok(Secret::new(bytes.to_vec()))
}

/// One line of stdin without its line end (a piped passphrase).
fn stdin_line(what: &str) -> anyhow::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    let read = std::io::stdin()
        .read_line(&mut line)
        .with_context(|| format!("cannot read the {what} from stdin"))?;
    if read == 0 {
        bail!("no {what} given: stdin is not a terminal and holds nothing (pipe it in, or use --keyfile)");
    }
    let trimmed = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(trimmed);
    Ok(line)
}

fn terminal_prompt(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .context("cannot read the passphrase from the terminal")
}

fn ask_password(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    let output = Command::new("systemd-ask-password")
        .arg("--timeout=0")
        .arg(prompt)
        .output()
        .context("cannot run systemd-ask-password (is systemd installed?)")?;
    if !output.status.success() {
        bail!("systemd-ask-password gave no passphrase");
    }
    let text = Zeroizing::new(
        String::from_utf8(output.stdout).context("the passphrase is not valid UTF-8")?,
    );
    Ok(Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// The secret of an existing encrypted pool: the keyfile, else systemd-ask-password when
/// asked, else a terminal prompt, else one line of stdin.
pub fn existing_secret(args: &KeyArgs, prompt: &str) -> anyhow::Result<Secret> {
    if let Some(path) = &args.keyfile {
        return read_keyfile(path);
    }
    let passphrase = if args.ask_password {
        ask_password(prompt)?
    } else if std::io::stdin().is_terminal() {
        terminal_prompt(prompt)?
    } else {
        stdin_line("passphrase")?
    };
    if passphrase.is_empty() {
        bail!("the passphrase is empty");
    }
    Ok(Secret::new(passphrase.as_bytes().to_vec()))
}

/// A new secret: the keyfile, else a passphrase typed twice on the terminal (or one line of
/// stdin), at least 8 bytes long.
pub fn new_secret(keyfile: Option<&Path>, what: &str) -> anyhow::Result<Secret> {
    if let Some(path) = keyfile {
        return read_keyfile(path);
    }
    let passphrase = if std::io::stdin().is_terminal() {
        let first = terminal_prompt(&format!("{what}: "))?;
        let again = terminal_prompt(&format!("{what} again: "))?;
        if *first != *again {
            bail!("the passphrases differ; nothing was changed");
        }
        first
    } else {
        stdin_line(what)?
    };
    if passphrase.len() < MIN_PASSPHRASE {
        bail!("a passphrase needs at least {MIN_PASSPHRASE} bytes");
    }
    Ok(Secret::new(passphrase.as_bytes().to_vec()))
}

/// The secret the detached mount pipes to its serving process (all of stdin).
pub fn piped_secret() -> anyhow::Result<Secret> {
    let mut bytes = Zeroizing::new(Vec::new());
    std::io::stdin()
        .take(MAX_KEYFILE + 1)
        .read_to_end(&mut bytes)
        .context("cannot read the key from the mounting process")?;
    if bytes.is_empty() {
        bail!("the mounting process passed no key");
    }
    Ok(Secret::new(bytes.to_vec()))
}

/// The secret for the pool on `devices` when it is encrypted (`None` when it is not, or when
/// no member has a readable superblock: opening the pool then says what is wrong).
pub fn secret_for(devices: &[PathBuf], args: &KeyArgs) -> anyhow::Result<Option<Secret>> {
    let Some(sb) = devices
        .iter()
        .find_map(|device| fs_core::pool::inspect_path(device).ok())
    else {
        return Ok(None);
    };
    if !sb.encrypted() {
        if args.keyfile.is_some() || args.ask_password {
            tracing::warn!("the pool is not encrypted: the key option is ignored");
        }
        return Ok(None);
    }
    let name = if sb.label.is_empty() {
        uuid::Uuid::from_bytes(sb.pool_uuid).to_string()
    } else {
        sb.label
    };
    existing_secret(args, &format!("Passphrase for pool {name}: ")).map(Some)
}
