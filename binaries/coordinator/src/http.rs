//! The HTTP side: routes, authentication of the WebSocket endpoints, health and metrics.

use axum::{
    extract::{
        ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade},
        State,
    },
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::{access::authorize, actor::Event, ws, AppState};

/// The coordinator's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route(adora_client::CONTROL_PATH, get(control))
        .route(adora_client::DAEMON_PATH, get(daemon))
        .route(
            "/api/v1/artifacts/{build_id}/{node_id}",
            get(crate::artifacts::get).put(crate::artifacts::put),
        )
        .route(
            adora_message::enroll::ENROLL_PATH,
            axum::routing::post(crate::enroll::enroll),
        )
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    protocol_version: u32,
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: adora_message::ADORA_VERSION,
        protocol_version: adora_message::envelope::CONTROL_PROTOCOL_VERSION,
    })
}

async fn control(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    upgrade_authorized(
        state,
        &headers,
        upgrade,
        "client connection",
        ws::serve_client,
    )
}

async fn daemon(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    upgrade_authorized(
        state,
        &headers,
        upgrade,
        "daemon connection",
        ws::serve_daemon,
    )
}

/// Checks the token, then upgrades to a WebSocket served by `serve`, a task of the coordinator
/// named `what`. Authentication comes first, so a client without the token learns that,
/// whatever else is wrong with its request.
fn upgrade_authorized<F, Fut>(
    state: AppState,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    what: &'static str,
    serve: F,
) -> Response
where
    F: FnOnce(axum::extract::ws::WebSocket, AppState) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if let Err(e) = authorize(state.token.as_ref(), headers) {
        return e.into_response();
    }
    match upgrade {
        Ok(upgrade) => {
            let tasks = state.tasks.clone();
            upgrade.on_upgrade(move |socket| tasks.track(what, serve(socket, state)))
        }
        Err(rejection) => rejection.into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let (reply, rx) = oneshot::channel();
    if state.events.send(Event::Metrics { reply }).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "coordinator is shutting down\n",
        )
            .into_response();
    }
    let Ok(m) = rx.await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "coordinator is shutting down\n",
        )
            .into_response();
    };
    let out = crate::metrics::render(&m);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], out).into_response()
}
