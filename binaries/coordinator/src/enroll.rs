//! `POST /api/v1/enroll`: a daemon presents a join code and a public key and gets a certificate
//! for its machine id. No token: the code is the credential. The actor checks the code and
//! issues the certificate ([`crate::join_codes`]); this handler only maps its answer to HTTP:
//! 200 with an [`EnrollResponse`], or an [`EnrollRefusal`] (`{ "error", "reason" }`) with 403
//! (the code is refused), 400 (a malformed request), 503 (no CA) or 500 (it could not be
//! stored). It knows nothing of the transport (TLS is the server's business).

use adora_message::enroll::{EnrollRefusal, EnrollRefusalReason, EnrollRequest, EnrollResponse};
use axum::{
    extract::{rejection::JsonRejection, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use tokio::sync::oneshot;

use crate::{actor::Event, AppState};

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.reason.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

/// An [`EnrollRefusal`] as an HTTP answer.
struct Refused(EnrollRefusal);

fn shutting_down() -> Refused {
    Refused(EnrollRefusal::new(
        EnrollRefusalReason::Internal,
        "the coordinator is shutting down",
    ))
}

/// The enrollment handler.
pub(crate) async fn enroll(
    State(state): State<AppState>,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> Result<Json<EnrollResponse>, Response> {
    let Json(request) = body.map_err(|e| {
        let why = format!("not an enrollment request: {}", e.body_text());
        Refused(EnrollRefusal::new(EnrollRefusalReason::Malformed, why)).into_response()
    })?;
    let (reply, answer) = oneshot::channel();
    let event = Event::Enroll { request, reply };
    if state.events.send(event).await.is_err() {
        return Err(shutting_down().into_response());
    }
    match answer.await {
        Ok(Ok(response)) => Ok(Json(response)),
        Ok(Err(refusal)) => Err(Refused(refusal).into_response()),
        Err(_) => Err(shutting_down().into_response()),
    }
}
