use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{get, post, web};
use lifeboat_api_types::{ApiError, DatastoreCreate, DatastoreInfo};
use lifeboat_state::{DatastoreEntry, PathUse};

/// All datastores with their usage.
#[utoipa::path(tag = "datastores", security(("bearer" = [])),
    responses((status = 200, body = [DatastoreInfo]), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[get("/api/datastores")]
pub async fn list(_auth: Auth<perm::Read>, st: web::Data<ApiState>) -> Result<web::Json<Vec<DatastoreInfo>>, ApiErr> {
    let mut out = Vec::new();
    for name in st.datastores.names() {
        out.push(usage(&st, &name).await?);
    }
    Ok(web::Json(out))
}

async fn usage(st: &ApiState, name: &str) -> Result<DatastoreInfo, ApiErr> {
    let ds = st.datastores.get(name).ok_or_else(|| ApiErr::NotFound(format!("datastore {name:?} does not exist")))?;
    ds.send(lifeboat_actors::datastore::Usage).await?.map_err(ApiErr::Internal)
}

/// One datastore's usage.
#[utoipa::path(tag = "datastores", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = DatastoreInfo), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/datastores/{name}")]
pub async fn get(_auth: Auth<perm::Read>, st: web::Data<ApiState>, name: web::Path<String>) -> Result<web::Json<DatastoreInfo>, ApiErr> {
    Ok(web::Json(usage(&st, &name).await?))
}

/// Create a datastore in an empty or new directory (or add an existing one).
///
/// Admin only. `path` may be any directory but the state directory
/// (except under its `datastores/`), the config, another datastore or a
/// system tree, reached without symlinks and without `..`; else 403.
/// From then on no job may read or write inside it.
#[utoipa::path(tag = "datastores", security(("bearer" = [])), request_body = DatastoreCreate,
    responses((status = 200, body = DatastoreInfo), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 409, body = ApiError)))]
#[post("/api/datastores")]
pub async fn create(auth: Auth<perm::Admin>, st: web::Data<ApiState>, body: web::Json<DatastoreCreate>) -> Result<web::Json<DatastoreInfo>, ApiErr> {
    let b = body.into_inner();
    lifeboat_state::config::validate_name(&b.name).map_err(ApiErr::BadRequest)?;
    let _guard = st.datastore_create.lock().await;
    if st.datastores.contains(&b.name) {
        return Err(ApiErr::Conflict(format!("a datastore named {:?} exists already", b.name)));
    }
    // Never in the state or config directory, a system tree or another
    // datastore; no symlink on the way (an admin may name any other
    // directory: there is no root for datastores).
    st.confine.read().check_resolved(&b.path, PathUse::Datastore, auth.principal.grant()).map_err(crate::routes::jobs::confine_err)?;
    let mut entry = DatastoreEntry { name: b.name.clone(), path: b.path.clone().into(), key_file: None };
    if let Some(pw) = &b.encryption_password {
        lifeboat_state::auth::check_password_strength(pw).map_err(|e| ApiErr::BadRequest(format!("the encryption password: {e}")))?;
        let (dir, name) = (st.state_dir.clone(), b.name.clone());
        // A key file left by an earlier attempt under this name is replaced.
        let _ = std::fs::remove_file(dir.join("keys").join(format!("{name}.key")));
        entry.key_file = Some(web::block(move || crate::daemon::new_key_file(&dir, &name)).await.map_err(ApiErr::internal)?.map_err(ApiErr::internal)?);
    }
    let new = crate::daemon::NewDatastore { append_only: b.append_only, password: b.encryption_password.clone() };
    let opened = crate::daemon::prepare_datastore(entry.clone(), new, st.tz).await;
    let addr = match opened {
        Ok(a) => a,
        Err(e) => {
            if let Some(k) = &entry.key_file {
                let _ = std::fs::remove_file(k);
            }
            return Err(ApiErr::BadRequest(e));
        }
    };
    let state_dir = st.state_dir.clone();
    let e2 = entry.clone();
    web::block(move || {
        let mut added = lifeboat_state::config::added_datastores(&state_dir)?;
        added.push(e2);
        lifeboat_state::config::save_added_datastores(&state_dir, &added)
    })
    .await
    .map_err(ApiErr::internal)??;
    st.datastores.insert(&b.name, addr);
    st.confine.write().add_datastore(&entry);
    st.health.do_send(lifeboat_actors::WatchDatastore { name: b.name.clone(), path: b.path.clone().into() });
    tracing::info!(name = %b.name, path = %b.path, "datastore added");
    Ok(web::Json(usage(&st, &b.name).await?))
}
