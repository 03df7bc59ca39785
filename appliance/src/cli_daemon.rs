//! `aegis jobs`, `aegis events` and `aegis audit`: the commands that talk to aegisd itself
//! rather than to one pool.

use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;

use appliance::api::{self, AuditEntry, AuditVerdict, Event, JobInfo, JobRun, RunStarted};
use appliance::client::Endpoint;

#[derive(Subcommand)]
pub enum JobsCmd {
    /// Every job: its schedule, next run and last result.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Past runs, newest first: start, end, result, bytes, error.
    History {
        /// Only this job's runs.
        job: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Run a job now (it is recorded like a scheduled run).
    Run {
        job: String,
        /// Wait for the run to end and print its result.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Check that no entry of the admin audit log was changed, removed or reordered.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// The latest admin actions: who, when, what, result.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

/// What `aegis events` shows.
#[derive(clap::Args)]
pub struct EventsArgs {
    /// Keep printing events as they happen.
    #[arg(long, short)]
    follow: bool,
    /// Only events at least this serious: info, warning, error.
    #[arg(long)]
    level: Option<String>,
    /// Only events of this kind (daemon, pool, admin, snapshot, migration, scrub, schedule).
    #[arg(long)]
    kind: Option<String>,
    /// Only events of this pool.
    #[arg(long)]
    pool: Option<String>,
    /// How many of the latest events to show first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[arg(long)]
    json: bool,
}

/// Local time of a Unix timestamp, like `2026-11-25 14:00:00`.
fn local_time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map_or_else(
        || secs.to_string(),
        |t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        },
    )
}

fn outcome(run: &JobRun) -> String {
    match (run.outcome, &run.error) {
        (None, _) => "running".into(),
        (Some(outcome), Some(error)) => format!("{}: {error}", outcome.as_str()),
        (Some(outcome), None) => outcome.as_str().into(),
    }
}

pub fn jobs(action: JobsCmd) -> anyhow::Result<()> {
    let daemon = Endpoint::daemon();
    match action {
        JobsCmd::List { json } => {
            let jobs: Vec<JobInfo> = daemon.get("/v1/jobs")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
                return Ok(());
            }
            println!(
                "{:<28} {:<10} {:<20} {:<20} LAST RUN",
                "JOB", "KIND", "SCHEDULE", "NEXT RUN"
            );
            for job in jobs {
                let last = match &job.last_run {
                    _ if job.running => "running now".to_owned(),
                    Some(run) => format!("{} {}", local_time(run.started), outcome(run)),
                    None => "never".into(),
                };
                println!(
                    "{:<28} {:<10} {:<20} {:<20} {last}",
                    job.name,
                    job.kind,
                    job.schedule.as_deref().unwrap_or("off (on request)"),
                    job.next_run.map_or_else(|| "-".into(), local_time),
                );
            }
        }
        JobsCmd::History { job, limit, json } => {
            let mut path = format!("/v1/jobs/history?limit={limit}");
            if let Some(job) = &job {
                path.push_str(&format!("&job={}", encode(job)));
            }
            let runs: Vec<JobRun> = daemon.get(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
                return Ok(());
            }
            println!(
                "{:<6} {:<28} {:<20} {:>8} {:>12}  RESULT",
                "RUN", "JOB", "STARTED", "TOOK", "BYTES"
            );
            for run in runs {
                let took = run
                    .finished
                    .map_or_else(|| "-".into(), |end| format!("{} s", end - run.started));
                let detail = run
                    .detail
                    .as_deref()
                    .map_or(String::new(), |d| format!(" ({d})"));
                println!(
                    "{:<6} {:<28} {:<20} {:>8} {:>12}  {}{detail}",
                    run.id,
                    run.job,
                    local_time(run.started),
                    took,
                    run.bytes,
                    outcome(&run)
                );
            }
        }
        JobsCmd::Run { job, wait } => {
            let started: RunStarted = daemon.call(
                "POST",
                "/v1/jobs/run",
                Some(&api::RunRequest { job: job.clone() }),
            )?;
            println!("started {} (run {})", started.job, started.run);
            if wait {
                loop {
                    std::thread::sleep(Duration::from_millis(500));
                    let runs: Vec<JobRun> =
                        daemon.get(&format!("/v1/jobs/history?limit=20&job={}", encode(&job)))?;
                    let Some(run) = runs.iter().find(|r| r.id == started.run) else {
                        bail!("run {} is no longer in the history", started.run);
                    };
                    if run.outcome.is_some() {
                        println!("{}", outcome(run));
                        if run.outcome != Some(api::RunOutcome::Succeeded) {
                            bail!("{} did not succeed", job);
                        }
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn print_event(event: &Event) {
    println!(
        "{}  {:<7} {:<9} {:<8} {}",
        local_time(event.time),
        event.level.as_str(),
        event.kind,
        event.pool.as_deref().unwrap_or("-"),
        event.message
    );
}

pub fn events(args: EventsArgs) -> anyhow::Result<()> {
    let daemon = Endpoint::daemon();
    let mut filter = String::new();
    for (name, value) in [
        ("level", &args.level),
        ("kind", &args.kind),
        ("pool", &args.pool),
    ] {
        if let Some(value) = value {
            filter.push_str(&format!("&{name}={}", encode(value)));
        }
    }
    let events: Vec<Event> = daemon.get(&format!("/v1/events?limit={}{filter}", args.limit))?;
    if args.json && !args.follow {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(());
    }
    let show = |event: &Event| -> anyhow::Result<()> {
        if args.json {
            println!("{}", serde_json::to_string(event)?);
        } else {
            print_event(event);
        }
        Ok(())
    };
    let mut last = events.last().map_or(0, |e| e.id);
    for event in &events {
        show(event)?;
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let newer: Vec<Event> =
            daemon.get(&format!("/v1/events?after={last}&limit=1000{filter}"))?;
        for event in &newer {
            show(event)?;
            last = event.id;
        }
    }
}

pub fn audit(action: AuditCmd) -> anyhow::Result<()> {
    let daemon = Endpoint::daemon();
    match action {
        AuditCmd::Verify { json } => {
            let verdict: AuditVerdict = daemon.get("/v1/audit/verify")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&verdict)?);
            } else if verdict.intact {
                println!(
                    "audit log intact: {} entries, each chained to the one before",
                    verdict.entries
                );
            } else {
                println!(
                    "audit log DAMAGED at entry {}: {}",
                    verdict
                        .first_bad_id
                        .map_or_else(|| "?".into(), |id| id.to_string()),
                    verdict.problem.as_deref().unwrap_or("hash mismatch")
                );
            }
            if !verdict.intact {
                bail!("the audit log does not verify");
            }
        }
        AuditCmd::List { limit, json } => {
            let entries: Vec<AuditEntry> = daemon.get(&format!("/v1/audit?limit={limit}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(());
            }
            for entry in entries {
                println!(
                    "{:<5} {}  {:<28} {:<32} {:<8} {}",
                    entry.id,
                    local_time(entry.time),
                    entry.actor,
                    entry.action,
                    entry.target,
                    entry.result
                );
            }
        }
    }
    Ok(())
}
