//! `aegis device`: the members of a mounted pool (add, remove, replace, status), through the
//! pool's control API.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;

use appliance::api::{
    self, DeviceAdd, DeviceAdded, DeviceRemove, DeviceReplace, DeviceResize, Devices, Resized,
};
use appliance::cli::DeviceCmd;
use appliance::client::{self, Endpoint};

use crate::human;

/// A member as the serving process can resolve it: an index as given, a path made absolute
/// (the serving process does not share this command's working directory).
fn member_arg(text: &str) -> String {
    if text.parse::<u16>().is_ok() && !std::path::Path::new(text).exists() {
        return text.to_owned();
    }
    std::fs::canonicalize(text)
        .or_else(|_| std::path::absolute(text))
        .map_or_else(|_| text.to_owned(), |path| path.display().to_string())
}

/// A new device's path, absolute (it may not exist yet: an image file to create).
fn new_device_arg(path: &std::path::Path) -> anyhow::Result<String> {
    Ok(std::path::absolute(path)?.display().to_string())
}

pub fn device(action: DeviceCmd) -> anyhow::Result<()> {
    match action {
        DeviceCmd::Status { target, json } => {
            let (socket, _) = client::find_pool(&target)?;
            let devices: Devices = socket.get("/v1/devices")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                print_devices(&devices);
            }
            Ok(())
        }
        DeviceCmd::Add {
            target,
            fast,
            slow,
            size,
            force,
        } => {
            let (path, tier) = match (fast, slow) {
                (Some(path), None) => (path, "fast"),
                (None, Some(path)) => (path, "slow"),
                _ => bail!("give --fast PATH or --slow PATH"),
            };
            let (socket, _) = client::find_pool(&target)?;
            let request = DeviceAdd {
                path: new_device_arg(&path)?,
                tier: tier.into(),
                size,
                force,
            };
            let added: DeviceAdded = socket.call("POST", "/v1/devices/add", Some(&request))?;
            println!(
                "{} joined the {} tier as member {}",
                added.path, added.tier, added.index
            );
            remind_to_list(&socket, &added.path);
            Ok(())
        }
        DeviceCmd::Remove {
            target,
            device,
            rate,
            background,
        } => {
            let (socket, _) = client::find_pool(&target)?;
            let request = DeviceRemove {
                device: member_arg(&device),
                rate: rate.unwrap_or(0),
            };
            let started: api::Evacuation =
                socket.call("POST", "/v1/devices/remove", Some(&request))?;
            println!(
                "removing member {} ({}): moving its blocks to the other members",
                started.member, started.path
            );
            follow(&socket, background)
        }
        DeviceCmd::Replace {
            target,
            old,
            new,
            size,
            force,
            rate,
            background,
        } => {
            let (socket, _) = client::find_pool(&target)?;
            let request = DeviceReplace {
                old: member_arg(&old),
                new: new_device_arg(&new)?,
                size,
                force,
                rate: rate.unwrap_or(0),
            };
            let added: DeviceAdded = socket.call("POST", "/v1/devices/replace", Some(&request))?;
            if let Some(evacuation) = &added.evacuation {
                println!(
                    "{} joined the {} tier as member {}; copying member {} ({}) onto it",
                    added.path, added.tier, added.index, evacuation.member, evacuation.path
                );
            }
            remind_to_list(&socket, &added.path);
            follow(&socket, background)
        }
        DeviceCmd::Cancel { target } => {
            let (socket, _) = client::find_pool(&target)?;
            let stopped: api::Evacuation =
                socket.call("POST", "/v1/devices/cancel", None::<&()>)?;
            println!(
                "stopped emptying member {} ({}) after {} of {} blocks; it takes new blocks again",
                stopped.member, stopped.path, stopped.blocks_moved, stopped.blocks_total
            );
            Ok(())
        }
        DeviceCmd::Resize {
            target,
            device,
            size,
            rate,
            background,
        } => {
            let (socket, _) = client::find_pool(&target)?;
            let request = DeviceResize {
                device: member_arg(&device),
                size: Some(size),
                rate: rate.unwrap_or(0),
            };
            let resized: Resized = socket.call("POST", "/v1/devices/resize", Some(&request))?;
            match &resized.evacuation {
                None => {
                    println!(
                        "member {} ({}) now uses {}",
                        resized.member,
                        resized.path,
                        human(resized.size_bytes)
                    );
                    Ok(())
                }
                Some(evacuation) => {
                    println!(
                        "shrinking member {} ({}) to {}: moving what lies past the new end",
                        resized.member,
                        resized.path,
                        human(evacuation.target_size.unwrap_or(0))
                    );
                    follow(&socket, background)
                }
            }
        }
    }
}

/// A pool served by the standalone process is mounted with the devices given on the command
/// line, so the operator must give the new one from now on (aegisd's config likewise).
fn remind_to_list(socket: &Endpoint, path: &str) {
    println!(
        "give {path} with the pool's other members when you mount it from now on{}",
        if socket.socket.ends_with("aegisd.sock") {
            " (add it to the pool's devices in aegis.toml)"
        } else {
            ""
        }
    );
}

