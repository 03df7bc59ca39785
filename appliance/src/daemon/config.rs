//! `aegisd`'s configuration: the TOML file (default `/etc/aegis/aegis.toml`) naming the pools
//! the daemon owns, their schedules, the snapshot tasks, the control API settings and the alert
//! notifiers. Loading checks everything a daemon start would trip over later; every error names
//! the file, the line and the field. The line is the field's own: toml gives the position of a
//! value it could not deserialize, and for the checks made afterwards (across fields, or of a
//! backup job as a whole) the field's key is looked up in the parsed document; only a field
//! that is missing is reported at its section's header.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use backup::job::{BackupJob, JobError, Remotes};

use super::schedule::{self, Retention, Schedule, Zone};

/// Where `aegisd` looks for its config unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/aegis/aegis.toml";

/// Why a config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub daemon: DaemonSettings,
    pub api: ApiSettings,
    pub pools: Vec<PoolConfig>,
    pub snapshots: Vec<SnapshotTask>,
    pub backups: Vec<BackupTask>,
    /// `[remotes.NAME]`: inline rclone remotes.
    pub remotes: Remotes,
    pub alerts: AlertSettings,
}

/// `[[backup]]`: a backup job and when it runs.
#[derive(Debug, Clone)]
pub struct BackupTask {
    pub job: BackupJob,
    /// `None` for `schedule = "off"`: on request only.
    pub schedule: Option<Schedule>,
}

impl BackupTask {
    /// The job's name in `aegis jobs` and the state database.
    pub fn job_name(&self) -> String {
        format!("backup:{}", self.job.name)
    }
}

/// `[daemon]`: where the daemon keeps its socket and state, and how much it logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSettings {
    pub socket: PathBuf,
    /// The group that may use the socket (mode 0660); empty for root only.
    pub socket_group: String,
    pub state_db: PathBuf,
    /// A tracing filter (`info`, `debug`, `aegisd=debug,info`); `RUST_LOG` overrides it.
    #[serde(deserialize_with = "log_filter")]
    pub log_level: String,
    /// The rclone.conf backup jobs use for remotes not defined inline; unset, rclone looks
    /// for its own (`$RCLONE_CONFIG`, else `~/.config/rclone/rclone.conf` of root).
    pub rclone_config: Option<PathBuf>,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/aegis/aegisd.sock"),
            socket_group: "aegis".into(),
            state_db: PathBuf::from("/var/lib/aegis/aegis.db"),
            log_level: "info".into(),
            rclone_config: None,
        }
    }
}

/// `[api]`: the optional TCP listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    pub tcp: Option<TcpSettings>,
}

/// `[api.tcp]`: off unless present; every request needs the token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSettings {
    pub listen: SocketAddr,
    /// A file holding the bearer token (at least 16 characters; not readable by others).
    pub token_file: PathBuf,
}

/// `[[pool]]`: one pool the daemon mounts at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    pub devices: Vec<PathBuf>,
    pub mountpoint: PathBuf,
    /// The key of an encrypted pool: a file, or a passphrase asked through
    /// systemd-ask-password.
    pub keyfile: Option<PathBuf>,
    #[serde(default)]
    pub ask_password: bool,
    /// `auto` (io_uring where it works) or `pread`.
    #[serde(default = "default_io", deserialize_with = "io_backend")]
    pub io: String,
    #[serde(default, deserialize_with = "optional_size")]
    pub cache_size: Option<u64>,
    /// The fast tier's low and high watermarks, as fractions.
    #[serde(
        default = "default_watermarks",
        deserialize_with = "watermarks",
        rename = "fast_watermarks"
    )]
    pub watermarks: (f64, f64),
    #[serde(default = "default_half_life", deserialize_with = "duration")]
    pub heat_half_life: Duration,
    /// When to migrate blocks between tiers (`off` for never).
    #[serde(default = "weekly", deserialize_with = "optional_schedule")]
    pub migration: Option<Schedule>,
    #[serde(default, deserialize_with = "optional_size")]
    pub migration_rate: Option<u64>,
    /// When to scrub (`off` for never).
    #[serde(default = "monthly", deserialize_with = "optional_schedule")]
    pub scrub: Option<Schedule>,
    #[serde(default, deserialize_with = "optional_size")]
    pub scrub_rate: Option<u64>,
}

