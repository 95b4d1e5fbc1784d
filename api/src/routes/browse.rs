//! A file snapshot's tree as the web console browses it: one directory
//! at a time, and one file's bytes streamed out of the datastore.

use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::routes::snapshots::find_snapshot;
use crate::ApiState;
use actix_web::{get, web, HttpResponse};
use lifeboat_api_types::{ApiError, SnapshotDirListing, SnapshotEntry, SnapshotPathQuery};
use lifeboat_store::{Datastore, Node, NodeKind, Snapshot, SnapshotKind, Tree};

/// Walks `path` from the snapshot's root: the tree of the directory it
/// names, or the node of the file it names.
enum Found {
    Dir(Tree),
    Leaf(Node),
}

fn walk(ds: &Datastore, snap: &Snapshot, path: &str) -> Result<Found, ApiErr> {
    let mut dir = ds.load_tree(&snap.tree).map_err(ApiErr::internal)?;
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    for (i, comp) in comps.iter().enumerate() {
        if *comp == ".." {
            return Err(ApiErr::BadRequest(format!("{path:?}: `..` is not allowed in a snapshot path")));
        }
        let node = dir.find(comp.as_bytes()).ok_or_else(|| ApiErr::NotFound(format!("{path} is not in this snapshot")))?;
        match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(id)) => dir = ds.load_tree(&id).map_err(ApiErr::internal)?,
            _ if i + 1 == comps.len() => return Ok(Found::Leaf(node.clone())),
            _ => return Err(ApiErr::NotFound(format!("{path}: /{} is not a directory in this snapshot", comps[..=i].join("/")))),
        }
    }
    Ok(Found::Dir(dir))
}

async fn file_snapshot(st: &ApiState, name: &str, id: &str) -> Result<(std::sync::Arc<Datastore>, Snapshot), ApiErr> {
    let (ds, snap) = find_snapshot(st, name, id).await?;
    if snap.kind == SnapshotKind::Vm {
        return Err(ApiErr::BadRequest(format!("snapshot {id} is a VM backup: browse its guest's files with vm-files")));
    }
    Ok((ds, snap))
}

fn entry(n: &Node) -> SnapshotEntry {
    let kind = match n.kind {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        _ => "other",
    };
    SnapshotEntry {
        name: n.name_lossy(),
        kind: kind.into(),
        size: if n.kind == NodeKind::File { n.size } else { 0 },
        mode: n.mode & 0o7777,
        mtime: chrono::DateTime::from_timestamp_nanos(n.mtime_ns),
        target: n.link_target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
    }
}

/// One directory of a file snapshot (`path`, default `/`), its entries in
/// name order.
#[utoipa::path(tag = "snapshots", security(("bearer" = [])), params(("name" = String, Path), ("id" = String, Path), SnapshotPathQuery),
    responses((status = 200, body = SnapshotDirListing), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/datastores/{name}/snapshots/{id}/tree")]
pub async fn tree(_auth: Auth<perm::Read>, st: web::Data<ApiState>, path: web::Path<(String, String)>, q: web::Query<SnapshotPathQuery>) -> Result<web::Json<SnapshotDirListing>, ApiErr> {
    let (name, id) = path.into_inner();
    let (ds, snap) = file_snapshot(&st, &name, &id).await?;
    let p = q.into_inner().path.unwrap_or_else(|| "/".into());
    let p2 = p.clone();
    let found = lifeboat_actors::datastore::blocking(move || walk(&ds, &snap, &p2)).await.map_err(ApiErr::Internal)??;
    match found {
        Found::Dir(t) => Ok(web::Json(SnapshotDirListing { path: p, entries: t.nodes.iter().map(entry).collect() })),
        Found::Leaf(_) => Err(ApiErr::BadRequest(format!("{p} is not a directory: download it with .../download?path="))),
    }
}

/// One regular file of a file snapshot, as bytes (`path` names it).
#[utoipa::path(tag = "snapshots", security(("bearer" = [])), params(("name" = String, Path), ("id" = String, Path), SnapshotPathQuery),
    responses((status = 200, description = "the file's bytes", content_type = "application/octet-stream"), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
#[get("/api/datastores/{name}/snapshots/{id}/download")]
pub async fn download(_auth: Auth<perm::Read>, st: web::Data<ApiState>, path: web::Path<(String, String)>, q: web::Query<SnapshotPathQuery>) -> Result<HttpResponse, ApiErr> {
    let (name, id) = path.into_inner();
    let (ds, snap) = file_snapshot(&st, &name, &id).await?;
    let p = q.into_inner().path.ok_or_else(|| ApiErr::BadRequest("name the file to download with `path`".into()))?;
    let p2 = p.clone();
    let (ds2, found) = lifeboat_actors::datastore::blocking(move || {
        let f = walk(&ds, &snap, &p2);
        (ds, f)
    })
    .await
    .map_err(ApiErr::Internal)?;
    let node = match found? {
        Found::Leaf(n) if n.kind == NodeKind::File => n,
        _ => return Err(ApiErr::BadRequest(format!("{p} is not a regular file in this snapshot"))),
    };
    let file_name = node.name_lossy();
    let len = node.size;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    // Blob by blob, so a large file never sits in memory whole; a read
    // error cuts the stream short, which the client sees as a broken
    // download rather than a silently wrong file.
    std::thread::spawn(move || {
        for blob in &node.content {
            let r = ds2.read_blob(blob).map(bytes::Bytes::from).map_err(std::io::Error::other);
            let failed = r.is_err();
            if tx.blocking_send(r).is_err() || failed {
                return;
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("Content-Disposition", format!("attachment; filename=\"{}\"", crate::routes::snapshots::header_name(&file_name))))
        .no_chunking(len)
        .streaming(tokio_stream::wrappers::ReceiverStream::new(rx)))
}
