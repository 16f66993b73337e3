//! Node connections on the daemon's Unix socket: one task per connection, translating frames into
//! actor events and replies back into frames.

use adora_core::NodeId;
use adora_message::{
    codec::{decode, read_frame_async, write_frame_async, CodecError, MAX_FRAME_LEN},
    daemon_to_node::DaemonReply,
    node_to_daemon::{Channel, NodeRequest},
};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use uuid::Uuid;

use crate::{
    event::{request_event, Event},
    tap::{CopiesLane, Taps, TAPS_LANE_PERIOD},
};
use adora_shm::RegionCache;
use adora_tasks::Tasks;

/// Read buffer of a node connection: a burst of small frames (e.g. a fast sender's outputs) is
/// read with one system call instead of two per frame (length, then body).
const READ_BUFFER: usize = 64 * 1024;

/// Most requests of one control connection handed to the actor as one batch: frames that are
/// already in the read buffer are decoded together, so a fast sender costs one actor wake-up per
/// read instead of one per message, and its receivers get the messages in one reply.
const MAX_CONTROL_BATCH: usize = 32;

/// Accepts node connections until the daemon's tasks are cancelled; one task per connection.
pub(crate) async fn accept_loop(
    listener: UnixListener,
    events: mpsc::Sender<Event>,
    taps: Taps,
    tasks: Tasks,
) {
    let cancel = tasks.cancel_token().clone();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (events, cancel, taps) = (events.clone(), cancel.clone(), taps.clone());
                    tasks.spawn("a node connection", async move {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            r = handle_connection(stream, events, taps) => if let Err(e) = r {
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
    taps: Taps,
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
    let written = write_frame_async(&mut stream, &DaemonReply::Registered(accepted)).await;
    if !ok {
        return written.map_err(|e| e.to_string());
    }
    let ctx = Ctx {
        dataflow: dataflow_id,
        node: node_id,
        events,
        taps,
    };
    // A node that died while its registration was parked at the start barrier fails the reply;
    // its accepted control connection must still be reported closed below.
    let result = match written {
        Err(e) => Err(e),
        Ok(()) => match channel {
            Channel::Control => ctx.control_loop(&mut stream, &mut buf).await,
            Channel::Events => ctx.events_loop(&mut stream, &mut buf).await,
            Channel::Drops => ctx.drops_loop(&mut stream).await,
        },
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

/// Until the next read of a taps lane: [`TAPS_LANE_PERIOD`], or only a turn of the runtime when
/// the sender is `busy`.
async fn pause(busy: bool) {
    if busy {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(TAPS_LANE_PERIOD).await;
    }
}

/// A control connection's taps lane and the shared memory it reads copies from.
struct Copies {
    lane: Option<CopiesLane>,
    regions: Option<RegionCache>,
    /// Marks a change of the daemon's taps.
    changes: tokio::sync::watch::Receiver<()>,
    /// Whether a tap watches the node (as of the last change).
    watched: bool,
}

/// A control-connection request the node waits for an answer to.
enum Ask {
    /// `TakeUpdateLock`.
    Lock(u64, String),
    /// `AwaitRoom`.
    Room(adora_core::DataId),
}

struct Ctx {
    dataflow: Uuid,
    node: NodeId,
    events: mpsc::Sender<Event>,
    /// Copies of tapped outputs are made here, before routing (see `crate::tap`).
    taps: Taps,
}

impl Ctx {
    async fn control_loop(
        &self,
        stream: &mut UnixStream,
        buf: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let changes = self.taps.changes();
        let mut copies = Copies {
            lane: self
                .taps
                .lane(self.dataflow, &self.node)
                .map(CopiesLane::new),
            regions: None,
            watched: self.taps.watches_node(self.dataflow, &self.node),
            changes,
        };
        let result = self.control_requests(stream, buf, &mut copies).await;
        // The node is gone: what it wrote into its taps lane before still goes to the taps.
        if let Some(lane) = &mut copies.lane {
            let at = (self.dataflow, &self.node);
            lane.deliver(&self.taps, at, Some(u64::MAX)).await;
        }
        result
    }

    async fn control_requests(
        &self,
        stream: &mut UnixStream,
        buf: &mut Vec<u8>,
        copies: &mut Copies,
    ) -> Result<(), CodecError> {
        let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
        let mut batch = Vec::new();
        loop {
            if copies.lane.is_some() {
                self.wait_for_request(&mut reader, copies).await?;
            }
            let request: NodeRequest = read_frame_async(&mut reader, buf).await?;
            self.tap(&request, copies).await;
            let mut ask = self.push_request(&mut batch, request);
            while batch.len() < MAX_CONTROL_BATCH && ask.is_none() {
                match buffered_frame(&mut reader)? {
                    Some(request) => {
                        self.tap(&request, copies).await;
                        ask = self.push_request(&mut batch, request);
                    }
                    None => break,
                }
            }
            if !batch.is_empty() {
                let event = match batch.len() {
                    1 => batch.pop().expect("one event"),
                    _ => Event::Batch {
                        dataflow: self.dataflow,
                        events: std::mem::take(&mut batch),
                    },
                };
                if self.events.send(event).await.is_err() {
                    return Ok(());
                }
            }
            // Everything the node sent before is routed first; the answers to these requests
            // are the only frames the daemon writes on this connection after registering.
            match ask {
                Some(Ask::Lock(lock, reason)) => {
                    let answer = self.take_lock(lock, reason).await;
                    write_frame_async(reader.get_mut(), &DaemonReply::UpdateLock(answer)).await?;
                }
                Some(Ask::Room(output)) => {
                    self.await_room(output).await;
                    write_frame_async(reader.get_mut(), &DaemonReply::Room).await?;
                }
                None => {}
            }
        }
    }

    /// Waits until a request can be read, handing what the node writes into its taps lane to
    /// the taps every [`TAPS_LANE_PERIOD`] meanwhile, while a tap watches the node.
    async fn wait_for_request<R: AsyncRead + Unpin>(
        &self,
        reader: &mut BufReader<R>,
        copies: &mut Copies,
    ) -> Result<(), CodecError> {
        let Copies {
            lane: Some(lane),
            changes,
            watched,
            ..
        } = copies
        else {
            return Ok(());
        };
        let at = (self.dataflow, &self.node);
        // The last read took a quarter of the lane or more: read again at once (before the node
        // finds it full and goes on to its socket), not after a period.
        let mut busy = false;
        loop {
            if !reader.buffer().is_empty() {
                return Ok(());
            }
            if !*watched && lane.has_copies() {
                // Written before the last tap went away: nobody wants them.
                lane.deliver(&self.taps, at, Some(u64::MAX)).await;
            }
            tokio::select! {
                biased;
                // Cancel safe: it only fills the read buffer (EOF leaves it empty).
                read = reader.fill_buf() => {
                    read?;
                    return Ok(());
                }
                _ = changes.changed() => *watched = self.taps.watches_node(at.0, at.1),
                _ = pause(busy), if *watched => {
                    busy = lane.deliver(&self.taps, at, None).await >= lane.capacity() / 4;
                }
            }
        }
    }

    /// Copies an output to the taps that want it, after the copies the node wrote into its taps
    /// lane before it; a full lossless tap makes this wait.
    async fn tap(&self, request: &NodeRequest, copies: &mut Copies) {
        if let NodeRequest::SendOutput {
            output,
            metadata,
            data,
            taps_before,
        }
        | NodeRequest::SendOutputDirect {
            output,
            metadata,
            data,
            taps_before,
            ..
        } = request
        {
            let at = (self.dataflow, &self.node);
            if let Some(lane) = copies.lane.as_mut().filter(|l| l.has_copies()) {
                lane.deliver(&self.taps, at, Some(*taps_before)).await;
            }
            self.taps
                .copy(at.0, at.1, output, metadata, data, &mut copies.regions)
                .await;
        }
    }

    /// Asks the actor for an update lock and waits for its answer.
    async fn take_lock(&self, lock: u64, reason: String) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        let event = Event::TakeLock {
            dataflow: self.dataflow,
            node: self.node.clone(),
            lock,
            reason,
            reply: tx,
        };
        if self.events.send(event).await.is_err() {
            return Err("the daemon is shutting down".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("the daemon is shutting down".into()))
    }

    /// Waits until the receivers of `output` have room (or the dataflow ends here).
    async fn await_room(&self, output: adora_core::DataId) {
        let (tx, rx) = oneshot::channel();
        let event = Event::AwaitRoom {
            dataflow: self.dataflow,
            node: self.node.clone(),
            output,
            reply: tx,
        };
        if self.events.send(event).await.is_ok() {
            let _ = rx.await; // a dropped reply: the dataflow ended, nothing to wait for
        }
    }

    /// Adds a request's event to the batch; a request that waits for an answer is returned
    /// instead.
    fn push_request(&self, batch: &mut Vec<Event>, request: NodeRequest) -> Option<Ask> {
        match request {
            NodeRequest::TakeUpdateLock { lock, reason } => return Some(Ask::Lock(lock, reason)),
            NodeRequest::AwaitRoom { output } => return Some(Ask::Room(output)),
            _ => {}
        }
        match request_event(self.dataflow, &self.node, request) {
            Some(event) => batch.push(event),
            None => tracing::warn!(
                "node `{}` sent an unexpected request on its control channel",
                self.node
            ),
        }
        None
    }

    /// The events connection: the node asks (`NextEvents`, with the samples it dropped since its
    /// previous request), the daemon answers once there is something to deliver.
    async fn events_loop(
        &self,
        stream: &mut UnixStream,
        buf: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let (reader, mut writer) = stream.split();
        let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
        loop {
            let dropped = match read_frame_async(&mut reader, buf).await? {
                NodeRequest::NextEvents { dropped } => dropped,
                other => {
                    tracing::warn!(
                        "node `{}` sent {other:?} on its events channel; closing it",
                        self.node
                    );
                    return Ok(());
                }
            };
            let (tx, rx) = oneshot::channel();
            let event = Event::NextEvents {
                dataflow: self.dataflow,
                node: self.node.clone(),
                dropped,
                reply: tx,
            };
            if self.events.send(event).await.is_err() {
                return Ok(());
            }
            // A dropped request means the node or the dataflow is gone: end the stream.
            let reply = rx.await.unwrap_or_else(|_| DaemonReply::Events {
                events: Vec::new(),
                drop_counts: Default::default(),
            });
            write_frame_async(&mut writer, &reply).await?;
        }
    }

    /// The drops connection: the daemon pushes the tokens of released samples as they come; the
    /// node writes nothing after registering. An empty list ends it.
    async fn drops_loop(&self, stream: &mut UnixStream) -> Result<(), CodecError> {
        loop {
            let (tx, rx) = oneshot::channel();
            let event = Event::NextFreed {
                dataflow: self.dataflow,
                node: self.node.clone(),
                reply: tx,
            };
            if self.events.send(event).await.is_err() {
                return Ok(());
            }
            let reply = rx
                .await
                .unwrap_or_else(|_| DaemonReply::FreedSamples(Vec::new()));
            let end = matches!(&reply, DaemonReply::FreedSamples(t) if t.is_empty());
            write_frame_async(stream, &reply).await?;
            if end {
                return Ok(());
            }
        }
    }
}

/// Decodes the next frame if it is already complete in `reader`'s buffer (no system call).
fn buffered_frame<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> Result<Option<NodeRequest>, CodecError> {
    let buffered = reader.buffer();
    let Some(prefix) = buffered.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge(len));
    }
    let Some(body) = buffered.get(4..4 + len) else {
        return Ok(None);
    };
    let request = decode(body)?;
    std::pin::Pin::new(reader).consume(4 + len);
    Ok(Some(request))
}

#[cfg(test)]
mod tests {
    use adora_message::codec::encode;

    use super::*;

    #[tokio::test]
    async fn buffered_frames_are_decoded_without_reading_and_partial_ones_wait() {
        let requests = [
            NodeRequest::CloseOutputs(vec!["a".into()]),
            NodeRequest::ReportDropTokens(vec![1, 2]),
            NodeRequest::CloseOutputs(vec!["b".into()]),
        ];
        let mut bytes: Vec<u8> = requests
            .iter()
            .flat_map(|r| encode(r).expect("encode"))
            .collect();
        bytes.truncate(bytes.len() - 1); // the last frame is still on its way
        let mut reader = BufReader::new(bytes.as_slice());
        assert!(
            buffered_frame(&mut reader).expect("empty").is_none(),
            "nothing read yet"
        );

        let mut buf = Vec::new();
        let first: NodeRequest = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            read_frame_async(&mut reader, &mut buf),
        )
        .await
        .expect("in time")
        .expect("first frame");
        assert_eq!(first, requests[0]);
        let second = buffered_frame(&mut reader).expect("decodes");
        assert_eq!(second.as_ref(), Some(&requests[1]));
        assert!(buffered_frame(&mut reader).expect("partial").is_none());
    }

    #[tokio::test]
    async fn an_oversized_buffered_length_is_an_error() {
        let mut bytes = encode(&NodeRequest::CloseOutputs(vec![])).expect("encode");
        bytes.extend_from_slice(&((MAX_FRAME_LEN + 1) as u32).to_le_bytes());
        let mut reader = BufReader::new(bytes.as_slice());
        let mut buf = Vec::new();
        let _: NodeRequest = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            read_frame_async(&mut reader, &mut buf),
        )
        .await
        .expect("in time")
        .expect("first frame");
        assert!(matches!(
            buffered_frame(&mut reader),
            Err(CodecError::TooLarge(_))
        ));
    }
}
