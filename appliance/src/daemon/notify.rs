//! Talking to systemd through `$NOTIFY_SOCKET` (Type=notify): READY and STATUS once the pools
//! are served, WATCHDOG pings, STOPPING at shutdown. Outside systemd every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}

/// The daemon serves: READY=1 with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new status line (`systemctl status aegisd` shows it).
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// The daemon is alive (WATCHDOG=1).
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The daemon is shutting down (STOPPING=1).
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("unmounting pools"),
    ]);
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}
