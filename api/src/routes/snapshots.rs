use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{delete, get, post, web, HttpResponse};
use lifeboat_actors::jobs::StartJob;
use lifeboat_api_types::{
    ApiError, ForgetPreview, JobInfo, JobSpec, KeepRules, LabReportInfo, RestoreRequest, SnapshotInfo, VmFileEntry, VmFilesListing, VmFilesQuery, VmPartitionInfo, VmRestoreFilesRequest,
};

pub(crate) fn datastore(st: &ApiState, name: &str) -> Result<actix::Addr<lifeboat_actors::DatastoreActor>, ApiErr> {
    st.datastores.get(name).ok_or_else(|| ApiErr::NotFound(format!("datastore {name:?} does not exist")))
}

/// Snapshots of a datastore, oldest first.
#[utoipa::path(tag = "snapshots", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = [SnapshotInfo]), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/datastores/{name}/snapshots")]
pub async fn list(_auth: Auth<perm::Read>, st: web::Data<ApiState>, name: web::Path<String>) -> Result<web::Json<Vec<SnapshotInfo>>, ApiErr> {
    let ds = datastore(&st, &name)?;
    Ok(web::Json(ds.send(lifeboat_actors::datastore::SnapshotInfos).await?.map_err(ApiErr::Internal)?))
}

/// Remove a snapshot (its space comes back with the next gc).
#[utoipa::path(tag = "snapshots", security(("bearer" = [])), params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[delete("/api/datastores/{name}/snapshots/{id}")]
pub async fn delete(_auth: Auth<perm::Operate>, st: web::Data<ApiState>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiErr> {
    let (name, id) = path.into_inner();
    let ds = datastore(&st, &name)?;
    ds.send(lifeboat_actors::datastore::ForgetSnapshots(vec![id])).await?.map_err(|e| {
        if e.contains("no snapshot") || e.contains("matches no") || e.contains("not found") {
            ApiErr::NotFound(e)
        } else {
            ApiErr::BadRequest(e)
        }
    })?;
    Ok(HttpResponse::NoContent().finish())
}

/// Restore a snapshot into a directory on the appliance (starts a job).
///
/// Needs operator or admin. `target` must lie under `restore_roots`
/// (lifeboat.toml), reached without symlinks and clear of the state
/// directory, config, datastores and system trees, else 403 before
/// anything is written; see `POST /api/jobs` for what each role's
/// restore recreates.
#[utoipa::path(tag = "snapshots", security(("bearer" = [])), params(("name" = String, Path), ("id" = String, Path)), request_body = RestoreRequest,
    responses((status = 202, body = JobInfo), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[post("/api/datastores/{name}/snapshots/{id}/restore")]
pub async fn restore(auth: Auth<perm::Operate>, st: web::Data<ApiState>, path: web::Path<(String, String)>, body: web::Json<RestoreRequest>) -> Result<HttpResponse, ApiErr> {
    let (name, id) = path.into_inner();
    let b = body.into_inner();
    let spec = JobSpec::Restore { datastore: name, snapshot: id, target: b.target, include: b.include };
    let grant = auth.principal.grant();
    crate::routes::jobs::validate(&st, &spec, grant)?;
    let job = st.jobs.send(StartJob::now(spec, grant)).await??;
    Ok(HttpResponse::Accepted().json(job))
}

/// Reports of lab verifications in a datastore, newest first.
#[utoipa::path(tag = "labs", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = [LabReportInfo]), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/datastores/{name}/lab-reports")]
pub async fn lab_reports(_auth: Auth<perm::Read>, st: web::Data<ApiState>, name: web::Path<String>) -> Result<web::Json<Vec<LabReportInfo>>, ApiErr> {
    let dir = lab_reports_dir(&st, &name).await?;
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read(e.path().join("report.json")) else { continue };
        let Ok(r) = serde_json::from_slice::<lifeboat_lab::LabReport>(&text) else { continue };
        out.push(LabReportInfo {
            id: e.file_name().to_string_lossy().into_owned(),
            passed: r.passed,
            started: r.started,
            ended: r.ended,
            vms: r.vms.iter().map(|v| (v.vm.clone(), v.passed)).collect(),
        });
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.started));
    Ok(web::Json(out))
}

