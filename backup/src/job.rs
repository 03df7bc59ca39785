//! The `[[backup]]` and `[remotes.NAME]` sections of `aegis.toml`: their types and the checks
//! a backup job must pass before it runs. Parsing the file, filling in the pool and parsing the
//! schedule are the daemon's job.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Deserializer};

/// The directory inside an rclone destination that holds the dated version directories.
pub const RCLONE_VERSIONS_DIR: &str = ".aegis-versions";

/// The program that copies the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Rsync,
    Rclone,
}

impl Engine {
    /// The executable's name, which is also the name of its distribution package.
    pub fn binary(self) -> &'static str {
        match self {
            Engine::Rsync => "rsync",
            Engine::Rclone => "rclone",
        }
    }
}

/// Whether files removed from the source are removed from the destination too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Make the destination a mirror of the source (extraneous files are deleted).
    #[default]
    Sync,
    /// Copy new and changed files; never delete anything at the destination.
    Copy,
}

/// One `[[backup]]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupJob {
    /// The job's name: `[A-Za-z0-9_.-]`, at most 64 characters.
    pub name: String,
    pub engine: Engine,
    /// The pool; may be left out while the config has one pool (the daemon fills it in).
    #[serde(default)]
    pub pool: String,
    /// A directory inside the pool; `""` or `"/"` for the whole pool.
    #[serde(default)]
    pub source: String,
    /// rclone: `remote:path` or an absolute local path. rsync: an absolute local path,
    /// `host:path` or `user@host:path`.
    pub destination: String,
    /// When the daemon runs the job (parsed by the daemon).
    pub schedule: String,
    #[serde(default)]
    pub mode: Mode,
    /// A bandwidth limit in bytes per second for `--bwlimit`: `20M`, `1.5M`, `500K`
    /// (powers of 1024; a bare number is KiB/s for both engines).
    #[serde(default)]
    pub bandwidth: Option<String>,
    /// Exclude patterns, passed to `--exclude` (same syntax for both engines for the usual
    /// `*.tmp`, `name/`, `/top-level` forms).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// How many dated versions to keep; 0 copies straight into the destination.
    #[serde(default)]
    pub keep_versions: u32,
    /// Keep the source snapshot after the run (read by the daemon).
    #[serde(default)]
    pub keep_snapshot: bool,
}

/// The inline rclone remotes (`[remotes.NAME]`): remote name → option → value. TOML integers
/// and booleans are stored as strings. `Debug` leaves the values out: they hold secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Remotes(pub BTreeMap<String, BTreeMap<String, String>>);

/// Why a backup job or an inline remote cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("backup {job:?}: `{field}` {message}")]
    Field {
        job: String,
        field: &'static str,
        message: String,
    },
    #[error("[remotes.{remote}]: {message}")]
    Remote { remote: String, message: String },
}

impl BackupJob {
    /// Checks everything that can be checked without running anything. A remote named in an
    /// rclone destination may be defined in rclone.conf, so an unknown one is not an error.
    pub fn validate(&self, remotes: &Remotes) -> Result<(), JobError> {
        let field = |field: &'static str, message: String| JobError::Field {
            job: self.name.clone(),
            field,
            message,
        };
        if !valid_name(&self.name) {
            return Err(field(
                "name",
                "must be 1 to 64 characters of A-Z, a-z, 0-9, `_`, `.` and `-`".into(),
            ));
        }
        if self.source != "/" {
            let path = Path::new(&self.source);
            if path.is_absolute()
                || path
                    .components()
                    .any(|c| !matches!(c, Component::Normal(_)))
                || self.source.contains('\0')
            {
                return Err(field(
                    "source",
                    format!(
                        "{:?} must be a path inside the pool like \"photos\" (\"\" or \"/\" \
                         for the whole pool), without `..`",
                        self.source
                    ),
                ));
            }
        }
        if let Err(message) = check_destination(self.engine, &self.destination) {
            return Err(field("destination", message));
        }
        if let Some(rate) = &self.bandwidth {
            if !valid_rate(rate) {
                return Err(field(
                    "bandwidth",
                    format!("{rate:?} is not a rate like \"20M\", \"1.5M\" or \"500K\""),
                ));
            }
        }
        for (i, pattern) in self.exclude.iter().enumerate() {
            if pattern.trim().is_empty() || pattern.contains(['\n', '\r', '\0']) {
                return Err(field(
                    "exclude",
                    format!(
                        "pattern {} ({pattern:?}) is empty or holds a line break",
                        i + 1
                    ),
                ));
            }
        }
        if self.engine == Engine::Rclone {
            remotes.validate()?;
        }
        Ok(())
    }

    /// The directory to back up, given where the pool (or its snapshot) is mounted.
    pub fn source_dir(&self, root: &Path) -> PathBuf {
        root.join(self.source.trim_start_matches('/'))
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `20`, `20M`, `1.5M`, `500K`, `1G` (K/M/G in either case).
fn valid_rate(rate: &str) -> bool {
    let number = rate
        .strip_suffix(['K', 'M', 'G', 'k', 'm', 'g'])
        .unwrap_or(rate);
    let (int, frac) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && digits(frac)
}

fn check_destination(engine: Engine, dest: &str) -> Result<(), String> {
    if dest.trim().is_empty() {
        return Err("is empty".into());
    }
    if dest.contains(['\n', '\r', '\0']) {
        return Err(format!("{dest:?} holds a line break"));
    }
    if dest.starts_with('-') {
        return Err(format!("{dest:?} must not start with `-`"));
    }
    match engine {
        Engine::Rsync if rsync_host(dest).is_none() && !dest.starts_with('/') => Err(format!(
            "{dest:?} must be an absolute local path, host:path or user@host:path"
        )),
        Engine::Rclone if dest.starts_with(':') => Err(format!(
            "{dest:?} is an rclone connection string, which would put its options on the \
             command line: define a [remotes.NAME] section and use NAME:path"
        )),
        Engine::Rclone if !dest.starts_with('/') && rclone_remote(dest).is_none() => Err(format!(
            "{dest:?} must be remote:path or an absolute local path"
        )),
        _ => Ok(()),
    }
}

/// The host part of an rsync destination (`host:path`, `user@host:path`, `host::module`),
/// `None` for a local path. Like rsync: a colon before any slash makes it remote.
pub(crate) fn rsync_host(dest: &str) -> Option<&str> {
    let (host, _) = dest.split_once(':')?;
    (!host.is_empty() && !host.contains('/')).then_some(host)
}

/// The remote name of an rclone destination (`name:path`), `None` for a local path.
pub(crate) fn rclone_remote(dest: &str) -> Option<&str> {
    let (name, _) = dest.split_once(':')?;
    let ok = !name.is_empty()
        && !name.starts_with(['-', ' '])
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '+' | '@'));
    ok.then_some(name)
}

