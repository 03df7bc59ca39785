//! `aegis`: the AegisFS command line. Formats pools, mounts them (running the serving process),
//! and talks to mounted pools through their control sockets.

mod cli_daemon;
mod cli_devices;

use appliance::cli::{Cli, Cmd, KeyCmd, ScrubCmd, SnapshotCmd, TierCmd};
use appliance::{api, client, keys, serve, service};

use std::io::{BufRead, BufReader, IsTerminal};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use fs_core::codec::crypt::KdfParams;
use fs_core::device::Backend;
use fs_core::format::Superblock;
use fs_core::fs::props::Property;
use fs_core::fs::FsConfig;
use fs_core::pool::{FormatOptions, MemberSpec};
use fs_core::types::Tier;

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn backend(no_uring: bool) -> Backend {
    if no_uring {
        Backend::File
    } else {
        Backend::Auto
    }
}

fn format_cmd(
    fast: &[PathBuf],
    fast_size: Option<u64>,
    slow: &[PathBuf],
    slow_size: Option<u64>,
    options: &FormatOptions,
    backend: Backend,
) -> anyhow::Result<()> {
    let mut specs = Vec::new();
    for path in fast {
        specs.push(MemberSpec {
            path: path.clone(),
            tier: Tier::Fast,
            create_size: fast_size,
        });
    }
    for path in slow {
        specs.push(MemberSpec {
            path: path.clone(),
            tier: Tier::Slow,
            create_size: slow_size,
        });
    }
    fs_core::pool::format_paths(&specs, options, backend)?;
    let sb = fs_core::pool::inspect_path(&specs[0].path)?;
    println!(
        "formatted pool {} ({}) with {} member(s), block size {}",
        if sb.label.is_empty() {
            "<no label>"
        } else {
            &sb.label
        },
        uuid::Uuid::from_bytes(sb.pool_uuid),
        sb.members.len(),
        human(u64::from(sb.block_size))
    );
    for (spec, member) in specs.iter().zip(&sb.members) {
        println!(
            "  {} tier {:<4} {:>10}  {}",
            member.index.0,
            member.tier,
            human(member.size),
            spec.path.display()
        );
    }
    Ok(())
}

/// How long `aegis mount` waits for the serving process to report the mount ready.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(120);

/// Log file of a detached serving process.
fn log_path(mountpoint: &Path) -> PathBuf {
    let name: String = mountpoint
        .display()
        .to_string()
        .trim_matches('/')
        .replace('/', "-");
    let name = if name.is_empty() { "root".into() } else { name };
    client::run_dir().join("logs").join(format!("{name}.log"))
}

fn mount_detached(
    devices: &[PathBuf],
    mountpoint: &Path,
    no_uring: bool,
    tuning: &[String],
    secret: Option<&fs_core::pool::Secret>,
) -> anyhow::Result<()> {
    let mountpoint = std::fs::canonicalize(mountpoint)
        .with_context(|| format!("mountpoint {} does not exist", mountpoint.display()))?;
    let log = log_path(&mountpoint);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("mount")
        .arg("--foreground")
        .arg("--announce-ready");
    if no_uring {
        command.arg("--no-uring");
    }
    if secret.is_some() {
        // Through a pipe: arguments and the environment are visible to every user.
        command.arg("--key-stdin");
    }
    let mut child = command
        .args(tuning)
        .args(devices)
        .arg(&mountpoint)
        .stdin(if secret.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .context("cannot start the serving process")?;
    if let Some(secret) = secret {
        use std::io::Write;
        let mut stdin = child
            .stdin
            .take()
            .context("no pipe to the serving process")?;
        stdin
            .write_all(secret.bytes())
            .context("cannot pass the key to the serving process")?;
    }
    let stdout = child
        .stdout
        .take()
        .context("no pipe to the serving process")?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    let Ok(line) = receiver.recv_timeout(MOUNT_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "the serving process did not report a ready mount within {} s; see {}",
            MOUNT_TIMEOUT.as_secs(),
            log.display()
        );
    };
    if line.starts_with("READY") {
        println!(
            "mounted at {} (serving process {}, log {})",
            mountpoint.display(),
            child.id(),
            log.display()
        );
        return Ok(());
    }
    let _ = child.wait();
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    // The serving process ends with its error as "aegis: …"; anything else is context.
    let reason = match output
        .lines()
        .rev()
        .find(|line| line.starts_with("aegis: "))
    {
        Some(line) => line.trim_start_matches("aegis: ").to_owned(),
        None => {
            let tail: Vec<&str> = output.lines().rev().take(5).collect();
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        }
    };
    bail!("mount failed: {reason} (log: {})", log.display());
}

