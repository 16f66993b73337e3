//! Between Python and the node API: events as dicts, metadata parameters, and Arrow arrays in
//! both directions through the Arrow C Data Interface (`pyarrow.Array._export_to_c` /
//! `_import_from_c`, which every pyarrow since 0.17 has).

use adora_node_api::{arrow::data::ArrayData, Event, Metadata, MetadataParameters, Parameter};
use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
};

use arrow_array::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use arrow_schema::DataType;
use pyo3::{
    exceptions::{PyImportError, PyTypeError, PyValueError},
    intern,
    prelude::*,
    sync::PyOnceLock,
    types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple},
};

use crate::lock;

/// The metadata key of the send time (ns since the Unix epoch); ignored when sending.
const TIMESTAMP_KEY: &str = "timestamp";

pub(crate) fn pyarrow(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static PYARROW: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    PYARROW
        .get_or_try_init(py, || {
            py.import("pyarrow").map(Bound::unbind).map_err(|e| {
                PyImportError::new_err(format!(
                    "the adora package needs pyarrow: pip install pyarrow ({e})"
                ))
            })
        })
        .map(|m| m.bind(py))
}

/// An event as the dict dora's Python API hands out.
pub(crate) fn event_to_py(py: Python<'_>, event: Event) -> PyResult<Bound<'_, PyDict>> {
    let dict = PyDict::new(py);
    match event {
        Event::Input { id, metadata, data } => match data.to_arrow_data() {
            Ok(array) => {
                dict.set_item(intern!(py, "type"), intern!(py, "INPUT"))?;
                dict.set_item(intern!(py, "id"), id.as_str())?;
                dict.set_item(intern!(py, "value"), to_pyarrow(py, &array)?)?;
                dict.set_item(intern!(py, "metadata"), metadata_to_py(py, &metadata)?)?;
            }
            Err(e) => {
                dict.set_item("type", "ERROR")?;
                dict.set_item("error", format!("input `{id}`: {e}"))?;
            }
        },
        Event::InputClosed { id } => {
            dict.set_item("type", "INPUT_CLOSED")?;
            dict.set_item("id", id.as_str())?;
        }
        Event::Stop => dict.set_item("type", "STOP")?,
        Event::Error(error) => {
            dict.set_item("type", "ERROR")?;
            dict.set_item("error", error)?;
        }
        Event::UpstreamRestarted { node, inputs } => {
            dict.set_item("type", "UPSTREAM_RESTARTED")?;
            dict.set_item("node", node.to_string())?;
            dict.set_item("inputs", ids(&inputs))?;
        }
        Event::UpstreamFailed {
            node,
            inputs,
            reason,
        } => {
            dict.set_item("type", "UPSTREAM_FAILED")?;
            dict.set_item("node", node.to_string())?;
            dict.set_item("inputs", ids(&inputs))?;
            dict.set_item("error", reason)?;
        }
        other => {
            dict.set_item("type", "ERROR")?;
            dict.set_item("error", format!("event not supported in Python: {other:?}"))?;
        }
    }
    Ok(dict)
}

fn ids(inputs: &[adora_node_api::DataId]) -> Vec<&str> {
    inputs.iter().map(|i| i.as_str()).collect()
}

fn metadata_to_py<'py>(py: Python<'py>, metadata: &Metadata) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item(
        intern!(py, TIMESTAMP_KEY),
        metadata.timestamp.get_time().as_nanos(),
    )?;
    for (key, value) in &metadata.parameters {
        match value {
            Parameter::Bool(v) => dict.set_item(key, v)?,
            Parameter::Integer(v) => dict.set_item(key, v)?,
            Parameter::Float(v) => dict.set_item(key, v)?,
            Parameter::String(v) => dict.set_item(key, v)?,
            Parameter::ListInt(v) => dict.set_item(key, v)?,
            Parameter::ListFloat(v) => dict.set_item(key, v)?,
            Parameter::ListString(v) => dict.set_item(key, v)?,
        }
    }
    Ok(dict)
}

/// The parameters of `send_output`'s metadata dict.
pub(crate) fn parameters(metadata: Option<&Bound<'_, PyDict>>) -> PyResult<MetadataParameters> {
    let mut parameters = MetadataParameters::new();
    let Some(metadata) = metadata else {
        return Ok(parameters);
    };
    for (key, value) in metadata.iter() {
        let key: String = key
            .extract()
            .map_err(|_| PyTypeError::new_err("metadata keys must be strings"))?;
        if key == TIMESTAMP_KEY {
            continue;
        }
        let parameter = parameter(&value).ok_or_else(|| {
            PyTypeError::new_err(format!(
                "metadata `{key}`: a {} is not supported (bool, int, float, str, or a list of int, float or str)",
                value.get_type().name().map_or_else(|_| "?".into(), |n| n.to_string())
            ))
        })?;
        parameters.insert(key, parameter);
    }
    Ok(parameters)
}