/// `[[snapshots]]`: a snapshot task with retention.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotTask {
    /// The pool; may be left out when the config has one.
    #[serde(default)]
    pub pool: String,
    #[serde(deserialize_with = "required_schedule")]
    pub schedule: Schedule,
    /// Snapshot names are `<prefix>-YYYYMMDD-HHMMSS`; retention only deletes snapshots with
    /// this prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default)]
    pub keep: Retention,
}

impl SnapshotTask {
    /// The job's name in `aegis jobs` and the state database.
    pub fn job_name(&self) -> String {
        format!("snapshot:{}:{}", self.pool, self.prefix)
    }
}

/// `[alerts]`: who hears about failures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// A URL that receives each alert as a JSON POST.
    #[serde(deserialize_with = "optional_url")]
    pub webhook: Option<String>,
    /// A shell command that receives each alert as text on stdin (`sendmail`, `ntfy publish`).
    pub command: Option<String>,
    /// Alert when the fast tier stays above its high watermark this long.
    #[serde(deserialize_with = "duration")]
    pub fast_tier_full_after: Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            webhook: None,
            command: None,
            fast_tier_full_after: Duration::from_secs(3600),
        }
    }
}

/// The file's shape; cross-field checks need the positions of a few values.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: DaemonSettings,
    #[serde(default)]
    api: ApiSettings,
    #[serde(default, rename = "pool")]
    pools: Vec<Spanned<PoolConfig>>,
    #[serde(default)]
    snapshots: Vec<Spanned<SnapshotTask>>,
    #[serde(default, rename = "backup")]
    backups: Vec<Spanned<BackupJob>>,
    #[serde(default)]
    remotes: Option<Spanned<Remotes>>,
    #[serde(default)]
    alerts: AlertSettings,
}