fn umount_cmd(target: &str) -> anyhow::Result<()> {
    let (endpoint, status) = match client::find_pool(target) {
        Ok(found) => found,
        Err(err) => {
            if service::remove_stale_mount(Path::new(target))? {
                println!(
                    "the serving process of {target} had exited; removed its stale mount. The \
                     pool holds everything up to its last commit: mount it again."
                );
                return Ok(());
            }
            return Err(err);
        }
    };
    if let Some(pool) = &endpoint.pool {
        bail!(
            "pool {pool} at {} is served by aegisd ({}): stop aegisd (systemctl stop aegisd) to unmount it, or remove it from aegisd's config",
            status.mountpoint,
            endpoint.socket.display()
        );
    }
    let result = Command::new("umount")
        .arg(&status.mountpoint)
        .status()
        .context("cannot run umount")?;
    if !result.success() {
        bail!("umount {} failed (is it busy?)", status.mountpoint);
    }
    let proc_dir = PathBuf::from(format!("/proc/{}", status.pid));
    let deadline = Instant::now() + Duration::from_secs(120);
    while proc_dir.exists() {
        if Instant::now() > deadline {
            bail!(
                "unmounted {}, but serving process {} has not exited after 120 s",
                status.mountpoint,
                status.pid
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("unmounted {}", status.mountpoint);
    Ok(())
}

fn superblock_json(sb: &Superblock) -> serde_json::Value {
    serde_json::json!({
        "pool_uuid": uuid::Uuid::from_bytes(sb.pool_uuid).to_string(),
        "label": sb.label,
        "format_version": fs_core::format::FORMAT_VERSION,
        "device_uuid": uuid::Uuid::from_bytes(sb.device_uuid).to_string(),
        "device_index": sb.device_index.0,
        "tier": sb.tier.as_str(),
        "member_list_generation": sb.generation,
        "block_size": sb.block_size,
        "features": sb.features,
        "encrypted": sb.encrypted(),
        "dedup": sb.dedup(),
        "key_derivation": sb.key_slot.map(|slot| serde_json::json!({
            "algorithm": "argon2id",
            "memory_kib": slot.kdf.memory_kib,
            "passes": slot.kdf.iterations,
            "lanes": slot.kdf.parallelism,
        })),
        "created": sb.created,
        "device_size": sb.device_size,
        "metadata_region": {"offset": sb.meta_offset, "length": sb.meta_len},
        "data_area": {"start": sb.data_start, "end": sb.data_end},
    })
}

fn info_cmd(
    devices: &[PathBuf],
    key: &keys::KeyArgs,
    json: bool,
    backend: Backend,
) -> anyhow::Result<()> {
    let sb = fs_core::pool::inspect_path(&devices[0])
        .with_context(|| format!("{} is not an AegisFS member", devices[0].display()))?;
    let uuid = uuid::Uuid::from_bytes(sb.pool_uuid).to_string();
    let live = client::live_pools()
        .into_iter()
        .find(|(_, s)| s.pool_uuid == uuid);
    let usage: Option<api::Status> = match live {
        Some((_, status)) => Some(status),
        None if devices.len() == sb.members.len() => {
            let secret = keys::secret_for(devices, key)?;
            let pool = fs_core::pool::open_paths_with(devices, backend, secret.as_ref())?;
            let fs = fs_core::fs::Filesystem::new(pool, fs_core::fs::FsConfig::default())?;
            Some(service::api_status(&fs.status(), "", "", Instant::now()))
        }
        None => None,
    };
    let members: Vec<serde_json::Value> = sb
        .members
        .iter()
        .map(|m| {
            serde_json::json!({
                "index": m.index.0,
                "uuid": uuid::Uuid::from_bytes(m.uuid).to_string(),
                "tier": m.tier.as_str(),
                "size": m.size,
                "state": m.state.as_str(),
            })
        })
        .collect();
    if json {
        let value = serde_json::json!({
            "superblock": superblock_json(&sb),
            "members": members,
            "mounted": usage.as_ref().is_some_and(|s| !s.mountpoint.is_empty()),
            "usage": usage,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "pool      {} ({uuid})",
        if sb.label.is_empty() {
            "<no label>"
        } else {
            &sb.label
        }
    );
    println!(
        "device    {} = member {} ({} tier)",
        devices[0].display(),
        sb.device_index.0,
        sb.tier
    );
    println!(
        "format    version {}, block size {}",
        fs_core::format::FORMAT_VERSION,
        human(u64::from(sb.block_size))
    );
    let mut features = Vec::new();
    if let Some(slot) = &sb.key_slot {
        features.push(format!(
            "encrypted (AES-256; key wrapped with Argon2id, {} MiB, {} passes)",
            slot.kdf.memory_kib / 1024,
            slot.kdf.iterations
        ));
    }
    if sb.dedup() {
        features.push("dedup".to_owned());
    }
    if !features.is_empty() {
        println!("features  {}", features.join(", "));
    }
    println!("members");
    for m in &sb.members {
        println!(
            "  {}  {:<4}  {:<8}  {:>10}  {}",
            m.index.0,
            m.tier,
            m.state,
            human(m.size),
            uuid::Uuid::from_bytes(m.uuid)
        );
    }
    match usage {
        Some(status) => print_usage(&status),
        None => println!(
            "usage     unknown: the pool is not mounted (give every member to read it offline)"
        ),
    }
    Ok(())
}

fn print_usage(status: &api::Status) {
    println!("tiers");
    for tier in &status.tiers {
        println!(
            "  {:<4}  {:>10} used of {:>10}  ({} free)",
            tier.tier,
            human(tier.used_bytes),
            human(tier.data_bytes),
            human(tier.free_bytes)
        );
    }
}

fn sync_cmd(target: &str) -> anyhow::Result<()> {
    let (socket, _) = client::find_pool(target)?;
    let status: api::Status = socket.call("POST", "/v1/sync", None::<&()>)?;
    println!(
        "{}: everything written so far is durable",
        status.mountpoint
    );
    Ok(())
}

fn set_cmd(path: &Path, properties: &[String]) -> anyhow::Result<()> {
    let (socket, _, inside) = client::pool_for_path(path)?;
    let request = api::SetProperties {
        path: inside,
        properties: properties.to_vec(),
    };
    let values: Vec<api::PropertyValue> = socket
        .call("PUT", "/v1/properties", Some(&request))
        .with_context(|| format!("cannot set properties on {}", path.display()))?;
    print_properties(&values);
    Ok(())
}

fn get_cmd(path: &Path, json: bool) -> anyhow::Result<()> {
    let (socket, _, inside) = client::pool_for_path(path)?;
    let query = percent_encoding::utf8_percent_encode(&inside, percent_encoding::NON_ALPHANUMERIC);
    let values: Vec<api::PropertyValue> = socket
        .get(&format!("/v1/properties?path={query}"))
        .with_context(|| format!("cannot read the properties of {}", path.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&values)?);
    } else {
        print_properties(&values);
    }
    Ok(())
}

fn scrub_cmd(action: ScrubCmd) -> anyhow::Result<()> {
    match action {
        ScrubCmd::Start { target, rate, wait } => {
            let (socket, _) = client::find_pool(&target)?;
            let request = api::ScrubStart {
                rate_bytes_per_sec: rate.unwrap_or(0),
            };
            let mut status: api::ScrubStatus =
                socket.call("POST", "/v1/scrub/start", Some(&request))?;
            if !wait {
                println!("scrub started");
                print_scrub(&status);
                return Ok(());
            }
            let interactive = std::io::stdout().is_terminal();
            while status.running {
                if interactive {
                    print!(
                        "\r{:5.1}%  {}/s  {} checked  {} errors  {} repaired   ",
                        status.percent,
                        human(status.rate_bytes_per_sec),
                        human(status.bytes_checked),
                        status.errors_found,
                        status.repaired
                    );
                    std::io::Write::flush(&mut std::io::stdout())?;
                }
                std::thread::sleep(Duration::from_millis(500));
                status = socket.get("/v1/scrub")?;
            }
            if interactive {
                println!();
            }
            print_scrub(&status);
            Ok(())
        }
        ScrubCmd::Status { target, json } => {
            let (socket, _) = client::find_pool(&target)?;
            let status: api::ScrubStatus = socket.get("/v1/scrub")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_scrub(&status);
            }
            Ok(())
        }
        ScrubCmd::Cancel { target } => {
            let (socket, _) = client::find_pool(&target)?;
            let status: api::ScrubStatus = socket.call("POST", "/v1/scrub/cancel", None::<&()>)?;
            print_scrub(&status);
            Ok(())
        }
    }
}

fn tier_cmd(action: TierCmd) -> anyhow::Result<()> {
    match action {
        TierCmd::Status { target, json } => {
            let (socket, _) = client::find_pool(&target)?;
            let status: api::TierStatus = socket.get("/v1/tier")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            println!(
                "{:<5}  {:>10}  {:>10}  {:>6}  {:>10}  {:>10}  {:>10}",
                "TIER", "CAPACITY", "USED", "USED%", "HOT", "WARM", "COLD"
            );
            for tier in &status.tiers {
                #[allow(clippy::cast_precision_loss)]
                let percent = if tier.capacity_bytes > 0 {
                    tier.used_bytes as f64 * 100.0 / tier.capacity_bytes as f64
                } else {
                    0.0
                };
                println!(
                    "{:<5}  {:>10}  {:>10}  {:>5.1}%  {:>10}  {:>10}  {:>10}",
                    tier.tier,
                    human(tier.capacity_bytes),
                    human(tier.used_bytes),
                    percent,
                    tier.hot_blocks,
                    tier.warm_blocks,
                    tier.cold_blocks
                );
            }
            println!(
                "watermarks  low {:.0} %, high {:.0} % of the fast tier",
                status.low_watermark * 100.0,
                status.high_watermark * 100.0
            );
            match &status.migration {
                Some(progress) if progress.counts.running => print_migration(progress),
                _ => {}
            }
            match &status.last_migration {
                Some(last) => println!(
                    "last migration  {} ({}): promoted {}, demoted {}",
                    format_time(last.started),
                    last.outcome,
                    human(last.promoted_bytes),
                    human(last.demoted_bytes)
                ),
                None => println!("last migration  never"),
            }
            println!(
                "next migration  {}",
                status.next_migration.map_or_else(
                    || "not scheduled (run aegis tier migrate)".to_owned(),
                    format_time
                )
            );
            if status.pins.is_empty() {
                println!("pins            none");
            }
            for pin in &status.pins {
                println!("pin             {} {}", pin.tier, pin.path);
            }
        }
        TierCmd::Migrate {
            target,
            dry_run,
            limit,
            rate,
            background,
            json,
        } => {
            let (socket, _) = client::find_pool(&target)?;
            let request = api::MigrateRequest {
                dry_run,
                limit_bytes: limit,
                rate_bytes_per_sec: rate,
            };
            if dry_run {
                let plan: api::MigrationPlan =
                    socket.call("POST", "/v1/tier/migrate", Some(&request))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&plan)?);
                } else {
                    print_plan(&plan);
                }
                return Ok(());
            }
            let mut progress: api::MigrationProgress =
                socket.call("POST", "/v1/tier/migrate", Some(&request))?;
            if !background {
                let interactive = std::io::stdout().is_terminal();
                while progress.counts.running {
                    if interactive {
                        let counts = &progress.counts;
                        print!(
                            "\r{} of {} moved ({} promoted, {} demoted)   ",
                            human(counts.moved_bytes()),
                            human(counts.planned_bytes),
                            human(counts.promoted_bytes),
                            human(counts.demoted_bytes)
                        );
                        std::io::Write::flush(&mut std::io::stdout())?;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    progress = socket.get("/v1/tier/migrate")?;
                }
                if interactive {
                    println!();
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&progress)?);
            } else {
                print_migration(&progress);
            }
            if progress
                .outcome
                .as_deref()
                .is_some_and(|o| o.starts_with("failed"))
            {
                bail!("the migration failed");
            }
        }
        TierCmd::Cancel { target } => {
            let (socket, _) = client::find_pool(&target)?;
            let progress: api::MigrationProgress =
                socket.call("POST", "/v1/tier/migrate/cancel", None::<&()>)?;
            println!("cancelling the migration");
            print_migration(&progress);
        }
        TierCmd::Pin { path, tier } => {
            let (socket, _, inside) = client::pool_for_path(&path)?;
            let request = api::PinRequest { path: inside, tier };
            let done: api::PinDone = socket
                .call("POST", "/v1/tier/pin", Some(&request))
                .with_context(|| format!("cannot pin {}", path.display()))?;
            println!(
                "{} pinned to {} ({} entries); the next migration moves its blocks",
                path.display(),
                done.tier,
                done.entries
            );
        }
        TierCmd::History { target, json } => {
            let (socket, _) = client::find_pool(&target)?;
            let history: Vec<api::MigrationEntry> = socket.get("/v1/tier/history")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&history)?);
                return Ok(());
            }
            println!(
                "{:<20}  {:>8}  {:>10}  {:>10}  OUTCOME",
                "STARTED", "TOOK", "PROMOTED", "DEMOTED"
            );
            for entry in &history {
                println!(
                    "{:<20}  {:>7}s  {:>10}  {:>10}  {}",
                    format_time(entry.started),
                    entry.finished - entry.started,
                    human(entry.promoted_bytes),
                    human(entry.demoted_bytes),
                    entry.outcome
                );
            }
        }
    }
    Ok(())
}