impl Remotes {
    /// Checks the inline remotes: names rclone accepts (and that stay distinct when
    /// upper-cased, as they reach rclone in environment variables), option names of
    /// letters, digits and `_`, a `type`, and no line breaks in values.
    pub fn validate(&self) -> Result<(), JobError> {
        let mut upper = std::collections::BTreeSet::new();
        for (name, options) in &self.0 {
            let err = |message: String| JobError::Remote {
                remote: name.clone(),
                message,
            };
            if rclone_remote(&format!("{name}:")) != Some(name.as_str()) || name.contains(' ') {
                return Err(err(
                    "the name may hold letters, digits, `_`, `-`, `.`, `+` and `@`".into(),
                ));
            }
            if !upper.insert(name.to_uppercase()) {
                return Err(err(
                    "another remote has the same name in different case".into()
                ));
            }
            if !options.contains_key("type") {
                return Err(err(
                    "needs a `type` (like \"s3\", \"b2\" or \"crypt\")".into()
                ));
            }
            for (key, value) in options {
                if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(err(format!("option {key:?} is not an rclone option name")));
                }
                if value.contains(['\n', '\r', '\0']) {
                    return Err(err(format!("the value of `{key}` holds a line break")));
                }
            }
        }
        Ok(())
    }

    /// The environment variables that define the remotes for rclone
    /// (`RCLONE_CONFIG_<NAME>_<OPTION>`).
    pub(crate) fn env(&self) -> impl Iterator<Item = (String, &str)> {
        self.0.iter().flat_map(|(name, options)| {
            options.iter().map(move |(key, value)| {
                let var = format!("RCLONE_CONFIG_{name}_{key}").to_uppercase();
                (var, value.as_str())
            })
        })
    }
}

impl fmt::Debug for Remotes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self
            .0
            .iter()
            .map(|(name, o)| (name, o.keys().collect::<Vec<_>>()));
        f.debug_map().entries(keys).finish()
    }
}

