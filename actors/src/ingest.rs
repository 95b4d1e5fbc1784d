//! `IngestActor`: owns the remote agents' upload sessions (crates/remote's
//! `IngestSessions`) and the job each session shows as in the job list.
//! Every session call does file IO, hashing or RocksDB work, so it runs on
//! the blocking pool; the actor hands sessions out, reports their jobs'
//! ends, and expires idle sessions.

use crate::datastore::{blocking, DatastoreHandle};
use crate::jobs::{BeginExternal, Finished, JobsActor};
use crate::work::{JobFailure, JobHandle, JobOutput, JobResult};
use crate::Datastores;
use actix::prelude::*;
use lifeboat_api_types::JobSpec;
use lifeboat_remote::protocol::{CommitRequest, Committed, OpenSession, PackStored, SessionInfo};
use lifeboat_remote::{IngestSessions, RemoteError};
use lifeboat_store::{BlobId, PackId};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The datastore a session names when it names none.
pub const DEFAULT_DATASTORE: &str = "default";

pub struct IngestActor {
    sessions: Arc<IngestSessions>,
    datastores: Datastores,
    jobs: Addr<JobsActor>,
    /// Session id -> its job.
    running: HashMap<String, (String, Arc<JobHandle>)>,
}

impl IngestActor {
    pub fn new(datastores: Datastores, jobs: Addr<JobsActor>) -> Self {
        IngestActor { sessions: Arc::new(IngestSessions::new()), datastores, jobs, running: HashMap::new() }
    }

    /// Ends the job of `session` (if it still runs) with `result`.
    fn finish(&mut self, session: &str, result: JobResult) {
        if let Some((id, _)) = self.running.remove(session) {
            self.jobs.do_send(Finished { id, result });
        }
    }
}

impl Actor for IngestActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_secs(30), |a, _| {
            a.sessions.expire_idle();
            let live: std::collections::HashSet<String> = a.sessions.list().into_iter().map(|s| s.0).collect();
            let gone: Vec<String> = a.running.keys().filter(|s| !live.contains(*s)).cloned().collect();
            for s in gone {
                a.finish(&s, Err(JobFailure::Failed("the agent's session ended without a snapshot (the agent stopped or lost the appliance for an hour)".into())));
            }
        });
    }
}

impl Supervised for IngestActor {}

/// Opens an upload session for agent `owner`.
#[derive(Message)]
#[rtype(result = "Result<SessionInfo, RemoteError>")]
pub struct OpenAgentSession {
    pub owner: String,
    pub req: OpenSession,
}

impl Handler<OpenAgentSession> for IngestActor {
    type Result = ResponseActFuture<Self, Result<SessionInfo, RemoteError>>;
    fn handle(&mut self, m: OpenAgentSession, _: &mut Context<Self>) -> Self::Result {
        let name = m.req.datastore.clone().unwrap_or_else(|| DEFAULT_DATASTORE.into());
        let addr = self.datastores.get(&name);
        let sessions = self.sessions.clone();
        let jobs = self.jobs.clone();
        let spec = JobSpec::AgentBackup { datastore: name.clone(), agent: m.owner.clone(), hostname: m.req.hostname.clone(), paths: m.req.paths.clone() };
        Box::pin(
            async move {
                let addr = addr.ok_or_else(|| RemoteError::UnknownDatastore { name: name.clone() })?;
                let ds = addr.send(DatastoreHandle).await.map_err(|e| RemoteError::Internal(format!("datastore actor: {e}")))?;
                let (owner, req, n) = (m.owner.clone(), m.req.clone(), name.clone());
                let info = blocking(move || sessions.open(ds, &n, &owner, &req)).await.map_err(RemoteError::Internal)??;
                let job = jobs.send(BeginExternal { spec }).await.ok().and_then(|r| r.ok());
                Ok::<_, RemoteError>((info, job))
            }
            .into_actor(self)
            .map(|res, act, _| {
                let (info, job) = res?;
                if let Some((job, handle)) = job {
                    handle.log(&format!("agent session {} opened", info.session));
                    act.running.insert(info.session.clone(), (job.id, handle));
                }
                Ok(info)
            }),
        )
    }
}