/// Prints the emptying's progress until it ends (unless `background`).
fn follow(socket: &Endpoint, background: bool) -> anyhow::Result<()> {
    if background {
        println!("running in the background: `aegis device status` shows how far it is");
        return Ok(());
    }
    let interactive = std::io::stdout().is_terminal();
    loop {
        let devices: Devices = socket.get("/v1/devices")?;
        let Some(evacuation) = devices.evacuation else {
            bail!("the removal is no longer reported (was the pool unmounted?)");
        };
        if !evacuation.running {
            if interactive {
                println!();
            }
            if let Some(error) = &evacuation.error {
                bail!(
                    "moving blocks off member {} stopped: {error} (fix the cause and run the command again: what moved stays moved)",
                    evacuation.member
                );
            }
            if evacuation.finished {
                let done = match evacuation.target_size {
                    Some(size) if evacuation.action == "shrink" => {
                        format!("shrank to {}", human(size))
                    }
                    _ => "left the pool".to_owned(),
                };
                println!(
                    "member {} ({}) {done}: {} blocks ({}) moved in {:.1} s",
                    evacuation.member,
                    evacuation.path,
                    evacuation.blocks_moved,
                    human(evacuation.bytes_moved),
                    evacuation.elapsed_ms as f64 / 1000.0
                );
            } else {
                println!(
                    "emptying member {} stopped after {} of {} blocks",
                    evacuation.member, evacuation.blocks_moved, evacuation.blocks_total
                );
            }
            return Ok(());
        }
        if interactive {
            print!("\r{}   ", progress_line(&evacuation));
            std::io::Write::flush(&mut std::io::stdout())?;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn progress_line(evacuation: &api::Evacuation) -> String {
    #[allow(clippy::cast_precision_loss)]
    let percent = if evacuation.blocks_total == 0 {
        0.0
    } else {
        evacuation.blocks_moved as f64 * 100.0 / evacuation.blocks_total as f64
    };
    format!(
        "{percent:5.1}%  {} of {} blocks  {} moved",
        evacuation.blocks_moved,
        evacuation.blocks_total,
        human(evacuation.bytes_moved)
    )
}

/// The health column: `ok`, `FAILING`, `n/a` (no smartctl, or no SMART data), `-` (an image
/// file or a missing member: not queried).
fn health_cell(health: Option<&api::SmartHealth>) -> &'static str {
    health.map_or("-", api::SmartHealth::verdict)
}

fn print_devices(devices: &Devices) {
    println!(
        "{:>3}  {:<4}  {:<8}  {:>10}  {:>10}  {:>6} {:>6} {:>6}  {:<7}  path",
        "#", "tier", "state", "size", "used", "read", "write", "cksum", "health"
    );
    for m in &devices.members {
        println!(
            "{:>3}  {:<4}  {:<8}  {:>10}  {:>10}  {:>6} {:>6} {:>6}  {:<7}  {}{}",
            m.index,
            m.tier,
            m.state,
            human(m.size_bytes),
            human(m.used_bytes),
            m.read_errors,
            m.write_errors,
            m.checksum_errors,
            health_cell(m.health.as_ref()),
            if m.path.is_empty() { "-" } else { &m.path },
            if m.metadata_copy {
                "  (metadata copy)"
            } else {
                ""
            }
        );
    }
    print_health_notes(devices);
    if let Some(evacuation) = &devices.evacuation {
        let what = if evacuation.running {
            "running"
        } else if evacuation.finished {
            "finished"
        } else {
            "stopped"
        };
        println!(
            "{} {what}, member {} ({}): {}",
            evacuation.action,
            evacuation.member,
            evacuation.path,
            progress_line(evacuation)
        );
        if let Some(error) = &evacuation.error {
            println!("  failed: {error}");
        }
    }
    if !devices.unavailable_files.is_empty() {
        println!(
            "DEGRADED: these files have data only missing members hold (reads of it fail until they are back):"
        );
        for path in &devices.unavailable_files {
            println!("  {path}");
        }
    }
}

/// A line per disk whose SMART self-assessment failed, with its figures; why disks have no
/// SMART data (once, if smartctl is missing).
fn print_health_notes(devices: &Devices) {
    let mut not_installed = false;
    for m in &devices.members {
        let Some(health) = &m.health else { continue };
        if health.failing() {
            println!(
                "FAILING: member {} ({}) fails its SMART health check: {}; replace it (`aegis device replace`)",
                m.index,
                m.path,
                health.details()
            );
        } else if health.message.as_deref() == Some(appliance::smart::NOT_INSTALLED) {
            not_installed = true;
        } else if !health.available {
            println!(
                "member {} ({}): no SMART data: {}",
                m.index,
                m.path,
                health.message.as_deref().unwrap_or("the device gave none")
            );
        }
    }
    if not_installed {
        println!(
            "health: {} (SMART status of disks is not shown)",
            appliance::smart::NOT_INSTALLED
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_column_names_each_case() {
        assert_eq!(health_cell(None), "-");
        let ok = api::SmartHealth {
            available: true,
            passed: Some(true),
            ..api::SmartHealth::default()
        };
        assert_eq!(health_cell(Some(&ok)), "ok");
        let failing = api::SmartHealth {
            passed: Some(false),
            ..ok.clone()
        };
        assert_eq!(health_cell(Some(&failing)), "FAILING");
        let missing = api::SmartHealth::unavailable(appliance::smart::NOT_INSTALLED);
        assert_eq!(health_cell(Some(&missing)), "n/a");
    }
}