/// One file of a lab report: `report.html` (self-contained),
/// `report.json`, or a screenshot named in it.
#[utoipa::path(tag = "labs", security(("bearer" = [])), params(("name" = String, Path), ("id" = String, Path), ("file" = String, Path)),
    responses((status = 200, description = "the file"), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/datastores/{name}/lab-reports/{id}/{file}")]
pub async fn lab_report_file(_auth: Auth<perm::Read>, st: web::Data<ApiState>, path: web::Path<(String, String, String)>) -> Result<HttpResponse, ApiErr> {
    let (name, id, file) = path.into_inner();
    for part in [&id, &file] {
        if part.is_empty() || part.starts_with('.') || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(ApiErr::BadRequest(format!("{part:?} is not a report or file name")));
        }
    }
    let p = lab_reports_dir(&st, &name).await?.join(&id).join(&file);
    let body = std::fs::read(&p).map_err(|_| ApiErr::NotFound(format!("lab report {id} has no file {file}")))?;
    let ctype = match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    // The page is self-contained: it needs no script and loads nothing.
    Ok(HttpResponse::Ok().content_type(ctype).insert_header(("Content-Security-Policy", "default-src 'none'; img-src data:; style-src 'unsafe-inline'")).body(body))
}

async fn lab_reports_dir(st: &ApiState, name: &str) -> Result<std::path::PathBuf, ApiErr> {
    let ds = datastore(st, name)?;
    let handle = ds.send(lifeboat_actors::datastore::DatastoreHandle).await?;
    Ok(handle.root().join("lab-reports"))
}

/// The daemon's datastore and the snapshot `id` in it (404 when either
/// is missing).
pub(crate) async fn find_snapshot(st: &ApiState, name: &str, id: &str) -> Result<(std::sync::Arc<lifeboat_store::Datastore>, lifeboat_store::Snapshot), ApiErr> {
    let ds = datastore(st, name)?.send(lifeboat_actors::datastore::DatastoreHandle).await?;
    let (d2, id2) = (ds.clone(), id.to_string());
    // Seen as the index is now: the CLI or an agent may just have written
    // the snapshot.
    let found = lifeboat_actors::datastore::blocking(move || {
        d2.refresh_index()?;
        d2.resolve_snapshot(&id2)
    })
    .await
    .map_err(ApiErr::Internal)?;
    let (_, snap) = found.map_err(|e| ApiErr::NotFound(format!("snapshot {id} in datastore {name}: {e}")))?;
    Ok((ds, snap))
}

fn vm_files_err(e: lifeboat_vmfiles::VmFilesError) -> ApiErr {
    use lifeboat_vmfiles::VmFilesError as E;
    match e {
        e if e.is_not_found() => ApiErr::NotFound(e.to_string()),
        e @ (E::Snapshot(_) | E::ChooseDisk { .. } | E::ChoosePartition { .. } | E::BadPath { .. } | E::NoFilesystem { .. } | E::Unsupported { .. } | E::UnsupportedFilesystem { .. }) => {
            ApiErr::BadRequest(e.to_string())
        }
        e => ApiErr::Internal(e.to_string()),
    }
}

