//! `EventsActor`: the daemon's event stream. Everyone publishes here;
//! the API's `/api/events` (SSE), the CLI's progress bars and the TUI
//! subscribe. State changes (not progress ticks) also go to the audit
//! log, one JSON line each.

use actix::prelude::*;
use lifeboat_api_types::Event;
use std::io::Write;
use std::path::PathBuf;
use tokio::sync::broadcast;

/// Events a slow subscriber may fall behind by before it skips ahead.
const BACKLOG: usize = 1024;

pub struct EventsActor {
    tx: broadcast::Sender<Event>,
    audit_log: Option<PathBuf>,
}

impl EventsActor {
    pub fn new(audit_log: Option<PathBuf>) -> Self {
        EventsActor { tx: broadcast::channel(BACKLOG).0, audit_log }
    }
}

impl Actor for EventsActor {
    type Context = Context<Self>;
}

impl actix::Supervised for EventsActor {}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish(pub Event);

impl Handler<Publish> for EventsActor {
    type Result = ();
    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        if !matches!(msg.0, Event::JobProgress { .. }) {
            if let Some(p) = &self.audit_log {
                let line = serde_json::json!({ "time": chrono::Utc::now(), "event": &msg.0 });
                if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(p) {
                    let _ = writeln!(f, "{line}");
                }
            }
        }
        // No subscriber is fine: nobody is watching.
        let _ = self.tx.send(msg.0);
    }
}

/// A receiver of every event published from now on.
#[derive(Message)]
#[rtype(result = "broadcast::Receiver<Event>")]
pub struct Subscribe;

impl Handler<Subscribe> for EventsActor {
    type Result = MessageResult<Subscribe>;
    fn handle(&mut self, _: Subscribe, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.tx.subscribe())
    }
}
