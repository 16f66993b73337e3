//! WebSocket connections: the handshake, then a pump between the socket and the actor.
//!
//! A malformed frame closes that connection with a close frame giving the reason; every other
//! connection is unaffected.

use adora_message::{
    cli_to_coordinator::ControlRequest,
    coordinator_to_cli::ControlReply,
    coordinator_to_daemon::DaemonCommand,
    daemon_to_coordinator::DaemonMessage,
    envelope::{from_json, to_json, Envelope, HandshakeReply, Hello},
};
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::mpsc;

use crate::{
    actor::{ConnId, Event, Outgoing},
    AppState, HANDSHAKE_TIMEOUT,
};

/// WebSocket close reasons are limited to 123 bytes.
const MAX_CLOSE_REASON: usize = 123;

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// Reads the next text frame, skipping pings; `Err` is the reason the connection ends.
async fn next_text(socket: &mut WebSocket) -> Result<String, String> {
    loop {
        match socket.recv().await {
            None => return Err("connection closed".into()),
            Some(Err(e)) => return Err(format!("connection failed: {e}")),
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(_))) => return Err("closed by the peer".into()),
            Some(Ok(Message::Binary(_))) => {
                let reason = "malformed frame: binary frames are not part of the protocol";
                close(socket, close_code::UNSUPPORTED, reason).await;
                return Err(reason.into());
            }
            Some(Ok(_)) => {} // ping / pong
        }
    }
}

/// Decodes a frame; on error closes the connection with the reason.
async fn decode<T: DeserializeOwned>(socket: &mut WebSocket, text: &str) -> Result<T, String> {
    match from_json(text) {
        Ok(v) => Ok(v),
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!("closing a connection: {reason}");
            close(socket, close_code::INVALID, &reason).await;
            Err(reason)
        }
    }
}

async fn send<T: Serialize>(socket: &mut WebSocket, msg: &T) -> Result<(), String> {
    let text = to_json(msg).map_err(|e| e.to_string())?;
    socket
        .send(Message::Text(text.into()))
        .await
        .map_err(|e| format!("send failed: {e}"))
}

/// Waits for `Hello` and answers `Welcome` or `Reject`.
async fn handshake(socket: &mut WebSocket) -> Result<(), String> {
    let text = tokio::time::timeout(HANDSHAKE_TIMEOUT, next_text(socket))
        .await
        .map_err(|_| "no Hello within the handshake timeout".to_owned())??;
    let hello: Hello = decode(socket, &text).await?;
    if let Err(reason) = hello.check() {
        tracing::warn!("rejected a connection: {reason}");
        let _ = send(
            socket,
            &HandshakeReply::Reject {
                reason: reason.clone(),
            },
        )
        .await;
        close(socket, close_code::PROTOCOL, "protocol version mismatch").await;
        return Err(reason);
    }
    send(socket, &HandshakeReply::welcome()).await
}

/// Serves one CLI client connection.
pub(crate) async fn serve_client(mut socket: WebSocket, state: AppState) {
    if handshake(&mut socket).await.is_err() {
        return;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let events = state.events.clone();
    let result =
        pump::<ControlRequest, ControlReply>(&mut socket, rx, &state, |envelope| Event::Control {
            envelope,
            tx: tx.clone(),
        })
        .await;
    if let Err(reason) = result {
        tracing::debug!("client connection ended: {reason}");
    }
    drop(events);
}

/// Serves one daemon connection; `certified` is the machine id of the daemon's certificate (a
/// daemon authenticated by the admin token has none and registers as what it says).
pub(crate) async fn serve_daemon(
    mut socket: WebSocket,
    state: AppState,
    certified: Option<String>,
) {
    if handshake(&mut socket).await.is_err() {
        return;
    }
    let conn: ConnId = state.next_conn();
    let first = match tokio::time::timeout(HANDSHAKE_TIMEOUT, next_text(&mut socket)).await {
        Ok(Ok(text)) => text,
        Ok(Err(_)) => return,
        Err(_) => {
            close(
                &mut socket,
                close_code::POLICY,
                "no Register within the handshake timeout",
            )
            .await;
            return;
        }
    };
    let mut registration = match decode::<Envelope<DaemonMessage>>(&mut socket, &first).await {
        Ok(Envelope {
            body: DaemonMessage::Register(r),
            ..
        }) => r,
        Ok(_) => {
            close(
                &mut socket,
                close_code::POLICY,
                "the first message must be Register",
            )
            .await;
            return;
        }
        Err(_) => return,
    };
    if let Some(machine) = certified {
        match &registration.machine_id {
            Some(claimed) if *claimed != machine => {
                let reason = format!(
                    "this daemon's certificate was issued for machine `{machine}`, not `{claimed}`"
                );
                tracing::warn!("refused a daemon: {reason}");
                close(&mut socket, close_code::POLICY, &reason).await;
                return;
            }
            _ => registration.machine_id = Some(machine),
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let registered = Event::DaemonRegistered {
        conn,
        registration,
        tx,
    };
    if state.events.send(registered).await.is_err() {
        return;
    }
    let result = pump::<DaemonMessage, DaemonCommand>(&mut socket, rx, &state, |envelope| {
        Event::FromDaemon { conn, envelope }
    })
    .await;
    let reason = result.err().unwrap_or_else(|| "closed".into());
    let _ = state.events.send(Event::DaemonGone { conn, reason }).await;
}

/// Moves frames between the socket and the actor until either side ends the connection.
async fn pump<In: DeserializeOwned, Out: Serialize>(
    socket: &mut WebSocket,
    mut rx: mpsc::UnboundedReceiver<Outgoing<Out>>,
    state: &AppState,
    to_event: impl Fn(Envelope<In>) -> Event,
) -> Result<(), String> {
    loop {
        tokio::select! {
            // What the actor queued goes out before a shutdown closes the connection (the answer
            // to `ShutdownCoordinator`, say).
            biased;
            out = rx.recv() => match out {
                Some(Outgoing::Message(envelope)) => send(socket, &envelope).await?,
                Some(Outgoing::Close(reason)) => {
                    close(socket, close_code::POLICY, &reason).await;
                    return Err(reason);
                }
                None => {
                    close(socket, close_code::AWAY, "closed by the coordinator").await;
                    return Ok(());
                }
            },
            _ = state.shutdown.cancelled() => {
                close(socket, close_code::AWAY, "the coordinator is shutting down").await;
                return Ok(());
            }
            text = next_text(socket) => {
                let envelope: Envelope<In> = decode(socket, &text?).await?;
                if state.events.send(to_event(envelope)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}
