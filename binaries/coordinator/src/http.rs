//! The HTTP side: routes, authentication of the WebSocket endpoints, health and metrics.

use axum::{
    extract::{
        ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade},
        State,
    },
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Extension, Json, Router,
};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::{
    access::{admin_only, authorize, Caller, PeerCert},
    actor::Event,
    ws, AppState,
};

/// The coordinator's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/v1/ca", get(ca))
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

/// `GET /api/v1/ca`: the cluster CA certificate (public). A daemon enrolling fetches it without
/// trusting it and compares its hash with the one in its join code.
async fn ca(State(state): State<AppState>) -> Response {
    match &state.ca {
        Some(ca) => (
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            ca.cert_pem().to_owned(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "this coordinator has no CA\n",
        )
            .into_response(),
    }
}

async fn control(
    State(state): State<AppState>,
    peer: Option<Extension<PeerCert>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let caller = authorize(&state, peer.as_deref(), &headers);
    if let Err(e) = caller.and_then(|c| admin_only(&c, "the control connection")) {
        return e.into_response();
    }
    upgrade_with(state, upgrade, "client connection", ws::serve_client)
}

async fn daemon(
    State(state): State<AppState>,
    peer: Option<Extension<PeerCert>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // A daemon with a certificate may only register as the machine it was issued for.
    let machine = match authorize(&state, peer.as_deref(), &headers) {
        Ok(Caller::Daemon(machine)) => Some(machine),
        Ok(Caller::Admin) => None,
        Err(e) => return e.into_response(),
    };
    upgrade_with(state, upgrade, "daemon connection", move |socket, state| {
        ws::serve_daemon(socket, state, machine)
    })
}

/// Upgrades an authorized request to a WebSocket served by `serve`, a task of the coordinator
/// named `what`. Authentication comes first (in the callers), so a client without credentials
/// learns that, whatever else is wrong with its request.
fn upgrade_with<F, Fut>(
    state: AppState,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    what: &'static str,
    serve: F,
) -> Response
where
    F: FnOnce(axum::extract::ws::WebSocket, AppState) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    match upgrade {
        Ok(upgrade) => {
            let tasks = state.tasks.clone();
            upgrade.on_upgrade(move |socket| tasks.track(what, serve(socket, state)))
        }
        Err(rejection) => rejection.into_response(),
    }
}

/// `GET /metrics`: the token or a daemon certificate, unless the coordinator was started with
/// `--metrics-public` (Prometheus sends the token as a bearer token).
async fn metrics(
    State(state): State<AppState>,
    peer: Option<Extension<PeerCert>>,
    headers: HeaderMap,
) -> Response {
    if !state.metrics_public {
        if let Err(e) = authorize(&state, peer.as_deref(), &headers) {
            return e.into_response();
        }
    }
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
