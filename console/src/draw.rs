//! Rendering the console's pages with ratatui: plain lines, so the screen
//! reads the same on a VGA console, a serial line and in tmux.

use crate::app::{App, DiskDialog, InstallStage, Level, Mode, Page, WIZARD};
use crate::form::Form;
use crate::setup::DiskChoice;
use crate::system;
use lifeboat_disks::{human_size, Disk};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

fn title(app: &App) -> String {
    if app.busy.is_some() {
        return " Lifeboat - setup in progress ".into();
    }
    let name = match app.page {
        Page::Network => "Network",
        Page::Hostname => "Hostname",
        Page::Time => "Time zone and NTP",
        Page::Password => "Admin password",
        Page::Disks => "Datastore disk",
        Page::Summary => "Summary",
        Page::Done => "Setup complete",
        Page::Status => "Status",
        Page::Live => "live system",
        Page::Install => "Install to disk",
    };
    match app.step() {
        Some(n) => format!(" Lifeboat setup - step {n} of {}: {name} ", WIZARD.len()),
        None => format!(" Lifeboat - {name} "),
    }
}

fn help(app: &App) -> &'static str {
    if app.busy.is_some() {
        return "Ctrl-L: repaint";
    }
    match app.page {
        Page::Disks if app.dialog.is_some() => match app.dialog {
            Some(DiskDialog::Format { .. }) => "Type the disk name, Enter: confirm  Left/Right: file system  Esc: cancel",
            _ => "Enter: import  f: format instead  Up/Down: choose  Esc: cancel",
        },
        Page::Disks => "Up/Down: choose  Enter: select  r: rescan  Esc: back",
        Page::Summary => "Enter: apply  Esc: back",
        Page::Done => "Enter: continue to the status screen",
        Page::Status if app.env.live.is_some() => "i: install  n: network  h: hostname  t: time  p: password  d: disks  q: quit",
        Page::Status => "n: network  h: hostname  t: time  p: password  d: disks  r: refresh  q: quit",
        Page::Live => "Up/Down: choose  Enter: select  i: install to disk  w: set up and run live",
        Page::Install => match app.install {
            InstallStage::Pick => "Up/Down: choose  Enter: select  r: rescan  Esc: back",
            InstallStage::Confirm { .. } => "Type the disk name, Enter: install  Esc: cancel",
            InstallStage::Running { .. } => "Installing: do not switch off",
            InstallStage::Done(_) => "r: reboot  p: power off  Esc: back",
            InstallStage::Failed(_) => "Enter: back to the disk list",
        },
        _ if app.mode == Mode::Wizard => "Tab/Up/Down: field  Left/Right: choice  Ctrl-U: clear  Enter: next  Esc: back",
        _ => "Tab/Up/Down: field  Left/Right: choice  Ctrl-U: clear  Enter: save  Esc: cancel",
    }
}

pub fn draw(frame: &mut Frame, app: &App) {
    let [head, body, msg, foot] = Layout::vertical([Constraint::Length(1), Constraint::Min(5), Constraint::Length(3), Constraint::Length(1)]).areas(frame.area());
    frame.render_widget(Paragraph::new(title(app)).style(Style::new().add_modifier(Modifier::REVERSED)), head);
    let lines = match app.page {
        _ if app.busy.is_some() => busy_lines(app),
        Page::Network => network_lines(app),
        Page::Hostname => form_lines(&app.hostname, &[]),
        Page::Time => {
            let mut l = form_lines(&app.time, &[]);
            l.push(Line::raw(""));
            l.push(Line::raw("  Time zone: a name from the zone database, like UTC or Europe/Berlin."));
            l.push(Line::raw("  NTP servers: blank for the defaults, or names/addresses separated by spaces."));
            l
        }
        Page::Password => {
            let mut l = vec![Line::raw("  The password of the user \"admin\" for the web page and the API."), Line::raw("")];
            l.extend(form_lines(&app.password, &[]));
            l
        }
        Page::Disks => disk_lines(app),
        Page::Summary => summary_lines(app),
        Page::Done => done_lines(app),
        Page::Status => status_lines(app),
        Page::Live => live_lines(app),
        Page::Install => install_lines(app),
    };
    frame.render_widget(Paragraph::new(lines).block(Block::new().borders(Borders::NONE)).wrap(Wrap { trim: false }), body);
    if let Some((level, text)) = &app.message {
        let style = match level {
            Level::Error => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            Level::Info => Style::new().fg(Color::Green),
        };
        let prefix = if *level == Level::Error { "Error: " } else { "" };
        frame.render_widget(Paragraph::new(format!("{prefix}{text}")).style(style).wrap(Wrap { trim: true }), msg);
    }
    frame.render_widget(Paragraph::new(help(app)).style(Style::new().add_modifier(Modifier::DIM)), foot);
}

