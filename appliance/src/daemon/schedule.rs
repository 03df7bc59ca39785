//! When `aegisd` jobs (snapshot, tier migration, scrub, backup) are due.
//!
//! This module parses schedule texts (`daily 02:30`, `weekly sun`, or a 5-field cron
//! expression), finds the next occurrence after a time, decides which jobs are due when the
//! daemon wakes up (a run missed while the machine was off is caught up once, not once per
//! missed occurrence), and decides which automatic snapshots a [`Retention`] policy keeps.
//! It never runs jobs. Times are UTC in the API; schedules are read in a [`Zone`].

use chrono::{DateTime, Datelike, FixedOffset, Local, TimeZone, Timelike, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, Direction};
use std::fmt;
use std::str::FromStr;

/// The forms a schedule may take, for error messages.
const USAGE: &str = "hourly, daily [HH:MM], weekly [DAY] [HH:MM], monthly [DAY] [HH:MM], off, \
                     or a 5-field cron expression like \"30 2 * * *\"";

/// The cron form accepted, for error messages.
const FIVE_FIELDS: &str =
    "use the 5 fields minute hour day-of-month month day-of-week (no seconds or years)";

/// The five cron fields, with what each accepts.
const CRON_FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59 with * , - /"),
    ("hour", "0-23 with * , - /"),
    ("day-of-month", "1-31 with * , - / L W"),
    ("month", "1-12 or jan-dec with * , - /"),
    ("day-of-week", "0-7 or sun-sat with * , - / # L"),
];

/// [`Planner::due`] stops counting missed occurrences here, so that `* * * * *` after a
/// year off costs 10,000 steps, not 525,600. A [`Due::missed`] equal to this means "at least".
pub const MISSED_COUNT_CAP: usize = 10_000;

/// Why a schedule text was rejected. Every message quotes the text and says what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The text was empty or only whitespace.
    #[error("the schedule is empty; use {usage}", usage = USAGE)]
    Empty,
    /// The text is neither a schedule keyword nor a cron expression.
    #[error("\"{0}\": not a schedule; use {usage}", usage = USAGE)]
    Unrecognised(String),
    /// `off`, `never` or `disabled` where a schedule is required.
    #[error("\"{0}\": this job needs a schedule and cannot be turned off here")]
    OffNotAllowed(String),
    /// A recognised form with a bad part.
    #[error("\"{text}\": {problem}")]
    Invalid {
        /// The text as written (trimmed).
        text: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

fn invalid(text: &str, problem: impl Into<String>) -> ScheduleError {
    ScheduleError::Invalid {
        text: text.to_string(),
        problem: problem.into(),
    }
}

/// The time zone schedules are read in and retention periods are counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The machine's local time zone.
    Local,
    /// Coordinated Universal Time.
    Utc,
}

impl Zone {
    fn wall_clock(self, t: DateTime<Utc>) -> DateTime<FixedOffset> {
        match self {
            Zone::Local => t.with_timezone(&Local).fixed_offset(),
            Zone::Utc => t.fixed_offset(),
        }
    }
}