fn print_plan(plan: &api::MigrationPlan) {
    #[allow(clippy::cast_precision_loss)]
    let percent = |bytes: u64| {
        if plan.fast_capacity_bytes == 0 {
            0.0
        } else {
            bytes as f64 * 100.0 / plan.fast_capacity_bytes as f64
        }
    };
    println!(
        "promote  {} blocks, {}",
        plan.promote_blocks,
        human(plan.promote_bytes)
    );
    println!(
        "demote   {} blocks, {}",
        plan.demote_blocks,
        human(plan.demote_bytes)
    );
    println!(
        "fast tier  {:.1} % -> {:.1} % full",
        percent(plan.fast_used_before),
        percent(plan.fast_used_after)
    );
    if plan.pinned_unplaced_bytes > 0 {
        println!(
            "pinned to fast but no room: {}",
            human(plan.pinned_unplaced_bytes)
        );
    }
    if plan.deferred_bytes > 0 {
        println!(
            "left for a later run by --limit: {}",
            human(plan.deferred_bytes)
        );
    }
    if !plan.top_files.is_empty() {
        println!("files moving most:");
        for file in &plan.top_files {
            println!(
                "  {:>10} up  {:>10} down  {}",
                human(file.promote_bytes),
                human(file.demote_bytes),
                file.path
            );
        }
    }
}