fn form_lines(form: &Form, dimmed: &[&str]) -> Vec<Line<'static>> {
    let width = form.fields.iter().map(|f| f.label.len()).max().unwrap_or(0);
    form.fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let focused = i == form.focus;
            let marker = if focused { "> " } else { "  " };
            let cursor = if focused && !matches!(f.kind, crate::form::FieldKind::Choice(_)) { "_" } else { "" };
            let mut style = Style::new();
            if focused {
                style = style.add_modifier(Modifier::BOLD);
            }
            if dimmed.contains(&f.label) {
                style = style.add_modifier(Modifier::DIM);
            }
            let note = if dimmed.contains(&f.label) { "   (not used with DHCP)" } else { "" };
            Line::from(vec![
                Span::raw(format!("{marker}{:<width$} : ", f.label)),
                Span::styled(format!("{}{cursor}", f.shown()), style),
                Span::styled(note.to_string(), Style::new().add_modifier(Modifier::DIM)),
            ])
        })
        .collect()
}

fn network_lines(app: &App) -> Vec<Line<'static>> {
    let dhcp = app.network.value("Mode") == "DHCP";
    let dim: &[&str] = if dhcp { &["Address", "Prefix length", "Gateway", "DNS servers"] } else { &[] };
    let mut l = form_lines(&app.network, dim);
    l.push(Line::raw(""));
    l.push(Line::raw("  Written as a systemd-networkd .network file. DNS servers: separated by spaces."));
    l
}

fn disk_line(d: &Disk) -> String {
    let model = d.model.clone().unwrap_or_else(|| "unknown model".into());
    format!("{:<10} {:>9}  {}  [{}]", d.name, human_size(d.size), model, d.contents())
}

fn disk_lines(app: &App) -> Vec<Line<'static>> {
    let mut l = Vec::new();
    if let Some(e) = &app.disk_error {
        l.push(Line::styled(format!("  Cannot list the disks: {e}"), Style::new().fg(Color::Red)));
    }
    if let Some(dialog) = &app.dialog {
        return dialog_lines(app, dialog);
    }
    l.push(Line::raw("  Pick the disk for the backups. A disk with a Lifeboat datastore is imported, others are formatted."));
    l.push(Line::raw(""));
    for (i, d) in app.disks.iter().enumerate() {
        let selected = i == app.disk_row;
        let marker = if selected { "> " } else { "  " };
        let style = if selected { Style::new().add_modifier(Modifier::BOLD) } else { Style::new() };
        let style = if d.format_refusal().is_some() && d.datastores().is_empty() { style.add_modifier(Modifier::DIM) } else { style };
        l.push(Line::styled(format!("{marker}{}", disk_line(d)), style));
        for (fs, ds) in d.datastores() {
            let dev = fs.device.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            let enc = if ds.encrypted { ", encrypted" } else { "" };
            l.push(Line::styled(format!("      Lifeboat datastore \"{}\" on {dev}{enc}: can be imported", ds.relative.display()), Style::new().fg(Color::Cyan)));
        }
        if let Some(why) = &d.system {
            l.push(Line::styled(format!("      system disk ({why}): never formatted"), Style::new().add_modifier(Modifier::DIM)));
        } else if let Some(why) = d.format_refusal() {
            l.push(Line::styled(format!("      not available: {why}"), Style::new().add_modifier(Modifier::DIM)));
        }
    }
    if app.disks.is_empty() && app.disk_error.is_none() {
        l.push(Line::raw("  (no disks found)"));
    }
    let selected = app.disk_row >= app.disks.len();
    let marker = if selected { "> " } else { "  " };
    let style = if selected { Style::new().add_modifier(Modifier::BOLD) } else { Style::new() };
    l.push(Line::styled(format!("{marker}Skip: no data disk now (configure one later from the status screen)"), style));
    l
}

