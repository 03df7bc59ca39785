//! The commit thread: commits the open transaction group when it is due (see
//! [`Filesystem::commit_due`]) and, woken early, as soon as a verb has passed a dirty limit, so
//! that verb's caller does not wait for the commit. The thread holds the filesystem weakly and
//! ends once it is dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::Duration;

use super::Filesystem;

/// How verbs wake the commit thread.
#[derive(Debug, Default)]
pub(super) struct CommitSignal {
    /// A verb asked for a commit since the thread last looked.
    wanted: Mutex<bool>,
    wake: Condvar,
    /// A commit thread runs.
    running: AtomicBool,
}

impl CommitSignal {
    /// Asks the commit thread to commit now; `false` when there is none, so the caller commits
    /// itself.
    pub(super) fn request(&self) -> bool {
        if !self.running.load(Ordering::Acquire) {
            return false;
        }
        *self.wanted.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.notify_one();
        true
    }

    /// Waits until a commit is asked for (`true`) or `tick` has passed.
    fn wait(&self, tick: Duration) -> bool {
        let wanted = self.wanted.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut wanted, _) = self
            .wake
            .wait_timeout_while(wanted, tick, |wanted| !*wanted)
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *wanted)
    }
}

impl Filesystem {
    /// Starts the commit thread (see the module docs); it ticks five times per
    /// `commit_interval`. It stops when the filesystem is dropped.
    pub fn start_committer(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let signal = Arc::clone(&self.commit_signal);
        let tick = (self.config.commit_interval / 5).max(Duration::from_millis(50));
        signal.running.store(true, Ordering::Release);
        std::thread::Builder::new()
            .name("aegis-txg".into())
            .spawn(move || loop {
                let asked = signal.wait(tick);
                let Some(fs) = weak.upgrade() else {
                    signal.running.store(false, Ordering::Release);
                    return;
                };
                if (asked && fs.over_dirty_limit()) || fs.commit_due() {
                    // A failure that made the pool read-only was logged as it did.
                    if let Err(err) = fs.commit() {
                        if !fs.is_read_only() {
                            tracing::error!(error = %err, "periodic commit failed");
                        }
                    }
                }
            })
            .expect("spawning the commit thread")
    }
}
