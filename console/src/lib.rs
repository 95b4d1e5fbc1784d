//! The appliance console (`lifeboat console`): a terminal UI on tty1 and
//! the serial console. On first boot a wizard sets network, hostname, time
//! zone/NTP, the admin password and the datastore disk, then shows the
//! API's URL and TLS fingerprint; later boots show a status screen and the
//! same settings pages.
//!
//! Every system change goes under a configurable root (`--root`), so the
//! tests run the real console against a temporary directory and loop
//! devices. Settings are validated before anything is written
//! (`settings`), and the wizard applies them all at the end (`setup`).

pub mod app;
mod draw;
pub mod form;
pub mod lock;
pub mod settings;
pub mod setup;
pub mod status;
pub mod system;

use anyhow::{Context, Result};
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};
use std::path::PathBuf;

/// How often the screen is refreshed without a key press.
const TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// What `lifeboat console` is run with.
#[derive(Clone, Debug)]
pub struct ConsoleOptions {
    /// The system to configure: `/` on the appliance, a scratch directory
    /// in tests.
    pub root: PathBuf,
    /// Offer only these disks (device paths or names); empty: all.
    pub disks: Vec<PathBuf>,
    /// The zone database time zones are checked against.
    pub zoneinfo: PathBuf,
    /// Run the first-boot wizard even when setup was done.
    pub wizard: bool,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions { root: "/".into(), disks: Vec::new(), zoneinfo: "/usr/share/zoneinfo".into(), wizard: false }
    }
}

/// Runs the console until the user quits (q on the status screen, or
/// Ctrl-C).
pub fn run(opts: ConsoleOptions) -> Result<()> {
    if !opts.root.is_dir() {
        anyhow::bail!("--root {}: not a directory", opts.root.display());
    }
    let daemon = system::StateDaemon::open(&opts.root).context("cannot read the daemon's configuration")?;
    // Only the running system can be a live one.
    let live = if opts.root == std::path::Path::new("/") { lifeboat_install::LiveSource::detect() } else { None };
    let env = setup::Env { root: opts.root.clone(), daemon: Box::new(daemon), only_disks: opts.disks.clone(), zoneinfo: opts.zoneinfo.clone(), live };
    let mut app = app::App::new(env, opts.wizard);

    // A serial line reports no size (0x0): draw into a fixed 80x24 then.
    let size = ratatui::crossterm::terminal::size().unwrap_or((0, 0));
    let mut terminal = if size.0 == 0 || size.1 == 0 { ratatui::init_with_options(TerminalOptions { viewport: Viewport::Fixed(Rect::new(0, 0, 80, 24)) }) } else { ratatui::init() };
    let res = event_loop(&mut terminal, &mut app);
    ratatui::restore();
    res
}

fn event_loop<B: ratatui::backend::Backend>(terminal: &mut Terminal<B>, app: &mut app::App) -> Result<()>
where
    B::Error: Send + Sync + 'static,
{
    loop {
        if std::mem::take(&mut app.repaint) {
            // Not terminal.clear(): it asks the terminal for the cursor
            // position, which a serial line may never answer. Clear the
            // screen and forget the last frame, so all of it is drawn.
            use ratatui::backend::ClearType;
            terminal.backend_mut().clear_region(ClearType::All).context("cannot clear the screen")?;
            terminal.swap_buffers();
        }
        terminal.draw(|f| draw::draw(f, app)).context("cannot draw the console")?;
        if app.pending.is_some() {
            app.run_pending();
            continue;
        }
        if app.quit {
            return Ok(());
        }
        // Polled, so background work (the install's progress) shows.
        if event::poll(TICK).context("cannot read the keyboard")? {
            match event::read().context("cannot read the keyboard")? {
                Event::Key(k) if k.kind == KeyEventKind::Press => app.key(k),
                _ => {}
            }
        }
        app.tick();
    }
}
