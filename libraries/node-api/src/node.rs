//! The node handle: registration with the daemon and sending outputs.

use std::{
    collections::BTreeSet,
    io::BufReader,
    os::unix::net::UnixStream,
    sync::{Arc, Mutex, MutexGuard},
    thread,
};

use adora_core::{DataId, SHM_THRESHOLD};
use adora_message::{
    codec::{read_frame, write_frame},
    daemon_to_node::DaemonReply,
    node_to_daemon::{Channel, NodeRequest},
    DataRef, Metadata, NodeConfig, SegmentFile, SharedRef, NODE_PROTOCOL_VERSION,
};
use adora_shm::{SamplePool, SampleToken};

use crate::{
    data::{Sample, SampleRepr},
    event::EventStream,
    MetadataParameters, NodeError,
};

/// Read buffer of the drops connection (a reply is read with one system call).
const DROPS_READ_BUFFER: usize = 4 * 1024;

/// The control connection, shared by the node (sending outputs) and [`DropReports`].
pub(crate) struct ControlChannel {
    stream: Mutex<UnixStream>,
}

impl ControlChannel {
    fn lock(&self) -> MutexGuard<'_, UnixStream> {
        // A poisoned lock only means another thread panicked mid-write; the socket is still usable
        // for reporting, and the daemon rejects a torn frame by closing the connection.
        self.stream.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn send(&self, request: &NodeRequest) -> Result<(), NodeError> {
        write_frame(&mut *self.lock(), request)?;
        Ok(())
    }

    /// Best effort: if the daemon is gone there is nobody left to tell.
    fn report_dropped(&self, tokens: Vec<u64>) {
        if let Err(e) = self.send(&NodeRequest::ReportDropTokens(tokens)) {
            tracing::debug!("could not report dropped samples: {e}");
        }
    }
}

/// Tells the daemon which received shared samples the node dropped. Reports ride along with the
/// event stream's next `NextEvents` request, so the common loop (receive, use, drop, receive)
/// costs no extra message; a drop while the stream is already waiting for events (or has ended)
/// cannot wait for that and goes out at once on the control connection.
pub(crate) struct DropReports {
    control: Arc<ControlChannel>,
    state: Mutex<DropState>,
}

#[derive(Default)]
struct DropState {
    /// Dropped since the last `NextEvents` request.
    pending: Vec<u64>,
    /// The event stream is waiting for a reply, or will not ask again: report at once.
    send_now: bool,
}

