//! Alerts: a condition (a failed job, checksum errors, a fast tier full for long, a missed
//! schedule, a pool that cannot be mounted) is announced once when it starts and once more
//! when it clears, to an HTTP webhook (JSON POST) and/or a command (text on stdin). Sending
//! happens on a thread of its own so a slow notifier never holds up the daemon.
//!
//! The alerts firing are kept in the state database as well as in memory: after a restart an
//! alert whose condition still holds is not announced again, and one whose condition cleared
//! while the daemon was down gets its resolved message at the first check that sees it clear.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::AlertSettings;
use super::state::{StateDb, StateError};
use super::Clock;

/// How long a webhook may take to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// What notifiers receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// What the alert is about, e.g. `job-failed:scrub:tank`, `checksum-errors:tank`.
    pub alert: String,
    /// `firing` or `resolved`.
    pub state: String,
    pub pool: Option<String>,
    pub message: String,
    /// Seconds since the epoch.
    pub time: i64,
    pub host: String,
}

impl Alert {
    /// The text a command receives on stdin (a mail body: subject line first).
    pub fn text(&self) -> String {
        let subject = match self.state.as_str() {
            "firing" => "ALERT",
            _ => "RESOLVED",
        };
        format!(
            "Subject: [AegisFS {subject}] {} on {}\n\n{}\n\nalert: {}\npool: {}\ntime: {}\n",
            self.alert,
            self.host,
            self.message,
            self.alert,
            self.pool.as_deref().unwrap_or("-"),
            chrono::DateTime::from_timestamp(self.time, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        )
    }
}

/// The alerts that are firing, and where to send news of them.
pub struct Alerts {
    settings: AlertSettings,
    state: Arc<StateDb>,
    clock: Arc<dyn Clock>,
    firing: Mutex<BTreeMap<String, Alert>>,
}

impl Alerts {
    /// Picks up the alerts the state database records as firing (announced before a
    /// restart); they are not announced again.
    pub fn restore(
        settings: AlertSettings,
        state: Arc<StateDb>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StateError> {
        let firing = state
            .firing_alerts()?
            .into_iter()
            .map(|alert| (alert.alert.clone(), alert))
            .collect();
        Ok(Self {
            settings,
            state,
            clock,
            firing: Mutex::new(firing),
        })
    }

    /// Announces `key` unless it is already firing (since before a restart too).
    pub fn raise(&self, key: &str, pool: Option<&str>, message: &str) {
        let mut firing = self.firing.lock().unwrap_or_else(PoisonError::into_inner);
        if firing.contains_key(key) {
            return;
        }
        let alert = Alert {
            alert: key.to_owned(),
            state: "firing".into(),
            pool: pool.map(str::to_owned),
            message: message.to_owned(),
            time: self.clock.now().timestamp(),
            host: hostname(),
        };
        // Recorded under the lock, so the database lists what memory does.
        if let Err(err) = self.state.alert_raised(&alert) {
            tracing::error!(alert = %key, error = %err, "cannot record a firing alert");
        }
        firing.insert(key.to_owned(), alert.clone());
        drop(firing);
        self.send(alert);
    }

    /// Announces that `key` cleared, if it was firing (since before a restart too).
    pub fn clear(&self, key: &str, pool: Option<&str>, message: &str) {
        let mut firing = self.firing.lock().unwrap_or_else(PoisonError::into_inner);
        if firing.remove(key).is_none() {
            return;
        }
        if let Err(err) = self.state.alert_cleared(key) {
            tracing::error!(alert = %key, error = %err, "cannot record a resolved alert");
        }
        drop(firing);
        self.send(Alert {
            alert: key.to_owned(),
            state: "resolved".into(),
            pool: pool.map(str::to_owned),
            message: message.to_owned(),
            time: self.clock.now().timestamp(),
            host: hostname(),
        });
    }

    /// The alerts firing now, by key.
    pub fn firing(&self) -> Vec<Alert> {
        self.firing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn send(&self, alert: Alert) {
        tracing::warn!(alert = %alert.alert, state = %alert.state, "{}", alert.message);
        let (webhook, command) = (self.settings.webhook.clone(), self.settings.command.clone());
        if webhook.is_none() && command.is_none() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("aegis-alert".into())
            .spawn(move || {
                if let Some(url) = webhook {
                    if let Err(err) = post(&url, &alert) {
                        tracing::error!(url = %url, error = %err, "alert webhook failed");
                    }
                }
                if let Some(command) = command {
                    if let Err(err) = run_command(&command, &alert.text()) {
                        tracing::error!(command = %command, error = %err, "alert command failed");
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::error!(error = %err, "cannot start the alert thread");
        }
    }
}

fn post(url: &str, alert: &Alert) -> Result<(), String> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(WEBHOOK_TIMEOUT))
        .build()
        .new_agent();
    agent
        .post(url)
        .send_json(alert)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn run_command(command: &str, text: &str) -> Result<(), String> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("cannot write the alert: {e}"))?;
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("exited with {status}"))
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for_lines(path: &std::path::Path, lines: usize) -> String {
        for _ in 0..100 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.matches("Subject:").count() >= lines {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn alerts(state: &Arc<StateDb>, out: &std::path::Path) -> Alerts {
        let settings = AlertSettings {
            command: Some(format!("cat >> {}", out.display())),
            ..AlertSettings::default()
        };
        Alerts::restore(
            settings,
            Arc::clone(state),
            Arc::new(super::super::SystemClock),
        )
        .unwrap()
    }

    #[test]
    fn each_alert_is_sent_once_and_once_more_when_it_clears() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("alerts.txt");
        let state = Arc::new(StateDb::open_in_memory().unwrap());
        let alerts = alerts(&state, &out);
        alerts.raise("checksum-errors:tank", Some("tank"), "3 checksum errors");
        alerts.raise("checksum-errors:tank", Some("tank"), "4 checksum errors");
        assert_eq!(alerts.firing().len(), 1);
        let text = wait_for_lines(&out, 1);
        assert!(
            text.contains("[AegisFS ALERT] checksum-errors:tank"),
            "{text}"
        );
        alerts.clear("checksum-errors:tank", Some("tank"), "errors cleared");
        alerts.clear("checksum-errors:tank", Some("tank"), "errors cleared");
        let text = wait_for_lines(&out, 2);
        assert_eq!(text.matches("Subject:").count(), 2, "{text}");
        assert!(text.contains("[AegisFS RESOLVED]"), "{text}");
        assert!(!text.contains("4 checksum errors"), "{text}");
        assert!(alerts.firing().is_empty());
        assert!(state.firing_alerts().unwrap().is_empty());
    }

    #[test]
    fn alerts_restored_from_the_database_are_not_sent_again_but_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("alerts.txt");
        let state = Arc::new(StateDb::open(&dir.path().join("aegis.db")).unwrap());
        let before = alerts(&state, &out);
        before.raise("job-failed:scrub:tank", Some("tank"), "scrub:tank failed");
        before.raise("missed:scrub:tank", Some("tank"), "missed a run");
        assert_eq!(wait_for_lines(&out, 2).matches("Subject:").count(), 2);
        drop(before);

        let after = alerts(&state, &out);
        assert_eq!(after.firing(), state.firing_alerts().unwrap());
        assert_eq!(after.firing().len(), 2);
        after.raise(
            "job-failed:scrub:tank",
            Some("tank"),
            "scrub:tank failed again",
        );
        after.clear("missed:scrub:tank", Some("tank"), "on schedule again");
        let text = wait_for_lines(&out, 3);
        std::thread::sleep(Duration::from_millis(200));
        let text = std::fs::read_to_string(&out).unwrap_or(text);
        assert_eq!(text.matches("Subject:").count(), 3, "{text}");
        assert!(!text.contains("failed again"), "{text}");
        assert!(
            text.contains("[AegisFS RESOLVED] missed:scrub:tank"),
            "{text}"
        );
        let left: Vec<String> = state
            .firing_alerts()
            .unwrap()
            .into_iter()
            .map(|a| a.alert)
            .collect();
        assert_eq!(left, ["job-failed:scrub:tank"]);
    }
}
