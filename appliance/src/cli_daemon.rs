//! `aegis jobs`, `aegis events`, `aegis audit` and `aegis backup`: the commands that talk to
//! aegisd itself rather than to one pool.

use std::time::Duration;

use anyhow::bail;

use appliance::api::{self, AuditEntry, AuditVerdict, Event, JobInfo, JobRun, RunStarted};
use appliance::cli::{AuditCmd, BackupCmd, EventsArgs, JobsCmd};
use appliance::client::Endpoint;

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

fn backup_request(name: &str, dry_run: bool) -> api::BackupRequest {
    api::BackupRequest {
        name: name.to_owned(),
        dry_run,
    }
}

fn progress_line(progress: &api::BackupProgress) -> String {
    let mut line = format!(
        "{}: {}",
        progress.phase,
        crate::human(progress.copied.bytes_done)
    );
    if let Some(total) = progress.copied.bytes_total {
        line.push_str(&format!(" of {}", crate::human(total)));
    }
    line.push_str(&format!(", {} files", progress.copied.files_done));
    if let Some(total) = progress.copied.files_total {
        line.push_str(&format!(" of {total}"));
    }
    line.push_str(&format!(
        ", {}/s",
        crate::human(progress.copied.rate_bytes_per_sec)
    ));
    if let Some(eta) = progress.copied.eta_secs {
        line.push_str(&format!(", ETA {eta} s"));
    }
    line
}

fn print_backup(info: &api::BackupInfo) {
    println!("backup    {} (pool {})", info.name, info.pool);
    println!(
        "copies    {}{} with {} ({}), keeping {} version(s)",
        if info.source.is_empty() { "/" } else { "" },
        info.source,
        info.engine,
        info.mode,
        info.keep_versions
    );
    println!("to        {}", info.destination);
    println!(
        "schedule  {} (next {})",
        info.schedule.as_deref().unwrap_or("off (on request)"),
        info.next_run.map_or_else(|| "-".into(), local_time)
    );
    match (&info.progress, &info.last_run) {
        (Some(progress), _) => println!("running   {}", progress_line(progress)),
        (None, Some(run)) => println!(
            "last run  {} {} ({} bytes, {} files)",
            local_time(run.started),
            outcome(run),
            run.bytes,
            run.files
        ),
        (None, None) => println!("last run  never"),
    }
}

