//! The console's state and what each key does. Drawing is in draw.rs;
//! slow work (listing disks, formatting, applying) is queued as a
//! `Pending` action so the screen says "working" before it starts.

use crate::form::{Field, Form, FormEvent};
use crate::settings::{self, NetworkForm, NetworkMode, NetworkSettings, TimeSettings, DEFAULT_INTERFACES, NETWORK_FILE};
use crate::setup::{DiskChoice, Env, SetupPlan};
use lifeboat_disks::{Disk, FsType};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Network,
    Hostname,
    Time,
    Password,
    Disks,
    Summary,
    Done,
    Status,
    /// The live system's first page: install, or set up and run live.
    Live,
    /// Install to disk (live system only).
    Install,
}

/// The wizard's pages in order.
pub const WIZARD: [Page; 6] = [Page::Network, Page::Hostname, Page::Time, Page::Password, Page::Disks, Page::Summary];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// First boot: pages in order, everything applied at the end.
    Wizard,
    /// From the status screen: each page applies its own settings.
    Settings,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Error,
}

#[derive(Clone, Debug)]
pub enum DiskDialog {
    /// Format `disks[index]`: pick the file system, type the disk's name.
    Format { index: usize, fstype: FsType, typed: String },
    /// Import datastore number `choice` of `disks[index]`.
    Import { index: usize, choice: usize },
}

/// Where "Install to disk" is.
#[derive(Clone, Debug)]
pub enum InstallStage {
    /// Choosing the target disk (`install_row`).
    Pick,
    /// Typing the disk's name to confirm.
    Confirm {
        index: usize,
        typed: String,
    },
    Running {
        disk: PathBuf,
        progress: lifeboat_install::Progress,
    },
    Done(lifeboat_install::Installed),
    Failed(String),
}

enum InstallMsg {
    Progress(lifeboat_install::Progress),
    Finished(Result<lifeboat_install::Installed, String>),
}

#[derive(Clone, Debug)]
pub enum Pending {
    ListDisks,
    ApplyDisk(Box<DiskChoice>),
    ApplyPlan(Box<SetupPlan>),
}

/// What the final page shows.
#[derive(Clone, Debug)]
pub struct DoneInfo {
    pub urls: Vec<String>,
    pub fingerprint: Result<String, String>,
    pub datastore: Option<(String, PathBuf)>,
}

impl Default for DoneInfo {
    fn default() -> Self {
        DoneInfo { urls: Vec::new(), fingerprint: Err("unknown".into()), datastore: None }
    }
}

pub struct App {
    pub env: Env,
    pub mode: Mode,
    pub page: Page,
    pub network: Form,
    pub hostname: Form,
    pub time: Form,
    pub password: Form,
    pub disks: Vec<Disk>,
    pub disk_error: Option<String>,
    /// Selected row: a disk index, or `disks.len()` for "skip".
    pub disk_row: usize,
    pub dialog: Option<DiskDialog>,
    pub choice: Option<DiskChoice>,
    pub message: Option<(Level, String)>,
    pub pending: Option<Pending>,
    pub done: DoneInfo,
    pub quit: bool,
    /// Ctrl-L: repaint the whole screen (kernel messages on a serial
    /// console can overwrite it).
    pub repaint: bool,
    /// Selected row on the live page: 0 install, 1 run live.
    pub live_row: usize,
    pub install: InstallStage,
    /// Selected disk on the install page.
    pub install_row: usize,
    install_rx: Option<std::sync::mpsc::Receiver<InstallMsg>>,
    /// The setup lock, while this console runs the wizard or an install.
    lock: Option<crate::lock::SetupLock>,
    /// Another console that holds the setup lock: this one waits.
    pub busy: Option<crate::lock::Owner>,
    /// Switch to the status screen when another console finishes setup.
    watch_setup: bool,
    tty: String,
    /// The daemon as its API last answered (status screen).
    pub status: crate::status::DaemonStatus,
    fetcher: crate::status::StatusFetcher,
}

const READING_DISKS: &str = "Reading the disks...";
const MODE_OPTIONS: &[&str] = &["DHCP", "Static"];