fn print_migration(progress: &api::MigrationProgress) {
    let counts = &progress.counts;
    println!(
        "migration {}: {} of {} planned moved ({} promoted in {} blocks, {} demoted in {} blocks, {} skipped) in {:.1} s",
        progress.outcome.as_deref().unwrap_or("running"),
        human(counts.moved_bytes()),
        human(counts.planned_bytes),
        human(counts.promoted_bytes),
        counts.promoted_blocks,
        human(counts.demoted_bytes),
        counts.demoted_blocks,
        counts.skipped_blocks,
        counts.elapsed_ms as f64 / 1000.0
    );
}

/// `/v1/snapshots/<name>` with the name percent-encoded.
fn snapshot_path(name: &str, action: &str) -> String {
    let name = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("/v1/snapshots/{name}{action}")
}

fn snapshot_cmd(action: SnapshotCmd) -> anyhow::Result<()> {
    match action {
        SnapshotCmd::Create { target, name } => {
            let (socket, status) = client::find_pool(&target)?;
            let request = api::SnapshotCreate { name };
            let snapshot: api::Snapshot = socket
                .call("POST", "/v1/snapshots", Some(&request))
                .context("cannot take the snapshot")?;
            println!(
                "snapshot {} taken: {}/.snapshots/{}",
                snapshot.name, status.mountpoint, snapshot.name
            );
        }
        SnapshotCmd::List { target, json } => {
            let (socket, _) = client::find_pool(&target)?;
            let snapshots: Vec<api::Snapshot> = socket.get("/v1/snapshots")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&snapshots)?);
                return Ok(());
            }
            let width = snapshots
                .iter()
                .map(|s| s.name.chars().count())
                .max()
                .unwrap_or(0)
                .max(4);
            println!(
                "{:<width$}  {:<20}  {:>10}  {:>10}",
                "NAME", "CREATED", "REFERENCED", "UNIQUE"
            );
            for snapshot in &snapshots {
                println!(
                    "{:<width$}  {:<20}  {:>10}  {:>10}",
                    snapshot.name,
                    format_time(snapshot.created),
                    human(snapshot.referenced_bytes),
                    human(snapshot.unique_bytes)
                );
            }
        }
        SnapshotCmd::Diff {
            target,
            from,
            to,
            json,
        } => {
            let (socket, _) = client::find_pool(&target)?;
            let mut path = snapshot_path(&from, "/diff");
            if let Some(to) = &to {
                let to =
                    percent_encoding::utf8_percent_encode(to, percent_encoding::NON_ALPHANUMERIC);
                path.push_str(&format!("?to={to}"));
            }
            let changes: Vec<api::SnapshotChange> = socket.get(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&changes)?);
                return Ok(());
            }
            for change in &changes {
                let symbol = match change.change.as_str() {
                    "added" => '+',
                    "deleted" => '-',
                    "renamed" => 'R',
                    _ => 'M',
                };
                match &change.renamed_to {
                    Some(to) => println!("{symbol}\t{}\t{to}", change.path),
                    None => println!("{symbol}\t{}", change.path),
                }
            }
        }
        SnapshotCmd::Rollback {
            target,
            name,
            force,
        } => {
            let (socket, status) = client::find_pool(&target)?;
            let request = api::RollbackRequest { force };
            let done: api::RollbackDone = socket
                .call("POST", &snapshot_path(&name, "/rollback"), Some(&request))
                .with_context(|| format!("cannot roll back to {name}"))?;
            for destroyed in &done.destroyed {
                println!("destroyed newer snapshot {destroyed}");
            }
            println!(
                "{} is now as it was in snapshot {}",
                status.mountpoint, done.name
            );
        }
        SnapshotCmd::Delete { target, name } => {
            let (socket, _) = client::find_pool(&target)?;
            let deleted: api::SnapshotDeleted = socket
                .call("DELETE", &snapshot_path(&name, ""), None::<&()>)
                .with_context(|| format!("cannot delete snapshot {name}"))?;
            println!(
                "snapshot {} deleted, {} released",
                deleted.name,
                human(deleted.released_bytes)
            );
        }
    }
    Ok(())
}

