//! Node connections on the daemon's Unix socket: one task per connection, translating frames into
//! actor events and replies back into frames.

use adora_core::NodeId;
use adora_message::{
    codec::{read_frame_async, write_frame_async, CodecError},
    daemon_to_node::DaemonReply,
    node_to_daemon::{Channel, NodeRequest},
};
use tokio::{
    io::BufReader,
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::actor::{request_event, Event};

/// Read buffer of a node connection: a burst of small frames (e.g. a fast sender's outputs) is
/// read with one system call instead of two per frame (length, then body).
const READ_BUFFER: usize = 64 * 1024;

pub(crate) async fn accept_loop(
    listener: UnixListener,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (events, cancel) = (events.clone(), cancel.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            r = handle_connection(stream, events) => if let Err(e) = r {
                                tracing::warn!("node connection closed: {e}");
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("cannot accept node connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn handle_connection(
    mut stream: UnixStream,
    events: mpsc::Sender<Event>,
) -> Result<(), String> {
    let mut buf = Vec::new();
    let first: NodeRequest = read_frame_async(&mut stream, &mut buf)
        .await
        .map_err(|e| format!("before registration: {e}"))?;
    let NodeRequest::Register {
        protocol_version,
        dataflow_id,
        node_id,
        channel,
    } = first
    else {
        let reply = DaemonReply::Registered(Err("the first message must be Register".into()));
        let _ = write_frame_async(&mut stream, &reply).await;
        return Err("first message was not Register".into());
    };
    let (tx, rx) = oneshot::channel();
    let register = Event::Register {
        dataflow: dataflow_id,
        node: node_id.clone(),
        channel,
        protocol_version,
        reply: tx,
    };
    if events.send(register).await.is_err() {
        return Ok(());
    }
    let accepted = rx
        .await
        .unwrap_or_else(|_| Err("the daemon is shutting down".into()));
    let ok = accepted.is_ok();
    write_frame_async(&mut stream, &DaemonReply::Registered(accepted))
        .await
        .map_err(|e| e.to_string())?;
    if !ok {
        return Ok(());
    }
    let ctx = Ctx {
        dataflow: dataflow_id,
        node: node_id,
        events,
    };
    let result = match channel {
        Channel::Control => ctx.control_loop(&mut stream, &mut buf).await,
        Channel::Events => ctx.reply_loop(&mut stream, &mut buf, Channel::Events).await,
        Channel::Drops => ctx.reply_loop(&mut stream, &mut buf, Channel::Drops).await,
    };
    if channel == Channel::Control {
        let _ = ctx
            .events
            .send(Event::ControlClosed {
                dataflow: ctx.dataflow,
                node: ctx.node.clone(),
            })
            .await;
    }
    match result {
        Err(e) if !e.is_eof() => Err(format!("node `{}` ({channel:?}): {e}", ctx.node)),
        _ => Ok(()),
    }
}

struct Ctx {
    dataflow: Uuid,
    node: NodeId,
    events: mpsc::Sender<Event>,
}

impl Ctx {
    async fn control_loop(
        &self,
        stream: &mut UnixStream,
        buf: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
        loop {
            let request: NodeRequest = read_frame_async(&mut reader, buf).await?;
            match request_event(self.dataflow, &self.node, request) {
                Some(event) => {
                    if self.events.send(event).await.is_err() {
                        return Ok(());
                    }
                }
                None => tracing::warn!(
                    "node `{}` sent an unexpected request on its control channel",
                    self.node
                ),
            }
        }
    }

    async fn reply_loop(
        &self,
        stream: &mut UnixStream,
        buf: &mut Vec<u8>,
        channel: Channel,
    ) -> Result<(), CodecError> {
        let (reader, mut writer) = stream.split();
        let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
        loop {
            let request: NodeRequest = read_frame_async(&mut reader, buf).await?;
            let (tx, rx) = oneshot::channel();
            let (dataflow, node) = (self.dataflow, self.node.clone());
            let event = match (channel, request) {
                (Channel::Events, NodeRequest::NextEvents) => Event::NextEvents {
                    dataflow,
                    node,
                    reply: tx,
                },
                (Channel::Drops, NodeRequest::NextFreedSamples) => Event::NextFreed {
                    dataflow,
                    node,
                    reply: tx,
                },
                (_, other) => {
                    tracing::warn!(
                        "node `{}` sent {other:?} on its {channel:?} channel; closing it",
                        self.node
                    );
                    return Ok(());
                }
            };
            if self.events.send(event).await.is_err() {
                return Ok(());
            }
            let reply = match rx.await {
                Ok(reply) => reply,
                // The request was dropped (node or dataflow gone): end the stream.
                Err(_) => match channel {
                    Channel::Drops => DaemonReply::FreedSamples(Vec::new()),
                    _ => DaemonReply::Events {
                        events: Vec::new(),
                        drop_counts: Default::default(),
                    },
                },
            };
            write_frame_async(&mut writer, &reply).await?;
        }
    }
}