fn parameter(value: &Bound<'_, PyAny>) -> Option<Parameter> {
    // bool before int: a Python bool is an int.
    if value.is_instance_of::<PyBool>() {
        return value.extract().ok().map(Parameter::Bool);
    }
    if value.is_instance_of::<PyInt>() {
        return value.extract().ok().map(Parameter::Integer);
    }
    if value.is_instance_of::<PyFloat>() {
        return value.extract().ok().map(Parameter::Float);
    }
    if value.is_instance_of::<PyString>() {
        return value.extract().ok().map(Parameter::String);
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let items: Vec<Bound<'_, PyAny>> = value.extract().ok()?;
        let all = |check: fn(&Bound<'_, PyAny>) -> bool| items.iter().all(check);
        if all(|i| i.is_instance_of::<PyInt>() && !i.is_instance_of::<PyBool>()) {
            return value.extract().ok().map(Parameter::ListInt);
        }
        if all(|i| i.is_instance_of::<PyFloat>() || i.is_instance_of::<PyInt>()) {
            return value.extract().ok().map(Parameter::ListFloat);
        }
        if all(|i| i.is_instance_of::<PyString>()) {
            return value.extract().ok().map(Parameter::ListString);
        }
    }
    None
}

/// What `send_output` sends.
pub(crate) enum Outgoing {
    /// Python bytes: sent as they are (a `UInt8` array).
    Bytes(Py<PyBytes>),
    /// An Arrow array (its buffers still pyarrow's, released when this is dropped).
    Array(ArrayData),
}

/// Turns `send_output`'s `data` into something the node API sends.
pub(crate) fn to_send(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Outgoing> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        return Ok(Outgoing::Bytes(bytes.clone().unbind()));
    }
    let pa = pyarrow(py)?;
    let array = if data.is_instance(&pa.getattr(intern!(py, "Array"))?)? {
        data.clone()
    } else if data.is_instance(&pa.getattr(intern!(py, "ChunkedArray"))?)? {
        data.call_method0("combine_chunks")?
    } else if data.hasattr(intern!(py, "__array_interface__"))? {
        // numpy (and look-alikes): flattened; a view when the array is contiguous.
        pa.call_method1("array", (data.call_method1("reshape", (-1,))?,))?
    } else if data.is_instance_of::<PyList>() || data.is_instance_of::<PyTuple>() {
        pa.call_method1("array", (data,))?
    } else if let Ok(buffer) = pa.call_method1("py_buffer", (data,)) {
        // bytearray, memoryview, pyarrow.Buffer: wrapped without a copy, sent as UInt8.
        let len = buffer.getattr("size")?;
        let uint8 = pa.call_method0("uint8")?;
        let buffers = PyList::new(py, [py.None(), buffer.unbind()])?;
        pa.getattr("Array")?
            .call_method1("from_buffers", (uint8, len, buffers))?
    } else {
        return Err(PyTypeError::new_err(format!(
            "send_output takes a pyarrow array, bytes, a numpy array, a list or a buffer, not {}",
            data.get_type().name()?
        )));
    };
    from_pyarrow(&array).map(Outgoing::Array)
}

/// Reads a pyarrow array through the C Data Interface, without copying its buffers.
fn from_pyarrow(array: &Bound<'_, PyAny>) -> PyResult<ArrayData> {
    let mut ffi_array = FFI_ArrowArray::empty();
    let mut ffi_schema = FFI_ArrowSchema::empty();
    array.call_method1(
        intern!(array.py(), "_export_to_c"),
        (
            std::ptr::addr_of_mut!(ffi_array) as usize,
            std::ptr::addr_of_mut!(ffi_schema) as usize,
        ),
    )?;
    // SAFETY: `_export_to_c` returned without raising, so pyarrow filled both structs following
    // the Arrow C Data Interface (valid buffers and lengths for the declared type). `from_ffi`
    // takes ownership of the array struct: its release callback, which frees pyarrow's buffers,
    // runs when the returned data is dropped; the schema struct is released by its own drop.
    unsafe { arrow_array::ffi::from_ffi(ffi_array, &ffi_schema) }
        .map_err(|e| PyValueError::new_err(format!("cannot read the pyarrow array: {e}")))
}

/// Hands an array to pyarrow through the C Data Interface, without copying its buffers: they
/// (and the shared-memory sample under them) live until pyarrow releases the array.
fn to_pyarrow<'py>(py: Python<'py>, data: &ArrayData) -> PyResult<Bound<'py, PyAny>> {
    let data_type = pyarrow_type(py, data.data_type())?;
    let ffi_array = FFI_ArrowArray::new(data);
    // Looked up once: after the node slept waiting for an input, every attribute lookup costs
    // microseconds (cold caches), and this runs for every input.
    static IMPORT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let import = IMPORT.get_or_try_init(py, || {
        pyarrow(py)?
            .getattr("Array")?
            .getattr("_import_from_c")
            .map(Bound::unbind)
    })?;
    // pyarrow moves the struct out (marking ours released), so dropping it is a no-op.
    import
        .bind(py)
        .call1((std::ptr::addr_of!(ffi_array) as usize, data_type))
}

/// Most pyarrow data types [`pyarrow_type`] keeps (a node sees a handful).
const TYPE_CACHE_CAPACITY: usize = 256;

/// The pyarrow `DataType` of `data_type`, imported once through the C Data Interface and then
/// cached: an input is imported with it, without a schema to parse per message.
fn pyarrow_type<'py>(py: Python<'py>, data_type: &DataType) -> PyResult<Bound<'py, PyAny>> {
    static TYPES: LazyLock<Mutex<HashMap<DataType, Py<PyAny>>>> = LazyLock::new(Mutex::default);
    let cached = lock(&TYPES).get(data_type).map(|t| t.clone_ref(py));
    if let Some(cached) = cached {
        return Ok(cached.into_bound(py));
    }
    // The lock is not held while Python runs: pyarrow may release the GIL.
    let schema = FFI_ArrowSchema::try_from(data_type)
        .map_err(|e| PyValueError::new_err(format!("cannot export the type to pyarrow: {e}")))?;
    let imported = pyarrow(py)?
        .getattr(intern!(py, "DataType"))?
        .call_method1(
            intern!(py, "_import_from_c"),
            (std::ptr::addr_of!(schema) as usize,),
        )?;
    let mut types = lock(&TYPES);
    if types.len() < TYPE_CACHE_CAPACITY {
        types.insert(data_type.clone(), imported.clone().unbind());
    }
    Ok(imported)
}