fn dialog_lines(app: &App, dialog: &DiskDialog) -> Vec<Line<'static>> {
    let mut l = Vec::new();
    match dialog {
        DiskDialog::Format { index, fstype, typed } => {
            let d = &app.disks[*index];
            l.push(Line::raw(format!("  Format {}", disk_line(d))));
            l.push(Line::raw(""));
            l.push(Line::styled(format!("  EVERYTHING ON {} WILL BE ERASED.", d.path.display()), Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)));
            l.push(Line::raw(""));
            let fs = [lifeboat_disks::FsType::Ext4, lifeboat_disks::FsType::Xfs]
                .iter()
                .map(|f| if f == fstype { format!("({})", f.name()) } else { format!(" {} ", f.name()) })
                .collect::<Vec<_>>()
                .join(" ");
            l.push(Line::raw(format!("  File system : {fs}")));
            l.push(Line::raw(format!("  Type {} to confirm: {typed}_", d.name)));
        }
        DiskDialog::Import { index, choice } => {
            let d = &app.disks[*index];
            l.push(Line::raw(format!("  Import from {}", disk_line(d))));
            l.push(Line::raw(""));
            for (i, (fs, ds)) in d.datastores().iter().enumerate() {
                let marker = if i == *choice { "> " } else { "  " };
                let dev = fs.device.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                let id = ds.id.clone().unwrap_or_else(|| "?".into());
                let problem = ds.problem.as_ref().map(|p| format!(" - cannot import: {p}")).unwrap_or_default();
                l.push(Line::raw(format!("  {marker}datastore \"{}\" (id {id}) on {dev}, {}{problem}", ds.relative.display(), fs.fstype)));
            }
            l.push(Line::raw(""));
            l.push(Line::raw("  Importing mounts the file system (fstab by UUID) and serves the datastore; nothing is erased."));
        }
    }
    l
}

fn summary_lines(app: &App) -> Vec<Line<'static>> {
    let mut l = vec![Line::raw("  These settings will be applied:"), Line::raw("")];
    match app.plan() {
        Ok(plan) => {
            l.push(Line::raw(format!("  Network   : {}", plan.network)));
            l.push(Line::raw(format!("  Hostname  : {}", plan.hostname)));
            let ntp = if plan.time.ntp.is_empty() { "default servers".to_string() } else { plan.time.ntp.join(" ") };
            l.push(Line::raw(format!("  Time      : {}, NTP {ntp}", plan.time.zone)));
            l.push(Line::raw("  Password  : set for user admin"));
            let style = if matches!(plan.disk, DiskChoice::Format { .. }) { Style::new().fg(Color::Red) } else { Style::new() };
            l.push(Line::styled(format!("  Disk      : {}", plan.disk.describe()), style));
            l.push(Line::raw(""));
            l.push(Line::raw("  Everything is checked again first; if a check fails nothing is changed."));
        }
        Err(e) => l.push(Line::styled(format!("  Not ready: {e}"), Style::new().fg(Color::Red))),
    }
    l
}

fn api_lines(app: &App) -> Vec<Line<'static>> {
    let mut l = Vec::new();
    for u in &app.done.urls {
        l.push(Line::raw(format!("  API and web page : {u}")));
    }
    match &app.done.fingerprint {
        Ok(fp) => {
            // 16 bytes a line, so it reads whole on an 80-column console.
            l.push(Line::raw("  TLS certificate SHA-256 fingerprint:"));
            let bytes: Vec<&str> = fp.split(':').collect();
            for chunk in bytes.chunks(16) {
                l.push(Line::raw(format!("    {}", chunk.join(":"))));
            }
        }
        Err(why) => l.push(Line::raw(format!("  TLS certificate: {why}"))),
    }
    l
}

fn done_lines(app: &App) -> Vec<Line<'static>> {
    let mut l = vec![Line::raw("  Lifeboat is set up. Log in as \"admin\" with the password you chose."), Line::raw("")];
    l.extend(api_lines(app));
    if let Some((name, path)) = &app.done.datastore {
        l.push(Line::raw(format!("  Datastore {name} : {}", path.display())));
    }
    l.push(Line::raw(""));
    l.push(Line::raw("  Check the fingerprint when your browser or client first connects."));
    l
}

