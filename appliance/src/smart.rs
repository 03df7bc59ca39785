//! SMART health of the members that are real disks, read with `smartctl --json` from
//! smartmontools when it is installed: shown by `GET /v1/devices` and `aegis device status`,
//! never required. Image files are not queried. Each disk's answer is kept for
//! [`CACHE_FOR`] (a query may spin a sleeping disk up and takes a while), a query that does
//! not end within [`QUERY_TIMEOUT`] is abandoned, and no lock other than that disk's own cache
//! slot is held while `smartctl` runs.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long a disk's SMART answer is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(10 * 60);
/// How long `smartctl` may take before it is killed.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The message when `smartctl` is not in `PATH`.
pub const NOT_INSTALLED: &str = "smartctl not installed (apt install smartmontools)";

/// `smartctl`'s exit status bits (see "EXIT STATUS" in smartctl(8)).
const EXIT_COMMAND_LINE: u32 = 1 << 0;
const EXIT_OPEN_FAILED: u32 = 1 << 1;
const EXIT_SMART_COMMAND_FAILED: u32 = 1 << 2;
const EXIT_DISK_FAILING: u32 = 1 << 3;
const EXIT_PREFAIL_NOW: u32 = 1 << 4;
const EXIT_PREFAIL_PAST: u32 = 1 << 5;

/// The ATA attribute counting reallocated sectors (`Reallocated_Sector_Ct`).
const ATA_REALLOCATED_SECTORS: u32 = 5;

/// A member disk's SMART health, as far as `smartctl` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmartHealth {
    /// `smartctl` ran and the device gave SMART data.
    pub available: bool,
    /// The overall health self-assessment passed (`false`: the disk says it is failing).
    pub passed: Option<bool>,
    pub temperature_c: Option<i64>,
    pub power_on_hours: Option<u64>,
    /// ATA attribute 5 (raw value).
    pub reallocated_sectors: Option<u64>,
    /// NVMe media and data integrity errors.
    pub media_errors: Option<u64>,
    /// NVMe endurance used, in percent (may exceed 100).
    pub percentage_used: Option<u64>,
    /// Why there is no data, or what `smartctl` warned about.
    pub message: Option<String>,
}

impl SmartHealth {
    /// The answer when SMART data cannot be had.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            message: Some(message.into()),
            ..Self::default()
        }
    }

    /// The disk says it is failing.
    pub fn failing(&self) -> bool {
        self.passed == Some(false)
    }

    /// One word for a status column: `ok`, `FAILING`, or `n/a` (no SMART data, or no verdict).
    pub fn verdict(&self) -> &'static str {
        match self.passed {
            Some(true) if self.available => "ok",
            Some(false) => "FAILING",
            _ => "n/a",
        }
    }

    /// The figures it has and its message, for a line of their own.
    pub fn details(&self) -> String {
        let mut parts = Vec::new();
        if let Some(sectors) = self.reallocated_sectors {
            parts.push(format!("{sectors} reallocated sectors"));
        }
        if let Some(errors) = self.media_errors {
            parts.push(format!("{errors} media errors"));
        }
        if let Some(used) = self.percentage_used {
            parts.push(format!("{used}% of its endurance used"));
        }
        if let Some(celsius) = self.temperature_c {
            parts.push(format!("{celsius} °C"));
        }
        if let Some(hours) = self.power_on_hours {
            parts.push(format!("{hours} h powered on"));
        }
        if let Some(message) = &self.message {
            parts.push(message.clone());
        }
        parts.join(", ")
    }
}

/// Why `smartctl` gave no answer to parse.
#[derive(Debug, thiserror::Error)]
pub enum SmartError {
    #[error("{NOT_INSTALLED}")]
    NotInstalled,
    #[error("cannot run {program}: {source}")]
    Run {
        program: String,
        source: std::io::Error,
    },
    #[error("smartctl did not answer within {} s (killed)", .0.as_secs())]
    TimedOut(Duration),
    #[error("smartctl gave no JSON (smartmontools 7.0 or later is needed): {0}")]
    NotJson(serde_json::Error),
}

