//! Who is calling the coordinator's authenticated routes (WebSockets, artifact store, metrics):
//! a daemon, by the client certificate it presented in the TLS handshake (issued here at
//! enrollment and not revoked), or the admin, by the `Authorization: Bearer <token>` header.
//! A request that is neither gets `401`; a certificate this coordinator did not issue, or one
//! it revoked, gets `403` saying so.
//!
//! A leaf: the HTTP routes and the artifact store's routes both use it, and it uses neither.

use axum::{
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};

use crate::{certs::CertRegistry, AppState};

/// The fingerprint of the client certificate of the connection a request came on (`None`:
/// none presented), put in every request's extensions by the TLS server.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerCert(pub Option<String>);

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The token holder (CLI): everything.
    Admin,
    /// The daemon of this machine id (its certificate): the daemon routes and downloads.
    Daemon(String),
}

/// A request that is refused.
#[derive(Debug)]
pub(crate) enum Refused {
    /// No credentials, or a wrong token.
    Unauthorized,
    /// A certificate that is not (or no longer) accepted, or a caller without the right.
    Forbidden(String),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "authentication failed: missing or wrong token (use --token-file or ADORA_TOKEN), \
                 and no client certificate\n",
            )
                .into_response(),
            Refused::Forbidden(reason) => {
                (StatusCode::FORBIDDEN, format!("{reason}\n")).into_response()
            }
        }
    }
}

/// Identifies the caller of a request from its connection's certificate and its headers. A
/// coordinator without a token (tests only) lets everyone in as the admin.
pub(crate) fn authorize(
    state: &AppState,
    peer: Option<&PeerCert>,
    headers: &HeaderMap,
) -> Result<Caller, Refused> {
    if let Some(fingerprint) = peer.and_then(|p| p.0.as_deref()) {
        return daemon_of(&state.certs, fingerprint);
    }
    let Some(token) = state.token.as_ref() else {
        return Ok(Caller::Admin);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if crate::auth::verify_header(token, given) {
        Ok(Caller::Admin)
    } else {
        tracing::warn!("rejected a request: authentication failed");
        Err(Refused::Unauthorized)
    }
}

/// The admin only (CLI routes, uploads).
pub(crate) fn admin_only(caller: &Caller, what: &str) -> Result<(), Refused> {
    match caller {
        Caller::Admin => Ok(()),
        Caller::Daemon(machine) => Err(Refused::Forbidden(format!(
            "{what} needs the admin token; the certificate of daemon `{machine}` does not grant it"
        ))),
    }
}

fn daemon_of(certs: &CertRegistry, fingerprint: &str) -> Result<Caller, Refused> {
    match certs.lookup(fingerprint) {
        Some(entry) if !entry.revoked => Ok(Caller::Daemon(entry.machine_id)),
        Some(entry) => {
            tracing::warn!(
                "refused the revoked certificate of machine `{}`",
                entry.machine_id
            );
            Err(Refused::Forbidden(format!(
                "the certificate of machine `{}` was revoked (`adora cluster revoke`); enroll \
                 again with a new join code",
                entry.machine_id
            )))
        }
        None => {
            tracing::warn!("refused a client certificate this coordinator did not issue");
            Err(Refused::Forbidden(
                "this client certificate was not issued by this coordinator (or its store was \
                 reset): enroll again with a join code"
                    .into(),
            ))
        }
    }
}
