//! How a message's payload is laid out as an Arrow array, so that every language reads the same
//! values: a Rust `UInt64Array` arrives in Python as a `pyarrow.UInt64Array`, a Python
//! `pa.array(["a", "b"])` in Rust as a `StringArray`.
//!
//! The payload is the array's buffers one after the other, each at an offset that is a multiple
//! of [`BUFFER_ALIGNMENT`] (shared-memory samples start on a page, so typed views are aligned); an
//! [`ArrowTypeInfo`] says where each buffer is. It travels encoded in [`TypeInfo`], which daemons
//! pass on without decoding it (and a plain byte payload carries none at all).

use arrow_schema::DataType;
use serde::{Deserialize, Serialize};

/// Offsets of buffers in a payload are multiples of this many bytes (Arrow's recommended
/// alignment, enough for every primitive type).
pub const BUFFER_ALIGNMENT: usize = 64;

/// Largest encoded [`ArrowTypeInfo`] a receiver decodes: far beyond any real type (a struct of
/// hundreds of fields), small enough that a hostile nesting cannot exhaust the stack while decoding.
pub const MAX_TYPE_INFO_LEN: usize = 32 * 1024;

/// Deepest nesting of an [`ArrowTypeInfo`] a receiver decodes, counted in serde levels (a nested
/// data type costs a few per level): far beyond real types, shallow enough that decoding stays
/// within a 2 MiB thread stack. Within [`MAX_TYPE_INFO_LEN`], 4 000 nested `Dictionary` types
/// fit, which overflowed that stack (an abort) before this limit.
pub const MAX_TYPE_INFO_DEPTH: usize = 256;

/// A range of bytes in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferRange {
    /// First byte, from the start of the payload.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

/// The validity bitmap of an array: which of its values are null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validity {
    /// Where the bitmap's bytes are.
    pub range: BufferRange,
    /// The bit of the first value of the array in the bitmap.
    pub bit_offset: usize,
}

/// The Arrow layout of a payload: the data type, the array's length and offset, and where its
/// buffers (and those of its children, for nested types) are in the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrowTypeInfo {
    /// The Arrow data type.
    pub data_type: DataType,
    /// Number of values.
    pub len: usize,
    /// The first value's index in the buffers (arrays sliced without copying have one).
    pub offset: usize,
    /// The validity bitmap; `None` when no value is null.
    pub validity: Option<Validity>,
    /// The data type's buffers, in Arrow's order (e.g. offsets then values for strings).
    pub buffers: Vec<BufferRange>,
    /// The children of nested types (list values, struct fields, dictionary values).
    pub children: Vec<ArrowTypeInfo>,
}

impl ArrowTypeInfo {
    /// The layout of plain bytes: a `UInt8` array over the whole payload of `len` bytes.
    pub fn bytes(len: usize) -> Self {
        ArrowTypeInfo {
            data_type: DataType::UInt8,
            len,
            offset: 0,
            validity: None,
            buffers: vec![BufferRange { offset: 0, len }],
            children: Vec::new(),
        }
    }
}

impl ArrowTypeInfo {
    /// One UTF-8 string as a payload: a `Utf8` array of one value, its offsets `[0, len]` (two
    /// little-endian `i32`) at the start and its bytes at [`BUFFER_ALIGNMENT`]. Used for the
    /// messages the daemon makes from a node's log lines (`send_stdout_as`).
    pub fn single_string(value: &str) -> (Self, Vec<u8>) {
        let len = value.len();
        let mut payload = Vec::with_capacity(BUFFER_ALIGNMENT + len);
        payload.extend_from_slice(&0i32.to_le_bytes());
        // A line longer than 2 GiB cannot be one Arrow `Utf8` value; the daemon's lines are far
        // shorter (they are read line by line from a pipe).
        payload.extend_from_slice(&i32::try_from(len).unwrap_or(i32::MAX).to_le_bytes());
        payload.resize(BUFFER_ALIGNMENT, 0);
        payload.extend_from_slice(value.as_bytes());
        let info = ArrowTypeInfo {
            data_type: DataType::Utf8,
            len: 1,
            offset: 0,
            validity: None,
            buffers: vec![
                BufferRange { offset: 0, len: 8 },
                BufferRange {
                    offset: BUFFER_ALIGNMENT,
                    len,
                },
            ],
            children: Vec::new(),
        };
        (info, payload)
    }
}

/// A payload's [`ArrowTypeInfo`], encoded. Empty means plain bytes (see [`ArrowTypeInfo::bytes`]),
/// so raw payloads and messages the daemon makes (timer ticks) carry nothing extra.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeInfo(#[serde(with = "serde_bytes")] Vec<u8>);

