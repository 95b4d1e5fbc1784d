//! Rendering the console's pages with ratatui: plain lines, so the screen
//! reads the same on a VGA console, a serial line and in tmux.

use crate::app::{App, DiskDialog, Level, Mode, Page, WIZARD};
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
    let name = match app.page {
        Page::Network => "Network",
        Page::Hostname => "Hostname",
        Page::Time => "Time zone and NTP",
        Page::Password => "Admin password",
        Page::Disks => "Datastore disk",
        Page::Summary => "Summary",
        Page::Done => "Setup complete",
        Page::Status => "Status",
    };
    match app.step() {
        Some(n) => format!(" Lifeboat setup - step {n} of {}: {name} ", WIZARD.len()),
        None => format!(" Lifeboat - {name} "),
    }
}

fn help(app: &App) -> &'static str {
    match app.page {
        Page::Disks if app.dialog.is_some() => match app.dialog {
            Some(DiskDialog::Format { .. }) => "Type the disk name, Enter: confirm  Left/Right: file system  Esc: cancel",
            _ => "Enter: import  f: format instead  Up/Down: choose  Esc: cancel",
        },
        Page::Disks => "Up/Down: choose  Enter: select  r: rescan  Esc: back",
        Page::Summary => "Enter: apply  Esc: back",
        Page::Done => "Enter: continue to the status screen",
        Page::Status => "n: network  h: hostname  t: time  p: password  d: disks  r: refresh  q: quit",
        _ if app.mode == Mode::Wizard => "Tab/Up/Down: field  Left/Right: choice  Ctrl-U: clear  Enter: next  Esc: back",
        _ => "Tab/Up/Down: field  Left/Right: choice  Ctrl-U: clear  Enter: save  Esc: cancel",
    }
}

pub fn draw(frame: &mut Frame, app: &App) {
    let [head, body, msg, foot] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(5), Constraint::Length(3), Constraint::Length(1)]).areas(frame.area());
    frame.render_widget(Paragraph::new(title(app)).style(Style::new().add_modifier(Modifier::REVERSED)), head);
    let lines = match app.page {
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
            l.push(Line::styled(
                format!("      Lifeboat datastore \"{}\" on {dev}{enc}: can be imported", ds.relative.display()),
                Style::new().fg(Color::Cyan),
            ));
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
            l.push(Line::styled(
                format!("  EVERYTHING ON {} WILL BE ERASED.", d.path.display()),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ));
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
    let h = system::read_health();
    let mut l = Vec::new();
    let used = h.mem_total.saturating_sub(h.mem_available);
    l.push(Line::raw(format!(
        "  Memory {} used of {}   Load {:.2} {:.2} {:.2}   Up {}h{:02}m",
        human_size(used),
        human_size(h.mem_total),
        h.load[0],
        h.load[1],
        h.load[2],
        h.uptime_secs / 3600,
        (h.uptime_secs / 60) % 60
    )));
    l.extend(api_lines(app));
    l.push(Line::raw(""));
    l.push(Line::styled("  Datastores", Style::new().add_modifier(Modifier::BOLD)));
    match app.env.daemon.datastores() {
        Ok(list) if list.is_empty() => l.push(Line::raw("    none configured (d: set up a data disk)")),
        Ok(list) => {
            for d in list {
                let on_disk = app.env.root.join(d.path.strip_prefix("/").unwrap_or(&d.path));
                let space = match system::free_space(&on_disk) {
                    Some((total, free)) => format!("{} free of {}", human_size(free), human_size(total)),
                    None => "not mounted".into(),
                };
                l.push(Line::raw(format!("    {:<16} {}  ({space})", d.name, d.path.display())));
            }
        }
        Err(e) => l.push(Line::raw(format!("    cannot read: {e:#}"))),
    }
    l.push(Line::raw(""));
    l.push(Line::styled("  Running jobs", Style::new().add_modifier(Modifier::BOLD)));
    job_lines(&mut l, app.env.daemon.running_jobs(), "none");
    l.push(Line::raw(""));
    l.push(Line::styled("  Last failures", Style::new().add_modifier(Modifier::BOLD)));
    job_lines(&mut l, app.env.daemon.recent_failures(5), "none");
    l
}

fn job_lines(l: &mut Vec<Line<'static>>, jobs: Result<Vec<system::JobLine>, String>, empty: &str) {
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