/// Seconds since the epoch as UTC RFC 3339 (`2026-11-25T11:35:12Z`).
fn format_time(secs: i64) -> String {
    let time = fs_core::meta::records::Timestamp { secs, nanos: 0 }.to_system();
    humantime::format_rfc3339_seconds(time).to_string()
}

fn print_scrub(status: &api::ScrubStatus) {
    if status.state == "none" {
        println!("scrub     never run on this pool");
        return;
    }
    println!("scrub     {} ({:.1}%)", status.state, status.percent);
    println!(
        "checked   {} of {} blocks ({}), {} of {} metadata pages",
        status.blocks_checked,
        status.blocks_total,
        human(status.bytes_checked),
        status.metadata_pages_checked,
        status.metadata_pages_total
    );
    let limit = if status.rate_limit_bytes_per_sec > 0 {
        format!(" (limit {}/s)", human(status.rate_limit_bytes_per_sec))
    } else {
        String::new()
    };
    let eta = status
        .eta_secs
        .map_or_else(|| "-".to_owned(), |s| format!("{s} s"));
    println!(
        "rate      {}/s{limit}, eta {eta}",
        human(status.rate_bytes_per_sec)
    );
    println!(
        "errors    {} found, {} repaired, {} unrecoverable",
        status.errors_found, status.repaired, status.unrecoverable
    );
    if !status.damaged_paths.is_empty() {
        println!("files with unrecoverable damage (reading them gives EIO):");
        for path in &status.damaged_paths {
            println!("  {path}");
        }
    }
}