/// Errors reading a [`TypeInfo`].
#[derive(Debug, thiserror::Error)]
pub enum TypeInfoError {
    /// Longer than [`MAX_TYPE_INFO_LEN`].
    #[error("the message's Arrow type description is {0} bytes, more than the {MAX_TYPE_INFO_LEN} accepted")]
    TooLong(usize),
    /// Not a type description this version understands.
    #[error("malformed Arrow type description: {0}")]
    Malformed(#[from] bincode::Error),
}

impl TypeInfo {
    /// The type info of plain bytes.
    pub fn bytes() -> Self {
        TypeInfo(Vec::new())
    }

    /// Encodes `info`; plain bytes (`UInt8`, no nulls, one buffer at 0) encode as empty.
    pub fn encode(info: &ArrowTypeInfo) -> Self {
        if *info == ArrowTypeInfo::bytes(info.len) {
            return TypeInfo::bytes();
        }
        TypeInfo(
            bincode::serialize(info)
                .expect("ArrowTypeInfo serializes: plain data, maps with string keys only"),
        )
    }

    /// Whether this is plain bytes.
    pub fn is_bytes(&self) -> bool {
        self.0.is_empty()
    }

    /// Decodes the layout of a payload of `payload_len` bytes.
    pub fn decode(&self, payload_len: usize) -> Result<ArrowTypeInfo, TypeInfoError> {
        if self.0.is_empty() {
            return Ok(ArrowTypeInfo::bytes(payload_len));
        }
        if self.0.len() > MAX_TYPE_INFO_LEN {
            return Err(TypeInfoError::TooLong(self.0.len()));
        }
        Ok(crate::depth_limit::bincode_deserialize(
            &self.0,
            MAX_TYPE_INFO_DEPTH,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_schema::Field;

    use super::*;

    #[test]
    fn plain_bytes_cost_nothing_and_decode_to_the_payload_length() {
        let encoded = TypeInfo::encode(&ArrowTypeInfo::bytes(17));
        assert!(encoded.is_bytes());
        assert_eq!(
            encoded.decode(9000).expect("bytes"),
            ArrowTypeInfo::bytes(9000)
        );
    }

    #[test]
    fn nested_types_round_trip() {
        let item = Arc::new(Field::new("item", DataType::Utf8, true));
        let info = ArrowTypeInfo {
            data_type: DataType::List(item),
            len: 2,
            offset: 0,
            validity: Some(Validity {
                range: BufferRange { offset: 0, len: 1 },
                bit_offset: 3,
            }),
            buffers: vec![BufferRange {
                offset: 64,
                len: 12,
            }],
            children: vec![ArrowTypeInfo {
                data_type: DataType::Utf8,
                len: 3,
                offset: 0,
                validity: None,
                buffers: vec![
                    BufferRange {
                        offset: 128,
                        len: 16,
                    },
                    BufferRange {
                        offset: 192,
                        len: 5,
                    },
                ],
                children: vec![],
            }],
        };
        let encoded = TypeInfo::encode(&info);
        assert!(!encoded.is_bytes());
        assert_eq!(encoded.decode(0).expect("decodes"), info);
    }

    #[test]
    fn deeply_nested_types_are_an_error_not_a_stack_overflow() {
        // `Dictionary(UInt8, Dictionary(UInt8, ... UInt8))`, 4 000 deep, within the size limit:
        // it overflowed a 2 MiB stack (the test threads' own) before the depth limit.
        let leaf = bincode::serialize(&DataType::UInt8).expect("serializes");
        let dict = bincode::serialize(&DataType::Dictionary(
            Box::new(DataType::UInt8),
            Box::new(DataType::UInt8),
        ))
        .expect("serializes");
        let level = &dict[..dict.len() - leaf.len()];
        let rest = &bincode::serialize(&ArrowTypeInfo::bytes(1)).expect("serializes")[leaf.len()..];
        let mut bytes = level.repeat(4000);
        bytes.extend_from_slice(&leaf);
        bytes.extend_from_slice(rest);
        assert!(bytes.len() <= MAX_TYPE_INFO_LEN);
        let err = TypeInfo(bytes).decode(1).expect_err("too deep");
        assert!(err.to_string().contains("nested too deeply"), "{err}");

        // Real nesting is far shallower and decodes.
        let mut deep_enough = DataType::UInt8;
        for _ in 0..8 {
            let item = Arc::new(Field::new("item", deep_enough, true));
            deep_enough = DataType::Struct(vec![item.clone()].into());
            deep_enough = DataType::List(Arc::new(Field::new("l", deep_enough, false)));
        }
        let info = ArrowTypeInfo {
            data_type: deep_enough,
            ..ArrowTypeInfo::bytes(0)
        };
        assert_eq!(TypeInfo::encode(&info).decode(0).expect("decodes"), info);
    }

    #[test]
    fn oversized_and_garbage_descriptions_are_errors() {
        let long = TypeInfo(vec![1; MAX_TYPE_INFO_LEN + 1]);
        assert!(matches!(long.decode(0), Err(TypeInfoError::TooLong(_))));
        let garbage = TypeInfo(vec![0xff; 7]);
        assert!(matches!(
            garbage.decode(0),
            Err(TypeInfoError::Malformed(_))
        ));
    }
}
