//! The daemon's state database (by default `/var/lib/aegis/aegis.db`): job runs, events,
//! the hash-chained admin audit log, I/O statistics history, the scheduler's per-job
//! bookkeeping and the alerts firing (so a restart neither repeats nor forgets them). One SQLite file in WAL mode, opened once by `aegisd` and shared via `Arc`.

use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, ToSql, TransactionBehavior};
use tracing::{debug, info, warn};

use super::alerts::Alert;

/// Schema migrations; the batch at index `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE job_runs (
    id            INTEGER PRIMARY KEY,
    job           TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    started       INTEGER NOT NULL,
    scheduled_for INTEGER,
    finished      INTEGER,
    outcome       TEXT,
    bytes         INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    detail        TEXT
);
CREATE INDEX job_runs_by_job ON job_runs (job, id);
CREATE INDEX job_runs_open ON job_runs (id) WHERE finished IS NULL;
CREATE TABLE job_marks (
    job        TEXT PRIMARY KEY,
    first_seen INTEGER NOT NULL,
    handled    INTEGER
) WITHOUT ROWID;
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time    INTEGER NOT NULL,
    level   INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    pool    TEXT,
    message TEXT    NOT NULL
);
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    time   INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    result TEXT    NOT NULL,
    hash   TEXT    NOT NULL
);
CREATE TABLE io_seconds (
    pool TEXT NOT NULL, time INTEGER NOT NULL, tier TEXT NOT NULL,
    read_bytes INTEGER NOT NULL, write_bytes INTEGER NOT NULL,
    read_ops INTEGER NOT NULL, write_ops INTEGER NOT NULL,
    PRIMARY KEY (pool, time, tier)
) WITHOUT ROWID;
CREATE TABLE io_minutes (
    pool TEXT NOT NULL, time INTEGER NOT NULL, tier TEXT NOT NULL, seconds INTEGER NOT NULL,
    read_bytes INTEGER NOT NULL, write_bytes INTEGER NOT NULL,
    read_ops INTEGER NOT NULL, write_ops INTEGER NOT NULL,
    PRIMARY KEY (pool, time, tier)
) WITHOUT ROWID;
CREATE INDEX io_minutes_by_time ON io_minutes (time);
"#,
    r#"
ALTER TABLE job_runs ADD COLUMN files INTEGER NOT NULL DEFAULT 0;
ALTER TABLE job_runs ADD COLUMN log_tail TEXT;
"#,
    r#"
ALTER TABLE job_runs ADD COLUMN snapshot TEXT;
"#,
    r#"
CREATE TABLE alerts_firing (
    alert   TEXT    PRIMARY KEY,
    pool    TEXT,
    message TEXT    NOT NULL,
    time    INTEGER NOT NULL,
    host    TEXT    NOT NULL
) WITHOUT ROWID;
"#,
];

/// The schema version this build migrates to.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
/// How many of the newest events are kept.
const EVENTS_KEPT: i64 = 100_000;
/// Old events are pruned whenever a new event's id is a multiple of this.
const EVENT_PRUNE_INTERVAL: i64 = 1_000;
/// 1-second I/O rows older than this (seconds) are folded into 1-minute rows.
const IO_SECOND_ROWS_KEPT_FOR: i64 = 3_600;
/// 1-minute I/O rows older than this (seconds) are deleted.
const IO_MINUTE_ROWS_KEPT_FOR: i64 = 30 * 86_400;
/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Identifier of one job run.
pub type RunId = i64;

/// Why a state database operation failed; every message names the database file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database file or its parent directory could not be created.
    #[error("cannot create state database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// SQLite reported an error.
    #[error("state database {}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The schema is newer than this build understands; the file was left untouched.
    #[error(
        "state database {} has schema version {found}, newer than version {supported} \
         supported by this aegisd; refusing to use or modify it",
        path.display()
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The file is not a database, is corrupt, or holds malformed data.
    #[error("state database {} is damaged: {problem}", path.display())]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The caller asked for something the database cannot do (e.g. finish a run twice).
    #[error("state database {}: request rejected: {problem}", path.display())]
    Invalid {
        /// The database file.
        path: PathBuf,
        /// What is wrong with the request.
        problem: String,
    },
}

/// A failure inside a database operation, before the file's path is attached.
enum Fault {
    Sqlite(rusqlite::Error),
    TooNew(i64),
    Damaged(String),
    Invalid(String),
}

impl From<rusqlite::Error> for Fault {
    fn from(error: rusqlite::Error) -> Self {
        let malformed_value = matches!(
            error,
            rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)
        );
        let corrupt_file = matches!(
            error.sqlite_error_code(),
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
        );
        if malformed_value || corrupt_file {
            Fault::Damaged(error.to_string())
        } else {
            Fault::Sqlite(error)
        }
    }
}

impl Fault {
    fn at(self, path: &Path) -> StateError {
        let path = path.to_owned();
        match self {
            Fault::Sqlite(source) => StateError::Sqlite { path, source },
            Fault::TooNew(found) => StateError::TooNew {
                path,
                found,
                supported: SCHEMA_VERSION,
            },
            Fault::Damaged(problem) => StateError::Damaged { path, problem },
            Fault::Invalid(problem) => StateError::Invalid { path, problem },
        }
    }
}

/// A name that is not a known [`RunOutcome`] or [`Level`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}")]
pub struct UnknownName {
    what: &'static str,
    name: String,
}

/// How a job run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// The job did its work.
    Succeeded,
    /// The job failed; see the run's `error`.
    Failed,
    /// An administrator cancelled the run.
    Cancelled,
    /// The run had nothing to do or was not allowed to start.
    Skipped,
    /// The daemon stopped while the run was in progress.
    Interrupted,
}

impl RunOutcome {
    const ALL: [Self; 5] = [
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::Skipped,
        Self::Interrupted,
    ];

    /// The lowercase name, as stored in the database and used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
            Self::Interrupted => "interrupted",
        }
    }
}

impl FromStr for RunOutcome {
    type Err = UnknownName;
    fn from_str(name: &str) -> Result<Self, UnknownName> {
        Self::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == name)
            .ok_or_else(|| UnknownName {
                what: "run outcome",
                name: name.to_owned(),
            })
    }
}

impl ToSql for RunOutcome {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for RunOutcome {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|error| FromSqlError::Other(Box::new(error)))
    }
}

/// Severity of an event, ordered from least to most severe.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Normal operation.
    Info,
    /// Needs attention soon.
    Warning,
    /// Something failed.
    Error,
}

impl Level {
    const ALL: [Self; 3] = [Self::Info, Self::Warning, Self::Error];

