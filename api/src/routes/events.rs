use crate::auth::{perm, Auth};
use crate::error::ApiErr;
use crate::ApiState;
use actix_web::{get, web, HttpResponse};
use futures_util::StreamExt;
use lifeboat_api_types::ApiError;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream, IntervalStream};

/// Server-sent events: job states and progress, skipped schedules,
/// notices. Each `data:` line is one `Event` as JSON.
#[utoipa::path(tag = "events", security(("bearer" = [])),
    responses((status = 200, description = "text/event-stream of Event", content_type = "text/event-stream", body = lifeboat_api_types::Event),
        (status = 401, body = ApiError), (status = 403, body = ApiError)))]
#[get("/api/events")]
pub async fn stream(_auth: Auth<perm::Read>, st: web::Data<ApiState>) -> Result<HttpResponse, ApiErr> {
    let rx = st.events.send(lifeboat_actors::events::Subscribe).await?;
    let events = BroadcastStream::new(rx).map(|r| match r {
        Ok(ev) => format!("data: {}\n\n", serde_json::to_string(&ev).unwrap_or_default()),
        Err(BroadcastStreamRecvError::Lagged(n)) => format!(": {n} events skipped (slow reader)\n\n"),
    });
    // A comment now and then keeps proxies from timing the stream out
    // and lets the server notice a client that went away.
    let keepalive = IntervalStream::new(tokio::time::interval(std::time::Duration::from_secs(15))).map(|_| ": keepalive\n\n".to_string());
    let body = futures_util::stream::select(events, keepalive).map(|s| Ok::<_, actix_web::Error>(bytes::Bytes::from(s)));
    Ok(HttpResponse::Ok().content_type("text/event-stream").insert_header(("Cache-Control", "no-cache")).insert_header(("X-Accel-Buffering", "no")).streaming(body))
}
