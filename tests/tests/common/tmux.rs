//! Driving a terminal program in tmux: its own tmux server (socket) per
//! session, keys in with send-keys, the screen out with capture-pane.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `program args...` in a detached 120x45 session. When the
    /// program ends, the pane says so and stays, so a crash is visible.
    pub fn start(program: &Path, args: &[String]) -> Tmux {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let socket = format!("lifeboat-test-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let quoted: Vec<String> = std::iter::once(program.display().to_string()).chain(args.iter().cloned()).map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
        let script = format!("{}; echo \"[console exited with status $?]\"; sleep 3600", quoted.join(" "));
        let st = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "120", "-y", "45"])
            .arg("env")
            .arg("TERM=xterm-256color")
            .args(["sh", "-c", &script])
            .status()
            .expect("run tmux (scripts/setup.sh installs it)");
        assert!(st.success(), "tmux new-session failed");
        Tmux { socket }
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// Sends tmux key names (`Enter`, `Tab`, `C-u`, `Down`, ...).
    pub fn keys(&self, keys: &[&str]) {
        for k in keys {
            let st = self.tmux().args(["send-keys", "-t", "t", k]).status().unwrap();
            assert!(st.success(), "tmux send-keys {k} failed");
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    /// Types text literally.
    pub fn type_text(&self, text: &str) {
        let st = self.tmux().args(["send-keys", "-t", "t", "-l", "--", text]).status().unwrap();
        assert!(st.success(), "tmux send-keys -l failed");
        std::thread::sleep(Duration::from_millis(60));
    }

    /// Clears the focused field and types `text`.
    pub fn replace_field(&self, text: &str) {
        self.keys(&["C-u"]);
        self.type_text(text);
    }

    pub fn screen(&self) -> String {
        let out = self.tmux().args(["capture-pane", "-p", "-t", "t"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen as one line, runs of white space (line ends included)
    /// made one space: a message wrapped at the screen edge still reads
    /// as the sentence it is.
    pub fn flat_screen(&self) -> String {
        flatten(&self.screen())
    }

    /// Waits until the (flattened) screen shows `text`; returns it.
    #[track_caller]
    pub fn wait_for(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let text = flatten(text);
        loop {
            let s = self.screen();
            if flatten(&s).contains(&text) {
                return flatten(&s);
            }
            if Instant::now() > deadline {
                panic!("the screen did not show {text:?} within {timeout:?}:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn flatten(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}