    /// The lowercase name, as used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

impl FromStr for Level {
    type Err = UnknownName;
    fn from_str(name: &str) -> Result<Self, UnknownName> {
        Self::ALL
            .into_iter()
            .find(|level| level.as_str() == name)
            .ok_or_else(|| UnknownName {
                what: "event level",
                name: name.to_owned(),
            })
    }
}

/// Stored as its rank (0 = info) so `min_level` filters with a plain comparison.
impl ToSql for Level {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(*self as i64))
    }
}

impl FromSql for Level {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let rank = value.as_i64()?;
        usize::try_from(rank)
            .ok()
            .and_then(|index| Self::ALL.get(index).copied())
            .ok_or(FromSqlError::OutOfRange(rank))
    }
}

/// One run of a job, finished or still in progress.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JobRun {
    /// Identifier of the run.
    pub id: RunId,
    /// Name of the job.
    pub job: String,
    /// What the job does: "snapshot", "migration", "scrub", "backup".
    pub kind: String,
    /// Start time (unix seconds).
    pub started: i64,
    /// The schedule occurrence this run serves (unix seconds); `None` for a manual run.
    pub scheduled_for: Option<i64>,
    /// End time (unix seconds); `None` while running.
    pub finished: Option<i64>,
    /// How the run ended; `None` while running.
    pub outcome: Option<RunOutcome>,
    /// Bytes the run processed.
    pub bytes: u64,
    /// Error message of a failed run.
    pub error: Option<String>,
    /// Free-form detail (e.g. the snapshot name).
    pub detail: Option<String>,
    /// Files the run handled (backups).
    #[serde(default)]
    pub files: u64,
    /// The last lines of the tool's output (backups).
    #[serde(default)]
    pub log_tail: Option<String>,
    /// The snapshot the run read from (backups).
    #[serde(default)]
    pub snapshot: Option<String>,
}

/// How a run ended, for [`StateDb::run_finished`].
#[derive(Debug, Clone, Copy)]
pub struct RunEnd<'a> {
    /// End time (unix seconds).
    pub finished: i64,
    pub outcome: RunOutcome,
    /// Bytes the run processed.
    pub bytes: u64,
    /// Files the run handled.
    pub files: u64,
    /// Why it failed.
    pub error: Option<&'a str>,
    /// What it did.
    pub detail: Option<&'a str>,
    /// The last lines of the tool's output.
    pub log_tail: Option<&'a str>,
    /// The snapshot the run read from.
    pub snapshot: Option<&'a str>,
}

/// The scheduler's bookkeeping for one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobMarks {
    /// When the scheduler first saw the job (unix seconds).
    pub first_seen: i64,
    /// The latest schedule occurrence handled (unix seconds), if any.
    pub handled: Option<i64>,
}

/// An event to record.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// When it happened (unix seconds).
    pub time: i64,
    /// Severity.
    pub level: Level,
    /// Machine-readable kind, e.g. "pool.degraded".
    pub kind: &'a str,
    /// The pool concerned, if any.
    pub pool: Option<&'a str>,
    /// Human-readable message.
    pub message: &'a str,
}

/// A recorded event.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Identifier, increasing with every event.
    pub id: i64,
    /// When it happened (unix seconds).
    pub time: i64,
    /// Severity.
    pub level: Level,
    /// Machine-readable kind.
    pub kind: String,
    /// The pool concerned, if any.
    pub pool: Option<String>,
    /// Human-readable message.
    pub message: String,
}

/// Which events [`StateDb::events`] returns; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events with a greater id.
    pub after_id: Option<i64>,
    /// Only events at least this severe.
    pub min_level: Option<Level>,
    /// Only events of this kind.
    pub kind: Option<String>,
    /// Only events about this pool.
    pub pool: Option<String>,
    /// At most this many; 0 means no limit. Without `after_id` these are the newest matching
    /// events; with it, the first ones after that id (so a reader following the log by its
    /// last id never skips any).
    pub limit: usize,
}

/// An audit log entry to append.
#[derive(Debug, Clone, Copy)]
pub struct NewAudit<'a> {
    /// When the action happened (unix seconds).
    pub time: i64,
    /// Who did it.
    pub actor: &'a str,
    /// What was done.
    pub action: &'a str,
    /// What it was done to.
    pub target: &'a str,
    /// How it turned out.
    pub result: &'a str,
}

/// An audit log entry as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// Position in the log, starting at 1 with no gaps.
    pub id: i64,
    /// When the action happened (unix seconds).
    pub time: i64,
    /// Who did it.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// How it turned out.
    pub result: String,
    /// Lowercase hex BLAKE3 chain hash over the previous hash and this entry.
    pub hash: String,
}

/// Outcome of [`StateDb::audit_verify`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AuditVerdict {
    /// Number of entries in the log.
    pub entries: u64,
    /// Whether the whole chain checked out.
    pub intact: bool,
    /// The first entry that failed the check.
    pub first_bad_id: Option<i64>,
    /// What is wrong with that entry.
    pub problem: Option<String>,
}

/// I/O counters of one pool tier over `seconds` seconds starting at `time`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IoSample {
    /// Start of the interval (unix seconds).
    pub time: i64,
    /// Length of the interval: 1 for recorded samples, up to 60 for folded minute rows.
    pub seconds: u32,
    /// Pool name.
    pub pool: String,
    /// Tier name within the pool.
    pub tier: String,
    /// Bytes read in the interval.
    pub read_bytes: u64,
    /// Bytes written in the interval.
    pub write_bytes: u64,
    /// Read operations in the interval.
    pub read_ops: u64,
    /// Write operations in the interval.
    pub write_ops: u64,
}

