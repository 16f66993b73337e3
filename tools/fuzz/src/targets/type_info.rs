//! The Arrow layout of a payload (`arrow_layout::TypeInfo::decode`, read by the receiving node's
//! API from a message another node sent): generated layouts with nested data types, mutated,
//! nested as deep as the size limit allows, and random bytes.

use adora_message::arrow_layout::{ArrowTypeInfo, TypeInfo, MAX_TYPE_INFO_LEN};
use arrow_schema::DataType;
use proptest::{prelude::RngExt, test_runner::TestRunner};

use super::{
    check_memory, draw, hex_excerpt, mode, node_frames::BINCODE_FIXED_BYTES, strategies, Mode,
};
use crate::{alloc::peak_during, mutate, runner::Target};

/// The Arrow layout in a message's metadata.
pub const TYPE_INFO: Target = Target {
    name: "type-info",
    about: "Metadata.type_info bytes -> arrow_layout::TypeInfo::decode",
    case: type_info_case,
};

/// A `TypeInfo` holding `bytes`, made the way one arrives: decoded from a frame.
fn type_info_of(bytes: &[u8]) -> TypeInfo {
    let mut encoded = (bytes.len() as u64).to_le_bytes().to_vec();
    encoded.extend_from_slice(bytes);
    bincode::deserialize(&encoded).expect("a length-prefixed byte string is a TypeInfo")
}

fn encoded(info: &ArrowTypeInfo) -> Vec<u8> {
    bincode::serialize(info).expect("ArrowTypeInfo serializes")
}

/// A layout whose data type is `depth` dictionaries (or lists) deep, built as bytes: the
/// serializer itself would recurse that deep.
fn deep(depth: usize, lists: bool) -> Vec<u8> {
    let leaf = ArrowTypeInfo::bytes(1);
    let leaf_type = bincode::serialize(&DataType::UInt8).expect("serializes");
    let rest = &encoded(&leaf)[leaf_type.len()..];
    let level = if lists {
        let list = DataType::List(std::sync::Arc::new(arrow_schema::Field::new(
            "",
            DataType::UInt8,
            true,
        )));
        let bytes = bincode::serialize(&list).expect("serializes");
        // `List(Field { name: "", data_type: <next>, .. })`: the tag and the empty name, then
        // the inner type; the field's other members follow it.
        let head = 4 + 8;
        (
            bytes[..head].to_vec(),
            bytes[head + leaf_type.len()..].to_vec(),
        )
    } else {
        let dict = DataType::Dictionary(Box::new(DataType::UInt8), Box::new(DataType::UInt8));
        let bytes = bincode::serialize(&dict).expect("serializes");
        // `Dictionary(UInt8, <next>)`: the tag and the key type, then the value type.
        (bytes[..4 + leaf_type.len()].to_vec(), Vec::new())
    };
    let mut out = Vec::new();
    for _ in 0..depth {
        out.extend_from_slice(&level.0);
    }
    out.extend_from_slice(&leaf_type);
    for _ in 0..depth {
        out.extend_from_slice(&level.1);
    }
    out.extend_from_slice(rest);
    out
}

fn type_info_case(runner: &mut TestRunner) -> Result<(), String> {
    let info = draw(runner, &strategies::type_info());
    let valid = encoded(&info);
    let input_mode = mode(runner);
    let bytes = match input_mode {
        Mode::Valid => valid.clone(),
        Mode::Mutated if runner.rng().random_bool(0.1) => {
            let rng = runner.rng();
            deep(
                rng.random_range(1..MAX_TYPE_INFO_LEN / 4),
                rng.random_bool(0.5),
            )
        }
        Mode::Mutated => {
            let mut bytes = valid.clone();
            mutate::mutate_bytes(runner.rng(), &mut bytes);
            bytes
        }
        Mode::Raw => mutate::raw_bytes(runner.rng(), 2048),
    };
    let type_info = type_info_of(&bytes);
    let (decoded, peak) = peak_during(|| type_info.decode(0));
    check_memory(peak, bytes.len(), 64, BINCODE_FIXED_BYTES)?;
    if input_mode == Mode::Valid {
        let back = TypeInfo::encode(&info)
            .decode(info.len)
            .map_err(|e| format!("a valid layout was refused: {e}: {}", hex_excerpt(&valid)))?;
        if back != info {
            return Err(format!(
                "a layout changed in a round trip: {info:?} became {back:?}"
            ));
        }
    }
    match decoded {
        Ok(layout) => {
            let again = TypeInfo::encode(&layout).decode(layout.len).map_err(|e| {
                format!(
                    "an accepted layout does not decode again: {e}\ninput: {}",
                    hex_excerpt(&bytes)
                )
            })?;
            if again != layout {
                return Err(format!(
                    "an accepted layout changed in a round trip\ninput: {}",
                    hex_excerpt(&bytes)
                ));
            }
            Ok(())
        }
        Err(_) => Ok(()),
    }
}