impl Config {
    /// Reads and checks the config at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        Self::parse(&text, &path)
    }

    /// Checks config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let at = |span: Option<Range<usize>>, message: String| {
            let offset = span.map_or(0, |s| s.start).min(text.len());
            let before = &text[..offset];
            ConfigError::Invalid {
                path: path.to_owned(),
                line: before.matches('\n').count() + 1,
                column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
                message,
            }
        };
        let raw: RawConfig = toml::from_str(text).map_err(|mut err| {
            let span = err.span();
            // Without the input, the message ends with the field's key path ("in `a.b`").
            err.set_input(None);
            at(span, err.to_string().trim_end().replace('\n', " "))
        })?;

        // A check of a value deserialization cannot do names the line of that value's key,
        // or of its section when the key is missing.
        let at_key = |steps: &[Step<'_>], section: Range<usize>, message: String| {
            at(Some(key_span(text, steps).unwrap_or(section)), message)
        };

        if raw.pools.is_empty() {
            return Err(at(
                None,
                "no [[pool]] section: the daemon needs at least one pool to serve".into(),
            ));
        }
        let mut names = HashSet::new();
        let mut mountpoints = HashSet::new();
        let mut devices = HashSet::new();
        for (index, pool) in raw.pools.iter().enumerate() {
            let (span, pool) = (pool.span(), pool.get_ref());
            let fail = |key: &str, message: &str| {
                let steps = [Step::Key("pool"), Step::Index(index), Step::Key(key)];
                at_key(&steps, span.clone(), format!("pool[{index}].{message}"))
            };
            check_name(&pool.name).map_err(|m| fail("name", &m))?;
            if !names.insert(pool.name.as_str()) {
                let message = format!("name: a second pool is named '{}'", pool.name);
                return Err(fail("name", &message));
            }
            if pool.devices.is_empty() {
                return Err(fail("devices", "devices: give the pool's member devices"));
            }
            for (device_index, device) in pool.devices.iter().enumerate() {
                if !devices.insert(device.as_path()) {
                    let steps = [
                        Step::Key("pool"),
                        Step::Index(index),
                        Step::Key("devices"),
                        Step::Index(device_index),
                    ];
                    let message = format!(
                        "pool[{index}].devices: {} is listed twice",
                        device.display()
                    );
                    return Err(at_key(&steps, span.clone(), message));
                }
            }
            if !pool.mountpoint.is_absolute() {
                let message = format!(
                    "mountpoint: {} is not an absolute path",
                    pool.mountpoint.display()
                );
                return Err(fail("mountpoint", &message));
            }
            if !mountpoints.insert(pool.mountpoint.as_path()) {
                let message = format!(
                    "mountpoint: {} is used by two pools",
                    pool.mountpoint.display()
                );
                return Err(fail("mountpoint", &message));
            }
            if pool.keyfile.is_some() && pool.ask_password {
                return Err(fail(
                    "ask_password",
                    "keyfile and ask_password: give one way to get the key, not both",
                ));
            }
        }
        let pools: Vec<PoolConfig> = raw.pools.into_iter().map(Spanned::into_inner).collect();

        let mut snapshots = Vec::new();
        let mut jobs = HashSet::new();
        for (index, task) in raw.snapshots.into_iter().enumerate() {
            let span = task.span();
            let mut task = task.into_inner();
            let fail = |key: &str, message: String| {
                let steps = [Step::Key("snapshots"), Step::Index(index), Step::Key(key)];
                at_key(
                    &steps,
                    span.clone(),
                    format!("snapshots[{index}].{message}"),
                )
            };
            if task.pool.is_empty() {
                match pools.as_slice() {
                    [only] => task.pool = only.name.clone(),
                    _ => {
                        let message = "pool: name the pool (the config has several)".to_owned();
                        return Err(fail("pool", message));
                    }
                }
            } else if !pools.iter().any(|p| p.name == task.pool) {
                let message = format!("pool: no [[pool]] is named '{}'", task.pool);
                return Err(fail("pool", message));
            }
            check_name(&task.prefix).map_err(|m| fail("prefix", m))?;
            if !jobs.insert(task.job_name()) {
                let message = format!(
                    "prefix: another snapshot task of pool '{}' uses prefix '{}'; give each its own",
                    task.pool, task.prefix
                );
                return Err(fail("prefix", message));
            }
            snapshots.push(task);
        }

        // A remote's errors name the line of its name (in its section header).
        let remote_error = |err: JobError, section: Range<usize>| match &err {
            JobError::Remote { remote, .. } => {
                let steps = [Step::Key("remotes"), Step::Key(remote.as_str())];
                at_key(&steps, section, err.to_string())
            }
            _ => at(Some(section), err.to_string()),
        };
        let remotes = match raw.remotes {
            Some(remotes) => {
                let span = remotes.span();
                let remotes = remotes.into_inner();
                remotes.validate().map_err(|err| remote_error(err, span))?;
                remotes
            }
            None => Remotes::default(),
        };
        let mut backups: Vec<BackupTask> = Vec::new();
        for (index, job) in raw.backups.into_iter().enumerate() {
            let span = job.span();
            let mut job = job.into_inner();
            let fail = |key: &str, message: String| {
                let steps = [Step::Key("backup"), Step::Index(index), Step::Key(key)];
                at_key(&steps, span.clone(), format!("backup[{index}].{message}"))
            };
            if job.pool.is_empty() {
                match pools.as_slice() {
                    [only] => job.pool = only.name.clone(),
                    _ => {
                        let message = "pool: name the pool (the config has several)".to_owned();
                        return Err(fail("pool", message));
                    }
                }
            } else if !pools.iter().any(|p| p.name == job.pool) {
                let message = format!("pool: no [[pool]] is named '{}'", job.pool);
                return Err(fail("pool", message));
            }
            job.validate(&remotes).map_err(|err| match &err {
                JobError::Field { field, .. } => {
                    let steps = [Step::Key("backup"), Step::Index(index), Step::Key(field)];
                    at_key(&steps, span.clone(), format!("backup[{index}]: {err}"))
                }
                _ => remote_error(err, span.clone()),
            })?;
            if backups.iter().any(|b| b.job.name == job.name) {
                let message = format!("name: a second backup is named '{}'", job.name);
                return Err(fail("name", message));
            }
            let schedule = schedule::parse_optional(&job.schedule, Zone::Local)
                .map_err(|err| fail("schedule", format!("schedule: {err}")))?;
            backups.push(BackupTask { job, schedule });
        }
        Ok(Self {
            path: path.to_owned(),
            daemon: raw.daemon,
            api: raw.api,
            pools,
            snapshots,
            backups,
            remotes,
            alerts: raw.alerts,
        })
    }
}