/// The guest's files in a VM snapshot, read-only (docs/vm-files.md):
/// without `path` the disk's partitions and LVM volumes, with `path` the
/// entries of that guest directory (or the one file it names).
///
/// Each call serves the disk from the datastore and mounts the partition
/// read-only for its duration; nothing is written to the datastore.
#[utoipa::path(tag = "snapshots", security(("bearer" = [])), params(("name" = String, Path), ("id" = String, Path), lifeboat_api_types::VmFilesQuery),
    responses((status = 200, body = VmFilesListing), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/datastores/{name}/snapshots/{id}/vm-files")]
pub async fn vm_files(_auth: Auth<perm::Read>, st: web::Data<ApiState>, path: web::Path<(String, String)>, q: web::Query<VmFilesQuery>) -> Result<web::Json<VmFilesListing>, ApiErr> {
    let (name, id) = path.into_inner();
    let (ds, snap) = find_snapshot(&st, &name, &id).await?;
    let q = q.into_inner();
    let listing = lifeboat_actors::datastore::blocking(move || -> Result<VmFilesListing, lifeboat_vmfiles::VmFilesError> {
        let disk = lifeboat_vmfiles::SnapshotDisk::open(&ds, &snap, q.disk.as_deref())?;
        let Some(path) = q.path else {
            let partitions = disk
                .layout
                .partitions
                .iter()
                .map(|p| VmPartitionInfo { name: p.name.clone(), start: p.start, size: p.size, fstype: p.fstype.clone(), label: p.label.clone(), unsupported: p.unsupported.clone() })
                .collect();
            return Ok(VmFilesListing { disk: disk.disk.clone(), table: disk.layout.table.clone(), partitions, partition: None, path: None, entries: Vec::new() });
        };
        let fs = disk.mount(q.partition.as_deref())?;
        let entries = fs.list(&path)?.into_iter().map(|e| VmFileEntry { name: e.name, mode: e.mode, uid: e.uid, gid: e.gid, size: e.size, mtime: e.mtime, link_target: e.link_target }).collect();
        Ok(VmFilesListing { disk: fs.disk.disk.clone(), table: fs.disk.layout.table.clone(), partitions: Vec::new(), partition: Some(fs.partition.name.clone()), path: Some(path), entries })
    })
    .await
    .map_err(ApiErr::Internal)?
    .map_err(vm_files_err)?;
    Ok(web::Json(listing))
}

/// A response body written by a blocking writer on another thread: each
/// 256 KiB goes out as one chunk; an error aborts the body, so the client
/// sees a cut stream rather than a short, valid-looking one.
struct BodyWriter {
    tx: tokio::sync::mpsc::Sender<Result<web::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl BodyWriter {
    const CHUNK: usize = 256 << 10;

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = web::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl std::io::Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

type GuestBody = tokio_stream::wrappers::ReceiverStream<Result<web::Bytes, std::io::Error>>;

/// Streams what `write` makes from a VM snapshot's mounted guest file
/// system. The mount must outlive the handler: a thread of its own mounts
/// it, runs `open` (which checks the request and returns what the headers
/// need, `I`, and what `write` needs, `S`), then writes the body and
/// unmounts at the end, also when the client goes away.
async fn guest_body<I, S>(
    st: &ApiState,
    name: &str,
    id: &str,
    q: VmFilesQuery,
    open: impl FnOnce(&lifeboat_vmfiles::GuestFiles) -> Result<(I, S), ApiErr> + Send + 'static,
    write: impl FnOnce(S, &mut BodyWriter) -> std::io::Result<()> + Send + 'static,
) -> Result<(I, GuestBody), ApiErr>
where
    I: Send + 'static,
    S: Send + 'static,
{
    let (ds, snap) = find_snapshot(st, name, id).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<I, ApiErr>>();
    std::thread::spawn(move || {
        let opened = (|| {
            let disk = lifeboat_vmfiles::SnapshotDisk::open(&ds, &snap, q.disk.as_deref()).map_err(vm_files_err)?;
            let fs = disk.mount(q.partition.as_deref()).map_err(vm_files_err)?;
            let (info, state) = open(&fs)?;
            Ok((fs, info, state))
        })();
        let (fs, info, state) = match opened {
            Ok(x) => x,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        if ready_tx.send(Ok(info)).is_err() {
            return;
        }
        let mut w = BodyWriter { tx: tx.clone(), buf: Vec::with_capacity(BodyWriter::CHUNK) };
        if let Err(e) = write(state, &mut w).and_then(|()| w.send()) {
            tracing::warn!("VM files stream of snapshot {}: {e}", snap.tree.short());
            let _ = tx.blocking_send(Err(e));
        }
        drop(fs);
    });
    let info = ready_rx.await.map_err(|_| ApiErr::Internal("the VM file reader ended early".into()))??;
    Ok((info, tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Only a plain name goes into a header.
pub(crate) fn header_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.+".contains(c) { c } else { '_' }).collect()
}

/// The guest path named by `path` in a VM files request.
fn guest_path(q: &VmFilesQuery, what: &str) -> Result<String, ApiErr> {
    q.path.clone().ok_or_else(|| ApiErr::BadRequest(format!("name the guest {what} with `path`")))
}

/// One regular file of a VM snapshot's guest, as bytes (`path` names it;
/// `disk` and `partition` as for `vm-files`).
#[utoipa::path(tag = "snapshots", security(("bearer" = [])), params(("name" = String, Path), ("id" = String, Path), lifeboat_api_types::VmFilesQuery),
    responses((status = 200, description = "the file's bytes", content_type = "application/octet-stream"), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/datastores/{name}/snapshots/{id}/vm-files/download")]
pub async fn vm_file_download(_auth: Auth<perm::Read>, st: web::Data<ApiState>, path: web::Path<(String, String)>, q: web::Query<VmFilesQuery>) -> Result<HttpResponse, ApiErr> {
    let (name, id) = path.into_inner();
    let q = q.into_inner();
    let guest = guest_path(&q, "file to download")?;
    let open = move |fs: &lifeboat_vmfiles::GuestFiles| {
        let p = fs.resolve(&guest).map_err(vm_files_err)?;
        let m = std::fs::symlink_metadata(&p).map_err(ApiErr::internal)?;
        if !m.is_file() {
            return Err(ApiErr::BadRequest(format!("{guest} is not a regular file; list it with vm-files, or fetch it as vm-files/archive")));
        }
        let f = std::fs::File::open(&p).map_err(ApiErr::internal)?;
        let file_name = std::path::Path::new(&guest).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(((file_name, m.len()), f))
    };
    let ((file_name, len), body) = guest_body(&st, &name, &id, q, open, |mut f, w| std::io::copy(&mut f, w).map(|_| ())).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("Content-Disposition", format!("attachment; filename=\"{}\"", header_name(&file_name))))
        .no_chunking(len)
        .streaming(body))
}

/// A guest file or directory of a VM snapshot as a tar stream, with modes,
/// owners, times, symlinks, hard links and special files (`path` names
/// it; its entries are named under its last component, or at the top for
/// the guest root). How an agent host restores guest files: `lifeboat
/// --server URL vm files SNAPSHOT --extract PATH DST` unpacks it there.
#[utoipa::path(tag = "snapshots", security(("bearer" = [])), params(("name" = String, Path), ("id" = String, Path), lifeboat_api_types::VmFilesQuery),
    responses((status = 200, description = "a tar stream", content_type = "application/x-tar"), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/datastores/{name}/snapshots/{id}/vm-files/archive")]
pub async fn vm_files_archive(_auth: Auth<perm::Read>, st: web::Data<ApiState>, path: web::Path<(String, String)>, q: web::Query<VmFilesQuery>) -> Result<HttpResponse, ApiErr> {
    let (name, id) = path.into_inner();
    let q = q.into_inner();
    let guest = guest_path(&q, "file or directory to archive")?;
    let open = move |fs: &lifeboat_vmfiles::GuestFiles| {
        let p = fs.resolve(&guest).map_err(vm_files_err)?;
        let top = lifeboat_vmfiles::guest_relative(&guest).map_err(vm_files_err)?.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok((top.clone(), (p, top)))
    };
    let (top, body) = guest_body(&st, &name, &id, q, open, |(p, top), w| lifeboat_vmfiles::write_tar(&p, &top, w).map(|_| ())).await?;
    let file = if top.is_empty() { "guest-root".to_string() } else { header_name(&top) };
    Ok(HttpResponse::Ok().content_type("application/x-tar").insert_header(("Content-Disposition", format!("attachment; filename=\"{file}.tar\""))).streaming(body))
}

/// Copy guest paths of a VM snapshot into a directory on the appliance
/// (starts a `vm-restore-files` job). Needs operator or admin; `target`
/// is confined as for `restore`, and so are owners, set-ID bits and
/// device nodes.
#[utoipa::path(tag = "snapshots", security(("bearer" = [])), params(("name" = String, Path), ("id" = String, Path)), request_body = VmRestoreFilesRequest,
    responses((status = 202, body = JobInfo), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[post("/api/datastores/{name}/snapshots/{id}/vm-restore-files")]
pub async fn vm_restore_files(auth: Auth<perm::Operate>, st: web::Data<ApiState>, path: web::Path<(String, String)>, body: web::Json<VmRestoreFilesRequest>) -> Result<HttpResponse, ApiErr> {
    let (name, id) = path.into_inner();
    let b = body.into_inner();
    if b.paths.is_empty() {
        return Err(ApiErr::BadRequest("name at least one guest path in `paths`".into()));
    }
    find_snapshot(&st, &name, &id).await?;
    let spec = JobSpec::VmRestoreFiles { datastore: name, snapshot: id, paths: b.paths, target: b.target, disk: b.disk, partition: b.partition };
    let grant = auth.principal.grant();
    crate::routes::jobs::validate(&st, &spec, grant)?;
    let job = st.jobs.send(StartJob::now(spec, grant)).await??;
    Ok(HttpResponse::Accepted().json(job))
}

/// What keep rules would remove now, without removing anything: the
/// preview before a `forget` job (each group of the same host and paths
/// on its own, as the job applies them). Operator or admin, like the job.
#[utoipa::path(tag = "snapshots", security(("bearer" = [])), params(("name" = String, Path)), request_body = KeepRules,
    responses((status = 200, body = ForgetPreview), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[post("/api/datastores/{name}/forget-preview")]
pub async fn forget_preview(_auth: Auth<perm::Operate>, st: web::Data<ApiState>, name: web::Path<String>, body: web::Json<KeepRules>) -> Result<web::Json<ForgetPreview>, ApiErr> {
    let policy = lifeboat_actors::work::forget::policy(&body);
    if policy.is_empty() {
        return Err(ApiErr::BadRequest("the keep rules are empty, so nothing would be kept: set at least one of last/hourly/daily/weekly/monthly/yearly".into()));
    }
    let addr = datastore(&st, &name)?;
    let infos = addr.send(lifeboat_actors::datastore::SnapshotInfos).await?.map_err(ApiErr::Internal)?;
    let snaps = addr.send(lifeboat_actors::datastore::ListSnapshots).await?.map_err(ApiErr::internal)?;
    let tz = st.tz;
    let decisions = lifeboat_actors::datastore::blocking(move || {
        let mut keep = std::collections::HashMap::new();
        for (_, group) in lifeboat_store::group_by_source(&snaps) {
            for d in policy.apply(&group, &tz) {
                keep.insert(d.id.to_hex(), d.keep);
            }
        }
        keep
    })
    .await
    .map_err(ApiErr::Internal)?;
    let (keep, remove) = infos.into_iter().partition(|i| decisions.get(&i.id).copied().unwrap_or(true));
    Ok(web::Json(ForgetPreview { keep, remove }))
}
