//! Arrow values: an array laid out as one payload when sending, a payload read back as an array
//! when receiving (see `adora_message::arrow_layout` for the layout).
//!
//! The Arrow crates this API uses are re-exported here, so a node does not have to match their
//! version: `use adora_node_api::arrow::array::{Array, UInt64Array};`.

pub use arrow_array as array;
pub use arrow_buffer as buffer;
pub use arrow_data as data;
pub use arrow_schema as schema;

use adora_message::arrow_layout::{ArrowTypeInfo, BufferRange, Validity, BUFFER_ALIGNMENT};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer};
use arrow_data::{ArrayData, ArrayDataBuilder};

/// Where each buffer of `data` goes in a payload, and the payload's length.
pub(crate) fn layout(data: &ArrayData) -> (ArrowTypeInfo, usize) {
    let mut end = 0;
    let info = plan(data, &mut end);
    (info, end)
}

/// Reserves `len` bytes at the next aligned offset from `end`.
fn place(end: &mut usize, len: usize) -> BufferRange {
    let offset = end.next_multiple_of(BUFFER_ALIGNMENT);
    *end = offset + len;
    BufferRange { offset, len }
}

fn plan(data: &ArrayData, end: &mut usize) -> ArrowTypeInfo {
    let validity = data.nulls().map(|nulls| Validity {
        range: place(end, nulls.buffer().len()),
        bit_offset: nulls.offset(),
    });
    let buffers = data.buffers().iter().map(|b| place(end, b.len())).collect();
    let children = data.child_data().iter().map(|c| plan(c, end)).collect();
    ArrowTypeInfo {
        data_type: data.data_type().clone(),
        len: data.len(),
        offset: data.offset(),
        validity,
        buffers,
        children,
    }
}

/// Copies the buffers of `data` into `out` where [`layout`] placed them.
pub(crate) fn write(data: &ArrayData, info: &ArrowTypeInfo, out: &mut [u8]) {
    let mut put = |range: &BufferRange, bytes: &[u8]| {
        out[range.offset..range.offset + range.len].copy_from_slice(bytes);
    };
    if let (Some(nulls), Some(validity)) = (data.nulls(), &info.validity) {
        put(&validity.range, nulls.buffer().as_slice());
    }
    for (buffer, range) in data.buffers().iter().zip(&info.buffers) {
        put(range, buffer.as_slice());
    }
    for (child, child_info) in data.child_data().iter().zip(&info.children) {
        write(child, child_info, out);
    }
}