/// One step of the way to a value: a table's key or an array's index.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Where the value at `steps` is written: the span of its key (of its element, for an array
/// index), e.g. `mountpoint` in the first `[[pool]]` for `pool`, `0`, `mountpoint`. `None`
/// when it is not there (a missing key) or the text does not parse.
fn key_span(text: &str, steps: &[Step<'_>]) -> Option<Range<usize>> {
    use toml::de::{DeTable, DeValue};
    fn entry<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<(Range<usize>, &'a DeValue<'i>)> {
        table
            .iter()
            .find(|(name, _)| name.get_ref() == key)
            .map(|(name, value)| (name.span(), value.get_ref()))
    }
    let document = DeTable::parse(text).ok()?;
    let mut span = None;
    let mut current: Option<&DeValue<'_>> = None;
    for step in steps {
        let (next_span, next) = match (step, current) {
            (Step::Key(key), None) => entry(document.get_ref(), key)?,
            (Step::Key(key), Some(DeValue::Table(table))) => entry(table, key)?,
            (Step::Index(index), Some(DeValue::Array(array))) => {
                let element = array.get(*index)?;
                (element.span(), element.get_ref())
            }
            _ => return None,
        };
        span = Some(next_span);
        current = Some(next);
    }
    span
}

/// Names of pools and snapshot prefixes: they appear in job names, snapshot names and URLs.
fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "name: '{name}' is not a valid name (1-64 letters, digits, '-', '_' or '.', not starting with '.')"
        ))
    }
}

fn default_io() -> String {
    "auto".into()
}

fn default_watermarks() -> (f64, f64) {
    (0.70, 0.85)
}

fn default_half_life() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_prefix() -> String {
    "auto".into()
}

fn weekly() -> Option<Schedule> {
    Schedule::parse_in("weekly", Zone::Local).ok()
}

fn monthly() -> Option<Schedule> {
    Schedule::parse_in("monthly", Zone::Local).ok()
}

fn io_backend<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let text = String::deserialize(de)?;
    match text.as_str() {
        "auto" | "pread" => Ok(text),
        other => Err(serde::de::Error::custom(format!(
            "'{other}' is not an I/O backend: use auto (io_uring where it works) or pread"
        ))),
    }
}

fn log_filter<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let text = String::deserialize(de)?;
    tracing_subscriber::EnvFilter::try_new(&text)
        .map_err(|e| serde::de::Error::custom(format!("'{text}' is not a log level: {e}")))?;
    Ok(text)
}

fn optional_size<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(de)?;
    crate::units::parse_size(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn watermarks<'de, D: Deserializer<'de>>(de: D) -> Result<(f64, f64), D::Error> {
    let text = String::deserialize(de)?;
    crate::units::parse_watermarks(&text).map_err(serde::de::Error::custom)
}

fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "'{text}' is not a duration ({e}); examples: 30m, 12h, 7d"
        ))
    })
}

fn optional_schedule<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Schedule>, D::Error> {
    let text = String::deserialize(de)?;
    schedule::parse_optional(&text, Zone::Local).map_err(serde::de::Error::custom)
}

fn required_schedule<'de, D: Deserializer<'de>>(de: D) -> Result<Schedule, D::Error> {
    let text = String::deserialize(de)?;
    Schedule::parse_in(&text, Zone::Local).map_err(serde::de::Error::custom)
}

