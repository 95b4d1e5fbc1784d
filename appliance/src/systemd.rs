//! The systemd service protocol for `lifeboat serve` (Type=notify): tell
//! the manager when the API is up, and ping the watchdog while the actor
//! system answers. Outside systemd (no NOTIFY_SOCKET) every call does
//! nothing.

use sd_notify::NotifyState;
use std::time::Duration;

/// READY=1: call once the API listens, so `systemctl start` returns only
/// when clients can connect.
pub fn notify_ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// WATCHDOG=1: the daemon is alive. Send it from a place that proves the
/// actor system works (e.g. after an actor answered), at least every
/// `watchdog_interval`.
pub fn notify_watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half of WatchdogSec=, or None when the
/// manager set no watchdog for this process. Like sd_watchdog_enabled(3),
/// a missing WATCHDOG_PID means this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

fn send(states: &[NotifyState]) {
    // A manager that went away must not stop the daemon; say so in the log.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("cannot notify systemd ({}): {e}", std::env::var("NOTIFY_SOCKET").unwrap_or_default());
    }
}
