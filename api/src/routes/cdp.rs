//! Continuous data protection: the protected VMs of every datastore with
//! their journals' time ranges, sessions and bookmarks; bookmarks; and a
//! moment served read-only over NBD. A protection itself is a
//! `cdp-protect` job (`POST /api/jobs`).

use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::routes::snapshots::datastore;
use crate::ApiState;
use actix_web::{get, post, web, HttpResponse};
use lifeboat_actors::datastore::{blocking, DatastoreHandle};
use lifeboat_api_types::{ApiError, CdpBookmark, CdpBookmarkCreate, CdpExportCreate, CdpVmInfo, ExportInfo};
use lifeboat_cdp::{CdpError, ProtectedVm};

fn cdp_err(e: CdpError) -> ApiErr {
    match e {
        CdpError::Invalid(m) | CdpError::InUse(m) => ApiErr::BadRequest(m),
        e => ApiErr::Internal(e.to_string()),
    }
}

/// The datastore's root and the protected VM `vm` in it (404 if it has none).
async fn protected(st: &ApiState, name: &str, vm: &str) -> Result<(std::path::PathBuf, ProtectedVm), ApiErr> {
    let root = datastore(st, name)?.send(DatastoreHandle).await?.root().to_path_buf();
    let pvm = ProtectedVm::at(&root.join("cdp"), vm).map_err(cdp_err)?;
    if !pvm.exists() {
        return Err(ApiErr::NotFound(format!("VM {vm:?} is not protected in datastore {name}: start a cdp-protect job (POST /api/jobs)")));
    }
    Ok((root, pvm))
}

/// Every protected VM of every datastore: its disks' journal ranges and
/// protection sessions, its bookmarks, and whether a protection runs.
#[utoipa::path(tag = "cdp", security(("bearer" = [])),
    responses((status = 200, body = [CdpVmInfo]), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[get("/api/cdp")]
pub async fn list(_auth: Auth<perm::Read>, st: web::Data<ApiState>) -> Result<web::Json<Vec<CdpVmInfo>>, ApiErr> {
    let mut roots = Vec::new();
    for name in st.datastores.names() {
        if let Some(a) = st.datastores.get(&name) {
            roots.push((name, a.send(DatastoreHandle).await?.root().to_path_buf()));
        }
    }
    let replicas = st.replicas.clone();
    let out = blocking(move || roots.iter().flat_map(|(n, r)| replicas.infos(n, r)).collect()).await.map_err(ApiErr::Internal)?;
    Ok(web::Json(out))
}

/// One protected VM of a datastore (as `GET /api/cdp` lists it).
#[utoipa::path(tag = "cdp", security(("bearer" = [])), params(("name" = String, Path), ("vm" = String, Path)),
    responses((status = 200, body = CdpVmInfo), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/datastores/{name}/cdp/{vm}")]
pub async fn get(_auth: Auth<perm::Read>, st: web::Data<ApiState>, path: web::Path<(String, String)>) -> Result<web::Json<CdpVmInfo>, ApiErr> {
    let (name, vm) = path.into_inner();
    let (_, pvm) = protected(&st, &name, &vm).await?;
    let replicas = st.replicas.clone();
    let info = blocking(move || {
        let mut i = pvm.info(&name, &|disk, dir| replicas.open(&name, &pvm.name, disk, dir))?;
        i.job = replicas.job(&name, &pvm.name);
        i.protecting = i.job.is_some();
        Ok(i)
    })
    .await
    .map_err(ApiErr::Internal)?
    .map_err(cdp_err)?;
    Ok(web::Json(info))
}

/// Name a moment of a protected VM (default: now).
#[utoipa::path(tag = "cdp", security(("bearer" = [])), params(("name" = String, Path), ("vm" = String, Path)), request_body = CdpBookmarkCreate,
    responses((status = 201, body = CdpBookmark), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[post("/api/datastores/{name}/cdp/{vm}/bookmarks")]
pub async fn bookmark(_auth: Auth<perm::Operate>, st: web::Data<ApiState>, path: web::Path<(String, String)>, body: web::Json<CdpBookmarkCreate>) -> Result<HttpResponse, ApiErr> {
    let (name, vm) = path.into_inner();
    let (_, pvm) = protected(&st, &name, &vm).await?;
    let b = body.into_inner();
    let made = blocking(move || pvm.add_bookmark(&b.name, b.at.unwrap_or_else(chrono::Utc::now))).await.map_err(ApiErr::Internal)?.map_err(cdp_err)?;
    st.replicas.bookmarked(&name, &vm, &made);
    Ok(HttpResponse::Created().json(made))
}

/// Serve a protected VM's disks as they were at a moment (a time or a
/// bookmark), read-only over NBD on `nbd_listen`, one export per disk
/// (listed and closed with `/api/exports`). Works while the protection
/// runs: the journal keeps growing, the moment stays as it was.
#[utoipa::path(tag = "cdp", security(("bearer" = [])), params(("name" = String, Path), ("vm" = String, Path)), request_body = CdpExportCreate,
    responses((status = 200, body = [ExportInfo]), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[post("/api/datastores/{name}/cdp/{vm}/exports")]
pub async fn export(_auth: Auth<perm::Operate>, st: web::Data<ApiState>, path: web::Path<(String, String)>, body: web::Json<CdpExportCreate>) -> Result<web::Json<Vec<ExportInfo>>, ApiErr> {
    let (name, vm) = path.into_inner();
    let (_, pvm) = protected(&st, &name, &vm).await?;
    let b = body.into_inner();
    let replicas = st.replicas.clone();
    let ds = name.clone();
    let points = blocking(move || -> Result<_, CdpError> {
        let t = pvm.resolve_time(&b.at)?;
        let disks = pvm.disks();
        let chosen: Vec<String> = match &b.disk {
            Some(d) if disks.contains(d) => vec![d.clone()],
            Some(d) => return Err(CdpError::Invalid(format!("VM {} has no protected disk {d:?} (its disks: {})", pvm.name, disks.join(", ")))),
            None => disks,
        };
        let live = replicas.job(&ds, &pvm.name).is_some();
        let mut out = Vec::new();
        for d in chosen {
            let j = replicas.open(&ds, &pvm.name, &d, &pvm.journal_dir(&d)?)?;
            out.push((d.clone(), pvm.point(&d, j, t, live)?));
        }
        Ok((pvm.name.clone(), t, out))
    })
    .await
    .map_err(ApiErr::Internal)?
    .map_err(cdp_err)?;
    let (vm_name, t, devices) = points;
    let mut infos = Vec::new();
    for (disk, dev) in devices {
        let source = format!("cdp:{vm_name}@{}", t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        infos.push(st.exports.send(lifeboat_actors::export::ExportDevice { datastore: name.clone(), source, disk, device: std::sync::Arc::new(dev) }).await??);
    }
    Ok(web::Json(infos))
}