/// A parsed schedule. Display gives back the text the user wrote (trimmed); [`Schedule::cron`]
/// gives the cron form.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron_text: String,
    cron: Cron,
    zone: Zone,
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    /// Parses a schedule read in the local time zone.
    fn from_str(text: &str) -> Result<Schedule, ScheduleError> {
        Schedule::parse_in(text, Zone::Local)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Schedule {
    /// Parses a schedule read in `zone`. `off` is an error here; see [`parse_optional`].
    pub fn parse_in(text: &str, zone: Zone) -> Result<Schedule, ScheduleError> {
        parse_optional(text, zone)?
            .ok_or_else(|| ScheduleError::OffNotAllowed(text.trim().to_string()))
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.search(t, Direction::Forward)
    }

    /// The cron expression this schedule runs as ("30 2 * * *").
    pub fn cron(&self) -> &str {
        &self.cron_text
    }

    /// The last occurrence at or before `t`.
    fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.search(t, Direction::Backward)
    }

    /// Occurrences strictly between `after` and `before`, counting at most [`MISSED_COUNT_CAP`].
    fn count_between(&self, after: DateTime<Utc>, before: DateTime<Utc>) -> usize {
        let mut count = 0;
        let mut cursor = after;
        while count < MISSED_COUNT_CAP {
            match self.next_after(cursor) {
                Some(next) if next < before => {
                    count += 1;
                    cursor = next;
                }
                _ => break,
            }
        }
        count
    }

    fn search(&self, t: DateTime<Utc>, direction: Direction) -> Option<DateTime<Utc>> {
        match self.zone {
            Zone::Utc => self.search_in(t, direction),
            Zone::Local => self.search_in(t.with_timezone(&Local), direction),
        }
    }

    /// Forward: first occurrence after `t`. Backward: last occurrence at or before `t`.
    fn search_in<Tz: TimeZone>(
        &self,
        t: DateTime<Tz>,
        direction: Direction,
    ) -> Option<DateTime<Utc>> {
        let found = match direction {
            Direction::Forward => self.cron.find_next_occurrence(&t, false),
            Direction::Backward => self.cron.find_previous_occurrence(&t, true),
        };
        found.ok().map(|occurrence| occurrence.with_timezone(&Utc))
    }
}

/// Parses a schedule that may be turned off: `off`, `never` and `disabled` give `None`.
pub fn parse_optional(text: &str, zone: Zone) -> Result<Option<Schedule>, ScheduleError> {
    let text = text.trim();
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some((first, args)) = words.split_first() else {
        return Err(ScheduleError::Empty);
    };
    let cron_text = match first.to_ascii_lowercase().as_str() {
        "off" | "never" | "disabled" if args.is_empty() => return Ok(None),
        "hourly" | "@hourly" => match args {
            [] => "0 * * * *".to_string(),
            [minute] => {
                let minute = minute.strip_prefix(':').ok_or_else(|| {
                    invalid(text, "the minute must be written :MM, e.g. hourly :15")
                })?;
                format!("{} * * * *", parse_minute(text, minute)?)
            }
            _ => return Err(invalid(text, "too many words; expected hourly [:MM]")),
        },
        "daily" | "@daily" => {
            let (hour, minute) = match args {
                [] => (0, 0),
                [time] => parse_time(text, time)?,
                _ => return Err(invalid(text, "too many words; expected daily [HH:MM]")),
            };
            format!("{minute} {hour} * * *")
        }
        "weekly" | "@weekly" => {
            let (day, (hour, minute)) = day_and_time(text, args, "weekly [DAY] [HH:MM]")?;
            let weekday = day.map_or(Ok(0), |day| parse_weekday(text, day))?;
            format!("{minute} {hour} * * {weekday}")
        }
        "monthly" | "@monthly" => {
            let (day, (hour, minute)) = day_and_time(text, args, "monthly [DAY] [HH:MM]")?;
            let day = day.map_or(Ok(1), |day| parse_day_of_month(text, day, hour, minute))?;
            format!("{minute} {hour} {day} * *")
        }
        _ if first.starts_with(|c: char| c.is_ascii_digit() || c == '*') => match words.len() {
            5 => words.join(" "),
            fields => return Err(invalid(text, format!("{fields} fields; {FIVE_FIELDS}"))),
        },
        _ => return Err(ScheduleError::Unrecognised(text.to_string())),
    };
    Ok(Some(Schedule {
        text: text.to_string(),
        cron: compile(text, &cron_text)?,
        cron_text,
        zone,
    }))
}

/// Splits `[DAY] [HH:MM]` arguments into the day word and the time (00:00 when absent).
fn day_and_time<'a>(
    text: &str,
    args: &[&'a str],
    form: &str,
) -> Result<(Option<&'a str>, (u32, u32)), ScheduleError> {
    let (day, rest) = match args.split_first() {
        Some((day, rest)) if !day.contains(':') => (Some(*day), rest),
        _ => (None, args),
    };
    match rest {
        [] => Ok((day, (0, 0))),
        [time] => Ok((day, parse_time(text, time)?)),
        _ => Err(invalid(text, format!("too many words; expected {form}"))),
    }
}