fn print_properties(values: &[api::PropertyValue]) {
    println!("{:<12} {:<8} source", "property", "value");
    for value in values {
        println!("{:<12} {:<8} {}", value.name, value.value, value.source);
    }
}

/// `aegis status` without a pool: every live pool.
fn status_all(clear_errors: bool, json: bool) -> anyhow::Result<()> {
    let pools = client::live_pools();
    // Pools aegisd could not mount, with the reason.
    let unmounted: Vec<api::PoolEntry> = client::Endpoint::daemon()
        .get::<Vec<api::PoolEntry>>("/v1/pools")
        .unwrap_or_default()
        .into_iter()
        .filter(|entry| !entry.mounted)
        .collect();
    if !json {
        for entry in &unmounted {
            println!(
                "pool      {}: NOT MOUNTED: {}\n",
                entry.name,
                entry.error.as_deref().unwrap_or("unknown reason")
            );
        }
    }
    if pools.is_empty() && unmounted.is_empty() {
        bail!(
            "no mounted AegisFS pool: aegisd is not answering at {} and no pool was mounted with `aegis mount`",
            client::daemon_socket().display()
        );
    }
    if json && !clear_errors {
        let statuses: Vec<&api::Status> = pools.iter().map(|(_, status)| status).collect();
        println!("{}", serde_json::to_string_pretty(&statuses)?);
        return Ok(());
    }
    for (i, (_, status)) in pools.iter().enumerate() {
        if i > 0 {
            println!();
        }
        status_cmd(&status.pool_uuid, clear_errors, json)?;
    }
    Ok(())
}

fn status_cmd(target: &str, clear_errors: bool, json: bool) -> anyhow::Result<()> {
    let (socket, status) = client::find_pool(target)?;
    let status: api::Status = if clear_errors {
        socket.call("POST", "/v1/errors/clear", None::<&()>)?
    } else {
        status
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!(
        "pool      {} ({})",
        if status.label.is_empty() {
            "<no label>"
        } else {
            &status.label
        },
        status.pool_uuid
    );
    println!(
        "mounted   {} (pid {}, up {} s, socket {}, FUSE over {})",
        status.mountpoint,
        status.pid,
        status.uptime_secs,
        socket.socket.display(),
        status.fuse_transport
    );
    match &status.read_only_cause {
        Some(cause) => println!(
            "state     READ-ONLY after a failure: {cause} (writes get EROFS; fix the device, then unmount and mount again)"
        ),
        None => println!("state     online"),
    }
    println!("members");
    for m in &status.members {
        println!(
            "  {}  {:<4}  {:<8}  {:>10} used of {:>10}  read {:>10} ({} ops)  written {:>10} ({} ops)  {}",
            m.index,
            m.tier,
            m.state,
            human(m.used_bytes),
            human(m.data_bytes),
            human(m.bytes_read),
            m.read_ops,
            human(m.bytes_written),
            m.write_ops,
            m.path
        );
        println!(
            "     errors: read {}  write {}  checksum {}  repaired {}",
            m.read_errors, m.write_errors, m.checksum_errors, m.repaired
        );
    }
    print_usage(&status);
    let space = &status.space;
    println!(
        "data      {} of content stored in {} (compression {:.2}x), {} referenced (dedup {:.2}x){}",
        human(space.logical_bytes),
        human(space.stored_bytes),
        space.compression_ratio,
        human(space.referenced_bytes),
        space.dedup_ratio,
        if status.encrypted { ", encrypted" } else { "" }
    );
    if let Some(table) = &status.dedup {
        println!(
            "dedup     table {} entries of {} ({} of metadata)",
            table.entries,
            table.limit,
            human(table.table_bytes)
        );
    }
    println!("inodes    {}", status.inodes);
    println!(
        "snapshots {} ({} held only by snapshots)",
        status.snapshots,
        human(status.snapshot_bytes)
    );
    println!(
        "metadata  {} of {} region",
        human(status.metadata_used_bytes),
        human(status.metadata_capacity_bytes)
    );
    println!(
        "commits   {} (last {})",
        status.commits,
        status.last_commit_ms_ago.map_or_else(
            || "none yet".to_owned(),
            |ms| format!("{:.1} s ago", ms as f64 / 1000.0)
        )
    );
    Ok(())
}

fn du_cmd(path: &Path, json: bool) -> anyhow::Result<()> {
    let (socket, _, inside) = client::pool_for_path(path)?;
    let query = percent_encoding::utf8_percent_encode(&inside, percent_encoding::NON_ALPHANUMERIC);
    let usage: api::DiskUsage = socket
        .get(&format!("/v1/du?path={query}"))
        .with_context(|| format!("cannot count the usage of {}", path.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&usage)?);
        return Ok(());
    }
    println!("{}", path.display());
    println!("  files {}  directories {}", usage.files, usage.directories);
    println!(
        "  apparent size  {:>10}  (sum of file sizes)",
        human(usage.apparent_bytes)
    );
    println!(
        "  content        {:>10}  (in blocks; holes excluded)",
        human(usage.logical_bytes)
    );
    println!(
        "  stored         {:>10}  (compression ratio {:.2}x)",
        human(usage.stored_bytes),
        usage.compression_ratio
    );
    println!(
        "  space taken    {:>10}  (whole sectors, every copy)",
        human(usage.allocated_bytes)
    );
    Ok(())
}

