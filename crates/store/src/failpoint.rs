//! Named crash points for tests, in the manner of TiKV's failpoints but
//! able to kill the whole process, which is what a crash test needs.
//! `LIFEBOAT_FAILPOINTS="pack-sealed=abort,index-commit=error"`; a name may
//! carry a count (`pack-sealed=abort@3` fires on the third hit);
//! `sleepMS` pauses the thread (`snapshot-commit=sleep3000`), which is
//! how a test holds a run open at a chosen point to race another one;
//! `panic` panics once (at the given hit).
//! Without the variable every hit is one relaxed atomic load.

use crate::error::{Result, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

struct Point {
    action: String,
    at: u64,
    hits: AtomicU64,
}

fn points() -> &'static HashMap<String, Point> {
    static P: OnceLock<HashMap<String, Point>> = OnceLock::new();
    P.get_or_init(|| {
        let mut m = HashMap::new();
        if let Ok(spec) = std::env::var("LIFEBOAT_FAILPOINTS") {
            for item in spec.split(',').filter(|s| !s.is_empty()) {
                if let Some((name, action)) = item.split_once('=') {
                    let (action, at) = match action.split_once('@') {
                        Some((a, n)) => (a.to_string(), n.parse().unwrap_or(1)),
                        None => (action.to_string(), 1),
                    };
                    m.insert(name.to_string(), Point { action, at, hits: AtomicU64::new(0) });
                }
            }
        }
        m
    })
}

/// Fires the named failpoint if configured: `abort` kills the process on
/// the spot (like SIGKILL, nothing flushed), `error` returns an IO error.
pub fn hit(name: &str) -> Result<()> {
    let pts = points();
    if pts.is_empty() {
        return Ok(());
    }
    if let Some(p) = pts.get(name) {
        let n = p.hits.fetch_add(1, Ordering::SeqCst) + 1;
        // A panic fires once, at the given hit: the daemon's tests check
        // that the job fails and the next one runs.
        if p.action == "panic" && n == p.at {
            panic!("failpoint {name} fired");
        }
        if n >= p.at {
            match p.action.as_str() {
                "abort" => unsafe { libc::_exit(137) },
                a if a.starts_with("sleep") => {
                    let ms = a["sleep".len()..].parse().unwrap_or(1000);
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                "error" => return Err(StoreError::io("failpoint", name, std::io::Error::other(format!("failpoint {name} fired")))),
                _ => {}
            }
        }
    }
    Ok(())
}