fn is_number(digits: &str, max_len: usize) -> bool {
    (1..=max_len).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Parses `HH:MM` (24-hour clock, hour may be one digit) into (hour, minute).
fn parse_time(text: &str, time: &str) -> Result<(u32, u32), ScheduleError> {
    let (hour, minute) = time
        .split_once(':')
        .filter(|(hour, minute)| is_number(hour, 2) && minute.len() == 2)
        .ok_or_else(|| invalid(text, "the time must be HH:MM (24-hour clock), e.g. 02:30"))?;
    match hour.parse::<u32>() {
        Ok(hour @ 0..=23) => Ok((hour, parse_minute(text, minute)?)),
        _ => Err(invalid(text, "the hour must be 0-23")),
    }
}

fn parse_minute(text: &str, minute: &str) -> Result<u32, ScheduleError> {
    match minute.parse::<u32>() {
        Ok(number @ 0..=59) if is_number(minute, 2) => Ok(number),
        _ => Err(invalid(text, "the minute must be 0-59")),
    }
}

/// Cron day-of-week number (Sunday = 0) for `mon`..`sun` or `monday`..`sunday`.
fn parse_weekday(text: &str, day: &str) -> Result<usize, ScheduleError> {
    const NAMES: &str = "sunday monday tuesday wednesday thursday friday saturday";
    let day = day.to_ascii_lowercase();
    let number = NAMES
        .split(' ')
        .position(|name| day == name || day == name[..3]);
    number.ok_or_else(|| invalid(text, "the day must be mon..sun or monday..sunday"))
}

/// Day of the month 1-28; 29-31 are refused because some months lack them.
fn parse_day_of_month(text: &str, day: &str, hour: u32, minute: u32) -> Result<u32, ScheduleError> {
    match day.parse::<u32>() {
        Ok(number @ 1..=28) if is_number(day, 2) => Ok(number),
        Ok(number @ 29..=31) if is_number(day, 2) => Err(invalid(
            text,
            format!(
                "day {number} does not exist in every month, so monthly takes 1-28; for the last \
                 day of each month use the cron expression \"{minute} {hour} L * *\""
            ),
        )),
        _ => Err(invalid(text, "the day of the month must be a number 1-28")),
    }
}

/// Compiles a 5-field cron expression, naming the offending field when croner refuses it and
/// refusing expressions that never match (like 30 February).
fn compile(text: &str, cron_text: &str) -> Result<Cron, ScheduleError> {
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    let cron = parser.parse(cron_text).map_err(|error| {
        let fields: Vec<&str> = cron_text.split_whitespace().collect();
        for (index, ((name, accepts), value)) in CRON_FIELDS.iter().zip(&fields).enumerate() {
            let mut alone = ["*"; 5];
            alone[index] = value;
            if parser.parse(&alone.join(" ")).is_err() {
                return invalid(
                    text,
                    format!("the {name} field \"{value}\" is not valid; it takes {accepts}"),
                );
            }
        }
        invalid(text, format!("not a valid cron expression ({error})"))
    })?;
    if cron
        .find_next_occurrence(&DateTime::<Utc>::UNIX_EPOCH, false)
        .is_err()
    {
        return Err(invalid(
            text,
            "no date ever matches this cron expression (like 30 February)",
        ));
    }
    Ok(cron)
}

/// One job as the planner tracks it.
#[derive(Debug, Clone)]
pub struct JobState {
    /// The job's name, as used in [`Due::job`] and [`Planner::next_run`].
    pub name: String,
    /// When the job runs.
    pub schedule: Schedule,
    /// The last occurrence handled (run or deliberately skipped); `None` if none yet.
    pub handled: Option<DateTime<Utc>>,
    /// When the daemon first saw this job; occurrences before it are never due.
    pub first_seen: DateTime<Utc>,
}

/// A job to run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The job's name.
    pub job: String,
    /// The occurrence this run serves (the latest one at or before now).
    pub occurrence: DateTime<Utc>,
    /// Occurrences skipped over since the last handled one (machine off or busy); 0 normally,
    /// at most [`MISSED_COUNT_CAP`].
    pub missed: usize,
}