pub fn backup(action: BackupCmd) -> anyhow::Result<()> {
    let daemon = Endpoint::daemon();
    match action {
        BackupCmd::List { json } => {
            let backups: Vec<api::BackupInfo> = daemon.get("/v1/backups")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&backups)?);
                return Ok(());
            }
            println!(
                "{:<20} {:<7} {:<16} {:<32} {:<18} LAST RUN",
                "NAME", "ENGINE", "SOURCE", "DESTINATION", "SCHEDULE"
            );
            for info in backups {
                let last = match (&info.progress, &info.last_run) {
                    (Some(progress), _) => format!("running: {}", progress_line(progress)),
                    (None, Some(run)) => format!("{} {}", local_time(run.started), outcome(run)),
                    (None, None) => "never".into(),
                };
                println!(
                    "{:<20} {:<7} {:<16} {:<32} {:<18} {last}",
                    info.name,
                    info.engine,
                    if info.source.is_empty() {
                        "/"
                    } else {
                        &info.source
                    },
                    info.destination,
                    info.schedule.as_deref().unwrap_or("off"),
                );
            }
        }
        BackupCmd::Status { name, json } => {
            let backups: Vec<api::BackupInfo> = daemon.get("/v1/backups")?;
            let chosen: Vec<&api::BackupInfo> = backups
                .iter()
                .filter(|info| name.as_ref().is_none_or(|n| *n == info.name))
                .collect();
            if let (Some(name), true) = (&name, chosen.is_empty()) {
                bail!("no backup named '{name}' (see aegis backup list)");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&chosen)?);
                return Ok(());
            }
            for (i, info) in chosen.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_backup(info);
            }
        }
        BackupCmd::History { name, limit, json } => {
            let mut path = format!("/v1/backups/history?limit={limit}");
            if let Some(name) = &name {
                path.push_str(&format!("&name={}", encode(name)));
            }
            let runs: Vec<JobRun> = daemon.get(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
                return Ok(());
            }
            println!(
                "{:<6} {:<24} {:<20} {:>8} {:>10} {:>7}  RESULT",
                "RUN", "BACKUP", "STARTED", "TOOK", "BYTES", "FILES"
            );
            for run in runs {
                let took = run
                    .finished
                    .map_or_else(|| "-".into(), |end| format!("{} s", end - run.started));
                println!(
                    "{:<6} {:<24} {:<20} {:>8} {:>10} {:>7}  {}",
                    run.id,
                    run.job.trim_start_matches("backup:"),
                    local_time(run.started),
                    took,
                    crate::human(run.bytes),
                    run.files,
                    outcome(&run)
                );
            }
        }
        BackupCmd::Run {
            name,
            dry_run: true,
            ..
        } => {
            let report: api::BackupReport = daemon.call(
                "POST",
                "/v1/backups/run",
                Some(&backup_request(&name, true)),
            )?;
            for change in &report.dry_run_changes {
                println!("{change}");
            }
            println!(
                "dry run: {} file(s), {} would transfer; nothing was changed",
                report.files,
                crate::human(report.bytes)
            );
        }
        BackupCmd::Run {
            name, detach, log, ..
        } => {
            let started: RunStarted = daemon.call(
                "POST",
                "/v1/backups/run",
                Some(&backup_request(&name, false)),
            )?;
            println!("started backup {name} (run {})", started.run);
            if detach {
                return Ok(());
            }
            follow_backup(&daemon, &name, started.run, log)?;
        }
        BackupCmd::Verify { name, json } => {
            let report: api::VerifyReport = daemon.call(
                "POST",
                "/v1/backups/verify",
                Some(&backup_request(&name, false)),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for difference in &report.differences {
                    println!("{difference}");
                }
                if report.identical {
                    println!(
                        "the destination matches the snapshot of the last run{}",
                        report
                            .checked_files
                            .map_or_else(String::new, |n| format!(" ({n} files checked)"))
                    );
                }
            }
            if !report.identical {
                bail!(
                    "the destination differs from the snapshot of the last run in {} place(s)",
                    report.differences.len()
                );
            }
        }
        BackupCmd::Cancel { name } => {
            let _: Vec<api::BackupInfo> = daemon.call(
                "POST",
                "/v1/backups/cancel",
                Some(&backup_request(&name, false)),
            )?;
            println!("asked backup {name} to stop");
        }
    }
    Ok(())
}

/// Shows a run's progress (on a terminal) until it ends, then its result.
fn follow_backup(daemon: &Endpoint, name: &str, run: i64, show_log: bool) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal();
    let history = format!("/v1/backups/history?name={}&limit=20", encode(name));
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let runs: Vec<JobRun> = daemon.get(&history)?;
        let Some(this) = runs.iter().find(|r| r.id == run) else {
            bail!("run {run} is no longer in the history");
        };
        if this.outcome.is_some() {
            if terminal {
                print!("\r\x1b[2K");
            }
            if show_log || this.outcome != Some(api::RunOutcome::Succeeded) {
                for line in this.log_tail.as_deref().unwrap_or("").lines() {
                    println!("  | {line}");
                }
            }
            println!(
                "{} ({} in {} file(s)){}",
                outcome(this),
                crate::human(this.bytes),
                this.files,
                this.detail
                    .as_deref()
                    .map_or_else(String::new, |d| format!(": {d}"))
            );
            if this.outcome != Some(api::RunOutcome::Succeeded) {
                bail!("backup {name} did not succeed");
            }
            return Ok(());
        }
        if terminal {
            let backups: Vec<api::BackupInfo> = daemon.get("/v1/backups")?;
            if let Some(progress) = backups
                .iter()
                .find(|b| b.name == name)
                .and_then(|b| b.progress.as_ref())
            {
                print!("\r\x1b[2K{}", progress_line(progress));
                std::io::stdout().flush()?;
            }
        }
    }
}