fn status_lines(app: &App) -> Vec<Line<'static>> {
    use crate::status::DaemonStatus;
    let mut l = Vec::new();
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let snap = match &app.status {
        DaemonStatus::Unknown => {
            l.push(Line::raw("  Daemon : asking..."));
            None
        }
        DaemonStatus::NotRunning(why) => {
            l.push(Line::styled("  Daemon : NOT RUNNING", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)));
            l.push(Line::raw(format!("    ({why})")));
            None
        }
        DaemonStatus::Running(s) => {
            l.push(Line::raw(format!("  Daemon : running ({})", s.url)));
            Some(s)
        }
    };
    match snap.map(|s| &s.health) {
        Some(Ok(h)) => {
            let used = h.memory.total_bytes.saturating_sub(h.memory.available_bytes);
            l.push(Line::raw(format!(
                "  Memory {} used of {}   Load {:.2} {:.2} {:.2}   Up {}h{:02}m   Daemon RSS {}",
                human_size(used),
                human_size(h.memory.total_bytes),
                h.load.one,
                h.load.five,
                h.load.fifteen,
                h.uptime_secs / 3600,
                (h.uptime_secs / 60) % 60,
                human_size(h.daemon_rss_bytes)
            )));
        }
        Some(Err(e)) => l.push(Line::raw(format!("  Health: cannot read: {e}"))),
        None => {
            // The machine's own numbers still help while the daemon is down.
            let h = system::read_health();
            l.push(Line::raw(format!(
                "  Memory {} used of {}   Load {:.2} {:.2} {:.2}   Up {}h{:02}m",
                human_size(h.mem_total.saturating_sub(h.mem_available)),
                human_size(h.mem_total),
                h.load[0],
                h.load[1],
                h.load[2],
                h.uptime_secs / 3600,
                (h.uptime_secs / 60) % 60
            )));
        }
    }
    l.extend(api_lines(app));
    l.push(Line::raw(""));
    l.push(Line::styled("  Datastores", bold));
    match snap.map(|s| &s.datastores) {
        Some(Ok(list)) if list.is_empty() => l.push(Line::raw("    none (d: set up a data disk)")),
        Some(Ok(list)) => {
            for d in list {
                l.push(Line::raw(format!("    {:<16} {}  ({} free of {}, {} snapshots)", d.name, d.path, human_size(d.free_bytes), human_size(d.total_bytes), d.snapshots)));
            }
        }
        Some(Err(e)) => l.push(Line::raw(format!("    cannot read: {e}"))),
        // Without the daemon: what its configuration names, with the
        // space the file systems report.
        None => match app.env.daemon.datastores() {
            Ok(list) if list.is_empty() => l.push(Line::raw("    none configured (d: set up a data disk)")),
            Ok(list) => {
                for d in list {
                    let on_disk = app.env.root.join(d.path.strip_prefix("/").unwrap_or(&d.path));
                    let space = match system::free_space(&on_disk) {
                        Some((total, free)) => format!("{} free of {}", human_size(free), human_size(total)),
                        None => "not mounted".into(),
                    };
                    l.push(Line::raw(format!("    {:<16} {}  (configured; {space})", d.name, d.path.display())));
                }
            }
            Err(e) => l.push(Line::raw(format!("    cannot read the configuration: {e:#}"))),
        },
    }
    l.push(Line::raw(""));
    l.push(Line::styled("  Running jobs", bold));
    job_lines(&mut l, snap.map(|s| s.running.clone()), "none");
    l.push(Line::raw(""));
    l.push(Line::styled("  Last failures", bold));
    job_lines(&mut l, snap.map(|s| s.failures.clone()), "none");
    l
}

fn job_lines(l: &mut Vec<Line<'static>>, jobs: Option<Result<Vec<system::JobLine>, String>>, empty: &str) {
    let Some(jobs) = jobs else {
        return l.push(Line::raw("    unknown: the daemon is not running"));
    };
    match jobs {
        Ok(j) if j.is_empty() => l.push(Line::raw(format!("    {empty}"))),
        Ok(j) => {
            for job in j {
                l.push(Line::raw(format!("    {} {:<12} {:<10} {}", job.id, job.kind, job.state, job.detail)));
            }
        }
        Err(why) => l.push(Line::raw(format!("    {why}"))),
    }
}

fn live_lines(app: &App) -> Vec<Line<'static>> {
    let medium = app.env.live.as_ref().map(|l| l.medium.display().to_string()).unwrap_or_default();
    let mut l = vec![
        Line::raw(format!("  Lifeboat is running live from the installation medium ({medium}).")),
        Line::raw("  Settings and backups of a live session last until power-off, unless a data"),
        Line::raw("  disk is set up. Install Lifeboat to a disk to keep the appliance."),
        Line::raw(""),
    ];
    for (i, text) in ["Install Lifeboat to a disk", "Set up and run live (the first-boot wizard)"].iter().enumerate() {
        let selected = i == app.live_row;
        let style = if selected { Style::new().add_modifier(Modifier::BOLD) } else { Style::new() };
        l.push(Line::styled(format!("{}{text}", if selected { "> " } else { "  " }), style));
    }
    l
}

