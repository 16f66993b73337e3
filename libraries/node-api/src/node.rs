//! The node handle: registration with the daemon and sending outputs.

use std::{
    collections::{BTreeSet, HashMap},
    io::BufReader,
    os::unix::net::UnixStream,
    sync::{Arc, Mutex, MutexGuard},
    thread,
};

use adora_core::{DataId, SHM_THRESHOLD};
use adora_message::{
    arrow_layout::TypeInfo,
    codec::{read_frame, write_frame},
    daemon_to_node::DaemonReply,
    node_to_daemon::{Channel, NodeRequest},
    DataRef, Metadata, NodeConfig, SegmentFile, SharedRef, NODE_PROTOCOL_VERSION,
};
use adora_shm::{SamplePool, SampleToken};

use crate::{
    data::{MetadataParameters, Sample, SampleRepr},
    drops::{ControlChannel, DropReports},
    error::NodeError,
    event::EventStream,
    lanes::{InputLanes, OutputLanes},
    type_check::TypeCheck,
};

/// Read buffer of the drops connection (a reply is read with one system call).
const DROPS_READ_BUFFER: usize = 4 * 1024;

/// A running node: sends outputs. Created with [`AdoraNode::init_from_env`].
pub struct AdoraNode {
    config: NodeConfig,
    outputs: BTreeSet<DataId>,
    control: Arc<ControlChannel>,
    pool: Arc<Mutex<SamplePool>>,
    hlc: uhlc::HLC,
    drops_thread: Option<thread::JoinHandle<()>>,
    types: TypeCheck,
    /// The lanes of its outputs to local receivers.
    lanes: OutputLanes,
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

pub(crate) fn lock_pool(pool: &Mutex<SamplePool>) -> MutexGuard<'_, SamplePool> {
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
        let types = TypeCheck::from_env(&config.output_types)?;
        let control = Arc::new(ControlChannel::new(connect(&config, Channel::Control)?));
        let events = connect(&config, Channel::Events)?;
        let drops = connect(&config, Channel::Drops)?;

