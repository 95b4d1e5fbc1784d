//! Logging setup: `tracing` events as JSON lines when the output goes to
//! the journal (the appliance's service) or when asked, as readable lines
//! on a terminal. `LIFEBOAT_LOG` (an EnvFilter, e.g. `info` or
//! `lifeboat_actors=debug`) overrides the default level.
//!
//! Secrets are kept out by construction, not filtered here: settings types
//! that hold passwords mask them in `Debug`, and tokens are never passed
//! to tracing macros.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON when stderr is the journal (JOURNAL_STREAM), human otherwise
    #[default]
    Auto,
    /// Readable lines
    Human,
    /// One JSON object per event
    Json,
}

/// Installs the global subscriber writing to stderr. `default_filter`
/// applies when LIFEBOAT_LOG is unset: "info" for the daemon, "error" for
/// CLI commands whose output is their own.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_env("LIFEBOAT_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => stderr_is_journal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        // current_span and span_list carry the job/actor spans' fields.
        builder.json().with_current_span(true).with_span_list(false).init();
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
}

/// systemd sets JOURNAL_STREAM=<dev>:<inode> of the stream it connected to
/// stdout/stderr; it counts only if stderr is still that stream (not
/// redirected by a shell started from the service).
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = value.split_once(':') else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat only fills st; fd 2 may be closed, then it fails.
    if unsafe { libc::fstat(2, st.as_mut_ptr()) } != 0 {
        return false;
    }
    let st = unsafe { st.assume_init() };
    st.st_dev == dev && st.st_ino == ino
}