fn key_change_cmd(
    devices: &[PathBuf],
    keyfile: Option<&Path>,
    new_keyfile: Option<&Path>,
    kdf: KdfParams,
) -> anyhow::Result<()> {
    if let Some((_, status)) = serving_socket(devices) {
        bail!(
            "pool '{}' is mounted at {}: unmount it before changing its key",
            status.label,
            status.mountpoint
        );
    }
    let sb = fs_core::pool::inspect_path(&devices[0])
        .with_context(|| format!("{} is not an AegisFS member", devices[0].display()))?;
    if !sb.encrypted() {
        bail!(
            "the pool on {} is not encrypted: it has no key to change",
            devices[0].display()
        );
    }
    let old = keys::existing_secret(
        &keys::KeyArgs {
            keyfile: keyfile.map(Path::to_path_buf),
            ask_password: false,
        },
        "Current passphrase: ",
    )?;
    let new = keys::new_secret(new_keyfile, "New passphrase")?;
    fs_core::pool::change_key(devices, &old, &new, kdf)?;
    println!(
        "changed the key of pool {} on {} member(s); no data was rewritten",
        if sb.label.is_empty() {
            "<no label>"
        } else {
            &sb.label
        },
        sb.members.len()
    );
    Ok(())
}

/// e2fsck's exit statuses.
const FSCK_CLEAN: u8 = 0;
const FSCK_ERRORS_FIXED: u8 = 1;
const FSCK_ERRORS_LEFT: u8 = 4;
const FSCK_OPERATIONAL_ERROR: u8 = 8;

/// The control socket of the process serving the pool `devices[0]` belongs to, if it is mounted.
fn serving_socket(devices: &[PathBuf]) -> Option<(client::Endpoint, api::Status)> {
    let sb = fs_core::pool::inspect_path(&devices[0]).ok()?;
    let uuid = uuid::Uuid::from_bytes(sb.pool_uuid).to_string();
    client::live_pools()
        .into_iter()
        .find(|(_, status)| status.pool_uuid == uuid)
}

