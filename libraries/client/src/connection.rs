//! The client side of a control-plane WebSocket connection: connect over TLS (verifying the
//! coordinator against the cluster CA, presenting a client certificate or the bearer token), do
//! the `Hello` / `Welcome` handshake, then send and receive typed envelopes. Used by the daemon's
//! coordinator link ([`crate::DAEMON_PATH`]), by every CLI client command
//! ([`crate::CONTROL_PATH`]) and by the simulated daemons of the test fixtures.

use adora_message::envelope::{from_json, to_json, HandshakeReply, Hello};
use futures_util::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    client_async,
    tungstenite::{self, client::IntoClientRequest, http, Message},
    MaybeTlsStream, WebSocketStream,
};

use crate::tls::{Auth, TlsError};

/// An open, handshaken connection to the coordinator.
pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// Why a connection could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answers at the address.
    #[error("cannot reach the coordinator at {addr}: {source}")]
    Unreachable {
        /// `host:port` that was tried.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (untrusted or misnamed certificate, not a TLS server, refused
    /// client certificate).
    #[error(transparent)]
    Tls(TlsError),
    /// The coordinator refused the credentials (HTTP 401 or 403), with its explanation.
    #[error("authentication failed: the coordinator at {addr} refused this client: {reason}")]
    AuthenticationFailed {
        /// `host:port`.
        addr: String,
        /// What the coordinator said.
        reason: String,
    },
    /// The coordinator rejected the handshake (e.g. protocol version mismatch).
    #[error("the coordinator at {addr} rejected the connection: {reason}")]
    Rejected {
        /// `host:port`.
        addr: String,
        /// Its reason.
        reason: String,
    },
    /// The connection closed.
    #[error("the connection to the coordinator closed{}", .0.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed(Option<String>),
    /// The connection broke or a frame was malformed.
    #[error("control-plane error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// True when retrying cannot help without a configuration change.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ClientError::AuthenticationFailed { .. }
                | ClientError::Rejected { .. }
                | ClientError::Tls(TlsError::Handshake { .. } | TlsError::Address(_))
        )
    }
}

impl Connection {
    /// Connects to `wss://{addr}{path}` with `auth`, then sends `hello` (normally
    /// [`Hello::current`]) and waits for the answer.
    pub async fn connect(
        addr: &str,
        path: &str,
        auth: &Auth,
        hello: Hello,
    ) -> Result<Self, ClientError> {
        let url = format!("{}://{addr}{path}", auth.ws_scheme());
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::Protocol(format!("bad coordinator address `{addr}`: {e}")))?;
        if let Some(token) = auth.bearer() {
            let value = http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::Protocol("the token contains invalid characters".into())
            })?;
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value);
        }
        let stream = match crate::tls::open(addr, auth).await {
            Ok(stream) => stream,
            Err(TlsError::Connect { addr, source }) => {
                return Err(ClientError::Unreachable { addr, source })
            }
            Err(e) => return Err(ClientError::Tls(e)),
        };
        let ws = match client_async(request, stream).await {
            Ok((ws, _)) => ws,
            Err(tungstenite::Error::Http(response))
                if matches!(
                    response.status(),
                    http::StatusCode::UNAUTHORIZED | http::StatusCode::FORBIDDEN
                ) =>
            {
                let reason = response
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| response.status().to_string());
                return Err(ClientError::AuthenticationFailed {
                    addr: addr.to_owned(),
                    reason,
                });
            }
            Err(e) => {
                return Err(ClientError::Protocol(format!(
                    "WebSocket upgrade failed: {e}"
                )))
            }
        };
        let mut conn = Connection { ws };
        conn.send(&hello).await?;
        match conn.recv::<HandshakeReply>().await? {
            HandshakeReply::Welcome { .. } => Ok(conn),
            HandshakeReply::Reject { reason } => Err(ClientError::Rejected {
                addr: addr.to_owned(),
                reason,
            }),
        }
    }

    /// The local address of the connection: the address of the interface this machine uses to
    /// reach the coordinator (what a daemon advertises to its peers).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        crate::tls::local_addr(self.ws.get_ref())
    }

    /// Sends one message as a JSON text frame.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ClientError> {
        let text = to_json(msg).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| ClientError::Protocol(format!("send failed: {e}")))
    }

    /// Receives the next message (skipping pings).
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, ClientError> {
        loop {
            match self.ws.next().await {
                None => return Err(ClientError::Closed(None)),
                Some(Err(e)) => {
                    return Err(ClientError::Protocol(format!("connection failed: {e}")))
                }
                Some(Ok(Message::Text(text))) => {
                    return from_json(text.as_str())
                        .map_err(|e| ClientError::Protocol(e.to_string()))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(ClientError::Closed(
                        frame
                            .map(|f| f.reason.as_str().to_owned())
                            .filter(|r| !r.is_empty()),
                    ))
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Sends a raw text frame (tests of malformed input).
    pub async fn send_raw(&mut self, text: &str) -> Result<(), ClientError> {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .map_err(|e| ClientError::Protocol(format!("send failed: {e}")))
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