impl<'de> Deserialize<'de> for Remotes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Value {
            String(String),
            Integer(i64),
            Bool(bool),
        }
        let raw = BTreeMap::<String, BTreeMap<String, Value>>::deserialize(deserializer)?;
        let remotes = raw.into_iter().map(|(name, options)| {
            let options = options.into_iter().map(|(key, value)| {
                let value = match value {
                    Value::String(s) => s,
                    Value::Integer(i) => i.to_string(),
                    Value::Bool(b) => b.to_string(),
                };
                (key, value)
            });
            (name, options.collect())
        });
        Ok(Remotes(remotes.collect()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        backup: Vec<BackupJob>,
        #[serde(default)]
        remotes: Remotes,
    }

    const EXAMPLE: &str = r#"
        [[backup]]
        name = "photos-offsite"
        engine = "rclone"
        pool = "tank"
        source = "photos"
        destination = "b2crypt:tank/photos"
        schedule = "daily 02:30"
        mode = "copy"
        bandwidth = "20M"
        exclude = ["*.tmp", ".cache/"]
        keep_versions = 30
        keep_snapshot = false

        [remotes.b2crypt]
        type = "crypt"
        remote = "b2:bucket"
        password = "secret-obscured"
        chunk_size = 5
        hard_delete = true
    "#;

    fn example() -> (BackupJob, Remotes) {
        let mut file: File = toml::from_str(EXAMPLE).unwrap();
        (file.backup.remove(0), file.remotes)
    }

    fn field_error(edit: impl FnOnce(&mut BackupJob)) -> String {
        let (mut job, remotes) = example();
        edit(&mut job);
        match job.validate(&remotes) {
            Err(JobError::Field { field, .. }) => field.to_string(),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let (job, remotes) = example();
        assert_eq!(job.engine, Engine::Rclone);
        assert_eq!(job.mode, Mode::Copy);
        assert_eq!(job.keep_versions, 30);
        let b2crypt = &remotes.0["b2crypt"];
        assert_eq!(b2crypt["chunk_size"], "5");
        assert_eq!(b2crypt["hard_delete"], "true");
        job.validate(&remotes).unwrap();
        assert!(!format!("{remotes:?}").contains("secret"));
        let vars: Vec<_> = remotes.env().collect();
        assert!(vars.contains(&("RCLONE_CONFIG_B2CRYPT_PASSWORD".into(), "secret-obscured")));
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let job: BackupJob = toml::from_str(
            "name = \"a\"\nengine = \"rsync\"\ndestination = \"/b\"\nschedule = \"off\"",
        )
        .unwrap();
        assert_eq!(
            (job.mode, job.keep_versions, job.source.as_str()),
            (Mode::Sync, 0, "")
        );
        assert_eq!(job.source_dir(Path::new("/snap")), Path::new("/snap/"));
        let err = toml::from_str::<BackupJob>(
            "name = \"a\"\nengine = \"rsync\"\ndestination = \"/b\"\nschedule = \"off\"\nkeep = 1",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `keep`"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(field_error(|j| j.name = "bad name".into()), "name");
        assert_eq!(field_error(|j| j.name = String::new()), "name");
        assert_eq!(field_error(|j| j.source = "../etc".into()), "source");
        assert_eq!(field_error(|j| j.source = "a/../../b".into()), "source");
        assert_eq!(field_error(|j| j.source = "/photos".into()), "source");
        assert_eq!(field_error(|j| j.destination = " ".into()), "destination");
        assert_eq!(
            field_error(|j| j.destination = ":s3,secret=x:b".into()),
            "destination"
        );
        assert_eq!(
            field_error(|j| j.destination = "relative/dir".into()),
            "destination"
        );
        assert_eq!(
            field_error(|j| j.destination = "-oProxy=x:y".into()),
            "destination"
        );
        assert_eq!(
            field_error(|j| j.bandwidth = Some("20MB".into())),
            "bandwidth"
        );
        assert_eq!(
            field_error(|j| j.bandwidth = Some("1.M".into())),
            "bandwidth"
        );
        assert_eq!(
            field_error(|j| j.bandwidth = Some("fast".into())),
            "bandwidth"
        );
        assert_eq!(field_error(|j| j.exclude.push(String::new())), "exclude");
        let msg = {
            let (mut job, remotes) = example();
            job.bandwidth = Some("x".into());
            job.validate(&remotes).unwrap_err().to_string()
        };
        assert_eq!(
            msg,
            "backup \"photos-offsite\": `bandwidth` \"x\" is not a rate like \"20M\", \"1.5M\" or \"500K\""
        );
    }

    #[test]
    fn accepted_values() {
        let (mut job, remotes) = example();
        for rate in ["20M", "1.5M", "500K", "1g", "100"] {
            job.bandwidth = Some(rate.into());
            job.validate(&remotes).unwrap();
        }
        for (engine, dest) in [
            (Engine::Rclone, "/tmp/x/dest"),
            (Engine::Rclone, "unknown-remote:"),
            (Engine::Rsync, "/srv/backup"),
            (Engine::Rsync, "backup@nas:/srv/backup"),
            (Engine::Rsync, "nas:relative/dir"),
        ] {
            job.engine = engine;
            job.destination = dest.into();
            job.validate(&remotes).unwrap();
        }
        job.source = "/".into();
        job.validate(&remotes).unwrap();
        assert_eq!(rsync_host("user@nas:/x"), Some("user@nas"));
        assert_eq!(rsync_host("./a:b"), None);
    }

    #[test]
    fn remote_errors() {
        let (job, mut remotes) = example();
        remotes
            .0
            .insert("B2CRYPT".into(), remotes.0["b2crypt"].clone());
        assert!(matches!(
            job.validate(&remotes),
            Err(JobError::Remote { .. })
        ));
        let (job, mut remotes) = example();
        remotes.0.insert("bad name".into(), BTreeMap::new());
        assert!(job.validate(&remotes).is_err());
        let (job, mut remotes) = example();
        remotes.0.insert("notype".into(), BTreeMap::new());
        let err = job.validate(&remotes).unwrap_err().to_string();
        assert_eq!(
            err,
            "[remotes.notype]: needs a `type` (like \"s3\", \"b2\" or \"crypt\")"
        );
    }
}