impl DropReports {
    pub(crate) fn new(control: Arc<ControlChannel>) -> Self {
        Self {
            control,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DropState> {
        // Every mutation leaves the state consistent, so a panic elsewhere does not invalidate it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A received shared sample was dropped.
    pub(crate) fn dropped(&self, token: u64) {
        let mut state = self.lock();
        if state.send_now {
            drop(state);
            self.control.report_dropped(vec![token]);
        } else {
            state.pending.push(token);
        }
    }

    /// The event stream is about to wait for a reply: takes the pending reports to send with its
    /// request; drops from now on are reported at once.
    pub(crate) fn start_waiting(&self) -> Vec<u64> {
        let mut state = self.lock();
        state.send_now = true;
        std::mem::take(&mut state.pending)
    }

    /// The reply arrived: collect drops again, unless the stream `ended` (it will not ask again).
    pub(crate) fn stop_waiting(&self, ended: bool) {
        self.lock().send_now = ended;
    }

    /// The event stream is gone: report what is pending, and every later drop at once.
    pub(crate) fn flush_for_good(&self) {
        let pending = self.start_waiting();
        if !pending.is_empty() {
            self.control.report_dropped(pending);
        }
    }
}

/// A running node: sends outputs. Created with [`AdoraNode::init_from_env`].
pub struct AdoraNode {
    config: NodeConfig,
    outputs: BTreeSet<DataId>,
    control: Arc<ControlChannel>,
    pool: Arc<Mutex<SamplePool>>,
    hlc: uhlc::HLC,
    drops_thread: Option<thread::JoinHandle<()>>,
}

fn connect(config: &NodeConfig, channel: Channel) -> Result<UnixStream, NodeError> {
    let mut stream = UnixStream::connect(&config.daemon_socket).map_err(|e| {
        NodeError::Config(format!(
            "cannot connect to the daemon socket {}: {e}",
            config.daemon_socket.display()
        ))
    })?;
    write_frame(
        &mut stream,
        &NodeRequest::Register {
            protocol_version: NODE_PROTOCOL_VERSION,
            dataflow_id: config.dataflow_id,
            node_id: config.node_id.clone(),
            channel,
        },
    )?;
    match read_frame(&mut stream, &mut Vec::new())? {
        DaemonReply::Registered(Ok(())) => Ok(stream),
        DaemonReply::Registered(Err(reason)) => Err(NodeError::Refused(reason)),
        other => Err(NodeError::Protocol(format!(
            "expected a registration reply, got {other:?}"
        ))),
    }
}

/// Asks the kernel to SIGKILL this process when its parent exits, when that parent is the daemon
/// (`daemon`): a daemon killed with SIGKILL has no chance to stop its nodes. Set here rather than
/// between fork and exec in the daemon, which would force a real `fork` of the daemon per node
/// (its cost grows with the daemon's memory) instead of `posix_spawn`. When the parent is not the
/// daemon (a wrapper script started this node, or the daemon is already gone) nothing is set: a
/// gone daemon shows as a failed connection right after.
fn die_with_daemon(daemon: u32) {
    use nix::{sys::prctl, sys::signal::Signal, unistd::getppid};
    if prctl::set_pdeathsig(Signal::SIGKILL).is_err() {
        return;
    }
    // Checked after setting it: a daemon dying in between is then either seen here or signals us.
    if i64::from(getppid().as_raw()) != i64::from(daemon) {
        let _ = prctl::set_pdeathsig(None);
    }
}

fn lock_pool(pool: &Mutex<SamplePool>) -> MutexGuard<'_, SamplePool> {
    pool.lock().unwrap_or_else(|p| p.into_inner())
}

impl AdoraNode {
    /// Connects to the daemon described by `ADORA_NODE_CONFIG`. Blocks until every node of the
    /// dataflow on this daemon has started, so no message is sent before its receivers exist.
    pub fn init_from_env() -> Result<(AdoraNode, EventStream), NodeError> {
        let raw = std::env::var(adora_core::NODE_CONFIG_ENV).map_err(|_| {
            NodeError::Config(format!("{} is not set", adora_core::NODE_CONFIG_ENV))
        })?;
        let config: NodeConfig = serde_json::from_str(&raw).map_err(|e| {
            NodeError::Config(format!("{} is invalid: {e}", adora_core::NODE_CONFIG_ENV))
        })?;
        Self::init(config)
    }

    /// Connects with an explicit configuration.
    pub fn init(config: NodeConfig) -> Result<(AdoraNode, EventStream), NodeError> {
        if let Some(daemon) = config.daemon_pid {
            die_with_daemon(daemon);
        }
        let control = Arc::new(ControlChannel {
            stream: Mutex::new(connect(&config, Channel::Control)?),
        });
        let events = connect(&config, Channel::Events)?;
        let drops = connect(&config, Channel::Drops)?;

        let pool = Arc::new(Mutex::new(SamplePool::new(config.shm_prefix.clone())));
        let drops = BufReader::with_capacity(DROPS_READ_BUFFER, drops);
        let drops_thread = {
            let pool = pool.clone();
            thread::Builder::new()
                .name("adora-drops".into())
                .spawn(move || receive_freed_samples(drops, &pool))
                .map_err(|e| NodeError::Protocol(format!("cannot spawn thread: {e}")))?
        };
        let stream = EventStream::new(events, Arc::new(DropReports::new(control.clone())));
        let node = AdoraNode {
            outputs: config.outputs.iter().cloned().collect(),
            config,
            control,
            pool,
            hlc: uhlc::HLC::default(),
            drops_thread: Some(drops_thread),
        };
        Ok((node, stream))
    }

    /// The node's id.
    pub fn id(&self) -> &adora_core::NodeId {
        &self.config.node_id
    }

    /// The dataflow's id.
    pub fn dataflow_id(&self) -> uuid::Uuid {
        self.config.dataflow_id
    }

    /// Sends `data` on `output`. Payloads of at least 4 KiB are copied once into a shared-memory
    /// sample; use [`Self::allocate_sample`] to avoid even that copy.
    pub fn send_output(
        &mut self,
        output: &DataId,
        parameters: MetadataParameters,
        data: &[u8],
    ) -> Result<(), NodeError> {
        let mut sample = self.allocate_sample(data.len())?;
        sample.copy_from_slice(data);
        self.send_sample(output, parameters, sample)
    }

    /// A writable sample of exactly `len` bytes: shared memory from the node's pool at or above the
    /// shared-memory threshold, a plain buffer below it.
    pub fn allocate_sample(&mut self, len: usize) -> Result<Sample, NodeError> {
        if len < SHM_THRESHOLD {
            return Ok(Sample(SampleRepr::Inline(vec![0; len])));
        }
        let sample = lock_pool(&self.pool).allocate(len)?;
        Ok(Sample(SampleRepr::Shared(sample)))
    }

    /// Sends a sample written in place. The timestamp is taken now.
    pub fn send_sample(
        &mut self,
        output: &DataId,
        parameters: MetadataParameters,
        sample: Sample,
    ) -> Result<(), NodeError> {
        if !self.outputs.contains(output) {
            return Err(NodeError::UnknownOutput(output.clone()));
        }
        let data = match sample.0 {
            SampleRepr::Inline(v) => DataRef::Inline(v),
            SampleRepr::Shared(s) => {
                let handle = lock_pool(&self.pool).send(s);
                DataRef::Shared(SharedRef {
                    os_id: handle.os_id,
                    len: handle.len,
                    token: handle.token.0,
                    file: SegmentFile {
                        dev: handle.file.dev,
                        ino: handle.file.ino,
                    },
                })
            }
        };
        let metadata = Metadata {
            timestamp: self.hlc.new_timestamp(),
            parameters,
        };
        self.control.send(&NodeRequest::SendOutput {
            output: output.clone(),
            metadata,
            data,
        })
    }

    /// Declares that the node will not send on `outputs` again; their receivers get `InputClosed`.
    /// All outputs are closed automatically when the node exits for good (not when its restart
    /// policy restarts it).
    pub fn close_outputs(&mut self, outputs: Vec<DataId>) -> Result<(), NodeError> {
        for o in &outputs {
            self.outputs.remove(o);
        }
        self.control.send(&NodeRequest::CloseOutputs(outputs))
    }

    /// Number of this node's shared-memory samples still held by receivers.
    pub fn samples_in_flight(&self) -> usize {
        lock_pool(&self.pool).in_flight()
    }
}

impl Drop for AdoraNode {
    fn drop(&mut self) {
        // Outputs are not closed here: the daemon closes them when this process's connection
        // ends, unless the node's restart policy brings it back (then its receivers keep their
        // inputs open). The drops thread ends when the daemon closes the drops connection (after the node's
        // control connection closes); do not wait for it here.
        drop(self.drops_thread.take());
    }
}

/// Runs on its own thread: returns released samples to the pool. The daemon pushes the tokens
/// on the drops connection as they are released; nothing is written back.
fn receive_freed_samples(mut stream: BufReader<UnixStream>, pool: &Mutex<SamplePool>) {
    let mut buf = Vec::new();
    loop {
        match read_frame::<DaemonReply>(&mut stream, &mut buf) {
            Ok(DaemonReply::FreedSamples(tokens)) if !tokens.is_empty() => {
                let mut pool = lock_pool(pool);
                for t in tokens {
                    pool.release(SampleToken(t));
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Drop reports wired to one end of a socket pair; the other end plays the daemon.
    fn reports() -> (DropReports, UnixStream) {
        let (node, daemon) = UnixStream::pair().expect("socket pair");
        // A guard against hanging, not a timed assertion.
        daemon
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let control = Arc::new(ControlChannel {
            stream: Mutex::new(node),
        });
        (DropReports::new(control), daemon)
    }

    fn next(daemon: &mut UnixStream) -> NodeRequest {
        read_frame(daemon, &mut Vec::new()).expect("a report")
    }

    #[test]
    fn drops_ride_with_the_next_request_unless_the_stream_already_waits() {
        let (reports, mut daemon) = reports();
        reports.dropped(1);
        reports.dropped(2);
        assert_eq!(reports.start_waiting(), vec![1, 2], "for NextEvents");

        reports.dropped(3); // the stream is blocked in recv: nothing would carry it
        assert_eq!(next(&mut daemon), NodeRequest::ReportDropTokens(vec![3]));

        reports.stop_waiting(false);
        reports.dropped(4);
        assert_eq!(reports.start_waiting(), vec![4]);
        reports.stop_waiting(true); // the stream ended: it will not ask again
        reports.dropped(5);
        assert_eq!(next(&mut daemon), NodeRequest::ReportDropTokens(vec![5]));
    }

    #[test]
    fn a_dropped_stream_flushes_pending_drops_and_reports_later_ones_at_once() {
        let (reports, mut daemon) = reports();
        reports.dropped(7);
        reports.flush_for_good();
        assert_eq!(next(&mut daemon), NodeRequest::ReportDropTokens(vec![7]));
        reports.dropped(8);
        assert_eq!(next(&mut daemon), NodeRequest::ReportDropTokens(vec![8]));
    }
}