/// The parts of `smartctl --json -H -A -i` read here; the rest is ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Report {
    smartctl: Smartctl,
    smart_support: Option<Support>,
    smart_status: Option<Status>,
    temperature: Option<Temperature>,
    power_on_time: Option<PowerOnTime>,
    ata_smart_attributes: Option<AtaAttributes>,
    nvme_smart_health_information_log: Option<NvmeHealthLog>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Smartctl {
    exit_status: u32,
    messages: Vec<Message>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Message {
    string: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Support {
    available: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Status {
    passed: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Temperature {
    current: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PowerOnTime {
    hours: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AtaAttributes {
    table: Vec<AtaAttribute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AtaAttribute {
    id: u32,
    raw: RawValue,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawValue {
    value: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NvmeHealthLog {
    media_errors: Option<u64>,
    percentage_used: Option<u64>,
}

/// Reads `smartctl --json` output (whatever its exit status: the JSON carries it).
pub fn parse(json: &[u8]) -> Result<SmartHealth, SmartError> {
    let report: Report = serde_json::from_slice(json).map_err(SmartError::NotJson)?;
    Ok(health_of(report))
}

fn health_of(report: Report) -> SmartHealth {
    let bits = report.smartctl.exit_status;
    let nvme = report.nvme_smart_health_information_log;
    let mut health = SmartHealth {
        available: false,
        passed: report.smart_status.and_then(|status| status.passed),
        temperature_c: report.temperature.and_then(|t| t.current),
        power_on_hours: report.power_on_time.and_then(|t| t.hours),
        reallocated_sectors: report.ata_smart_attributes.and_then(|attributes| {
            attributes
                .table
                .iter()
                .find(|attribute| attribute.id == ATA_REALLOCATED_SECTORS)
                .map(|attribute| attribute.raw.value)
        }),
        media_errors: nvme.as_ref().and_then(|log| log.media_errors),
        percentage_used: nvme.as_ref().and_then(|log| log.percentage_used),
        message: None,
    };
    if bits & EXIT_DISK_FAILING != 0 {
        health.passed = Some(false);
    }
    let has_data = health.passed.is_some()
        || health.temperature_c.is_some()
        || health.power_on_hours.is_some()
        || health.reallocated_sectors.is_some()
        || nvme.is_some();
    let lacks_smart = report.smart_support.and_then(|s| s.available) == Some(false);
    health.available = has_data && !lacks_smart;

    let mut notes: Vec<String> = report
        .smartctl
        .messages
        .into_iter()
        .map(|message| message.string.trim().to_owned())
        .filter(|text| !text.is_empty())
        .collect();
    if bits & EXIT_PREFAIL_NOW != 0 {
        notes.push("attributes that predict failure are at or below their threshold".into());
    } else if bits & EXIT_PREFAIL_PAST != 0 {
        notes.push("attributes were at or below their threshold in the past".into());
    }
    if !health.available && notes.is_empty() {
        notes.push(
            if lacks_smart {
                "the device has no SMART capability"
            } else if bits & EXIT_OPEN_FAILED != 0 {
                "smartctl could not open the device, or it did not identify itself"
            } else if bits & EXIT_COMMAND_LINE != 0 {
                "smartctl could not tell what kind of device it is"
            } else if bits & EXIT_SMART_COMMAND_FAILED != 0 {
                "a SMART command to the device failed"
            } else {
                "the device gave no SMART data"
            }
            .into(),
        );
    }
    if !notes.is_empty() {
        health.message = Some(notes.join("; "));
    }
    health
}

/// The file a program is in, looked up in `search_path` (a `PATH` value).
fn find_program(name: &str, search_path: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(search_path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|file| {
            std::fs::metadata(file)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `command` to its end and returns its standard output; kills it after `timeout`.
fn output_within(mut command: Command, timeout: Duration) -> Result<Vec<u8>, SmartError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let failed = |source| SmartError::Run {
        program: program.clone(),
        source,
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(failed)?;
    // Read on a thread of its own, so a large answer cannot fill the pipe and stall it.
    let reader = child.stdout.take().map(|mut stdout| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            stdout.read_to_end(&mut out).map(|_| out)
        })
    });
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().map_err(failed)?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            // A process stuck on a dying disk may not die at once: reap it elsewhere.
            let _ = std::thread::Builder::new()
                .name("aegis-smart-reap".into())
                .spawn(move || child.wait());
            return Err(SmartError::TimedOut(timeout));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    match reader.map(std::thread::JoinHandle::join) {
        Some(Ok(read)) => read.map_err(failed),
        Some(Err(_)) => Err(failed(std::io::Error::other("reading its output failed"))),
        None => Ok(Vec::new()),
    }
}

/// Asks `smartctl` (looked up in `search_path`) about `device`; any failure is an answer
/// with `available: false` and the reason.
pub fn query_in(device: &Path, search_path: Option<&OsStr>, timeout: Duration) -> SmartHealth {
    let result = find_program("smartctl", search_path)
        .ok_or(SmartError::NotInstalled)
        .and_then(|program| {
            let mut command = Command::new(program);
            command
                .args(["--json=c", "-H", "-A", "-i"])
                .arg(device)
                .env("LC_ALL", "C");
            output_within(command, timeout)
        })
        .and_then(|out| parse(&out));
    result.unwrap_or_else(|err| SmartHealth::unavailable(err.to_string()))
}

/// Asks `smartctl` from this process's `PATH` about `device`.
pub fn query(device: &Path) -> SmartHealth {
    let search_path: Option<OsString> = std::env::var_os("PATH");
    query_in(device, search_path.as_deref(), QUERY_TIMEOUT)
}

/// Whether `path` is a block device (image files and missing paths are not).
pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.file_type().is_block_device())
}

struct Cached {
    at: Instant,
    health: SmartHealth,
}

type Slot = Arc<Mutex<Option<Cached>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// SMART answers by device path, each kept for a while.
pub struct SmartCache {
    ttl: Duration,
    slots: Mutex<HashMap<PathBuf, Slot>>,
}

impl Default for SmartCache {
    fn default() -> Self {
        Self::new(CACHE_FOR)
    }
}

impl SmartCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The health of the member at `path`: `None` unless it is a block device.
    pub fn health(&self, path: &Path) -> Option<SmartHealth> {
        is_block_device(path).then(|| self.get_or_query(path, query))
    }

    /// The cached answer for `path` if it is recent, else `ask`'s (then cached). The map's
    /// lock is held only to find the device's slot; the slot's own lock is held while `ask`
    /// runs, so one device is never queried twice at once and other devices are not held up.
    pub fn get_or_query(&self, path: &Path, ask: impl FnOnce(&Path) -> SmartHealth) -> SmartHealth {
        let slot = Arc::clone(lock(&self.slots).entry(path.to_path_buf()).or_default());
        let mut cached = lock(&slot);
        if let Some(hit) = cached.as_ref().filter(|hit| hit.at.elapsed() < self.ttl) {
            return hit.health.clone();
        }
        let health = ask(path);
        *cached = Some(Cached {
            at: Instant::now(),
            health: health.clone(),
        });
        health
    }

    /// The health of each of `paths` (`None` for image files and missing members), the
    /// disks queried side by side.
    pub fn health_of_all(&self, paths: &[&str]) -> Vec<Option<SmartHealth>> {
        std::thread::scope(|scope| {
            let pending: Vec<_> = paths
                .iter()
                .map(|path| {
                    let path = Path::new(path);
                    if !is_block_device(path) {
                        return Pending::Done(None);
                    }
                    match std::thread::Builder::new()
                        .name("aegis-smart".into())
                        .spawn_scoped(scope, move || self.health(path))
                    {
                        Ok(thread) => Pending::Running(thread),
                        Err(_) => Pending::Done(self.health(path)),
                    }
                })
                .collect();
            pending
                .into_iter()
                .map(|pending| match pending {
                    Pending::Done(health) => health,
                    Pending::Running(thread) => thread.join().unwrap_or_else(|_| {
                        Some(SmartHealth::unavailable("the SMART query failed"))
                    }),
                })
                .collect()
        })
    }
}

enum Pending<'scope> {
    Done(Option<SmartHealth>),
    Running(std::thread::ScopedJoinHandle<'scope, Option<SmartHealth>>),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `smartctl --json=c -H -A -i` of a healthy SATA disk (smartctl 7.3, pretty-printed).
    const ATA_PASSED: &str = r#"{
      "json_format_version": [1, 0],
      "smartctl": {
        "version": [7, 3],
        "svn_revision": "5338",
        "platform_info": "x86_64-linux-6.1.0-18-amd64",
        "build_info": "(local build)",
        "argv": ["smartctl", "--json=c", "-H", "-A", "-i", "/dev/sda"],
        "exit_status": 0
      },
      "local_time": {"time_t": 1709821337, "asctime": "Thu Mar  7 15:22:17 2024 CET"},
      "device": {"name": "/dev/sda", "info_name": "/dev/sda [SAT]", "type": "sat", "protocol": "ATA"},
      "model_family": "Western Digital Red",
      "model_name": "WDC WD40EFRX-68N32N0",
      "serial_number": "WD-WCC7K0HXXXXX",
      "wwn": {"naa": 5, "oui": 5358, "id": 39113264821},
      "firmware_version": "82.00A82",
      "user_capacity": {"blocks": 7814037168, "bytes": 4000787030016},
      "logical_block_size": 512,
      "physical_block_size": 4096,
      "rotation_rate": 5400,
      "form_factor": {"ata_value": 2, "name": "3.5 inches"},
      "trim": {"supported": false},
      "in_smartctl_database": true,
      "ata_version": {"string": "ACS-3 T13/2161-D revision 5", "major_value": 2044, "minor_value": 109},
      "sata_version": {"string": "SATA 3.1", "value": 127},
      "interface_speed": {
        "max": {"sata_value": 14, "string": "6.0 Gb/s", "units_per_second": 60, "bits_per_unit": 100000000},
        "current": {"sata_value": 3, "string": "6.0 Gb/s", "units_per_second": 60, "bits_per_unit": 100000000}
      },
      "smart_support": {"available": true, "enabled": true},
      "smart_status": {"passed": true},
      "ata_smart_attributes": {
        "revision": 16,
        "table": [
          {"id": 1, "name": "Raw_Read_Error_Rate", "value": 200, "worst": 200, "thresh": 51, "when_failed": "",
           "flags": {"value": 47, "string": "POSR-K ", "prefailure": true, "updated_online": true, "performance": true, "error_rate": true, "event_count": false, "auto_keep": true},
           "raw": {"value": 0, "string": "0"}},
          {"id": 5, "name": "Reallocated_Sector_Ct", "value": 200, "worst": 200, "thresh": 140, "when_failed": "",
           "flags": {"value": 51, "string": "PO--CK ", "prefailure": true, "updated_online": true, "performance": false, "error_rate": false, "event_count": true, "auto_keep": true},
           "raw": {"value": 8, "string": "8"}},
          {"id": 9, "name": "Power_On_Hours", "value": 64, "worst": 64, "thresh": 0, "when_failed": "",
           "flags": {"value": 50, "string": "-O--CK ", "prefailure": false, "updated_online": true, "performance": false, "error_rate": false, "event_count": true, "auto_keep": true},
           "raw": {"value": 26489, "string": "26489"}},
          {"id": 194, "name": "Temperature_Celsius", "value": 116, "worst": 103, "thresh": 0, "when_failed": "",
           "flags": {"value": 34, "string": "-O---K ", "prefailure": false, "updated_online": true, "performance": false, "error_rate": false, "event_count": false, "auto_keep": true},
           "raw": {"value": 34, "string": "34"}}
        ]
      },
      "power_on_time": {"hours": 26489},
      "power_cycle_count": 112,
      "temperature": {"current": 34}
    }"#;

    /// An NVMe disk that passes but has logged media errors.
    const NVME_MEDIA_ERRORS: &str = r#"{
      "json_format_version": [1, 0],
      "smartctl": {
        "version": [7, 3],
        "svn_revision": "5338",
        "platform_info": "x86_64-linux-6.1.0-18-amd64",
        "build_info": "(local build)",
        "argv": ["smartctl", "--json=c", "-H", "-A", "-i", "/dev/nvme0n1"],
        "exit_status": 0
      },
      "local_time": {"time_t": 1709821400, "asctime": "Thu Mar  7 15:23:20 2024 CET"},
      "device": {"name": "/dev/nvme0n1", "info_name": "/dev/nvme0n1", "type": "nvme", "protocol": "NVMe"},
      "model_name": "Samsung SSD 970 EVO Plus 1TB",
      "serial_number": "S4EWNX0R000000A",
      "firmware_version": "2B2QEXM7",
      "nvme_pci_vendor": {"id": 5197, "subsystem_id": 5197},
      "nvme_ieee_oui_identifier": 9528,
      "nvme_total_capacity": 1000204886016,
      "nvme_unallocated_capacity": 0,
      "nvme_controller_id": 4,
      "nvme_version": {"string": "1.3", "value": 66304},
      "nvme_number_of_namespaces": 1,
      "nvme_namespaces": [
        {"id": 1,
         "size": {"blocks": 1953525168, "bytes": 1000204886016},
         "capacity": {"blocks": 1953525168, "bytes": 1000204886016},
         "utilization": {"blocks": 1024468560, "bytes": 524527902720},
         "formatted_lba_size": 512,
         "eui64": {"oui": 9528, "ext_id": 383083189251}}
      ],
      "user_capacity": {"blocks": 1953525168, "bytes": 1000204886016},
      "logical_block_size": 512,
      "smart_status": {"passed": true, "nvme": {"value": 0}},
      "nvme_smart_health_information_log": {
        "critical_warning": 0,
        "temperature": 41,
        "available_spare": 100,
        "available_spare_threshold": 10,
        "percentage_used": 7,
        "data_units_read": 52918711,
        "data_units_written": 61235066,
        "host_reads": 690417843,
        "host_writes": 1175029571,
        "controller_busy_time": 1377,
        "power_cycles": 1046,
        "power_on_hours": 9874,
        "unsafe_shutdowns": 71,
        "media_errors": 12,
        "num_err_log_entries": 3050,
        "warning_temp_time": 0,
        "critical_comp_time": 0,
        "temperature_sensors": [41, 48]
      },
      "temperature": {"current": 41},
      "power_cycle_count": 1046,
      "power_on_time": {"hours": 9874}
    }"#;

    /// A SATA disk whose self-assessment failed: exit status 24 (bits 3 and 4), attribute 5
    /// below its threshold now.
    const ATA_FAILING: &str = r#"{
      "json_format_version": [1, 0],
      "smartctl": {
        "version": [7, 3],
        "svn_revision": "5338",
        "platform_info": "x86_64-linux-6.1.0-18-amd64",
        "build_info": "(local build)",
        "argv": ["smartctl", "--json=c", "-H", "-A", "-i", "/dev/sdc"],
        "exit_status": 24
      },
      "local_time": {"time_t": 1709821500, "asctime": "Thu Mar  7 15:25:00 2024 CET"},
      "device": {"name": "/dev/sdc", "info_name": "/dev/sdc [SAT]", "type": "sat", "protocol": "ATA"},
      "model_family": "Hitachi Deskstar 7K1000.D",
      "model_name": "Hitachi HDS721050DLE630",
      "serial_number": "MSK423Y2XXXXXX",
      "firmware_version": "MS1OA650",
      "user_capacity": {"blocks": 976773168, "bytes": 500107862016},
      "logical_block_size": 512,
      "physical_block_size": 4096,
      "rotation_rate": 7200,
      "in_smartctl_database": true,
      "smart_support": {"available": true, "enabled": true},
      "smart_status": {"passed": false},
      "ata_smart_attributes": {
        "revision": 16,
        "table": [
          {"id": 5, "name": "Reallocated_Sector_Ct", "value": 1, "worst": 1, "thresh": 5, "when_failed": "now",
           "flags": {"value": 51, "string": "PO--CK ", "prefailure": true, "updated_online": true, "performance": false, "error_rate": false, "event_count": true, "auto_keep": true},
           "raw": {"value": 1975, "string": "1975"}},
          {"id": 9, "name": "Power_On_Hours", "value": 91, "worst": 91, "thresh": 0, "when_failed": "",
           "flags": {"value": 18, "string": "-O--C- ", "prefailure": false, "updated_online": true, "performance": false, "error_rate": false, "event_count": true, "auto_keep": false},
           "raw": {"value": 65592, "string": "65592"}},
          {"id": 194, "name": "Temperature_Celsius", "value": 240, "worst": 240, "thresh": 0, "when_failed": "",
           "flags": {"value": 2, "string": "-O---- ", "prefailure": false, "updated_online": true, "performance": false, "error_rate": false, "event_count": false, "auto_keep": false},
           "raw": {"value": 167504969753, "string": "25 (Min/Max 19/39)"}}
        ]
      },
      "power_on_time": {"hours": 65592},
      "power_cycle_count": 86,
      "temperature": {"current": 25}
    }"#;

    /// A device without SMART: the mandatory SMART command fails, exit status 4 (bit 2).
    const NO_SMART: &str = r#"{
      "json_format_version": [1, 0],
      "smartctl": {
        "version": [7, 3],
        "svn_revision": "5338",
        "platform_info": "x86_64-linux-6.1.0-18-amd64",
        "build_info": "(local build)",
        "argv": ["smartctl", "--json=c", "-H", "-A", "-i", "/dev/sdd"],
        "messages": [
          {"string": "A mandatory SMART command failed: exiting. To continue, add one or more '-T permissive' options.", "severity": "error"}
        ],
        "exit_status": 4
      },
      "local_time": {"time_t": 1709821600, "asctime": "Thu Mar  7 15:26:40 2024 CET"},
      "device": {"name": "/dev/sdd", "info_name": "/dev/sdd [SAT]", "type": "sat", "protocol": "ATA"},
      "model_name": "SATA SSD DOM 16GB",
      "serial_number": "AA000000000000001234",
      "firmware_version": "S1015A0",
      "user_capacity": {"blocks": 31277232, "bytes": 16013942784},
      "logical_block_size": 512,
      "physical_block_size": 512,
      "rotation_rate": 0,
      "in_smartctl_database": false,
      "smart_support": {"available": false}
    }"#;

    /// What smartctl 7.3 answers for a loop device (taken from a real run).
    const LOOP_DEVICE: &str = r#"{"json_format_version":[1,0],"smartctl":{"version":[7,3],"svn_revision":"5338","platform_info":"x86_64-linux-6.18.44-fc-v1300","build_info":"(local build)","argv":["smartctl","--json=c","-H","-A","-i","/dev/loop1"],"messages":[{"string":"/dev/loop1: Unable to detect device type","severity":"error"}],"exit_status":1},"local_time":{"time_t":1796643999,"asctime":"Mon Dec  7 11:46:39 2026 UTC"}}"#;

    #[test]
    fn a_healthy_ata_disk_passes_with_its_figures() {
        let health = parse(ATA_PASSED.as_bytes()).unwrap();
        assert_eq!(
            health,
            SmartHealth {
                available: true,
                passed: Some(true),
                temperature_c: Some(34),
                power_on_hours: Some(26489),
                reallocated_sectors: Some(8),
                media_errors: None,
                percentage_used: None,
                message: None,
            }
        );
        assert_eq!(health.verdict(), "ok");
        assert!(!health.failing());
    }

    #[test]
    fn an_nvme_disk_reports_media_errors_and_wear() {
        let health = parse(NVME_MEDIA_ERRORS.as_bytes()).unwrap();
        assert_eq!(
            health,
            SmartHealth {
                available: true,
                passed: Some(true),
                temperature_c: Some(41),
                power_on_hours: Some(9874),
                reallocated_sectors: None,
                media_errors: Some(12),
                percentage_used: Some(7),
                message: None,
            }
        );
        assert_eq!(health.verdict(), "ok");
        assert!(health.details().contains("12 media errors"), "{health:?}");
    }

    #[test]
    fn a_failing_disk_is_failing_with_its_reason() {
        let health = parse(ATA_FAILING.as_bytes()).unwrap();
        assert!(health.available);
        assert_eq!(health.passed, Some(false));
        assert!(health.failing());
        assert_eq!(health.verdict(), "FAILING");
        assert_eq!(health.reallocated_sectors, Some(1975));
        assert_eq!(health.temperature_c, Some(25));
        assert_eq!(health.power_on_hours, Some(65592));
        let message = health.message.clone().unwrap();
        assert!(message.contains("at or below their threshold"), "{message}");
        let details = health.details();
        assert!(details.starts_with("1975 reallocated sectors"), "{details}");
    }

    #[test]
    fn exit_status_bit_3_alone_means_failing() {
        let health = parse(
            br#"{"smartctl":{"exit_status":8},"smart_support":{"available":true},"temperature":{"current":30}}"#,
        )
        .unwrap();
        assert_eq!(health.passed, Some(false));
        assert_eq!(health.verdict(), "FAILING");
    }

    #[test]
    fn a_device_without_smart_is_unavailable_with_smartctls_message() {
        let health = parse(NO_SMART.as_bytes()).unwrap();
        assert!(!health.available);
        assert_eq!(health.passed, None);
        assert_eq!(health.verdict(), "n/a");
        assert!(!health.failing());
        let message = health.message.unwrap();
        assert!(
            message.contains("A mandatory SMART command failed"),
            "{message}"
        );
    }

    #[test]
    fn the_exit_status_explains_an_answer_without_messages() {
        let health = parse(br#"{"smartctl":{"exit_status":2}}"#).unwrap();
        assert!(!health.available);
        assert_eq!(
            health.message.as_deref(),
            Some("smartctl could not open the device, or it did not identify itself")
        );
        let health =
            parse(br#"{"smartctl":{"exit_status":4},"smart_support":{"available":false}}"#)
                .unwrap();
        assert_eq!(
            health.message.as_deref(),
            Some("the device has no SMART capability")
        );
    }

    #[test]
    fn a_loop_device_gives_no_smart_data() {
        let health = parse(LOOP_DEVICE.as_bytes()).unwrap();
        assert!(!health.available);
        assert_eq!(health.verdict(), "n/a");
        assert_eq!(
            health.message.as_deref(),
            Some("/dev/loop1: Unable to detect device type")
        );
    }

    #[test]
    fn output_that_is_not_json_is_an_error() {
        let err = parse(b"=======> UNRECOGNIZED OPTION: json=c").unwrap_err();
        assert!(matches!(err, SmartError::NotJson(_)), "{err}");
    }

    #[test]
    fn without_smartctl_in_path_it_says_it_is_not_installed() {
        let empty = tempfile::tempdir().unwrap();
        for path in [None, Some(empty.path().as_os_str()), Some(OsStr::new(""))] {
            let health = query_in(Path::new("/dev/sda"), path, QUERY_TIMEOUT);
            assert_eq!(health, SmartHealth::unavailable(NOT_INSTALLED), "{path:?}");
            assert_eq!(health.verdict(), "n/a");
        }
    }

    /// A stand-in `smartctl` in a directory of its own: it records its arguments, then
    /// prints `answer`. `install` writes the executable in a child process, so no process
    /// another test forks meanwhile can hold it open for writing (exec would fail, ETXTBSY).
    fn fake_smartctl(dir: &Path, answer: &str) {
        std::fs::write(dir.join("answer.json"), answer).unwrap();
        let source = dir.join("smartctl.sh");
        std::fs::write(
            &source,
            format!(
                "#!/bin/sh\nprintf '%s ' \"$@\" > '{dir}/args'\ncat '{dir}/answer.json'\nexit 24\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let installed = Command::new("install")
            .args(["-m", "755"])
            .arg(&source)
            .arg(dir.join("smartctl"))
            .status()
            .unwrap();
        assert!(installed.success());
    }

    #[test]
    fn smartctl_is_run_with_json_health_attributes_and_info() {
        let dir = tempfile::tempdir().unwrap();
        fake_smartctl(dir.path(), ATA_FAILING);
        let search_path =
            std::env::join_paths(["/nonexistent", dir.path().to_str().unwrap()]).unwrap();
        let health = query_in(Path::new("/dev/sdc"), Some(&search_path), QUERY_TIMEOUT);
        assert_eq!(health, parse(ATA_FAILING.as_bytes()).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("args")).unwrap(),
            "--json=c -H -A -i /dev/sdc "
        );
    }

    #[test]
    fn a_query_that_hangs_is_killed_after_the_timeout() {
        let started = Instant::now();
        let mut command = Command::new("sleep");
        command.arg("30");
        let err = output_within(command, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, SmartError::TimedOut(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn answers_are_cached_until_they_expire() {
        let calls = std::cell::Cell::new(0);
        let ask = |_: &Path| {
            calls.set(calls.get() + 1);
            SmartHealth::unavailable(format!("call {}", calls.get()))
        };
        let cache = SmartCache::new(CACHE_FOR);
        let first = cache.get_or_query(Path::new("/dev/sdx"), ask);
        let second = cache.get_or_query(Path::new("/dev/sdx"), ask);
        assert_eq!(first, second);
        assert_eq!(calls.get(), 1);
        cache.get_or_query(Path::new("/dev/sdy"), ask);
        assert_eq!(calls.get(), 2, "another device is asked itself");

        let expired = SmartCache::new(Duration::ZERO);
        expired.get_or_query(Path::new("/dev/sdx"), ask);
        let again = expired.get_or_query(Path::new("/dev/sdx"), ask);
        assert_eq!(calls.get(), 4);
        assert_eq!(again.message.as_deref(), Some("call 4"));
    }

    #[test]
    fn image_files_and_missing_members_are_not_queried() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("pool.img");
        std::fs::write(&image, b"not a disk").unwrap();
        let cache = SmartCache::default();
        assert_eq!(cache.health(&image), None);
        let image = image.to_str().unwrap();
        assert_eq!(cache.health_of_all(&[image, ""]), vec![None, None]);
        assert!(lock(&cache.slots).is_empty());
    }
}
