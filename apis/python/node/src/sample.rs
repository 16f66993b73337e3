//! `Node.allocate`: a writable memoryview over a sample that `send_output` sends without a copy.
//!
//! The memoryview is made by `ctypes` over a second mapping of the sample's shared-memory
//! segment, owned by an [`AllocatedSample`] that the view keeps alive: writes after the sample
//! was sent (which the docs forbid) can garble a message but never touch unmapped memory, however
//! long numpy arrays made from the view live. Samples under the shared-memory threshold are a
//! plain `bytearray`, copied when sent.

use std::sync::{Arc, Mutex};

use adora_node_api::Sample;
use adora_shm::{RegionCache, ShmRegion};
use pyo3::{exceptions::PyValueError, intern, prelude::*, types::PyByteArray};

use crate::lock;

/// The owner of a memoryview made by `Node.allocate`: the unsent sample and the mapping the view
/// points into.
#[pyclass(module = "adora", frozen)]
pub(crate) struct AllocatedSample {
    sample: Mutex<Option<Sample>>,
    _mapping: Arc<ShmRegion>,
    address: usize,
    len: usize,
}

impl AllocatedSample {
    /// The sample behind `data` when it is a whole memoryview made by `Node.allocate`.
    pub(crate) fn of<'py>(data: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, Self>>> {
        let py = data.py();
        if !data.is_instance_of::<pyo3::types::PyMemoryView>() {
            return Ok(None);
        }
        let exporter = data.getattr(intern!(py, "obj"))?;
        let Ok(owner) = exporter.getattr(intern!(py, "_adora_sample")) else {
            return Ok(None);
        };
        let Ok(owner) = owner.cast_into::<AllocatedSample>() else {
            return Ok(None);
        };
        let nbytes: usize = data.getattr(intern!(py, "nbytes"))?.extract()?;
        if nbytes != owner.get().len || start_address(data)? != Some(owner.get().address) {
            return Ok(None); // a slice of the sample: sent as a copy
        }
        Ok(Some(owner))
    }

    /// Takes the sample to send it; an error if it was sent already.
    pub(crate) fn take(&self) -> PyResult<Sample> {
        lock(&self.sample).take().ok_or_else(|| {
            PyValueError::new_err("this memoryview was already sent: allocate a new one")
        })
    }
}

/// Where a writable memoryview's bytes start (`None` for a read-only one).
fn start_address(view: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
    let ctypes = view.py().import("ctypes")?;
    let Ok(first) = ctypes
        .getattr("c_char")?
        .call_method1("from_buffer", (view,))
    else {
        return Ok(None);
    };
    Ok(Some(ctypes.call_method1("addressof", (first,))?.extract()?))
}

/// The memoryview `Node.allocate` returns for `sample`.
pub(crate) fn memoryview<'py>(
    py: Python<'py>,
    regions: &Mutex<RegionCache>,
    sample: Sample,
) -> PyResult<Bound<'py, PyAny>> {
    let builtins = py.import("builtins")?;
    let len = sample.len();
    let Some(os_id) = sample.shared_memory_id() else {
        let bytes = PyByteArray::new(py, &sample);
        return builtins.getattr("memoryview")?.call1((bytes,));
    };
    let mapping = lock(regions)
        .get(os_id)
        .map_err(|e| PyValueError::new_err(format!("cannot map the new sample: {e}")))?;
    let address = mapping.as_ptr() as usize;
    let owner = Bound::new(
        py,
        AllocatedSample {
            sample: Mutex::new(Some(sample)),
            _mapping: mapping,
            address,
            len,
        },
    )?;
    let ctypes = py.import("ctypes")?;
    let array_type = ctypes.getattr("c_char")?.call_method1("__mul__", (len,))?;
    let array = array_type.call_method1("from_address", (address,))?;
    array.setattr("_adora_sample", owner)?;
    builtins
        .getattr("memoryview")?
        .call1((array,))?
        .call_method1("cast", ("B",))
}