/// The daemon's state database; `Send + Sync`, share it via `Arc`.
pub struct StateDb {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl StateDb {
    /// Opens (creating if missing: parent directory 0750, file mode 0640) and migrates the schema.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        create_database_file(path).map_err(|source| StateError::Open {
            path: path.to_owned(),
            source,
        })?;
        let conn = Connection::open(path).map_err(|error| Fault::from(error).at(path))?;
        Self::prepare(conn, path.to_owned())
    }

    /// Opens a private, empty in-memory database (for tests and dry runs).
    pub fn open_in_memory() -> Result<Self, StateError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|error| Fault::from(error).at(&path))?;
        Self::prepare(conn, path)
    }

    fn prepare(mut conn: Connection, path: PathBuf) -> Result<Self, StateError> {
        configure_and_migrate(&mut conn).map_err(|fault| fault.at(&path))?;
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// Runs `work` on the connection, attaching the file's path to any failure.
    fn with_conn<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, Fault>,
    ) -> Result<T, StateError> {
        let mut conn = self.conn.lock().unwrap_or_else(|poisoned| {
            // A panic mid-operation dropped its transaction, which rolled back: still usable.
            warn!(path = %self.path.display(), "state database lock was poisoned; continuing");
            PoisonError::into_inner(poisoned)
        });
        work(&mut conn).map_err(|fault| fault.at(&self.path))
    }

    /// Schema version after migrations (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, StateError> {
        self.with_conn(|conn| Ok(user_version(conn)?))
    }

    /// Records the start of a job run. `kind` is stored as is; `scheduled_for` is the
    /// schedule occurrence this run serves (unix seconds), `None` for a manual run.
    pub fn run_started(
        &self,
        job: &str,
        kind: &str,
        started: i64,
        scheduled_for: Option<i64>,
    ) -> Result<RunId, StateError> {
        self.with_conn(|conn| {
            conn.prepare_cached(
                "INSERT INTO job_runs (job, kind, started, scheduled_for) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![job, kind, started, scheduled_for])?;
            Ok(conn.last_insert_rowid())
        })
    }

    /// Records the end of a run; fails with [`StateError::Invalid`] unless the run is in progress.
    pub fn run_finished(&self, id: RunId, end: &RunEnd<'_>) -> Result<(), StateError> {
        self.with_conn(|conn| {
            let updated = conn
                .prepare_cached(
                    "UPDATE job_runs SET finished = ?2, outcome = ?3, bytes = ?4, error = ?5, \
                     detail = ?6, files = ?7, log_tail = ?8, snapshot = ?9 \
                     WHERE id = ?1 AND finished IS NULL",
                )?
                .execute(params![
                    id,
                    end.finished,
                    end.outcome,
                    sql_u64(end.bytes)?,
                    end.error,
                    end.detail,
                    sql_u64(end.files)?,
                    end.log_tail,
                    end.snapshot
                ])?;
            match updated {
                0 => Err(Fault::Invalid(format!(
                    "job run {id} is unknown or already finished"
                ))),
                _ => Ok(()),
            }
        })
    }

    /// Job runs, newest first; `job` None = all jobs.
    pub fn runs(&self, job: Option<&str>, limit: usize) -> Result<Vec<JobRun>, StateError> {
        self.with_conn(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, job, kind, started, scheduled_for, finished, outcome, bytes, error, \
                 detail, files, log_tail, snapshot FROM job_runs WHERE ?1 IS NULL OR job = ?1 \
                 ORDER BY id DESC LIMIT ?2",
            )?;
            let runs = statement.query_map(params![job, sql_limit(limit)], job_run_from_row)?;
            Ok(runs.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// The newest run of `job`, finished or not.
    pub fn last_run(&self, job: &str) -> Result<Option<JobRun>, StateError> {
        Ok(self.runs(Some(job), 1)?.into_iter().next())
    }

    /// At daemon start: runs with no end (the daemon died mid-run) become
    /// [`RunOutcome::Interrupted`] with `finished = now`. Returns how many.
    pub fn close_interrupted_runs(&self, now: i64) -> Result<usize, StateError> {
        let closed = self.with_conn(|conn| {
            Ok(conn.execute(
                "UPDATE job_runs SET finished = ?1, outcome = ?2 WHERE finished IS NULL",
                params![now, RunOutcome::Interrupted],
            )?)
        })?;
        if closed > 0 {
            warn!(
                closed,
                "marked job runs left open by a previous daemon as interrupted"
            );
        }
        Ok(closed)
    }

    /// The latest schedule occurrence (unix secs) the scheduler has handled for `job`,
    /// and when the job was first seen.
    pub fn job_marks(&self, job: &str) -> Result<Option<JobMarks>, StateError> {
        self.with_conn(|conn| Ok(read_job_marks(conn, job)?))
    }

    /// Records `occurrence` as the latest one handled for `job` (stored as given);
    /// a job not seen before gets `first_seen = now`.
    pub fn set_job_handled(&self, job: &str, occurrence: i64, now: i64) -> Result<(), StateError> {
        self.with_conn(|conn| {
            conn.prepare_cached(
                "INSERT INTO job_marks (job, first_seen, handled) VALUES (?1, ?3, ?2) \
                 ON CONFLICT (job) DO UPDATE SET handled = excluded.handled",
            )?
            .execute(params![job, occurrence, now])?;
            Ok(())
        })
    }

    /// Returns the marks of `job`, first recording it (`first_seen = now`, nothing handled)
    /// if it is new.
    pub fn note_job_seen(&self, job: &str, now: i64) -> Result<JobMarks, StateError> {
        self.with_conn(|conn| {
            conn.prepare_cached(
                "INSERT INTO job_marks (job, first_seen) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )?
            .execute(params![job, now])?;
            read_job_marks(conn, job)?
                .ok_or_else(|| Fault::Damaged(format!("marks of job {job:?} vanished on insert")))
        })
    }

    /// Records an event; every 1,000th one prunes all but the newest 100,000 events.
    pub fn record_event(&self, event: &NewEvent<'_>) -> Result<Event, StateError> {
        self.with_conn(|conn| {
            conn.prepare_cached(
                "INSERT INTO events (time, level, kind, pool, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                event.time,
                event.level,
                event.kind,
                event.pool,
                event.message
            ])?;
            let id = conn.last_insert_rowid();
            if id % EVENT_PRUNE_INTERVAL == 0 {
                let pruned = conn
                    .prepare_cached("DELETE FROM events WHERE id <= ?1")?
                    .execute([id - EVENTS_KEPT])?;
                debug!(pruned, "pruned old events");
            }
            Ok(Event {
                id,
                time: event.time,
                level: event.level,
                kind: event.kind.to_owned(),
                pool: event.pool.map(str::to_owned),
                message: event.message.to_owned(),
            })
        })
    }

    /// Matching events, oldest first: the newest `filter.limit`, or with `after_id` the first
    /// `filter.limit` after it.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StateError> {
        let limit = match filter.limit {
            0 => -1, // SQLite: a negative LIMIT means no limit
            limit => sql_limit(limit),
        };
        let newest_first = if filter.after_id.is_some() {
            ""
        } else {
            "DESC"
        };
        self.with_conn(|conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT * FROM (SELECT id, time, level, kind, pool, message FROM events \
                 WHERE (?1 IS NULL OR id > ?1) AND (?2 IS NULL OR level >= ?2) \
                 AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR pool = ?4) \
                 ORDER BY id {newest_first} LIMIT ?5) ORDER BY id"
            ))?;
            let params = params![
                filter.after_id,
                filter.min_level,
                filter.kind,
                filter.pool,
                limit
            ];
            let events = statement.query_map(params, |row| {
                Ok(Event {
                    id: row.get(0)?,
                    time: row.get(1)?,
                    level: row.get(2)?,
                    kind: row.get(3)?,
                    pool: row.get(4)?,
                    message: row.get(5)?,
                })
            })?;
            Ok(events.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Appends an entry whose hash = blake3(previous entry's hash, 32 zero bytes for the
    /// first || id, time and the length-prefixed actor, action, target and result).
    pub fn audit(&self, entry: &NewAudit<'_>) -> Result<AuditEntry, StateError> {
        self.with_conn(|conn| {
            // IMMEDIATE: no other connection may append between reading the tail and writing.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let tail: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let previous_hash = match tail {
                None => [0; 32],
                Some((id, hex)) => *blake3::Hash::from_hex(&hex)
                    .map_err(|_| Fault::Damaged(format!("audit entry {id} has a malformed hash")))?
                    .as_bytes(),
            };
            tx.execute(
                "INSERT INTO audit_log (time, actor, action, target, result, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, '')",
                params![
                    entry.time,
                    entry.actor,
                    entry.action,
                    entry.target,
                    entry.result
                ],
            )?;
            let id = tx.last_insert_rowid();
            let hash = audit_hash(&previous_hash, id, entry).to_hex().to_string();
            tx.execute(
                "UPDATE audit_log SET hash = ?2 WHERE id = ?1",
                params![id, hash],
            )?;
            tx.commit()?;
            Ok(AuditEntry {
                id,
                time: entry.time,
                actor: entry.actor.to_owned(),
                action: entry.action.to_owned(),
                target: entry.target.to_owned(),
                result: entry.result.to_owned(),
                hash,
            })
        })
    }

    /// The newest `limit` audit entries, oldest first.
    pub fn audit_entries(&self, limit: usize) -> Result<Vec<AuditEntry>, StateError> {
        self.with_conn(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT * FROM (SELECT id, time, actor, action, target, result, hash \
                 FROM audit_log ORDER BY id DESC LIMIT ?1) ORDER BY id",
            )?;
            let entries = statement.query_map([sql_limit(limit)], audit_entry_from_row)?;
            Ok(entries.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Walks the whole chain and reports the first entry that is missing its predecessor
    /// (ids must run 1, 2, 3, … so a deleted entry shows) or whose hash does not match
    /// (edited, reordered or inserted).
    pub fn audit_verify(&self) -> Result<AuditVerdict, StateError> {
        self.with_conn(|conn| {
            let mut statement = conn.prepare(
                "SELECT id, time, actor, action, target, result, hash FROM audit_log ORDER BY id",
            )?;
            let mut verdict = AuditVerdict {
                entries: 0,
                intact: true,
                first_bad_id: None,
                problem: None,
            };
            let (mut previous_id, mut previous_hash) = (0, [0; 32]);
            for entry in statement.query_map([], audit_entry_from_row)? {
                let entry = entry?;
                verdict.entries += 1;
                if !verdict.intact {
                    continue; // only count the rest
                }
                let fields = NewAudit {
                    time: entry.time,
                    actor: &entry.actor,
                    action: &entry.action,
                    target: &entry.target,
                    result: &entry.result,
                };
                let hash = audit_hash(&previous_hash, entry.id, &fields);
                let problem = if entry.id != previous_id + 1 {
                    Some(match entry.id - previous_id {
                        2 => format!("entry {} is missing", previous_id + 1),
                        _ => format!(
                            "entries {} to {} are missing",
                            previous_id + 1,
                            entry.id - 1
                        ),
                    })
                } else if hash.to_hex().as_str() != entry.hash {
                    Some("hash does not match: entry edited, reordered or inserted".to_owned())
                } else {
                    None
                };
                if let Some(problem) = problem {
                    warn!(id = entry.id, %problem, "audit log chain broken");
                    verdict = AuditVerdict {
                        intact: false,
                        first_bad_id: Some(entry.id),
                        problem: Some(problem),
                        ..verdict
                    };
                }
                (previous_id, previous_hash) = (entry.id, *hash.as_bytes());
            }
            Ok(verdict)
        })
    }

    /// Records `alert` as firing (replacing an earlier record of the same alert).
    pub fn alert_raised(&self, alert: &Alert) -> Result<(), StateError> {
        self.with_conn(|conn| {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO alerts_firing (alert, pool, message, time, host) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                alert.alert,
                alert.pool,
                alert.message,
                alert.time,
                alert.host
            ])?;
            Ok(())
        })
    }

    /// Forgets the firing alert `key`; whether it was recorded.
    pub fn alert_cleared(&self, key: &str) -> Result<bool, StateError> {
        self.with_conn(|conn| {
            let removed = conn
                .prepare_cached("DELETE FROM alerts_firing WHERE alert = ?1")?
                .execute([key])?;
            Ok(removed > 0)
        })
    }

    /// The alerts recorded as firing, by key, each as it was first announced.
    pub fn firing_alerts(&self) -> Result<Vec<Alert>, StateError> {
        self.with_conn(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT alert, pool, message, time, host FROM alerts_firing ORDER BY alert",
            )?;
            let alerts = statement.query_map([], |row| {
                Ok(Alert {
                    alert: row.get(0)?,
                    state: "firing".into(),
                    pool: row.get(1)?,
                    message: row.get(2)?,
                    time: row.get(3)?,
                    host: row.get(4)?,
                })
            })?;
            Ok(alerts.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Records 1-second samples (the deltas over that second, one per pool, tier and second).
    /// A sample for a second already recorded replaces it. Samples with `seconds != 1`
    /// are rejected and nothing is recorded.
    pub fn record_io(&self, samples: &[IoSample]) -> Result<(), StateError> {
        self.with_conn(|conn| {
            if let Some(bad) = samples.iter().find(|sample| sample.seconds != 1) {
                let (pool, tier, time, seconds) = (&bad.pool, &bad.tier, bad.time, bad.seconds);
                return Err(Fault::Invalid(format!(
                    "I/O sample {pool}/{tier} at {time} covers {seconds} s, not 1"
                )));
            }
            let tx = conn.transaction()?;
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO io_seconds (pool, time, tier, read_bytes, write_bytes, \
                     read_ops, write_ops) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (pool, time, tier) DO UPDATE SET \
                     read_bytes = excluded.read_bytes, write_bytes = excluded.write_bytes, \
                     read_ops = excluded.read_ops, write_ops = excluded.write_ops",
                )?;
                for s in samples {
                    let (read_bytes, write_bytes) =
                        (sql_u64(s.read_bytes)?, sql_u64(s.write_bytes)?);
                    let (read_ops, write_ops) = (sql_u64(s.read_ops)?, sql_u64(s.write_ops)?);
                    upsert.execute(params![
                        s.pool,
                        s.time,
                        s.tier,
                        read_bytes,
                        write_bytes,
                        read_ops,
                        write_ops
                    ])?;
                }
            }
            Ok(tx.commit()?)
        })
    }

    /// Samples of `pool` whose start lies in `since..=until` (unix secs), oldest first:
    /// 1-second rows for recent data, 1-minute rows (sums; `time` = start of the minute,
    /// `seconds` = how many seconds the row covers) for data already downsampled.
    pub fn io_history(
        &self,
        pool: &str,
        since: i64,
        until: i64,
    ) -> Result<Vec<IoSample>, StateError> {
        self.with_conn(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT time, 1, tier, read_bytes, write_bytes, read_ops, write_ops \
                 FROM io_seconds WHERE pool = ?1 AND time BETWEEN ?2 AND ?3 UNION ALL \
                 SELECT time, seconds, tier, read_bytes, write_bytes, read_ops, write_ops \
                 FROM io_minutes WHERE pool = ?1 AND time BETWEEN ?2 AND ?3 ORDER BY 1, 3",
            )?;
            let samples = statement.query_map(params![pool, since, until], |row| {
                Ok(IoSample {
                    time: row.get(0)?,
                    seconds: row.get(1)?,
                    pool: pool.to_owned(),
                    tier: row.get(2)?,
                    read_bytes: get_u64(row, 3)?,
                    write_bytes: get_u64(row, 4)?,
                    read_ops: get_u64(row, 5)?,
                    write_ops: get_u64(row, 6)?,
                })
            })?;
            Ok(samples.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Folds 1-second rows of whole minutes that ended over an hour before `now` into
    /// 1-minute rows (adding to a minute row that already exists), and deletes 1-minute
    /// rows older than 30 days. Idempotent; safe to call every minute. Returns rows folded.
    pub fn downsample_io(&self, now: i64) -> Result<usize, StateError> {
        let fold_before = (now - IO_SECOND_ROWS_KEPT_FOR).div_euclid(60) * 60;
        let (folded, expired) = self.with_conn(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO io_minutes (pool, time, tier, seconds, read_bytes, write_bytes, \
                 read_ops, write_ops) SELECT pool, time - (time % 60), tier, COUNT(*), \
                 SUM(read_bytes), SUM(write_bytes), SUM(read_ops), SUM(write_ops) \
                 FROM io_seconds WHERE time < ?1 GROUP BY pool, time - (time % 60), tier \
                 ON CONFLICT (pool, time, tier) DO UPDATE SET \
                 seconds = seconds + excluded.seconds, \
                 read_bytes = read_bytes + excluded.read_bytes, \
                 write_bytes = write_bytes + excluded.write_bytes, \
                 read_ops = read_ops + excluded.read_ops, \
                 write_ops = write_ops + excluded.write_ops",
                [fold_before],
            )?;
            let folded = tx.execute("DELETE FROM io_seconds WHERE time < ?1", [fold_before])?;
            let expired = tx.execute(
                "DELETE FROM io_minutes WHERE time < ?1",
                [now - IO_MINUTE_ROWS_KEPT_FOR],
            )?;
            tx.commit()?;
            Ok((folded, expired))
        })?;
        debug!(folded, expired, "downsampled I/O statistics");
        Ok(folded)
    }
}

/// Creates the database file (0640) and, if missing, its parent directory (0750).
fn create_database_file(path: &Path) -> io::Result<()> {
    if let Some(dir) = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty() && !dir.exists())
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
        fs::set_permissions(dir, Permissions::from_mode(0o750))?; // regardless of umask
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path)
    {
        Ok(_) => fs::set_permissions(path, Permissions::from_mode(0o640)),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Sets the connection up and applies pending migrations, one transaction each.
/// A database newer than this build is refused before anything is written to it.
fn configure_and_migrate(conn: &mut Connection) -> Result<(), Fault> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let found = user_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(Fault::TooNew(found));
    }
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    loop {
        // IMMEDIATE: a concurrent opener waits, then sees our version and skips the step.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = user_version(&tx)?;
        if version > SCHEMA_VERSION {
            return Err(Fault::TooNew(version));
        }
        let Some(migration) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            return Ok(());
        };
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        info!(version = version + 1, "migrated state database schema");
    }
}