fn install_lines(app: &App) -> Vec<Line<'static>> {
    let mut l = Vec::new();
    match &app.install {
        InstallStage::Pick => {
            if let Some(e) = &app.disk_error {
                l.push(Line::styled(format!("  Cannot list the disks: {e}"), Style::new().fg(Color::Red)));
            }
            l.push(Line::raw("  Pick the disk to install Lifeboat on. EVERYTHING ON IT WILL BE ERASED."));
            l.push(Line::raw(""));
            for (i, d) in app.disks.iter().enumerate() {
                let selected = i == app.install_row;
                let mut style = if selected { Style::new().add_modifier(Modifier::BOLD) } else { Style::new() };
                let refusal = d.format_refusal().or_else(|| (d.size < lifeboat_install::MIN_DISK_SIZE).then(|| format!("smaller than {}", human_size(lifeboat_install::MIN_DISK_SIZE))));
                if refusal.is_some() {
                    style = style.add_modifier(Modifier::DIM);
                }
                l.push(Line::styled(format!("{}{}", if selected { "> " } else { "  " }, disk_line(d)), style));
                match (&d.system, refusal) {
                    (Some(why), _) => l.push(Line::styled(format!("      system or live medium ({why}): never used"), Style::new().add_modifier(Modifier::DIM))),
                    (None, Some(why)) => l.push(Line::styled(format!("      not available: {why}"), Style::new().add_modifier(Modifier::DIM))),
                    _ => {}
                }
            }
            if app.disks.is_empty() && app.disk_error.is_none() {
                l.push(Line::raw("  (no disks found)"));
            }
        }
        InstallStage::Confirm { index, typed } => {
            let d = &app.disks[*index];
            l.push(Line::raw(format!("  Install Lifeboat to {}", disk_line(d))));
            l.push(Line::raw(""));
            l.push(Line::styled(format!("  EVERYTHING ON {} WILL BE ERASED.", d.path.display()), Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)));
            l.push(Line::raw("  It gets a GPT with a BIOS boot, an EFI system and an ext4 root partition,"));
            l.push(Line::raw("  a copy of this system, and GRUB for BIOS and UEFI."));
            l.push(Line::raw(""));
            l.push(Line::raw(format!("  Type {} to confirm: {typed}_", d.name)));
        }
        InstallStage::Running { disk, progress } => {
            l.push(Line::raw(format!("  Installing Lifeboat to {}...", disk.display())));
            l.push(Line::raw(""));
            let width = 50usize;
            let filled = width * progress.percent as usize / 100;
            l.push(Line::raw(format!("  [{}{}] {:>3}%", "#".repeat(filled), "-".repeat(width - filled), progress.percent)));
            l.push(Line::raw(""));
            let detail = if progress.detail.is_empty() { String::new() } else { format!(": {}", progress.detail) };
            l.push(Line::raw(format!("  Step: {}{detail}", progress.step.describe())));
        }
        InstallStage::Done(done) => {
            l.push(Line::styled(format!("  Lifeboat is installed on {}.", done.disk.display()), Style::new().fg(Color::Green).add_modifier(Modifier::BOLD)));
            l.push(Line::raw(""));
            l.push(Line::raw(format!("  Root file system UUID {} (kernel {}),", done.root_uuid, done.kernel_version)));
            l.push(Line::raw(format!("  EFI system partition {}; GRUB for BIOS and UEFI.", done.esp_uuid)));
            l.push(Line::raw(""));
            l.push(Line::raw("  Remove the installation medium, then reboot: the installed appliance"));
            l.push(Line::raw("  starts with the setup wizard."));
        }
        InstallStage::Failed(e) => {
            l.push(Line::styled("  The install failed.", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)));
            l.push(Line::raw(""));
            l.push(Line::raw(format!("  {e}")));
        }
    }
    l
}

fn busy_lines(app: &App) -> Vec<Line<'static>> {
    let Some(o) = &app.busy else { return Vec::new() };
    vec![
        Line::raw(""),
        Line::styled(format!("  Setup is in progress on {} ({}, pid {}).", o.tty, o.activity, o.pid), Style::new().add_modifier(Modifier::BOLD)),
        Line::raw(""),
        Line::raw("  This console shows the status screen when it is finished, or the wizard"),
        Line::raw("  again if it is abandoned."),
    ]
}