fn optional_url<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(de)?;
    if text.starts_with("http://") || text.starts_with("https://") {
        Ok(Some(text))
    } else {
        Err(serde::de::Error::custom(format!(
            "'{text}' is not an http:// or https:// URL"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/aegis/aegis.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("the config is invalid").to_string()
    }

    const MINIMAL: &str = r#"
[[pool]]
name = "tank"
devices = ["/dev/fast", "/dev/slow"]
mountpoint = "/mnt/tank"
"#;

    #[test]
    fn minimal_config_gets_the_defaults() {
        let config = parse(MINIMAL).expect("valid");
        assert_eq!(config.daemon.socket, Path::new("/run/aegis/aegisd.sock"));
        assert_eq!(config.daemon.state_db, Path::new("/var/lib/aegis/aegis.db"));
        let pool = &config.pools[0];
        assert_eq!(
            pool.migration.as_ref().map(Schedule::cron),
            Some("0 0 * * 0")
        );
        assert_eq!(pool.scrub.as_ref().map(Schedule::cron), Some("0 0 1 * *"));
        assert_eq!(pool.watermarks, (0.70, 0.85));
        assert!(config.api.tcp.is_none());
    }

    #[test]
    fn shipped_example_is_valid() {
        let text = include_str!("../../../systemd/aegis.toml");
        let config = parse(text).expect("the shipped example config is valid");
        assert_eq!(config.pools.len(), 1);
        assert!(!config.snapshots.is_empty());
    }

    /// The keys a section accepts, as its unknown-field error lists them.
    fn accepted_keys(text: &str) -> Vec<String> {
        let message = error(text);
        let (_, expected) = message
            .split_once("expected")
            .unwrap_or_else(|| panic!("not an unknown-field error: {message}"));
        // Without the key path the message ends with (" in `pool`").
        let expected = expected
            .rsplit_once(" in `")
            .map_or(expected, |(list, _)| list);
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn shipped_example_documents_every_key() {
        let text = include_str!("../../../systemd/aegis.toml");
        // The example's lines by section ("pool", "api.tcp", "remotes"...), commented out or not.
        let mut sections: HashMap<String, Vec<&str>> = HashMap::new();
        let mut current = String::new();
        for line in text.lines() {
            let bare = line.trim_start_matches('#').trim();
            if bare.starts_with('[') && bare.ends_with(']') && !bare.contains(' ') {
                let name = bare.trim_matches(['[', ']']);
                current = name.split('.').next().unwrap_or(name).to_owned();
                if name == "api.tcp" {
                    current = name.to_owned();
                }
                sections.entry(current.clone()).or_default();
                continue;
            }
            sections.entry(current.clone()).or_default().push(line);
        }
        let is_assignment = |line: &str, key: &str| {
            line.trim_start_matches('#')
                .trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        };
        // A comment that says something, rather than showing a commented-out key.
        let prose = |line: &str| {
            let bare = line.trim_start_matches('#').trim();
            let shows_key = bare.split_once('=').is_some_and(|(key, _)| {
                let key = key.trim();
                !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            });
            line.starts_with('#') && !bare.is_empty() && !shows_key
        };
        let table = format!("{MINIMAL}[[snapshots]]\nschedule = \"hourly\"\n");
        let backup = format!("{MINIMAL}[[backup]]\nname = \"b\"\nengine = \"rsync\"\n");
        let cases = [
            ("daemon", format!("[daemon]\nbogus = 1\n{MINIMAL}")),
            ("api.tcp", format!("{MINIMAL}[api.tcp]\nbogus = 1\n")),
            ("pool", format!("{MINIMAL}bogus = 1\n")),
            ("snapshots", format!("{table}bogus = 1\n")),
            ("backup", format!("{backup}bogus = 1\n")),
            ("alerts", format!("{MINIMAL}[alerts]\nbogus = 1\n")),
        ];
        for (section, bad) in cases {
            let keys = accepted_keys(&bad);
            assert!(keys.len() >= 2, "{section}: {keys:?}");
            let lines = sections.get(section).map(Vec::as_slice).unwrap_or_default();
            for key in keys {
                // Set (or shown commented out) right below a line of prose about it.
                let documented = lines
                    .iter()
                    .enumerate()
                    .any(|(i, line)| is_assignment(line, &key) && i > 0 && prose(lines[i - 1]));
                assert!(
                    documented,
                    "[{section}] {key} is not documented in the example"
                );
            }
        }
        // Retention counts are set together in one inline table, explained above it.
        let keep = format!("{table}keep = {{ bogus = 1 }}\n");
        for key in accepted_keys(&keep) {
            assert!(
                sections["snapshots"]
                    .iter()
                    .any(|l| l.starts_with("keep = {") && l.contains(&format!(" {key} = "))),
                "keep.{key} is not in the example"
            );
        }
        for section in accepted_keys(&format!("bogus = 1\n{MINIMAL}"))
            .into_iter()
            .filter(|s| s != "api")
        {
            assert!(
                sections.contains_key(&section),
                "no [{section}] in the example"
            );
        }
        assert!(
            sections.contains_key("api.tcp"),
            "no [api.tcp] in the example"
        );
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let text = format!("{MINIMAL}mountpiont = \"/x\"\n");
        let message = error(&text);
        assert!(message.starts_with("/etc/aegis/aegis.toml:6:"), "{message}");
        assert!(message.contains("mountpiont"), "{message}");
    }

    #[test]
    fn bad_schedule_names_its_line() {
        let text = format!("{MINIMAL}scrub = \"fortnightly\"\n");
        let message = error(&text);
        assert!(message.starts_with("/etc/aegis/aegis.toml:6:"), "{message}");
        assert!(message.contains("fortnightly"), "{message}");
    }

    #[test]
    fn bad_size_and_duration_are_named() {
        assert!(
            error(&format!("{MINIMAL}scrub_rate = \"fast\"\n")).contains("'fast' is not a size")
        );
        assert!(error(&format!(
            "{MINIMAL}[alerts]\nfast_tier_full_after = \"soon\"\n"
        ))
        .contains("'soon' is not a duration"));
    }

    #[test]
    fn snapshot_task_must_name_an_existing_pool() {
        let text = format!("{MINIMAL}\n[[snapshots]]\npool = \"tonk\"\nschedule = \"hourly\"\n");
        let message = error(&text);
        assert!(
            message.contains("snapshots[0].pool: no [[pool]] is named 'tonk'"),
            "{message}"
        );
        assert!(
            message.starts_with("/etc/aegis/aegis.toml:8:1:"),
            "{message}"
        );
    }

    #[test]
    fn snapshot_task_defaults_to_the_only_pool() {
        let text = format!(
            "{MINIMAL}\n[[snapshots]]\nschedule = \"hourly\"\nkeep = {{ hourly = 24, daily = 7 }}\n"
        );
        let config = parse(&text).expect("valid");
        assert_eq!(config.snapshots[0].pool, "tank");
        assert_eq!(config.snapshots[0].keep.hourly, 24);
        assert_eq!(config.snapshots[0].job_name(), "snapshot:tank:auto");
        let typo =
            format!("{MINIMAL}\n[[snapshots]]\nschedule = \"hourly\"\nkeep = {{ hourlly = 24 }}\n");
        assert!(error(&typo).contains("hourlly"));
    }

    #[test]
    fn duplicate_pools_devices_and_mountpoints_are_refused() {
        let twice = format!("{MINIMAL}{MINIMAL}");
        assert!(error(&twice).contains("pool[1].name: a second pool is named 'tank'"));
        let shared = format!(
            "{MINIMAL}[[pool]]\nname = \"b\"\ndevices = [\"/dev/slow\"]\nmountpoint = \"/mnt/b\"\n"
        );
        assert!(error(&shared).contains("/dev/slow is listed twice"));
        let relative = MINIMAL.replace("/mnt/tank", "mnt/tank");
        assert!(error(&relative).contains("not an absolute path"));
    }

    #[test]
    fn missing_pool_and_malformed_toml_are_clear() {
        assert!(error("").contains("no [[pool]] section"));
        let message = error("[[pool]\nname = 1\n");
        assert!(message.starts_with("/etc/aegis/aegis.toml:1:"), "{message}");
        let message = error(&MINIMAL.replace("\"tank\"", "42"));
        assert!(message.contains("string"), "{message}");
    }

    #[test]
    fn backup_jobs_and_inline_remotes_are_checked_with_their_line() {
        let job = |extra: &str| {
            format!(
                "{MINIMAL}\n[[backup]]\nname = \"photos\"\nengine = \"rclone\"\nsource = \"photos\"\n\
                 destination = \"crypt:tank/photos\"\nschedule = \"daily 02:30\"\n{extra}"
            )
        };
        let config = parse(&job(
            "keep_versions = 30\n[remotes.crypt]\ntype = \"crypt\"\nremote = \"b2:bucket\"\n",
        ))
        .expect("valid");
        let task = &config.backups[0];
        assert_eq!(task.job.pool, "tank");
        assert_eq!(task.job_name(), "backup:photos");
        assert_eq!(
            task.schedule.as_ref().map(Schedule::cron),
            Some("30 2 * * *")
        );
        assert!(config.remotes.0.contains_key("crypt"));

        let message = error(&job("bandwidth = \"fast\"\n"));
        assert!(
            message.starts_with("/etc/aegis/aegis.toml:13:1:"),
            "{message}"
        );
        assert!(message.contains("`bandwidth`"), "{message}");
        let message = error(&job("").replace("daily 02:30", "nightly"));
        assert!(message.contains("backup[0].schedule"), "{message}");
        let message = error(&job("destnation = \"x\"\n"));
        assert!(message.contains("destnation"), "{message}");
        let off = parse(&job("").replace("daily 02:30", "off")).expect("valid");
        assert!(off.backups[0].schedule.is_none());
    }

    /// The line and column an error names, and its message.
    fn located(text: &str) -> (usize, usize, String) {
        match parse(text).expect_err("the config is invalid") {
            ConfigError::Invalid {
                line,
                column,
                message,
                ..
            } => (line, column, message),
            other => panic!("{other}"),
        }
    }

    /// Two pools, the second with `bad` (a line) in the middle of its section.
    fn second_pool_with(bad: &str) -> String {
        format!(
            "[daemon]\nlog_level = \"info\"\n\n\
             [[pool]]\nname = \"tank\"\ndevices = [\"/dev/a\", \"/dev/b\"]\nmountpoint = \"/mnt/a\"\n\n\
             [[pool]]\nname = \"vault\"\n{bad}\nio = \"pread\"\nscrub = \"monthly\"\n"
        )
    }

    #[test]
    fn an_invalid_pool_field_names_its_own_line() {
        // Line 12 is `bad`, three lines below the section's header (line 9).
        let case = |bad: &str| {
            let text = second_pool_with(&format!(
                "devices = [\"/dev/c\"]\n{bad}\nmountpoint = \"/mnt/b\""
            ));
            assert_eq!(text.lines().nth(11), Some(bad), "{text}");
            located(&text)
        };
        // Checked while deserializing: the value's position.
        let (line, column, message) = case("scrub_rate = \"fast\"");
        assert_eq!((line, column), (12, 14), "{message}");
        assert!(message.contains("'fast' is not a size"), "{message}");
        let (line, _, message) = case("migration = \"fortnightly\"");
        assert_eq!(line, 12, "{message}");
        // Checked afterwards: the key's position.
        let text = second_pool_with(
            "devices = [\"/dev/c\"]\nmountpoint = \"mnt/b\"\nheat_half_life = \"7d\"",
        );
        let (line, column, message) = located(&text);
        assert_eq!((line, column), (12, 1), "{message}");
        assert_eq!(message, "pool[1].mountpoint: mnt/b is not an absolute path");
        let text = second_pool_with(
            "devices = [\"/dev/c\"]\nmountpoint = \"/mnt/a\"\ncache_size = \"1G\"",
        );
        let (line, _, message) = located(&text);
        assert_eq!(line, 12, "{message}");
        assert!(message.contains("used by two pools"), "{message}");
        let text = second_pool_with("name = \"tank\"");
        assert_eq!(located(&text).0, 11);
        let text = second_pool_with(
            "keyfile = \"/etc/aegis/key\"\nask_password = true\ndevices = [\"/dev/c\"]\nmountpoint = \"/mnt/b\"",
        );
        assert_eq!(located(&text).0, 12);
        // A device listed twice: the line of its second listing.
        let text = second_pool_with(
            "devices = [\n  \"/dev/c\",\n  \"/dev/b\",\n]\nmountpoint = \"/mnt/b\"",
        );
        let (line, column, message) = located(&text);
        assert_eq!((line, column), (13, 3), "{message}");
        assert_eq!(message, "pool[1].devices: /dev/b is listed twice");
    }

    /// Two backups, the second with `bad` (a line) in the middle of its section.
    fn second_backup_with(bad: &str) -> String {
        format!(
            "{MINIMAL}\n[[backup]]\nname = \"photos\"\nengine = \"rsync\"\ndestination = \"/backup/photos\"\n\
             schedule = \"daily\"\n\n[[backup]]\nname = \"docs\"\nengine = \"rclone\"\n{bad}\n\
             destination = \"crypt:docs\"\nschedule = \"weekly\"\nkeep_versions = 3\n\n\
             [remotes.crypt]\ntype = \"crypt\"\nremote = \"b2:bucket\"\n"
        )
    }

    #[test]
    fn an_invalid_backup_field_names_its_own_line() {
        // Line 16 is `bad`, three lines below the section's header (line 13).
        let case = |bad: &str| {
            let text = second_backup_with(bad);
            assert_eq!(text.lines().nth(15), Some(bad), "{text}");
            located(&text)
        };
        let (line, column, message) = case("bandwidth = \"fast\"");
        assert_eq!((line, column), (16, 1), "{message}");
        assert!(
            message.starts_with("backup[1]: backup \"docs\": `bandwidth`"),
            "{message}"
        );
        let (line, _, message) = case("source = \"../etc\"");
        assert_eq!(line, 16, "{message}");
        assert!(message.contains("`source`"), "{message}");
        let (line, _, message) = case("exclude = [\"*.tmp\", \"\"]");
        assert_eq!(line, 16, "{message}");
        assert!(message.contains("`exclude` pattern 2"), "{message}");
        let (line, _, message) = case("pool = \"tonk\"");
        assert_eq!(line, 16, "{message}");
        assert_eq!(message, "backup[1].pool: no [[pool]] is named 'tonk'");
        let text =
            second_backup_with("mode = \"copy\"").replace("name = \"docs\"", "name = \"photos\"");
        let (line, _, message) = located(&text);
        assert_eq!(line, 14, "{message}");
        assert!(
            message.contains("a second backup is named 'photos'"),
            "{message}"
        );
        let (line, column, message) = case("mode = \"mirror\"");
        assert_eq!((line, column), (16, 8), "{message}");
        // A bad schedule below the line of `bad`.
        let text = second_backup_with("mode = \"copy\"").replace("\"weekly\"", "\"fortnightly\"");
        let (line, _, message) = located(&text);
        assert_eq!(line, 18, "{message}");
        assert!(message.starts_with("backup[1].schedule: "), "{message}");
        // An inline remote without a type: the line of its section header.
        let text = second_backup_with("mode = \"copy\"").replace("type = \"crypt\"\n", "");
        let (line, column, message) = located(&text);
        assert_eq!((line, column), (21, 10), "{message}");
        assert!(
            message.starts_with("[remotes.crypt]: needs a `type`"),
            "{message}"
        );
    }

    #[test]
    fn tcp_listener_needs_an_address_and_a_token() {
        let text = format!("{MINIMAL}[api.tcp]\nlisten = \"127.0.0.1:9460\"\n");
        assert!(error(&text).contains("token_file"));
        let text = format!(
            "{MINIMAL}[api.tcp]\nlisten = \"localhost\"\ntoken_file = \"/etc/aegis/token\"\n"
        );
        assert!(error(&text).contains("listen"));
    }
}