/// Due-time tracking for a set of jobs. Pure: callers pass `now`.
#[derive(Debug, Clone)]
pub struct Planner {
    jobs: Vec<JobState>,
}

impl Planner {
    /// A planner over `jobs`, in the state they were saved in.
    pub fn new(jobs: Vec<JobState>) -> Planner {
        Planner { jobs }
    }

    /// Every job with an occurrence in (handled-or-first_seen, now]: returned once with the
    /// latest such occurrence and the number skipped over, and recorded as handled at that
    /// occurrence so the next call does not return it again. A brand-new job waits for its
    /// first occurrence; it does not run immediately.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<Due> {
        self.jobs
            .iter_mut()
            .filter_map(|job| {
                let since = job.handled.unwrap_or(job.first_seen);
                let occurrence = job
                    .schedule
                    .latest_at_or_before(now)
                    .filter(|occurrence| *occurrence > since)?;
                job.handled = Some(occurrence);
                Some(Due {
                    job: job.name.clone(),
                    occurrence,
                    missed: job.schedule.count_between(since, occurrence),
                })
            })
            .collect()
    }

    /// The earliest occurrence not yet handled across jobs (for sleeping until then). It is in
    /// the past when a job is overdue, meaning "call [`Planner::due`] now".
    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        self.jobs
            .iter()
            .filter_map(|job| {
                job.schedule
                    .next_after(job.handled.unwrap_or(job.first_seen))
            })
            .min()
    }

    /// For listing: the named job's next occurrence after `now`; `None` for an unknown job.
    pub fn next_run(&self, job: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let state = self.jobs.iter().find(|state| state.name == job)?;
        state.schedule.next_after(now)
    }
}

/// Keep-counts like TrueNAS / sanoid: 0 = keep none for that period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// How many of the most recent hours with a snapshot keep their newest snapshot.
    pub hourly: u32,
    /// Likewise for days.
    pub daily: u32,
    /// Likewise for ISO weeks (Monday start).
    pub weekly: u32,
    /// Likewise for months.
    pub monthly: u32,
}

/// A retention period, on the wall clock of a [`Zone`].
#[derive(Clone, Copy)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
}

impl Period {
    /// Identifies the period containing `t`. An hour includes its UTC offset, so the hour
    /// repeated when clocks go back counts as the two real hours it is.
    fn key(self, t: DateTime<FixedOffset>) -> (i32, u32, u32, i32) {
        let offset = t.offset().local_minus_utc();
        match self {
            Period::Hour => (t.year(), t.ordinal(), t.hour(), offset),
            Period::Day => (t.year(), t.ordinal(), 0, 0),
            Period::Week => (t.iso_week().year(), t.iso_week().week(), 0, 0),
            Period::Month => (t.year(), t.month(), 0, 0),
        }
    }
}