fn fsck_cmd(
    devices: &[PathBuf],
    repair: bool,
    verify_data: bool,
    key: &keys::KeyArgs,
    json: bool,
) -> anyhow::Result<u8> {
    let report = match serving_socket(devices) {
        Some((_, status)) if repair => bail!(
            "pool '{}' is mounted at {}: unmount it before --repair (without --repair, fsck checks a mounted pool read-only)",
            status.label,
            status.mountpoint
        ),
        Some((_, status)) if verify_data => bail!(
            "pool '{}' is mounted at {}: --verify-data reads every block and needs the pool unmounted",
            status.label,
            status.mountpoint
        ),
        Some((socket, status)) => {
            if !json {
                println!(
                    "pool '{}' is mounted at {}: checking its last commit read-only, online",
                    status.label, status.mountpoint
                );
            }
            socket.get::<api::FsckReport>("/v1/fsck")?
        }
        None => {
            let secret = keys::secret_for(devices, key)?;
            let mut pool = fs_core::pool::open_paths_with(devices, Backend::Auto, secret.as_ref())
                .context("cannot open the pool")?;
            let report = if repair {
                fs_core::fsck::repair(&mut pool, verify_data)?
            } else {
                fs_core::fsck::check(&mut pool, verify_data)?
            };
            api::FsckReport::new(&report, false)
        }
    };
    let status = if report.clean {
        FSCK_CLEAN
    } else if report.uncorrected() == 0 {
        FSCK_ERRORS_FIXED
    } else {
        FSCK_ERRORS_LEFT
    };
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["exit_code"] = status.into();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(status);
    }
    println!(
        "checked {} inodes ({} directories), {} blocks{}",
        report.inodes,
        report.directories,
        report.blocks,
        if verify_data {
            format!(", {} blocks' data verified", report.blocks_verified)
        } else {
            String::new()
        }
    );
    for finding in &report.findings {
        let fixed = if finding.fixed { " [fixed]" } else { "" };
        match &finding.path {
            Some(path) => println!("{}: {}: {}{fixed}", finding.check, path, finding.message),
            None => println!("{}: {}{fixed}", finding.check, finding.message),
        }
    }
    let left = report.uncorrected();
    let fixed = report.findings.len() - left;
    match (report.clean, fixed, left) {
        (true, _, _) => println!("clean"),
        (false, _, 0) => println!("{fixed} problem(s) found and fixed"),
        (false, _, _) if repair => {
            println!("{fixed} problem(s) fixed, {left} left uncorrected");
        }
        (false, _, _) => println!(
            "{left} problem(s) found; none corrected (run with --repair to fix what is safe to fix)"
        ),
    }
    Ok(status)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let done = |result: anyhow::Result<()>| result.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Cmd::Format {
            fast,
            fast_size,
            slow,
            slow_size,
            label,
            block_size,
            copies,
            compression,
            encrypt,
            keyfile,
            dedup,
            kdf,
            force,
            no_uring,
        } => {
            let encryption = if encrypt || keyfile.is_some() {
                Some(keys::new_secret(
                    keyfile.as_deref(),
                    "Passphrase for the new pool",
                )?)
            } else {
                None
            };
            let options = FormatOptions {
                label,
                block_size: u32::try_from(block_size).context("block size too large")?,
                force,
                properties: vec![Property::Copies(copies), Property::Compression(compression)],
                encryption,
                kdf: kdf.params(),
                dedup,
            };
            done(format_cmd(
                &fast,
                fast_size,
                &slow,
                slow_size,
                &options,
                backend(no_uring),
            ))
        }
        Cmd::Mount {
            mut paths,
            foreground,
            no_uring,
            cache_size,
            fast_watermarks,
            heat_half_life,
            key,
            key_stdin,
            announce_ready,
        } => {
            let mountpoint = paths.pop().context("no mountpoint given")?;
            let secret = if key_stdin {
                Some(keys::piped_secret()?)
            } else {
                keys::secret_for(&paths, &key)?
            };
            if service::remove_stale_mount(&mountpoint)? {
                tracing::warn!(
                    mountpoint = %mountpoint.display(),
                    "removed the stale mount of a serving process that had exited"
                );
            }
            let (low, high) = fast_watermarks;
            let policy = tiering::Policy {
                low,
                high,
                ..tiering::Policy::default()
            };
            let mut config = FsConfig {
                fast_high_watermark: high,
                heat_half_life,
                ..FsConfig::default()
            };
            if let Some(bytes) = cache_size {
                config.cache_bytes = bytes;
            }
            done(if foreground {
                serve::serve(
                    service::MountRequest {
                        name: None,
                        devices: &paths,
                        mountpoint: &mountpoint,
                        backend: backend(no_uring),
                        secret: secret.as_ref(),
                        config,
                        policy,
                    },
                    announce_ready,
                )
            } else {
                let mut tuning = vec![
                    format!("--fast-watermarks={}:{}", low * 100.0, high * 100.0),
                    format!(
                        "--heat-half-life={}",
                        humantime::format_duration(heat_half_life)
                    ),
                ];
                if let Some(bytes) = cache_size {
                    tuning.push(format!("--cache-size={bytes}"));
                }
                mount_detached(&paths, &mountpoint, no_uring, &tuning, secret.as_ref())
            })
        }
        Cmd::Umount { target } => done(umount_cmd(&target)),
        Cmd::Info { devices, key, json } => done(info_cmd(&devices, &key, json, Backend::Auto)),
        Cmd::Du { path, json } => done(du_cmd(&path, json)),
        Cmd::Key {
            action:
                KeyCmd::Change {
                    devices,
                    keyfile,
                    new_keyfile,
                    kdf,
                },
        } => done(key_change_cmd(
            &devices,
            keyfile.as_deref(),
            new_keyfile.as_deref(),
            kdf.params(),
        )),
        Cmd::Status {
            target,
            clear_errors,
            json,
        } => done(match target {
            Some(target) => status_cmd(&target, clear_errors, json),
            None => status_all(clear_errors, json),
        }),
        Cmd::Sync { target } => done(sync_cmd(&target)),
        Cmd::Jobs { action } => done(cli_daemon::jobs(action)),
        Cmd::Events(args) => done(cli_daemon::events(args)),
        Cmd::Audit { action } => done(cli_daemon::audit(action)),
        Cmd::Backup { action } => done(cli_daemon::backup(action)),
        Cmd::Set { path, properties } => done(set_cmd(&path, &properties)),
        Cmd::Get { path, json } => done(get_cmd(&path, json)),
        Cmd::Scrub { action } => done(scrub_cmd(action)),
        Cmd::Device { action } => done(cli_devices::device(action)),
        Cmd::Snapshot { action } => done(snapshot_cmd(action)),
        Cmd::Tier { action } => done(tier_cmd(action)),
        Cmd::Fsck {
            devices,
            repair,
            verify_data,
            key,
            json,
        } => {
            let status =
                fsck_cmd(&devices, repair, verify_data, &key, json).unwrap_or_else(|err| {
                    eprintln!("aegis: {err:#}");
                    FSCK_OPERATIONAL_ERROR
                });
            Ok(ExitCode::from(status))
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    if let Some(socket) = &cli.socket {
        client::choose_daemon_socket(socket.clone());
    }
    if !matches!(cli.command, Cmd::Mount { .. }) {
        // SAFETY: restores the default SIGPIPE action before any thread starts, so a closed
        // pipe (`aegis status | head`) ends a reporting command quietly instead of a failed
        // print. The serving process (`mount`) keeps ignoring it and sees EPIPE as an error.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("aegis: {err:#}");
            ExitCode::FAILURE
        }
    }
}
