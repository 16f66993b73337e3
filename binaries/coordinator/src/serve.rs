//! The coordinator's port over TLS: accept, answer a plaintext request with an explanation
//! instead of a hang, the TLS handshake, then HTTP/1.1 (with upgrades, for the WebSockets) on the
//! router, each request carrying the fingerprint of the connection's client certificate
//! ([`PeerCert`]).
//!
//! One task per connection, owned by the coordinator's [`adora_tasks::Tasks`]: a slow handshake
//! never holds up the next client.

use std::{sync::Arc, time::Duration};

use axum::{Extension, Router};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{access::PeerCert, HANDSHAKE_TIMEOUT};

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Pause after a failed `accept` (out of file descriptors, ...), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` over TLS until the coordinator's tasks are cancelled.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    tasks: &adora_tasks::Tasks,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let shutdown = tasks.cancel_token().clone();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let (acceptor, router, shutdown) = (acceptor.clone(), router.clone(), shutdown.clone());
        tasks.spawn("connection", async move {
            if let Err(e) = connection(tcp, acceptor, router, shutdown).await {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
}

async fn connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return Err("closed before sending anything".into()),
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        refuse_plaintext(tcp).await;
        return Err("refused a plaintext request".into());
    }
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| "no TLS handshake within the handshake timeout".to_owned())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let fingerprint = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| adora_pki::fingerprint(cert));
    let service = TowerToHyperService::new(router.layer(Extension(PeerCert(fingerprint))));
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => served.map_err(|e| e.to_string()),
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await.map_err(|e| e.to_string())
        }
    }
}

/// Answers a plaintext HTTP request with `400` and what to do, then closes: a client that
/// forgot TLS learns why instead of waiting for a handshake that never comes.
async fn refuse_plaintext(mut tcp: TcpStream) {
    // Read the request's head (it may come in several segments) so that neither the answer nor
    // the rest of the request meets a closed socket; never wait long.
    let mut head = Vec::with_capacity(4096);
    let read_head = async {
        let mut buf = [0u8; 1024];
        while head.len() < 4096 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), read_head).await;
    let body = "this Adora coordinator speaks TLS only: use https:// (wss:// for WebSockets), \
                or an adora CLI or daemon of the same version\n";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.write_all(response.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plaintext client whose request head arrives in pieces (as `write!` sends it) gets the
    /// whole explanation, and none of its writes meets a closed socket (the CI failure of
    /// `top_once_json_shows_busy_nodes_and_metrics_counters_grow`: `Broken pipe`).
    #[tokio::test]
    async fn a_plaintext_request_in_pieces_is_read_whole_then_answered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            refuse_plaintext(tcp).await;
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        for piece in ["GET ", "/api/health", " HTTP/1.1\r\nHost: x\r\n\r\n"] {
            client.write_all(piece.as_bytes()).await.expect("sent");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("speaks TLS only"), "{answer}");
        server.await.unwrap();
    }
}