/// Given automatic snapshots (name, creation time), returns the names to delete. A snapshot is
/// kept when it is the newest snapshot of one of the `hourly` most recent distinct hours that
/// contain a snapshot, or likewise for days, ISO weeks (Monday start) and months (in `zone`).
/// The newest snapshot overall is always kept. Order of input does not matter; output sorted
/// oldest first (ties by name).
pub fn expired(snapshots: &[(String, DateTime<Utc>)], keep: Retention, zone: Zone) -> Vec<String> {
    let mut newest_first: Vec<&(String, DateTime<Utc>)> = snapshots.iter().collect();
    newest_first.sort_by(|a, b| (b.1, &b.0).cmp(&(a.1, &a.0)));
    let mut kept = vec![false; newest_first.len()];
    if let Some(newest) = kept.first_mut() {
        *newest = true;
    }
    let policy = [
        (Period::Hour, keep.hourly),
        (Period::Day, keep.daily),
        (Period::Week, keep.weekly),
        (Period::Month, keep.monthly),
    ];
    for (period, count) in policy {
        // Newest first, so each period's snapshots are contiguous and its first is its newest.
        let mut current = None;
        let mut periods_seen = 0;
        for (index, (_, created)) in newest_first.iter().enumerate() {
            let key = Some(period.key(zone.wall_clock(*created)));
            if key != current {
                current = key;
                periods_seen += 1;
                if periods_seen > count {
                    break;
                }
                kept[index] = true;
            }
        }
    }
    newest_first
        .iter()
        .zip(&kept)
        .rev()
        .filter(|(_, kept)| !**kept)
        .map(|((name, _), _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDateTime};

    fn at(text: &str) -> DateTime<Utc> {
        let parsed = NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M");
        parsed.expect("test time is valid").and_utc()
    }

    fn utc(text: &str) -> Schedule {
        Schedule::parse_in(text, Zone::Utc).expect("test schedule parses")
    }

    /// Rows of `text | its cron form ("=" when the same) | start | next occurrences after start`.
    const SHORTHANDS: &str = "
    hourly              | 0 * * * *   | 2024-02-29 23:30 | 24-03-01 Fri 00:00, 24-03-01 Fri 01:00
    @hourly             | 0 * * * *   | 2023-12-31 23:00 | 24-01-01 Mon 00:00, 24-01-01 Mon 01:00
    HOURLY   :15        | 15 * * * *  | 2024-12-31 23:15 | 25-01-01 Wed 00:15, 25-01-01 Wed 01:15
    daily               | 0 0 * * *   | 2023-02-28 12:00 | 23-03-01 Wed 00:00, 23-03-02 Thu 00:00
    @daily 2:30         | 30 2 * * *  | 2024-03-01 02:30 | 24-03-02 Sat 02:30, 24-03-03 Sun 02:30
    Daily 23:59         | 59 23 * * * | 2024-02-28 23:59 | 24-02-29 Thu 23:59, 24-03-01 Fri 23:59
    weekly              | 0 0 * * 0   | 2024-02-25 00:00 | 24-03-03 Sun 00:00, 24-03-10 Sun 00:00
    @weekly             | 0 0 * * 0   | 2024-12-28 00:00 | 24-12-29 Sun 00:00, 25-01-05 Sun 00:00
    weekly MON          | 0 0 * * 1   | 2024-02-26 00:00 | 24-03-04 Mon 00:00, 24-03-11 Mon 00:00
    weekly friday 18:45 | 45 18 * * 5 | 2024-02-29 09:00 | 24-03-01 Fri 18:45, 24-03-08 Fri 18:45
    weekly 06:00        | 0 6 * * 0   | 2024-03-03 06:01 | 24-03-10 Sun 06:00, 24-03-17 Sun 06:00
    monthly             | 0 0 1 * *   | 2024-01-31 00:00 | 24-02-01 Thu 00:00, 24-03-01 Fri 00:00
    @monthly            | 0 0 1 * *   | 2024-12-15 08:00 | 25-01-01 Wed 00:00, 25-02-01 Sat 00:00
    monthly 15          | 0 0 15 * *  | 2024-02-15 00:00 | 24-03-15 Fri 00:00, 24-04-15 Mon 00:00
    monthly 28 03:10    | 10 3 28 * * | 2024-02-28 03:10 | 24-03-28 Thu 03:10, 24-04-28 Sun 03:10
    30 2 * * mon-fri    | =           | 2024-03-01 03:00 | 24-03-04 Mon 02:30, 24-03-05 Tue 02:30
    0  12 29 2 *        | 0 12 29 2 * | 2021-01-01 00:00 | 24-02-29 Thu 12:00, 28-02-29 Tue 12:00
    0 0 L * *           | =           | 2024-01-31 00:00 | 24-02-29 Thu 00:00, 24-03-31 Sun 00:00
    */20 9-10 * 1,feb * | =           | 2024-02-29 10:40 | 25-01-01 Wed 09:00, 25-01-01 Wed 09:20";

    #[test]
    fn shorthands_and_cron_expressions_give_their_cron_form_and_occurrences() {
        for row in SHORTHANDS.trim().lines() {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let [text, cron, start, expected] = cells[..] else {
                panic!("bad row {row}");
            };
            let schedule = utc(&format!("  {text} "));
            let cron = if cron == "=" { text } else { cron };
            assert_eq!(
                (schedule.cron(), schedule.to_string().as_str()),
                (cron, text)
            );
            let mut cursor = at(start);
            for expected in expected.split(", ") {
                cursor = schedule.next_after(cursor).expect("has a next occurrence");
                let actual = cursor.format("%y-%m-%d %a %H:%M").to_string();
                assert_eq!(actual, expected, "{text}");
            }
        }
        let local: Schedule = "daily 02:30".parse().expect("parses");
        assert_eq!(local.zone, Zone::Local);
    }

    #[test]
    fn next_after_is_strict_and_local_zone_works() {
        let schedule = utc("daily 02:30");
        let next = |t| schedule.next_after(t);
        assert_eq!(next(at("2024-03-01 02:30")), Some(at("2024-03-02 02:30")));
        let just_before = at("2024-03-01 02:29") + Duration::milliseconds(59_999);
        assert_eq!(next(just_before), Some(at("2024-03-01 02:30")));
        let local = Schedule::parse_in("hourly", Zone::Local).expect("parses");
        let now = at("2024-06-01 12:34");
        let next = local.next_after(now).expect("an hour comes");
        assert!(next > now && next - now <= Duration::hours(1), "{next}");
    }

    /// Each expected message starts with the quoted text that produces it.
    const MESSAGES: &str = r#"
    "daily 25:00": the hour must be 0-23
    "daily 02:60": the minute must be 0-59
    "daily 2pm": the time must be HH:MM (24-hour clock), e.g. 02:30
    "daily 2:3": the time must be HH:MM (24-hour clock), e.g. 02:30
    "daily 02:30 03:00": too many words; expected daily [HH:MM]
    "hourly 15": the minute must be written :MM, e.g. hourly :15
    "hourly :75": the minute must be 0-59
    "hourly :+5": the minute must be 0-59
    "hourly :15 :30": too many words; expected hourly [:MM]
    "weekly funday": the day must be mon..sun or monday..sunday
    "weekly mon 02:00 x": too many words; expected weekly [DAY] [HH:MM]
    "monthly 0": the day of the month must be a number 1-28
    "monthly 31 02:30": day 31 does not exist in every month, so monthly takes 1-28; for the last day of each month use the cron expression "30 2 L * *"
    "off": this job needs a schedule and cannot be turned off here
    "61 * * * *": the minute field "61" is not valid; it takes 0-59 with * , - /
    "0 0 * * 8": the day-of-week field "8" is not valid; it takes 0-7 or sun-sat with * , - / # L
    "0 0 * foo *": the month field "foo" is not valid; it takes 1-12 or jan-dec with * , - /
    "0 0 30 2 *": no date ever matches this cron expression (like 30 February)
    "* * *": 3 fields; use the 5 fields minute hour day-of-month month day-of-week (no seconds or years)
    "0 30 2 * * *": 6 fields; use the 5 fields minute hour day-of-month month day-of-week (no seconds or years)
    "0 30 2 * * * 2030": 7 fields; use the 5 fields minute hour day-of-month month day-of-week (no seconds or years)"#;

    #[test]
    fn invalid_texts_say_precisely_what_is_wrong() {
        for message in MESSAGES.trim().lines().map(str::trim) {
            let text = message.split('"').nth(1).expect("message quotes its text");
            let error = Schedule::parse_in(text, Zone::Utc).expect_err(text);
            assert_eq!(error.to_string(), message);
        }
        let usage = "use hourly, daily [HH:MM], weekly [DAY] [HH:MM], monthly [DAY] [HH:MM], \
                     off, or a 5-field cron expression like \"30 2 * * *\"";
        let error = |text| {
            Schedule::parse_in(text, Zone::Utc)
                .expect_err(text)
                .to_string()
        };
        assert_eq!(
            error("fortnightly"),
            format!("\"fortnightly\": not a schedule; {usage}")
        );
        assert_eq!(
            error("@yearly"),
            format!("\"@yearly\": not a schedule; {usage}")
        );
        assert_eq!(error(" \t "), format!("the schedule is empty; {usage}"));
    }

    #[test]
    fn off_is_accepted_only_where_a_schedule_is_optional() {
        for text in ["off", " NEVER ", "Disabled"] {
            assert!(
                parse_optional(text, Zone::Utc).expect(text).is_none(),
                "{text}"
            );
        }
        let weekly = parse_optional("weekly", Zone::Utc).expect("parses");
        assert_eq!(
            weekly.map(|s| s.cron().to_string()),
            Some("0 0 * * 0".into())
        );
        let error = parse_optional("off today", Zone::Utc).expect_err("not a schedule");
        assert_eq!(error, ScheduleError::Unrecognised("off today".into()));
    }

    fn job(name: &str, text: &str, handled: Option<&str>, first_seen: &str) -> JobState {
        let (name, schedule) = (name.to_string(), utc(text));
        let (handled, first_seen) = (handled.map(at), at(first_seen));
        JobState {
            name,
            schedule,
            handled,
            first_seen,
        }
    }

    /// Polls `planner` at each line's time and checks what is due ("job occurrence missed N").
    fn poll(planner: &mut Planner, script: &str) {
        for line in script.trim().lines() {
            let (now, expected) = line.split_once("=>").expect("line has =>");
            let due = planner.due(at(now)).into_iter().map(|due| {
                let occurrence = due.occurrence.format("%Y-%m-%d %H:%M");
                format!("{} {occurrence} missed {}", due.job, due.missed)
            });
            assert_eq!(
                due.collect::<Vec<_>>().join(", "),
                expected.trim(),
                "at {now}"
            );
        }
    }

    #[test]
    fn new_job_waits_for_its_first_occurrence_and_runs_exactly_on_time() {
        let mut planner = Planner::new(vec![job("scrub", "30 2 * * *", None, "2024-03-01 10:00")]);
        assert_eq!(planner.next_wakeup(), Some(at("2024-03-02 02:30")));
        poll(
            &mut planner,
            "2024-03-01 10:00 =>
             2024-03-02 02:29 =>
             2024-03-02 02:30 => scrub 2024-03-02 02:30 missed 0
             2024-03-02 02:30 =>
             2024-03-03 02:29 =>
             2024-03-03 02:31 => scrub 2024-03-03 02:30 missed 0",
        );
    }

    #[test]
    fn machine_off_for_three_days_catches_up_once() {
        let snap = job(
            "snap",
            "daily",
            Some("2024-03-01 00:00"),
            "2024-01-01 00:00",
        );
        let mut planner = Planner::new(vec![snap]);
        poll(
            &mut planner,
            "2024-03-04 09:00 => snap 2024-03-04 00:00 missed 2
             2024-03-04 09:01 =>
             2024-03-04 23:59 =>",
        );
        assert_eq!(planner.next_wakeup(), Some(at("2024-03-05 00:00")));
        poll(
            &mut planner,
            "2024-03-05 00:00 => snap 2024-03-05 00:00 missed 0",
        );
    }

    #[test]
    fn next_wakeup_is_the_earliest_unhandled_occurrence_and_next_run_lists_jobs() {
        assert_eq!(Planner::new(Vec::new()).next_wakeup(), None);
        let backup = job("backup", "weekly sun 03:00", None, "2024-03-01 10:00");
        let tier = job(
            "tier",
            "hourly :20",
            Some("2024-03-01 09:20"),
            "2024-02-01 00:00",
        );
        let mut planner = Planner::new(vec![backup, tier]);
        // 10:20 is not handled yet, so the wake-up is already due.
        assert_eq!(planner.next_wakeup(), Some(at("2024-03-01 10:20")));
        poll(
            &mut planner,
            "2024-03-01 10:25 => tier 2024-03-01 10:20 missed 0",
        );
        assert_eq!(planner.next_wakeup(), Some(at("2024-03-01 11:20")));
        let next_run = |job| planner.next_run(job, at("2024-03-01 11:20"));
        assert_eq!(next_run("backup"), Some(at("2024-03-03 03:00")));
        assert_eq!(next_run("tier"), Some(at("2024-03-01 12:20")));
        assert_eq!(next_run("unknown"), None);
    }

    #[test]
    fn every_minute_after_a_year_off_is_counted_up_to_the_cap_quickly() {
        let minutely = job(
            "m",
            "* * * * *",
            Some("2023-01-01 00:00"),
            "2023-01-01 00:00",
        );
        let mut planner = Planner::new(vec![minutely]);
        let started = std::time::Instant::now();
        let due = planner.due(at("2024-01-01 00:00") + Duration::seconds(30));
        let elapsed = started.elapsed();
        assert!(elapsed.as_secs() < 5, "took {elapsed:?}");
        let occurrence = at("2024-01-01 00:00");
        let expected = Due {
            job: "m".into(),
            occurrence,
            missed: MISSED_COUNT_CAP,
        };
        assert_eq!(due, [expected]);
        poll(&mut planner, "2024-01-01 00:00 =>");
    }

    /// Snapshots named `MMDD-HH` from `first`, `step` apart.
    fn snapshots(first: &str, step: Duration, count: i32) -> Vec<(String, DateTime<Utc>)> {
        let created = (0..count).map(|index| at(first) + step * index);
        created
            .map(|t| (t.format("%m%d-%H").to_string(), t))
            .collect()
    }

    fn names(snapshots: &[(String, DateTime<Utc>)]) -> Vec<String> {
        snapshots.iter().map(|(name, _)| name.clone()).collect()
    }

    fn kept(snapshots: &[(String, DateTime<Utc>)], keep: Retention) -> Vec<String> {
        let gone = expired(snapshots, keep, Zone::Utc);
        let kept = names(snapshots)
            .into_iter()
            .filter(|name| !gone.contains(name));
        kept.collect()
    }

    #[test]
    fn hourly_snapshots_for_ten_days_keep_last_24_hours_and_7_days() {
        let all = snapshots("2024-03-01 00:00", Duration::hours(1), 240);
        let newest = at("2024-03-10 23:00");
        let old_hour = |t: &DateTime<Utc>| newest - *t >= Duration::hours(24);
        let last_of_recent_day = |t: &DateTime<Utc>| t.hour() == 23 && t.day() >= 4;
        let expected: Vec<_> = (all.iter())
            .filter(|(_, t)| old_hour(t) && !last_of_recent_day(t))
            .cloned()
            .collect();
        assert_eq!(expected.len(), 240 - 24 - 6);
        let keep = Retention {
            hourly: 24,
            daily: 7,
            ..Retention::default()
        };
        assert_eq!(expired(&all, keep, Zone::Utc), names(&expected));
        let mut shuffled: Vec<_> = all.iter().rev().step_by(2).cloned().collect();
        shuffled.extend(all.iter().step_by(2).cloned());
        shuffled.rotate_left(37);
        assert_eq!(expired(&shuffled, keep, Zone::Utc), names(&expected));
    }

    #[test]
    fn keeping_nothing_keeps_only_the_newest() {
        let mut all = snapshots("2024-03-01 00:00", Duration::minutes(90), 50);
        let older = names(&all[..49]);
        all.swap(0, 49);
        all.swap(10, 30);
        assert_eq!(expired(&all, Retention::default(), Zone::Utc), older);
        assert_eq!(kept(&all, Retention::default()), ["0304-01"]);
        assert!(expired(&[], Retention::default(), Zone::Utc).is_empty());
    }

    #[test]
    fn weeks_start_on_monday_and_months_are_calendar_months() {
        // Daily at noon from Monday 2024-01-01 to Friday 2024-03-01.
        let all = snapshots("2024-01-01 12:00", Duration::days(1), 61);
        let weekly = Retention {
            weekly: 3,
            ..Retention::default()
        };
        assert_eq!(kept(&all, weekly), ["0218-12", "0225-12", "0301-12"]);
        let monthly = Retention {
            monthly: 3,
            ..Retention::default()
        };
        assert_eq!(kept(&all, monthly), ["0131-12", "0229-12", "0301-12"]);
        // 2020-12-31 (Thursday) and 2021-01-03 (Sunday) are both in ISO week 2020-W53.
        let new_year = snapshots("2020-12-31 12:00", Duration::days(1), 5);
        assert_eq!(kept(&new_year, weekly), ["0103-12", "0104-12"]);
    }
}