        let pool = Arc::new(Mutex::new(SamplePool::new(config.shm_prefix.clone())));
        let lanes = OutputLanes::open(&config.lanes);
        let drops = BufReader::with_capacity(DROPS_READ_BUFFER, drops);
        let drops_thread = {
            let pool = pool.clone();
            let numbers = lanes.numbers();
            thread::Builder::new()
                .name("adora-drops".into())
                .spawn(move || receive_freed_samples(drops, &pool, &numbers))
                .map_err(|e| NodeError::Protocol(format!("cannot spawn thread: {e}")))?
        };
        let mut errors = Vec::new();
        let input_lanes = InputLanes::open(&config.lanes, &mut errors);
        let stream = EventStream::new(
            events,
            Arc::new(DropReports::new(control.clone())),
            (input_lanes, errors),
        );
        let node = AdoraNode {
            lanes,
            outputs: config.outputs.iter().cloned().collect(),
            config,
            control,
            pool,
            hlc: uhlc::HLC::default(),
            drops_thread: Some(drops_thread),
            types,
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

    /// Sends an Arrow array: its buffers are copied once into one payload (shared memory from
    /// 4 KiB on) with a description of their layout, so any receiver, in any language, reads the
    /// same array (`Data::to_arrow`, `event["value"]` in Python).
    pub fn send_arrow(
        &mut self,
        output: &DataId,
        parameters: MetadataParameters,
        array: &dyn arrow_array::Array,
    ) -> Result<(), NodeError> {
        self.send_arrow_data(output, parameters, &array.to_data())
    }

    /// [`Self::send_arrow`] for an array's [`arrow_data::ArrayData`].
    pub fn send_arrow_data(
        &mut self,
        output: &DataId,
        parameters: MetadataParameters,
        data: &arrow_data::ArrayData,
    ) -> Result<(), NodeError> {
        self.types.check(output, data.data_type())?;
        let (info, len) = crate::arrow::layout(data);
        let mut sample = self.allocate_sample(len)?;
        crate::arrow::write(data, &info, &mut sample);
        self.send_typed(output, parameters, sample, TypeInfo::encode(&info))
    }

    /// Sends a sample written in place, as plain bytes (a `UInt8` array for Arrow receivers). The
    /// timestamp is taken now.
    pub fn send_sample(
        &mut self,
        output: &DataId,
        parameters: MetadataParameters,
        sample: Sample,
    ) -> Result<(), NodeError> {
        self.types.check(output, &arrow_schema::DataType::UInt8)?;
        self.send_typed(output, parameters, sample, TypeInfo::bytes())
    }

    /// Sends `data` exactly as recorded: its Arrow layout `type_info` and `parameters` as they
    /// were, a new timestamp (`adora replay`). The layout is checked against the payload and
    /// against the output's declared type.
    pub fn send_recorded(
        &mut self,
        output: &DataId,
        parameters: MetadataParameters,
        type_info: TypeInfo,
        data: &[u8],
    ) -> Result<(), NodeError> {
        let info = type_info
            .decode(data.len())
            .map_err(|e| NodeError::Arrow(e.to_string()))?;
        self.types.check(output, &info.data_type)?;
        let mut sample = self.allocate_sample(data.len())?;
        sample.copy_from_slice(data);
        self.send_typed(output, parameters, sample, type_info)
    }

    /// Blocks until every receiver of `output` on this machine has room in its input queue for
    /// one more message, so that the next send drops nothing there (a full queue drops its
    /// oldest message). For senders that must not lose anything, such as `adora replay --speed
    /// 0`; receivers on other machines are not waited for.
    pub fn wait_for_room(&self, output: &DataId) -> Result<(), NodeError> {
        if !self.outputs.contains(output) {
            return Err(NodeError::UnknownOutput(output.clone()));
        }
        self.control.await_room(&NodeRequest::AwaitRoom {
            output: output.clone(),
        })
    }

    fn send_typed(
        &mut self,
        output: &DataId,
        parameters: MetadataParameters,
        sample: Sample,
        type_info: TypeInfo,
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
            type_info,
            parameters,
        };
        let sent = (self.lanes).send((&self.control, &self.pool), output, metadata, data)?;
        let Some((metadata, data)) = sent else {
            return Ok(());
        };
        self.control.send(&NodeRequest::SendOutput {
            output: output.clone(),
            metadata,
            data,
            taps_before: self.lanes.taps_before(),
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

    /// Takes an update lock on this node's machine: until the returned guard is dropped (or the
    /// node exits), `adora cluster upgrade` and `adora cluster drain` wait for the machine.
    /// Blocks until the coordinator recorded the lock; refused (`NodeError::UpdateLock`) while
    /// such an operation already has the machine. Under `adora run` it is granted at once.
    ///
    /// ```no_run
    /// # fn grasp() {}
    /// # let (node, _events) = adora_node_api::AdoraNode::init_from_env()?;
    /// {
    ///     let _lock = node.update_lock("grasping")?;
    ///     grasp(); // no upgrade or drain of this machine starts meanwhile
    /// } // released here
    /// # Ok::<(), adora_node_api::NodeError>(())
    /// ```
    pub fn update_lock(&self, reason: &str) -> Result<crate::UpdateLock, NodeError> {
        crate::UpdateLock::take(self.control.clone(), reason)
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
/// it released, and the lanes (by name, `numbers` gives the node's number of each) whose
/// receiver's instance ended, on the drops connection; nothing is written back.
fn receive_freed_samples(
    mut stream: BufReader<UnixStream>,
    pool: &Mutex<SamplePool>,
    numbers: &HashMap<String, u32>,
) {
    let mut buf = Vec::new();
    loop {
        match read_frame::<DaemonReply>(&mut stream, &mut buf) {
            Ok(DaemonReply::FreedSamples(tokens)) if !tokens.is_empty() => {
                let mut pool = lock_pool(pool);
                for t in tokens {
                    pool.release(SampleToken(t));
                }
            }
            Ok(DaemonReply::LanesReleased(lanes)) => {
                let mut pool = lock_pool(pool);
                for (lane, before) in lanes {
                    if let Some(number) = numbers.get(&lane) {
                        pool.release_taken(*number, before);
                    }
                }
            }
            _ => return,
        }
    }
}