impl App {
    pub fn new(env: Env, force_wizard: bool) -> Self {
        let root = env.root.clone();
        let net = std::fs::read_to_string(root.join(NETWORK_FILE)).ok().and_then(|t| NetworkSettings::from_network_file(&t));
        let mut network = Form::new(vec![
            Field::choice("Mode", MODE_OPTIONS, "DHCP"),
            Field::text("Interfaces", DEFAULT_INTERFACES),
            Field::text("Address", ""),
            Field::text("Prefix length", "24"),
            Field::text("Gateway", ""),
            Field::text("DNS servers", ""),
        ]);
        if let Some(net) = net {
            network.set("Interfaces", net.interfaces.clone());
            if let NetworkMode::Static(st) = net.mode {
                network.set("Mode", "Static");
                network.set("Address", st.address.to_string());
                network.set("Prefix length", st.prefix.to_string());
                network.set("Gateway", st.gateway.map(|g| g.to_string()).unwrap_or_default());
                network.set("DNS servers", st.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" "));
            }
        }
        let host = std::fs::read_to_string(root.join("etc/hostname")).map(|s| s.trim().to_string()).unwrap_or_default();
        let hostname = Form::new(vec![Field::text("Hostname", if host.is_empty() { "lifeboat".into() } else { host })]);
        let zone = std::fs::read_to_string(root.join("etc/timezone")).map(|s| s.trim().to_string()).unwrap_or_default();
        let ntp = std::fs::read_to_string(root.join(settings::TIMESYNCD_DROPIN)).ok().and_then(|t| t.lines().find_map(|l| l.strip_prefix("NTP=").map(str::to_string))).unwrap_or_default();
        let time = Form::new(vec![Field::text("Time zone", if zone.is_empty() { "UTC".into() } else { zone }), Field::text("NTP servers", ntp)]);
        let password = Form::new(vec![Field::secret("Password"), Field::secret("Repeat password")]);
        let first = force_wizard || !env.setup_done();
        let fetcher = crate::status::StatusFetcher::new(env.daemon.state_dir());
        let first_page = if env.live.is_some() { Page::Live } else { Page::Network };
        let mut app = App {
            env,
            mode: if first { Mode::Wizard } else { Mode::Settings },
            page: if first { first_page } else { Page::Status },
            network,
            hostname,
            time,
            password,
            disks: Vec::new(),
            disk_error: None,
            disk_row: 0,
            dialog: None,
            choice: None,
            message: None,
            pending: None,
            done: DoneInfo::default(),
            quit: false,
            repaint: false,
            live_row: 0,
            install: InstallStage::Pick,
            install_row: 0,
            install_rx: None,
            lock: None,
            busy: None,
            watch_setup: false,
            tty: crate::lock::own_tty(),
            status: crate::status::DaemonStatus::Unknown,
            fetcher,
        };
        app.watch_setup = first && !app.env.setup_done();
        if !first {
            app.refresh_done_info();
        }
        app
    }

    pub fn set_error(&mut self, text: impl Into<String>) {
        self.message = Some((Level::Error, text.into()));
    }

    pub fn set_info(&mut self, text: impl Into<String>) {
        self.message = Some((Level::Info, text.into()));
    }

    /// The wizard's step number (1-based) of the current page.
    pub fn step(&self) -> Option<usize> {
        (self.mode == Mode::Wizard).then(|| WIZARD.iter().position(|p| *p == self.page).map(|i| i + 1)).flatten()
    }

    fn go(&mut self, page: Page) {
        self.page = page;
        if page == Page::Disks || page == Page::Install {
            self.dialog = None;
            self.install = InstallStage::Pick;
            self.set_info(READING_DISKS);
            self.pending = Some(Pending::ListDisks);
        }
    }

    /// Where Esc leads from the first wizard page and the install page.
    fn home(&self) -> Page {
        if self.mode == Mode::Wizard && self.env.live.is_some() {
            Page::Live
        } else {
            Page::Status
        }
    }

    fn next_page(&mut self) {
        match self.mode {
            Mode::Wizard => {
                let i = WIZARD.iter().position(|p| *p == self.page).unwrap_or(0);
                self.go(WIZARD[(i + 1).min(WIZARD.len() - 1)]);
            }
            Mode::Settings => self.go(Page::Status),
        }
    }

    fn prev_page(&mut self) {
        match self.mode {
            Mode::Wizard => {
                let i = WIZARD.iter().position(|p| *p == self.page).unwrap_or(0);
                if i > 0 {
                    self.go(WIZARD[i - 1]);
                } else if self.env.live.is_some() {
                    self.go(Page::Live);
                }
            }
            Mode::Settings => self.go(Page::Status),
        }
    }

    pub fn key(&mut self, key: KeyEvent) {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return;
        }
        if key.code == KeyCode::Char('l') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.repaint = true;
            return;
        }
        // One console at a time runs setup.
        if self.mode == Mode::Wizard && self.lock.is_none() && !self.take_lock("setup") {
            return;
        }
        // A message stays until the next key.
        self.message = None;
        match self.page {
            Page::Network => {
                let ev = self.network.key(key);
                self.form_event(ev, Self::submit_network)
            }
            Page::Hostname => {
                let ev = self.hostname.key(key);
                self.form_event(ev, Self::submit_hostname)
            }
            Page::Time => {
                let ev = self.time.key(key);
                self.form_event(ev, Self::submit_time)
            }
            Page::Password => {
                let ev = self.password.key(key);
                self.form_event(ev, Self::submit_password)
            }
            Page::Disks => self.disks_key(key),
            Page::Summary => match key.code {
                KeyCode::Enter => match self.plan() {
                    Ok(plan) => {
                        self.set_info("Applying the settings...");
                        self.pending = Some(Pending::ApplyPlan(Box::new(plan)));
                    }
                    Err(e) => self.set_error(e),
                },
                KeyCode::Esc => self.prev_page(),
                _ => {}
            },
            Page::Done => {
                if key.code == KeyCode::Enter {
                    self.mode = Mode::Settings;
                    self.go(Page::Status);
                }
            }
            Page::Live => match key.code {
                KeyCode::Up | KeyCode::Down | KeyCode::Tab => self.live_row = 1 - self.live_row.min(1),
                KeyCode::Char('i') => self.go(Page::Install),
                KeyCode::Char('w') => self.go(Page::Network),
                KeyCode::Enter if self.live_row == 0 => self.go(Page::Install),
                KeyCode::Enter => self.go(Page::Network),
                _ => {}
            },
            Page::Install => self.install_key(key),
            Page::Status => match key.code {
                KeyCode::Char('i') if self.env.live.is_some() => self.go(Page::Install),
                KeyCode::Char('n') => self.go(Page::Network),
                KeyCode::Char('h') => self.go(Page::Hostname),
                KeyCode::Char('t') => self.go(Page::Time),
                KeyCode::Char('p') => self.go(Page::Password),
                KeyCode::Char('d') => self.go(Page::Disks),
                KeyCode::Char('r') => {
                    self.refresh_done_info();
                    self.fetcher.refresh();
                }
                KeyCode::Char('q') => self.quit = true,
                _ => {}
            },
        }
    }

    fn form_event(&mut self, ev: FormEvent, submit: fn(&mut Self)) {
        match ev {
            FormEvent::Submit => submit(self),
            FormEvent::Back => self.prev_page(),
            FormEvent::None => {}
        }
    }

    pub fn parse_network(&self) -> Result<NetworkSettings, settings::InvalidSetting> {
        let f = &self.network;
        NetworkSettings::parse(&NetworkForm {
            dhcp: f.value("Mode") == "DHCP",
            interfaces: f.value("Interfaces"),
            address: f.value("Address"),
            prefix: f.value("Prefix length"),
            gateway: f.value("Gateway"),
            dns: f.value("DNS servers"),
        })
    }

    fn parse_time(&self) -> Result<TimeSettings, settings::InvalidSetting> {
        TimeSettings::parse(self.time.value("Time zone"), self.time.value("NTP servers"), &self.env.zoneinfo)
    }

    fn parse_password(&self) -> Result<String, settings::InvalidSetting> {
        settings::parse_password(self.password.value("Password"), self.password.value("Repeat password"))
    }

    /// Applies now in settings mode; moves on in the wizard.
    fn submit_with<T>(&mut self, parsed: Result<T, settings::InvalidSetting>, form: fn(&mut Self) -> &mut Form, apply: fn(&Env, &T) -> anyhow::Result<()>, what: &str) {
        match parsed {
            Err(e) => {
                form(self).focus_on(e.field);
                self.set_error(e.to_string());
            }
            Ok(v) => {
                if self.mode == Mode::Settings {
                    match apply(&self.env, &v) {
                        Ok(()) => {
                            self.go(Page::Status);
                            self.refresh_done_info();
                            self.set_info(format!("{what} saved."));
                        }
                        Err(e) => self.set_error(format!("{e:#}")),
                    }
                } else {
                    self.next_page();
                }
            }
        }
    }

    fn submit_network(&mut self) {
        let parsed = self.parse_network();
        self.submit_with(parsed, |a| &mut a.network, Env::apply_network, "Network settings");
    }

    fn submit_hostname(&mut self) {
        let parsed = settings::parse_hostname(self.hostname.value("Hostname"));
        self.submit_with(parsed, |a| &mut a.hostname, |env, h: &String| env.apply_hostname(h), "Hostname");
    }

    fn submit_time(&mut self) {
        let parsed = self.parse_time();
        self.submit_with(parsed, |a| &mut a.time, Env::apply_time, "Time settings");
    }

    fn submit_password(&mut self) {
        let parsed = self.parse_password();
        if parsed.is_err() {
            self.password.clear_secrets();
            self.password.focus = 0;
        }
        self.submit_with(parsed, |a| &mut a.password, |env, p: &String| env.apply_password(p), "Admin password");
        if self.mode == Mode::Settings && self.page == Page::Status {
            self.password.clear_secrets();
        }
    }

    /// The complete plan from the forms (all validated again).
    pub fn plan(&self) -> Result<SetupPlan, String> {
        Ok(SetupPlan {
            network: self.parse_network().map_err(|e| e.to_string())?,
            hostname: settings::parse_hostname(self.hostname.value("Hostname")).map_err(|e| e.to_string())?,
            time: self.parse_time().map_err(|e| e.to_string())?,
            password: self.parse_password().map_err(|e| e.to_string())?,
            disk: self.choice.clone().unwrap_or(DiskChoice::Skip),
        })
    }

    // -------------------------------------------------------------- disks

    fn disks_key(&mut self, key: KeyEvent) {
        if let Some(dialog) = self.dialog.clone() {
            return self.dialog_key(dialog, key);
        }
        let rows = self.disks.len() + 1;
        match key.code {
            KeyCode::Up => self.disk_row = (self.disk_row + rows - 1) % rows,
            KeyCode::Down | KeyCode::Tab => self.disk_row = (self.disk_row + 1) % rows,
            KeyCode::Char('r') => self.pending = Some(Pending::ListDisks),
            KeyCode::Esc => self.prev_page(),
            KeyCode::Enter if self.disk_row >= self.disks.len() => {
                self.choice = Some(DiskChoice::Skip);
                self.next_page();
            }
            KeyCode::Enter => {
                let d = &self.disks[self.disk_row];
                if !d.datastores().is_empty() && d.system.is_none() {
                    self.dialog = Some(DiskDialog::Import { index: self.disk_row, choice: 0 });
                } else if let Some(why) = d.format_refusal() {
                    self.set_error(format!("Cannot use this disk: {why}."));
                } else {
                    self.dialog = Some(DiskDialog::Format { index: self.disk_row, fstype: FsType::Ext4, typed: String::new() });
                }
            }
            _ => {}
        }
    }

    fn dialog_key(&mut self, dialog: DiskDialog, key: KeyEvent) {
        match dialog {
            DiskDialog::Import { index, choice } => {
                let d = &self.disks[index];
                let found = d.datastores();
                match key.code {
                    KeyCode::Esc => self.dialog = None,
                    KeyCode::Up | KeyCode::Down => {
                        let n = found.len().max(1);
                        let c = if key.code == KeyCode::Up { (choice + n - 1) % n } else { (choice + 1) % n };
                        self.dialog = Some(DiskDialog::Import { index, choice: c });
                    }
                    KeyCode::Char('f') => match d.format_refusal() {
                        Some(why) => self.set_error(format!("Cannot format: {why}.")),
                        None => self.dialog = Some(DiskDialog::Format { index, fstype: FsType::Ext4, typed: String::new() }),
                    },
                    KeyCode::Enter => {
                        let Some((fs, ds)) = found.get(choice) else { return };
                        if let Some(p) = &ds.problem {
                            return self.set_error(format!("This datastore cannot be imported: {p}"));
                        }
                        let (Some(device), Some(uuid)) = (fs.device.clone(), fs.uuid.clone()) else {
                            return self.set_error("This file system has no device node or UUID: it cannot be mounted by UUID.");
                        };
                        let c = DiskChoice::Import { disk: d.path.clone(), device, fstype: fs.fstype.clone(), uuid, relative: ds.relative.clone() };
                        self.choose(c);
                    }
                    _ => {}
                }
            }
            DiskDialog::Format { index, fstype, mut typed } => {
                let d = &self.disks[index];
                match key.code {
                    KeyCode::Esc => self.dialog = None,
                    KeyCode::Left | KeyCode::Right => {
                        let other = if fstype == FsType::Ext4 { FsType::Xfs } else { FsType::Ext4 };
                        self.dialog = Some(DiskDialog::Format { index, fstype: other, typed });
                    }
                    KeyCode::Backspace => {
                        typed.pop();
                        self.dialog = Some(DiskDialog::Format { index, fstype, typed });
                    }
                    KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        self.dialog = Some(DiskDialog::Format { index, fstype, typed: String::new() });
                    }
                    KeyCode::Char(c) => {
                        typed.push(c);
                        self.dialog = Some(DiskDialog::Format { index, fstype, typed });
                    }
                    KeyCode::Enter => {
                        let t = typed.trim();
                        if t != d.name && d.path != Path::new(t) {
                            self.set_error(format!("Type {} to confirm: formatting erases everything on {}.", d.name, d.path.display()));
                            return;
                        }
                        if d.size < fstype.min_size() {
                            return self.set_error(format!("{} is too small for {} (needs {}).", d.path.display(), fstype.name(), lifeboat_disks::human_size(fstype.min_size())));
                        }
                        let c = DiskChoice::Format { disk: Box::new(d.clone()), fstype };
                        self.choose(c);
                    }
                    _ => {}
                }
            }
        }
    }

    fn choose(&mut self, choice: DiskChoice) {
        self.dialog = None;
        match self.mode {
            Mode::Wizard => {
                self.choice = Some(choice);
                self.next_page();
            }
            Mode::Settings => {
                self.set_info(format!("Working: {}...", choice.describe()));
                self.pending = Some(Pending::ApplyDisk(Box::new(choice)));
            }
        }
    }

    // ------------------------------------------------------------ pending

    /// Runs the queued slow action.
    pub fn run_pending(&mut self) {
        let Some(p) = self.pending.take() else { return };
        match p {
            Pending::ListDisks => match self.env.list_disks() {
                Ok(d) => {
                    self.disks = d;
                    self.disk_error = None;
                    self.disk_row = self.disk_row.min(self.disks.len());
                    self.install_row = self.install_row.min(self.disks.len().saturating_sub(1));
                    if self.message == Some((Level::Info, READING_DISKS.into())) {
                        self.message = None;
                    }
                }
                Err(e) => {
                    self.disks.clear();
                    self.disk_error = Some(format!("{e:#}"));
                }
            },
            Pending::ApplyDisk(choice) => {
                let res = self.env.check_disk(&choice).context_nothing().and_then(|_| self.env.apply_disk(&choice));
                match res {
                    Ok(ds) => {
                        self.go(Page::Status);
                        self.refresh_done_info();
                        match ds {
                            Some((name, path)) => self.set_info(format!("Datastore {name} ready at {}.", path.display())),
                            None => self.set_info("No change."),
                        }
                    }
                    Err(e) => {
                        self.set_error(format!("{e:#}"));
                        self.pending = Some(Pending::ListDisks);
                    }
                }
            }
            Pending::ApplyPlan(plan) => match self.env.apply_plan(&plan) {
                Ok(ds) => {
                    // Done: the other console may show the status now.
                    self.mode = Mode::Settings;
                    self.lock = None;
                    self.password.clear_secrets();
                    self.refresh_done_info();
                    self.done.datastore = ds;
                    self.page = Page::Done;
                    self.set_info("Setup complete.");
                }
                Err(e) => self.set_error(format!("{e:#}")),
            },
        }
    }

    // ------------------------------------------------------------ install

    fn install_key(&mut self, key: KeyEvent) {
        match self.install.clone() {
            InstallStage::Pick => {
                let rows = self.disks.len().max(1);
                match key.code {
                    KeyCode::Up => self.install_row = (self.install_row + rows - 1) % rows,
                    KeyCode::Down | KeyCode::Tab => self.install_row = (self.install_row + 1) % rows,
                    KeyCode::Char('r') => self.pending = Some(Pending::ListDisks),
                    KeyCode::Esc => self.page = self.home(),
                    KeyCode::Enter => {
                        let Some(d) = self.disks.get(self.install_row) else { return };
                        if let Some(why) = d.format_refusal() {
                            self.set_error(format!("Cannot install to this disk: {why}."));
                        } else if d.size < lifeboat_install::MIN_DISK_SIZE {
                            self.set_error(format!("{} is too small: the appliance needs at least {}.", d.path.display(), lifeboat_disks::human_size(lifeboat_install::MIN_DISK_SIZE)));
                        } else {
                            self.install = InstallStage::Confirm { index: self.install_row, typed: String::new() };
                        }
                    }
                    _ => {}
                }
            }
            InstallStage::Confirm { index, mut typed } => match key.code {
                KeyCode::Esc => self.install = InstallStage::Pick,
                KeyCode::Backspace => {
                    typed.pop();
                    self.install = InstallStage::Confirm { index, typed };
                }
                KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    self.install = InstallStage::Confirm { index, typed: String::new() };
                }
                KeyCode::Char(c) => {
                    typed.push(c);
                    self.install = InstallStage::Confirm { index, typed };
                }
                KeyCode::Enter => {
                    let d = &self.disks[index];
                    let t = typed.trim();
                    if t != d.name && d.path != Path::new(t) {
                        return self.set_error(format!("Type {} to confirm: installing erases everything on {}.", d.name, d.path.display()));
                    }
                    self.start_install(index);
                }
                _ => {}
            },
            InstallStage::Running { .. } => {}
            InstallStage::Done(_) => match key.code {
                KeyCode::Char('r') => self.power("reboot"),
                KeyCode::Char('p') => self.power("poweroff"),
                KeyCode::Esc => self.page = self.home(),
                _ => {}
            },
            InstallStage::Failed(_) => {
                if matches!(key.code, KeyCode::Enter | KeyCode::Esc) {
                    self.go(Page::Install);
                }
            }
        }
    }

    fn lock_path(&self) -> PathBuf {
        self.env.root.join(crate::lock::SETUP_LOCK)
    }

    /// Takes the setup lock; false (and `busy` set) when another console
    /// holds it.
    fn take_lock(&mut self, activity: &str) -> bool {
        match crate::lock::SetupLock::acquire(&self.lock_path(), &self.tty, activity) {
            Ok(Ok(l)) => {
                self.lock = Some(l);
                self.busy = None;
                true
            }
            Ok(Err(owner)) => {
                self.busy = Some(owner);
                false
            }
            Err(e) => {
                // Not fatal: the wizard itself will say what cannot be written.
                self.set_error(format!("cannot take the setup lock {}: {e}", self.lock_path().display()));
                true
            }
        }
    }

    /// Runs the install on its own thread; `tick` shows its progress.
    fn start_install(&mut self, index: usize) {
        if self.lock.is_none() && !self.take_lock("install to disk") {
            return;
        }
        let Some(live) = self.env.live.clone() else {
            return self.set_error("This is not a live system: there is nothing to install from.");
        };
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let req =
            lifeboat_install::InstallRequest { disk: self.disks[index].clone(), source: live, kernel_args: lifeboat_install::installed_kernel_args(&cmdline), system_paths: self.env.system_paths() };
        let disk = req.disk.path.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ptx = tx.clone();
            let res = lifeboat_install::install(&req, &mut |p| {
                let _ = ptx.send(InstallMsg::Progress(p));
            });
            let _ = tx.send(InstallMsg::Finished(res.map_err(|e| e.to_string())));
        });
        self.install_rx = Some(rx);
        let progress = lifeboat_install::Progress { step: lifeboat_install::Step::Check, percent: 0, detail: String::new() };
        self.install = InstallStage::Running { disk, progress };
    }

    fn power(&mut self, verb: &str) {
        if !self.env.live() {
            return self.set_info(format!("Not the running system (--root): would {verb} now."));
        }
        match std::process::Command::new("systemctl").arg(verb).status() {
            Ok(s) if s.success() => self.set_info(format!("{verb}...")),
            Ok(s) => self.set_error(format!("systemctl {verb} failed ({s})")),
            Err(e) => self.set_error(format!("cannot run systemctl {verb}: {e}")),
        }
    }

    /// Called between key presses: follows the other console's setup,
    /// takes in background results.
    pub fn tick(&mut self) {
        if self.watch_setup && self.lock.is_none() && self.mode == Mode::Wizard {
            if self.env.setup_done() {
                let by = self.busy.take().map(|o| format!(" on {}", o.tty)).unwrap_or_default();
                self.mode = Mode::Settings;
                self.go(Page::Status);
                self.refresh_done_info();
                self.set_info(format!("Setup was completed{by}."));
                self.repaint = true;
            } else {
                let me = std::process::id();
                let busy = crate::lock::holder(&self.lock_path()).filter(|o| o.pid != me);
                if busy != self.busy {
                    self.busy = busy;
                    self.repaint = true;
                }
            }
        }
        if self.page == Page::Status && self.busy.is_none() {
            if let Some(st) = self.fetcher.poll() {
                self.status = st;
            }
        }
        let Some(rx) = &self.install_rx else { return };
        let mut finished = None;
        while let Ok(msg) = rx.try_recv() {
            match msg {
                InstallMsg::Progress(p) => {
                    if let InstallStage::Running { progress, .. } = &mut self.install {
                        *progress = p;
                    }
                }
                InstallMsg::Finished(r) => finished = Some(r),
            }
        }
        if let Some(r) = finished {
            self.install_rx = None;
            self.install = match r {
                Ok(done) => InstallStage::Done(done),
                Err(e) => InstallStage::Failed(e),
            };
        }
    }

    /// URLs and fingerprint for the final page and the status screen.
    pub fn refresh_done_info(&mut self) {
        let port = self.env.daemon.api_port();
        let mut hosts = Vec::new();
        if let Ok(NetworkSettings { mode: NetworkMode::Static(st), .. }) = self.parse_network() {
            hosts.push(match st.address {
                std::net::IpAddr::V6(a) => format!("[{a}]"),
                a => a.to_string(),
            });
        }
        for a in crate::system::host_addresses() {
            if !hosts.contains(&a) {
                hosts.push(a);
            }
        }
        if hosts.is_empty() {
            hosts.push(self.hostname.value("Hostname").to_string());
        }
        self.done.urls = hosts.iter().take(3).map(|h| format!("https://{h}:{port}/")).collect();
        let cert = self.env.daemon.tls_certificate();
        self.done.fingerprint = crate::system::certificate_fingerprint(&cert).map_err(|_| format!("not yet created ({} appears when the daemon first starts)", cert.display()));
    }
}

trait NothingChanged<T> {
    fn context_nothing(self) -> anyhow::Result<T>;
}

impl<T> NothingChanged<T> for anyhow::Result<T> {
    fn context_nothing(self) -> anyhow::Result<T> {
        use anyhow::Context;
        self.context("nothing was changed")
    }
}