/// One call into an agent's session, by `owner` (the token's principal).
pub enum SessionCall {
    Missing(Vec<BlobId>),
    PutPack { pack: PackId, seq: u64, bytes: bytes::Bytes },
    ReadTree(BlobId),
    Commit(CommitRequest),
    Close,
}

pub enum SessionReply {
    Missing(Vec<bool>),
    Stored(PackStored),
    Tree(Vec<u8>),
    Committed(Committed),
    Closed,
}

#[derive(Message)]
#[rtype(result = "Result<SessionReply, RemoteError>")]
pub struct CallSession {
    pub owner: String,
    pub session: String,
    pub call: SessionCall,
}

impl Handler<CallSession> for IngestActor {
    type Result = ResponseActFuture<Self, Result<SessionReply, RemoteError>>;
    fn handle(&mut self, m: CallSession, _: &mut Context<Self>) -> Self::Result {
        let sessions = self.sessions.clone();
        let handle = self.running.get(&m.session).map(|(_, h)| h.clone());
        let session = m.session.clone();
        let cancelled = handle.as_ref().is_some_and(|h| h.progress.cancelled());
        Box::pin(
            async move {
                if cancelled {
                    let (s, o) = (m.session.clone(), m.owner.clone());
                    let _ = blocking(move || sessions.close(&s, &o)).await;
                    return Err(RemoteError::BadRequest("the backup job was cancelled on the appliance".into()));
                }
                blocking(move || {
                    if let SessionCall::Close = m.call {
                        return sessions.close(&m.session, &m.owner).map(|_| SessionReply::Closed);
                    }
                    let s = sessions.get(&m.session, &m.owner)?;
                    Ok(match m.call {
                        SessionCall::Missing(ids) => SessionReply::Missing(s.missing(&ids)?),
                        SessionCall::PutPack { pack, seq, bytes } => {
                            let stored = s.put_pack(&pack, seq, &bytes)?;
                            if let Some(h) = &handle {
                                h.progress.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                                h.progress.files.fetch_add(stored.blobs as u64, Ordering::Relaxed);
                            }
                            SessionReply::Stored(stored)
                        }
                        SessionCall::ReadTree(id) => SessionReply::Tree(s.read_tree(&id)?),
                        SessionCall::Commit(req) => SessionReply::Committed(s.commit(&req)?),
                        SessionCall::Close => unreachable!("handled above"),
                    })
                })
                .await
                .unwrap_or_else(|panic| Err(RemoteError::Internal(panic)))
            }
            .into_actor(self)
            .map(move |res, act, _| {
                match &res {
                    Ok(SessionReply::Committed(c)) => {
                        let result = serde_json::json!({ "snapshot_id": c.snapshot, "session": session });
                        act.finish(&session, Ok(JobOutput { result, warnings: Vec::new() }));
                    }
                    Ok(SessionReply::Closed) => act.finish(&session, Err(JobFailure::Failed("the agent ended its session without a snapshot".into()))),
                    Err(e @ (RemoteError::BadPack { .. } | RemoteError::MissingRef { .. } | RemoteError::Store(_))) => {
                        if let Some((_, h)) = act.running.get(&session) {
                            h.log(&format!("error: {e}"));
                        }
                    }
                    _ => {}
                }
                res
            }),
        )
    }
}

/// An agent's token was revoked: its sessions end now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DropAgentSessions {
    pub owner: String,
}

impl Handler<DropAgentSessions> for IngestActor {
    type Result = ();
    fn handle(&mut self, m: DropAgentSessions, _: &mut Context<Self>) {
        self.sessions.close_owner(&m.owner);
    }
}
