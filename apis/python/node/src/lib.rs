//! The `adora` Python package: `from adora import Node`.
//!
//! Same names and shapes as dora's Python API, so a dora node ports by changing its import:
//! `Node()`, `for event in node`, `node.next(timeout)`, `node.try_recv()`,
//! `await node.recv_async()`, `node.send_output(id, data, metadata)`; an event is a dict whose
//! `"value"` is a pyarrow array. Large inputs are pyarrow arrays over the sender's shared memory
//! (no copy); `node.allocate(size)` gives a writable memoryview that is sent without a copy.

mod sample;
mod values;

use std::{
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use adora_node_api::{AdoraNode, EventStream, NodeError};
use adora_shm::RegionCache;
use pyo3::{
    exceptions::{PyRuntimeError, PyValueError},
    prelude::*,
    types::PyDict,
};

use crate::sample::AllocatedSample;

/// How long a blocking `next` waits with the GIL released before it checks for signals
/// (Ctrl-C must stop a node that waits for an input that never comes).
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// An Adora node: its inputs as events, its outputs to send on.
///
/// ```python
/// from adora import Node
///
/// node = Node()
/// for event in node:
///     if event["type"] == "INPUT":
///         node.send_output("doubled", pc.multiply(event["value"], 2), event["metadata"])
/// ```
#[pyclass(module = "adora", frozen)]
struct Node {
    node: Mutex<AdoraNode>,
    events: Mutex<EventStream>,
    /// Second mappings of the samples `allocate` hands out (see `sample`).
    regions: Mutex<RegionCache>,
    node_id: String,
    dataflow_id: String,
}

/// A held update lock (`Node.update_lock`); a context manager.
#[pyclass(module = "adora", frozen)]
struct UpdateLock {
    lock: Mutex<Option<adora_node_api::UpdateLock>>,
}

#[pymethods]
impl UpdateLock {
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        _kind: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.release()?;
        Ok(false)
    }

    /// Releases the lock now (a second call does nothing).
    fn release(&self) -> PyResult<()> {
        match lock(&self.lock).take() {
            Some(held) => held.release().map_err(node_error),
            None => Ok(()),
        }
    }

    /// Why it was taken.
    #[getter]
    fn reason(&self) -> Option<String> {
        lock(&self.lock).as_ref().map(|l| l.reason().to_owned())
    }

    /// True until it is released.
    #[getter]
    fn held(&self) -> bool {
        lock(&self.lock).is_some()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another thread mid-call leaves the node usable: every call starts afresh.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn node_error(e: NodeError) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

#[pymethods]
impl Node {
    /// Connects to the daemon that started this process (its configuration is in the
    /// environment). Returns once every node of the dataflow on this machine has started.
    #[new]
    fn new(py: Python<'_>) -> PyResult<Self> {
        // Imported now, before the start barrier: importing pyarrow takes a fifth of a second,
        // which the first input would otherwise wait for while its sender already sends.
        values::pyarrow(py)?;
        let (node, events) = py.detach(AdoraNode::init_from_env).map_err(node_error)?;
        Ok(Node {
            node_id: node.id().to_string(),
            dataflow_id: node.dataflow_id().to_string(),
            node: Mutex::new(node),
            events: Mutex::new(events),
            regions: Mutex::new(RegionCache::new()),
        })
    }

    /// The next event (a dict), waiting at most `timeout` seconds (forever by default). `None`
    /// when none came in time or when the stream has ended (after the dataflow stopped or every
    /// input closed).
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let deadline = match timeout {
            None => None,
            Some(t) if t.is_finite() && t >= 0.0 => {
                Some(Instant::now() + Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX))
            }
            Some(t) => {
                return Err(PyValueError::new_err(format!(
                    "timeout must be a number of seconds >= 0, not {t}"
                )))
            }
        };
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let slice = left.map_or(SIGNAL_CHECK_INTERVAL, |l| l.min(SIGNAL_CHECK_INTERVAL));
            let (event, ended) = py.detach(|| {
                let mut events = lock(&self.events);
                (events.recv_timeout(slice), events.is_ended())
            });
            if let Some(event) = event {
                return values::event_to_py(py, event).map(|e| Some(e.into_any().unbind()));
            }
            if ended || left.is_some_and(|l| l <= slice) {
                return Ok(None);
            }
            py.check_signals()?;
        }
    }

    /// The next event if one is already here, else `None`, without waiting.
    fn try_recv(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.next(py, Some(0.0))
    }

    /// Awaitable form of `next()` for asyncio nodes: waits on a thread of the loop's executor.
    fn recv_async<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
        event_loop.call_method1("run_in_executor", (py.None(), slf.getattr("next")?))
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.next(py, None)
    }

    /// Sends `data` on `output_id`: a pyarrow array (any type), `bytes`/`bytearray`/a memoryview
    /// (a `UInt8` array), a numpy array (flattened, sent as the matching Arrow type), a list
    /// (`pyarrow.array(list)`), or a memoryview from `allocate` (sent without a copy).
    /// `metadata` is a dict of parameters (bool, int, float, str, lists of them) for the
    /// receivers; a `"timestamp"` key is ignored (the send time is set here).
    #[pyo3(signature = (output_id, data, metadata=None))]
    fn send_output(
        &self,
        py: Python<'_>,
        output_id: &str,
        data: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let parameters = values::parameters(metadata)?;
        let output = output_id.into();
        if let Some(sample) = AllocatedSample::of(data)? {
            let sample = sample.get().take()?;
            return py
                .detach(|| lock(&self.node).send_sample(&output, parameters, sample))
                .map_err(node_error);
        }
        match values::to_send(py, data)? {
            values::Outgoing::Bytes(bytes) => {
                let bytes = bytes.as_bytes(py);
                py.detach(|| lock(&self.node).send_output(&output, parameters, bytes))
            }
            values::Outgoing::Array(array) => {
                py.detach(|| lock(&self.node).send_arrow_data(&output, parameters, &array))
            }
        }
        .map_err(node_error)
    }

    /// A writable memoryview of `size` bytes to fill in place (e.g. with
    /// `numpy.frombuffer(view, dtype=numpy.uint8)`), then send with `send_output(id, view)`:
    /// from 4 KiB on it is a shared-memory sample and nothing is copied. Do not write to it after
    /// sending.
    fn allocate<'py>(&self, py: Python<'py>, size: usize) -> PyResult<Bound<'py, PyAny>> {
        let sample = lock(&self.node).allocate_sample(size).map_err(node_error)?;
        sample::memoryview(py, &self.regions, sample)
    }

    /// Takes an update lock on this node's machine: `cluster upgrade` and `cluster drain` wait
    /// until it is released. Use it as a context manager (`with node.update_lock("grasping"):`)
    /// or call `release()`; it is also released when the node exits. Blocks until the
    /// coordinator recorded it; raises `RuntimeError` when it is refused.
    fn update_lock(&self, py: Python<'_>, reason: &str) -> PyResult<UpdateLock> {
        let node = lock(&self.node);
        let taken = py.detach(|| node.update_lock(reason)).map_err(node_error)?;
        Ok(UpdateLock {
            lock: Mutex::new(Some(taken)),
        })
    }

    /// How many shared-memory samples this node sent are still held by a receiver (they
    /// return to its pool once every receiver dropped them).
    fn samples_in_flight(&self) -> usize {
        lock(&self.node).samples_in_flight()
    }

    /// How many messages of `input` this node did not get: dropped from its full queue, or
    /// missing on their way from another machine. Updated as events arrive (a call from another
    /// thread waits while `next` waits for an event).
    fn drop_count(&self, input: &str) -> u64 {
        lock(&self.events).drop_count(&input.into())
    }

    /// This node's id.
    fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The running dataflow's id (a UUID string).
    fn dataflow_id(&self) -> &str {
        &self.dataflow_id
    }

    fn __repr__(&self) -> String {
        format!("Node(id={:?}, dataflow={})", self.node_id, self.dataflow_id)
    }
}

/// `from adora import Node`.
#[pymodule]
fn adora(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Node>()?;
    m.add_class::<AllocatedSample>()?;
    m.add_class::<UpdateLock>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
