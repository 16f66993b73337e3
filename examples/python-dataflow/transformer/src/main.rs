//! Transformer of the python-dataflow example: Arrow arrays from Python in, Arrow arrays out.
//!
//! - `numbers` must be a `UInt64Array`; its squares go out on `squared` (a `UInt64Array`);
//! - `words` must be a `StringArray`; its values upper-cased go out on `upper` (a `StringArray`).
//!
//! The metadata parameters (the sender's `seq`) are forwarded. An input of another type ends the
//! node with an error naming the type it got.

use adora_node_api::{
    arrow::array::{Array, StringArray, UInt64Array},
    AdoraNode, DataId, Event,
};

type Error = Box<dyn std::error::Error>;

/// Downcasts an input to the array type the example expects, or says what arrived instead.
/// `expected` names the Arrow type for the message.
fn downcast<'a, T: 'static>(
    input: &str,
    expected: &str,
    array: &'a dyn Array,
) -> Result<&'a T, Error> {
    array.as_any().downcast_ref::<T>().ok_or_else(|| {
        format!(
            "input `{input}`: expected an array of type {expected}, got {}",
            array.data_type()
        )
        .into()
    })
}

/// Squares every value (wrapping on overflow, like the Rust example); nulls stay null.
fn squares(numbers: &UInt64Array) -> UInt64Array {
    numbers
        .iter()
        .map(|n| n.map(|n| n.wrapping_mul(n)))
        .collect()
}

/// Upper-cases every string; nulls stay null.
fn upper_case(words: &StringArray) -> StringArray {
    words.iter().map(|w| w.map(str::to_uppercase)).collect()
}

fn main() -> Result<(), Error> {
    let (mut node, mut events) = AdoraNode::init_from_env()?;
    let squared: DataId = "squared".into();
    let upper: DataId = "upper".into();
    let mut forwarded = 0u64;
    while let Some(event) = events.recv() {
        match event {
            Event::Input { id, metadata, data } => {
                let array = data.to_arrow()?;
                match id.as_str() {
                    "numbers" => {
                        let out = squares(downcast(id.as_str(), "UInt64", array.as_ref())?);
                        node.send_arrow(&squared, metadata.parameters, &out)?;
                    }
                    "words" => {
                        let out = upper_case(downcast(id.as_str(), "Utf8", array.as_ref())?);
                        node.send_arrow(&upper, metadata.parameters, &out)?;
                    }
                    other => return Err(format!("unexpected input `{other}`").into()),
                }
                forwarded += 1;
            }
            Event::InputClosed { id } => println!("input `{id}` closed"),
            Event::Stop => break,
            _ => {}
        }
    }
    println!("transformer done: {forwarded} arrays transformed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squares_and_upper_case_keep_nulls() {
        let numbers = UInt64Array::from(vec![Some(2), None, Some(u64::MAX)]);
        let out = squares(&numbers);
        assert_eq!(out.iter().collect::<Vec<_>>(), vec![Some(4), None, Some(1)]);

        let words = StringArray::from(vec![Some("adora"), None, Some("msg-1")]);
        let out = upper_case(&words);
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            vec![Some("ADORA"), None, Some("MSG-1")]
        );
    }

    #[test]
    fn a_wrong_type_names_what_arrived() {
        let words = StringArray::from(vec!["a"]);
        let err =
            downcast::<UInt64Array>("numbers", "UInt64", &words).expect_err("a string is no u64");
        assert_eq!(
            err.to_string(),
            "input `numbers`: expected an array of type UInt64, got Utf8"
        );
    }
}