fn read_job_marks(conn: &Connection, job: &str) -> rusqlite::Result<Option<JobMarks>> {
    conn.prepare_cached("SELECT first_seen, handled FROM job_marks WHERE job = ?1")?
        .query_row([job], |row| {
            Ok(JobMarks {
                first_seen: row.get(0)?,
                handled: row.get(1)?,
            })
        })
        .optional()
}

fn job_run_from_row(row: &Row<'_>) -> rusqlite::Result<JobRun> {
    Ok(JobRun {
        id: row.get(0)?,
        job: row.get(1)?,
        kind: row.get(2)?,
        started: row.get(3)?,
        scheduled_for: row.get(4)?,
        finished: row.get(5)?,
        outcome: row.get(6)?,
        bytes: get_u64(row, 7)?,
        error: row.get(8)?,
        detail: row.get(9)?,
        files: get_u64(row, 10)?,
        log_tail: row.get(11)?,
        snapshot: row.get(12)?,
    })
}

fn audit_entry_from_row(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.get(0)?,
        time: row.get(1)?,
        actor: row.get(2)?,
        action: row.get(3)?,
        target: row.get(4)?,
        result: row.get(5)?,
        hash: row.get(6)?,
    })
}

/// blake3(previous hash || id || time || actor || action || target || result), integers as
/// 8-byte little-endian and each string prefixed by its 8-byte little-endian length, so no
/// two different entries encode alike.
fn audit_hash(previous: &[u8; 32], id: i64, entry: &NewAudit<'_>) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(previous);
    hasher.update(&id.to_le_bytes());
    hasher.update(&entry.time.to_le_bytes());
    for field in [entry.actor, entry.action, entry.target, entry.result] {
        hasher.update(&(field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.finalize()
}

/// Converts a counter for storage; SQLite integers are signed 64-bit.
fn sql_u64(value: u64) -> Result<i64, Fault> {
    i64::try_from(value).map_err(|_| Fault::Invalid(format!("{value} is too large to store")))
}

/// Reads a counter stored by [`sql_u64`].
fn get_u64(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(index)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(index, value))
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn memory_db() -> StateDb {
        StateDb::open_in_memory().unwrap()
    }

    /// Runs raw SQL behind the module's back, as an intruder or a bug would.
    fn tamper(db: &StateDb, sql: &str) {
        db.conn.lock().unwrap().execute_batch(sql).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn state_db_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<StateDb>();
    }

    #[test]
    fn fresh_file_is_created_private_migrated_and_reopened_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib/aegis/aegis.db");
        let db = StateDb::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(mode(&path), 0o640);
        assert_eq!(mode(path.parent().unwrap()), 0o750);
        let id = db
            .run_started("nightly", "snapshot", 100, Some(90))
            .unwrap();
        drop(db);
        let db = StateDb::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(db.last_run("nightly").unwrap().unwrap().id, id);
    }

    #[test]
    fn empty_existing_file_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aegis.db");
        fs::File::create(&path).unwrap();
        assert_eq!(
            StateDb::open(&path).unwrap().schema_version().unwrap(),
            SCHEMA_VERSION
        );
    }

    #[test]
    fn newer_schema_is_refused_and_left_unmodified() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aegis.db");
        // Rollback-journal mode, so that even switching it to WAL would change the file.
        let newer = Connection::open(&path).unwrap();
        newer
            .execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
            .unwrap();
        drop(newer);
        let before = fs::read(&path).unwrap();
        let error = StateDb::open(&path).err().unwrap();
        assert!(
            matches!(
                error,
                StateError::TooNew {
                    found: 99,
                    supported: SCHEMA_VERSION,
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn file_that_is_not_a_database_is_reported_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aegis.db");
        fs::write(&path, vec![b'x'; 4096]).unwrap();
        let error = StateDb::open(&path).err().unwrap();
        assert!(matches!(error, StateError::Damaged { .. }), "{error}");
    }

    /// An end with nothing but its time and outcome.
    fn ended(finished: i64, outcome: RunOutcome) -> RunEnd<'static> {
        RunEnd {
            finished,
            outcome,
            bytes: 0,
            files: 0,
            error: None,
            detail: None,
            log_tail: None,
            snapshot: None,
        }
    }

    #[test]
    fn a_version_1_database_gains_the_newer_columns_and_keeps_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aegis.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "INSERT INTO job_runs (job, kind, started, finished, outcome, bytes) \
                 VALUES ('scrub:tank', 'scrub', 1, 2, 'succeeded', 7); PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let db = StateDb::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
        let run = db.last_run("scrub:tank").unwrap().unwrap();
        assert_eq!((run.bytes, run.files, run.log_tail), (7, 0, None));
    }

    fn firing(key: &str, pool: Option<&str>, time: i64) -> Alert {
        Alert {
            alert: key.into(),
            state: "firing".into(),
            pool: pool.map(str::to_owned),
            message: format!("{key} holds"),
            time,
            host: "box".into(),
        }
    }

    #[test]
    fn a_version_3_database_gains_the_alerts_table_and_keeps_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aegis.db");
        {
            let conn = Connection::open(&path).unwrap();
            for migration in &MIGRATIONS[..3] {
                conn.execute_batch(migration).unwrap();
            }
            conn.execute_batch(
                "INSERT INTO job_runs (job, kind, started, finished, outcome, bytes, snapshot) \
                 VALUES ('backup:docs', 'backup', 1, 2, 'succeeded', 7, 'backup-docs-1'); \
                 PRAGMA user_version = 3;",
            )
            .unwrap();
        }
        let db = StateDb::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), 4);
        let run = db.last_run("backup:docs").unwrap().unwrap();
        assert_eq!(run.snapshot.as_deref(), Some("backup-docs-1"));
        assert!(db.firing_alerts().unwrap().is_empty());
    }

    #[test]
    fn firing_alerts_survive_a_reopen_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aegis.db");
        {
            let db = StateDb::open(&path).unwrap();
            db.alert_raised(&firing("job-failed:scrub:tank", Some("tank"), 10))
                .unwrap();
            db.alert_raised(&firing("device-errors:tank", Some("tank"), 20))
                .unwrap();
            db.alert_raised(&firing("missed:x", None, 30)).unwrap();
            // Raised again: the newer record replaces the older one.
            db.alert_raised(&firing("missed:x", None, 40)).unwrap();
        }
        let db = StateDb::open(&path).unwrap();
        let stored = db.firing_alerts().unwrap();
        assert_eq!(
            stored,
            vec![
                firing("device-errors:tank", Some("tank"), 20),
                firing("job-failed:scrub:tank", Some("tank"), 10),
                firing("missed:x", None, 40),
            ]
        );
        assert!(db.alert_cleared("device-errors:tank").unwrap());
        assert!(!db.alert_cleared("device-errors:tank").unwrap());
        drop(db);
        let keys: Vec<String> = StateDb::open(&path)
            .unwrap()
            .firing_alerts()
            .unwrap()
            .into_iter()
            .map(|a| a.alert)
            .collect();
        assert_eq!(keys, ["job-failed:scrub:tank", "missed:x"]);
    }

    #[test]
    fn job_runs_lifecycle() {
        let db = memory_db();
        let first = db
            .run_started("nightly", "snapshot", 100, Some(90))
            .unwrap();
        let other = db.run_started("scrub-tank", "scrub", 110, None).unwrap();
        let second = db
            .run_started("nightly", "snapshot", 200, Some(190))
            .unwrap();
        db.run_finished(
            first,
            &RunEnd {
                finished: 150,
                outcome: RunOutcome::Succeeded,
                bytes: 4096,
                files: 12,
                error: None,
                detail: Some("tank@n1"),
                log_tail: Some("sent 4096 bytes"),
                snapshot: Some("backup-x-20261125-010000"),
            },
        )
        .unwrap();
        for id in [first, 999] {
            let again = db.run_finished(id, &ended(160, RunOutcome::Failed));
            assert!(matches!(again, Err(StateError::Invalid { .. })));
        }
        let ids = |job, limit| -> Vec<RunId> {
            db.runs(job, limit)
                .unwrap()
                .iter()
                .map(|run| run.id)
                .collect()
        };
        assert_eq!(ids(None, 10), [second, other, first]);
        assert_eq!(ids(None, 2), [second, other]);
        assert_eq!(ids(Some("nightly"), 10), [second, first]);
        let done = &db.runs(Some("nightly"), 10).unwrap()[1];
        assert_eq!(
            (done.finished, done.outcome),
            (Some(150), Some(RunOutcome::Succeeded))
        );
        assert_eq!(
            (done.bytes, done.detail.as_deref()),
            (4096, Some("tank@n1"))
        );
        assert_eq!(
            (done.files, done.log_tail.as_deref()),
            (12, Some("sent 4096 bytes"))
        );
        assert_eq!(done.snapshot.as_deref(), Some("backup-x-20261125-010000"));
        assert_eq!(
            (done.scheduled_for, done.error.as_deref()),
            (Some(90), None)
        );
        let running = db.last_run("nightly").unwrap().unwrap();
        assert_eq!(
            (running.id, running.finished, running.outcome),
            (second, None, None)
        );
        assert!(db.last_run("unknown").unwrap().is_none());

        assert_eq!(db.close_interrupted_runs(300).unwrap(), 2);
        assert_eq!(db.close_interrupted_runs(400).unwrap(), 0);
        let closed = db.last_run("nightly").unwrap().unwrap();
        assert_eq!(
            (closed.finished, closed.outcome),
            (Some(300), Some(RunOutcome::Interrupted))
        );
        assert_eq!(db.runs(None, 10).unwrap()[2].finished, Some(150));
    }

    #[test]
    fn names_round_trip_and_bad_stored_values_are_damage() {
        for outcome in RunOutcome::ALL {
            assert_eq!(outcome.as_str().parse(), Ok(outcome));
        }
        for level in Level::ALL {
            assert_eq!(level.as_str().parse(), Ok(level));
        }
        assert!("Succeeded".parse::<RunOutcome>().is_err());
        assert!("fatal".parse::<Level>().is_err());
        let db = memory_db();
        let id = db.run_started("nightly", "snapshot", 1, None).unwrap();
        db.run_finished(id, &ended(2, RunOutcome::Skipped)).unwrap();
        tamper(&db, "UPDATE job_runs SET outcome = 'exploded'");
        assert!(matches!(db.runs(None, 1), Err(StateError::Damaged { .. })));
    }

    #[test]
    fn job_marks_remember_first_sight_and_last_handled_occurrence() {
        let db = memory_db();
        assert_eq!(db.job_marks("nightly").unwrap(), None);
        let fresh = JobMarks {
            first_seen: 10,
            handled: None,
        };
        assert_eq!(db.note_job_seen("nightly", 10).unwrap(), fresh);
        assert_eq!(db.note_job_seen("nightly", 20).unwrap(), fresh);
        db.set_job_handled("nightly", 60, 70).unwrap();
        let handled = Some(JobMarks {
            first_seen: 10,
            handled: Some(60),
        });
        assert_eq!(db.job_marks("nightly").unwrap(), handled);
        db.set_job_handled("weekly", 120, 130).unwrap();
        let weekly = JobMarks {
            first_seen: 130,
            handled: Some(120),
        };
        assert_eq!(db.note_job_seen("weekly", 140).unwrap(), weekly);
    }

    fn event(level: Level, kind: &'static str, pool: Option<&'static str>) -> NewEvent<'static> {
        NewEvent {
            time: 1_000,
            level,
            kind,
            pool,
            message: "something happened",
        }
    }

    #[test]
    fn events_filter_and_tail_newest_oldest_first() {
        let db = memory_db();
        let recorded = [
            event(Level::Info, "pool.imported", Some("tank")),
            event(Level::Warning, "pool.degraded", Some("tank")),
            event(Level::Error, "disk.failed", Some("tank")),
            event(Level::Info, "pool.imported", Some("vault")),
            event(Level::Warning, "pool.degraded", Some("vault")),
            event(Level::Error, "daemon.crashed", None),
        ]
        .map(|new| db.record_event(&new).unwrap());
        let ids = |filter: EventFilter| -> Vec<i64> {
            db.events(&filter)
                .unwrap()
                .iter()
                .map(|event| event.id)
                .collect()
        };
        assert_eq!(ids(EventFilter::default()), [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            ids(EventFilter {
                after_id: Some(4),
                ..Default::default()
            }),
            [5, 6]
        );
        let min_level = Some(Level::Warning);
        assert_eq!(
            ids(EventFilter {
                min_level,
                ..Default::default()
            }),
            [2, 3, 5, 6]
        );
        let kind = Some("pool.degraded".to_owned());
        assert_eq!(
            ids(EventFilter {
                kind,
                ..Default::default()
            }),
            [2, 5]
        );
        let pool = Some("tank".to_owned());
        assert_eq!(
            ids(EventFilter {
                pool,
                ..Default::default()
            }),
            [1, 2, 3]
        );
        assert_eq!(
            ids(EventFilter {
                limit: 2,
                ..Default::default()
            }),
            [5, 6]
        );
        let pool = Some("tank".to_owned());
        let filter = EventFilter {
            after_id: Some(1),
            min_level,
            pool,
            kind: None,
            limit: 1,
        };
        assert_eq!(ids(filter), [2], "after an id: the first match after it");
        assert_eq!(
            ids(EventFilter {
                after_id: Some(2),
                limit: 3,
                ..Default::default()
            }),
            [3, 4, 5]
        );
        let stored = &db.events(&EventFilter::default()).unwrap()[2];
        assert_eq!(
            (stored.level, stored.kind.as_str()),
            (Level::Error, "disk.failed")
        );
        assert_eq!((stored.pool.as_deref(), stored.time), (Some("tank"), 1_000));
        assert_eq!(stored.message, recorded[2].message);
        assert_eq!(db.events(&EventFilter::default()).unwrap()[5].pool, None);
    }

    #[test]
    fn events_beyond_the_newest_100_000_are_pruned() {
        let db = memory_db();
        for _ in 0..5 {
            db.record_event(&event(Level::Info, "old", None)).unwrap();
        }
        tamper(
            &db,
            "UPDATE sqlite_sequence SET seq = 100998 WHERE name = 'events'",
        );
        for _ in 0..2 {
            db.record_event(&event(Level::Info, "new", None)).unwrap();
        }
        let kept: Vec<i64> = db
            .events(&EventFilter::default())
            .unwrap()
            .iter()
            .map(|event| event.id)
            .collect();
        assert_eq!(kept, [100_999, 101_000]);
    }

    fn audited_db(entries: i64) -> StateDb {
        let db = memory_db();
        for i in 1..=entries {
            let target = format!("pool{i}");
            let new = NewAudit {
                time: 1_000 + i,
                actor: "root",
                action: "create",
                target: &target,
                result: "ok",
            };
            db.audit(&new).unwrap();
        }
        db
    }

    fn first_bad_id(db: &StateDb) -> Option<i64> {
        let verdict = db.audit_verify().unwrap();
        assert_eq!(verdict.intact, verdict.first_bad_id.is_none());
        assert_eq!(verdict.intact, verdict.problem.is_none());
        verdict.first_bad_id
    }

    #[test]
    fn audit_chain_verifies_and_tails_oldest_first() {
        assert_eq!(memory_db().audit_verify().unwrap().entries, 0);
        let db = audited_db(5);
        let verdict = db.audit_verify().unwrap();
        assert_eq!(
            (verdict.entries, verdict.intact, verdict.first_bad_id),
            (5, true, None)
        );
        let tail = db.audit_entries(2).unwrap();
        assert_eq!(
            (tail[0].id, tail[0].target.as_str(), tail[1].id),
            (4, "pool4", 5)
        );
        let first = &db.audit_entries(10).unwrap()[0];
        let fields = NewAudit {
            time: 1_001,
            actor: "root",
            action: "create",
            target: "pool1",
            result: "ok",
        };
        assert_eq!(
            first.hash,
            audit_hash(&[0; 32], 1, &fields).to_hex().as_str()
        );
        let shifted = NewAudit {
            actor: "roo",
            action: "tcreate",
            ..fields
        };
        assert_ne!(
            audit_hash(&[0; 32], 1, &fields),
            audit_hash(&[0; 32], 1, &shifted)
        );
    }

    #[test]
    fn audit_verify_reports_the_first_tampered_entry() {
        let cases = [
            ("UPDATE audit_log SET actor = 'mallory' WHERE id = 3", 3),
            ("UPDATE audit_log SET time = time + 1 WHERE id = 5", 5),
            ("DELETE FROM audit_log WHERE id = 3", 4),
            ("DELETE FROM audit_log WHERE id IN (1, 2)", 3),
            // Reorder entries 2 and 3, hashes included.
            ("UPDATE audit_log SET id = -2 WHERE id = 2; UPDATE audit_log SET id = 2 WHERE id = 3;
              UPDATE audit_log SET id = 3 WHERE id = -2", 2),
            // Insert a forged entry 3, renumbering the rest.
            ("UPDATE audit_log SET id = -id WHERE id >= 3;
              UPDATE audit_log SET id = 1 - id WHERE id < 0;
              INSERT INTO audit_log SELECT 3, time, 'mallory', action, target, result, hash
              FROM audit_log WHERE id = 4", 3),
        ];
        for (sql, bad) in cases {
            let db = audited_db(5);
            tamper(&db, sql);
            assert_eq!(first_bad_id(&db), Some(bad), "{sql}");
        }
    }

    #[test]
    fn rehashed_edit_breaks_the_next_link_and_tail_deletion_shows_on_append() {
        let db = audited_db(5);
        let entries = db.audit_entries(5).unwrap();
        let previous = blake3::Hash::from_hex(&entries[1].hash).unwrap();
        let third = &entries[2];
        let forged = NewAudit {
            time: third.time,
            actor: "mallory",
            action: &third.action,
            target: &third.target,
            result: &third.result,
        };
        let hash = audit_hash(previous.as_bytes(), 3, &forged).to_hex();
        tamper(
            &db,
            &format!("UPDATE audit_log SET actor = 'mallory', hash = '{hash}' WHERE id = 3"),
        );
        assert_eq!(first_bad_id(&db), Some(4));

        let db = audited_db(5);
        tamper(&db, "DELETE FROM audit_log WHERE id = 5");
        assert_eq!(
            first_bad_id(&db),
            None,
            "a deleted tail is invisible until the next append"
        );
        let next = NewAudit {
            time: 2_000,
            actor: "root",
            action: "destroy",
            target: "tank",
            result: "ok",
        };
        assert_eq!(db.audit(&next).unwrap().id, 6);
        let verdict = db.audit_verify().unwrap();
        assert_eq!((verdict.entries, verdict.first_bad_id), (5, Some(6)));
        assert_eq!(verdict.problem.as_deref(), Some("entry 5 is missing"));
    }

    /// Start of a minute.
    const T0: i64 = 1_700_000_040;

    fn sample(time: i64, tier: &str, n: u64) -> IoSample {
        IoSample {
            time,
            seconds: 1,
            pool: "tank".to_owned(),
            tier: tier.to_owned(),
            read_bytes: n,
            write_bytes: 2 * n,
            read_ops: 1,
            write_ops: 3,
        }
    }

    fn totals(samples: &[IoSample]) -> [u64; 5] {
        samples.iter().fold([0; 5], |sum, s| {
            let row = [
                s.read_bytes,
                s.write_bytes,
                s.read_ops,
                s.write_ops,
                s.seconds.into(),
            ];
            [0, 1, 2, 3, 4].map(|i| sum[i] + row[i])
        })
    }

    #[test]
    fn io_history_downsamples_to_minutes_and_expires_after_30_days() {
        let db = memory_db();
        let samples: Vec<IoSample> = (0..120)
            .flat_map(|second| ["ssd", "hdd"].map(|tier| sample(T0 + second, tier, second as u64)))
            .collect();
        db.record_io(&samples).unwrap();
        db.record_io(&[IoSample {
            pool: "vault".to_owned(),
            ..sample(T0, "ssd", 7)
        }])
        .unwrap();
        let bad = IoSample {
            seconds: 60,
            ..sample(T0 + 500, "ssd", 1)
        };
        assert!(matches!(
            db.record_io(&[bad]),
            Err(StateError::Invalid { .. })
        ));

        let history = db.io_history("tank", T0, T0 + 500).unwrap();
        assert_eq!(history.len(), 240);
        assert_eq!(
            (&history[0], &history[1]),
            (&sample(T0, "hdd", 0), &sample(T0, "ssd", 0))
        );
        assert_eq!(db.io_history("tank", T0 + 10, T0 + 19).unwrap().len(), 20);
        let before = totals(&history);

        assert_eq!(db.downsample_io(T0 + 3_600 + 59).unwrap(), 0);
        assert_eq!(db.downsample_io(T0 + 3_600 + 60).unwrap(), 121);
        assert_eq!(db.io_history("tank", T0, T0 + 500).unwrap().len(), 2 + 120);
        assert_eq!(db.downsample_io(T0 + 3_600 + 150).unwrap(), 120);
        assert_eq!(db.downsample_io(T0 + 3_600 + 150).unwrap(), 0);
        let minutes = db.io_history("tank", T0, T0 + 500).unwrap();
        assert_eq!(totals(&minutes), before);
        let first_minute = IoSample {
            seconds: 60,
            read_bytes: (0..60).sum(),
            write_bytes: 2 * (0..60).sum::<u64>(),
            read_ops: 60,
            write_ops: 180,
            ..sample(T0, "hdd", 0)
        };
        assert_eq!(minutes.len(), 4);
        assert_eq!(minutes[0], first_minute);
        assert_eq!(
            (minutes[3].time, minutes[3].tier.as_str()),
            (T0 + 60, "ssd")
        );
        let vault = db.io_history("vault", 0, i64::MAX).unwrap();
        assert_eq!((vault.len(), vault[0].read_bytes), (1, 7));

        db.downsample_io(T0 + 30 * 86_400 + 60).unwrap();
        assert_eq!(db.io_history("tank", T0, T0 + 500).unwrap().len(), 2);
        db.downsample_io(T0 + 30 * 86_400 + 120).unwrap();
        assert!(db.io_history("tank", 0, i64::MAX).unwrap().is_empty());
    }
}
