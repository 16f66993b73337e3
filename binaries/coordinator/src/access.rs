//! Who may use the coordinator's authenticated routes (WebSockets, artifact store): the check of
//! the `Authorization: Bearer <token>` header and the `401` it answers when it fails.
//!
//! A leaf: the HTTP routes and the artifact store's routes both use it, and it uses neither.

use axum::{
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};

use adora_client::Token;

/// A request without the right token.
pub(crate) struct Unauthorized;

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "authentication failed: missing or wrong token (use --token-file or ADORA_TOKEN)\n",
        )
            .into_response()
    }
}

/// Checks the request's token against `token`; `None` (tests only) lets everyone in.
pub(crate) fn authorize(token: Option<&Token>, headers: &HeaderMap) -> Result<(), Unauthorized> {
    let Some(token) = token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if crate::auth::verify_header(token, given) {
        Ok(())
    } else {
        tracing::warn!("rejected a connection: authentication failed");
        Err(Unauthorized)
    }
}