/// The array `info` describes in `payload`. Everything is checked: ranges outside the payload,
/// lengths that do not fit the type, invalid offsets or UTF-8 are errors, never a panic.
pub(crate) fn read(info: &ArrowTypeInfo, payload: &Buffer) -> Result<ArrayData, String> {
    let slice = |range: &BufferRange| match range.offset.checked_add(range.len) {
        Some(end) if end <= payload.len() => Ok(payload.slice_with_length(range.offset, range.len)),
        _ => Err(format!(
            "buffer at {}+{} is outside the {}-byte payload",
            range.offset,
            range.len,
            payload.len()
        )),
    };
    if info.offset.checked_add(info.len).is_none() {
        return Err(format!(
            "offset {} + length {} overflows",
            info.offset, info.len
        ));
    }
    let nulls = match &info.validity {
        None => None,
        Some(validity) => {
            let bits = slice(&validity.range)?;
            let fits = validity
                .bit_offset
                .checked_add(info.len)
                .is_some_and(|end| end <= bits.len().saturating_mul(8));
            if !fits {
                return Err(format!(
                    "validity bitmap of {} bytes is too short for {} values at bit {}",
                    bits.len(),
                    info.len,
                    validity.bit_offset
                ));
            }
            Some(NullBuffer::new(BooleanBuffer::new(
                bits,
                validity.bit_offset,
                info.len,
            )))
        }
    };
    let buffers = info.buffers.iter().map(slice).collect::<Result<_, _>>()?;
    let children = info
        .children
        .iter()
        .map(|c| read(c, payload))
        .collect::<Result<_, _>>()?;
    ArrayDataBuilder::new(info.data_type.clone())
        .len(info.len)
        .offset(info.offset)
        .nulls(nulls)
        .buffers(buffers)
        .child_data(children)
        .align_buffers(true)
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use adora_message::arrow_layout::TypeInfo;
    use arrow_array::{
        builder::{ListBuilder, StringBuilder},
        Array, ArrayRef, Float32Array, Int64Array, StringArray, StructArray, UInt64Array,
        UInt8Array,
    };
    use arrow_schema::{DataType, Field};

    use super::*;

    #[test]
    fn a_single_string_made_by_the_daemon_reads_as_a_string_array() {
        for line in ["", "héllo wörld"] {
            let (info, payload) = ArrowTypeInfo::single_string(line);
            let encoded = TypeInfo::encode(&info);
            let decoded = encoded.decode(payload.len()).expect("decodes");
            let data = read(&decoded, &Buffer::from_vec(payload)).expect("valid layout");
            let array = StringArray::from(data);
            assert_eq!(array.len(), 1);
            assert_eq!(array.value(0), line);
        }
    }

    /// Sends `array` through a payload the way the node API does and reads it back.
    fn round_trip(array: &dyn Array) -> ArrayRef {
        let data = array.to_data();
        let (info, len) = layout(&data);
        let mut payload = vec![0xAA; len];
        write(&data, &info, &mut payload);
        let info = TypeInfo::encode(&info).decode(len).expect("decodes");
        arrow_array::make_array(read(&info, &Buffer::from_vec(payload)).expect("valid"))
    }

    #[test]
    fn primitive_string_nested_and_null_values_survive_the_payload() {
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(vec![1, 2, u64::MAX])),
            Arc::new(Int64Array::from(vec![Some(-1), None, Some(3)])),
            Arc::new(Float32Array::from(vec![0.5; 1000])),
            Arc::new(StringArray::from(vec![Some("a"), None, Some("grüße")])),
            Arc::new(UInt8Array::from(Vec::<u8>::new())),
            Arc::new(StructArray::from(vec![
                (
                    Arc::new(Field::new("x", DataType::UInt64, false)),
                    Arc::new(UInt64Array::from(vec![7, 8])) as ArrayRef,
                ),
                (
                    Arc::new(Field::new("name", DataType::Utf8, true)),
                    Arc::new(StringArray::from(vec![Some("p"), None])) as ArrayRef,
                ),
            ])),
            {
                let mut lists = ListBuilder::new(StringBuilder::new());
                lists.values().append_value("left");
                lists.append(true);
                lists.append(false);
                lists.values().append_value("up");
                lists.values().append_value("down");
                lists.append(true);
                Arc::new(lists.finish())
            },
        ];
        for array in arrays {
            assert_eq!(&round_trip(&array), &array, "{:?}", array.data_type());
        }
    }

    #[test]
    fn sliced_arrays_keep_their_window() {
        let array = Int64Array::from(vec![Some(1), None, Some(3), Some(4), None]).slice(1, 3);
        assert_eq!(round_trip(&array).as_ref(), &array as &dyn Array);
    }

    #[test]
    fn plain_bytes_are_a_uint8_array_with_no_type_description() {
        let data = UInt8Array::from(vec![1, 2, 3]).to_data();
        let (info, len) = layout(&data);
        assert_eq!((info.clone(), len), (ArrowTypeInfo::bytes(3), 3));
        assert!(TypeInfo::encode(&info).is_bytes());
    }

    #[test]
    fn descriptions_that_do_not_fit_the_payload_are_errors() {
        let payload = Buffer::from_vec(vec![0u8; 64]);
        let mut info = ArrowTypeInfo::bytes(64);
        info.buffers[0].len = 65;
        assert!(read(&info, &payload).unwrap_err().contains("outside"));
        info.buffers[0] = BufferRange {
            offset: usize::MAX,
            len: 2,
        };
        assert!(read(&info, &payload).is_err());

        // Offsets pointing past the values of a string array: rejected by validation.
        let strings = StringArray::from(vec!["ab"]).to_data();
        let (mut info, len) = layout(&strings);
        let mut bytes = vec![0u8; len];
        write(&strings, &info, &mut bytes);
        bytes[info.buffers[0].offset + 4] = 200; // end offset 200 > 2 value bytes
        assert!(read(&info, &Buffer::from_vec(bytes.clone())).is_err());
        info.validity = Some(Validity {
            range: BufferRange { offset: 0, len: 0 },
            bit_offset: 0,
        });
        assert!(read(&info, &Buffer::from_vec(bytes))
            .unwrap_err()
            .contains("too short"));
    }
}
