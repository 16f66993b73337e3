//! Finding the line of a value in the YAML source.
//!
//! `serde_yaml::Value` carries no positions, but `serde_yaml` attaches the position of the event it
//! is deserializing to any error raised by a visitor. [`line_of`] uses that: it walks the document
//! with a visitor that follows a path (`nodes`, `[2]`, `inputs`, `tick`) and deliberately fails when
//! it reaches the target; the error's location is the target's position. This is exact for block
//! and flow style, comments, quoting and anchors, unlike scanning the text for `key:`. It re-reads
//! the document once per lookup, which only happens for errors, so the cost does not matter.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path into the YAML document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seg<'a> {
    /// A mapping key. As the last step, the path points at the key itself (its line).
    Key(&'a str),
    /// A sequence element.
    Index(usize),
}

/// Message of the deliberate error raised when the target is reached.
const FOUND: &str = "__adora_locator_found__";

/// Returns the 1-based line of the value (or, for a trailing [`Seg::Key`], of the key) at `path`,
/// or `None` when the path does not exist in `yaml`.
pub(crate) fn line_of(yaml: &str, path: &[Seg<'_>]) -> Option<usize> {
    let deserializer = serde_yaml::Deserializer::from_str(yaml);
    match (Locator { path }).deserialize(deserializer) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| l.line()),
        _ => None,
    }
}

fn found<E: de::Error>() -> E {
    E::custom(FOUND)
}

/// Follows `path`; fails with [`FOUND`] on the value at the end of it.
struct Locator<'p, 'a> {
    path: &'p [Seg<'a>],
}

impl<'de> DeserializeSeed<'de> for Locator<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Locator<'_, '_> {
    /// A scalar is the target when the path ends here, a dead end otherwise.
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(found())
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for Locator<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        // A tagged value (`!tag x`): only ever a target, never traversed.
        if self.path.is_empty() {
            Err(found())
        } else {
            Err(de::Error::custom("tagged value on the path"))
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (first, rest) = match self.path.split_first() {
            None => return Err(found()),
            Some((Seg::Index(i), rest)) => (Some(*i), rest),
            Some((Seg::Key(_), _)) => (None, &[][..]),
        };
        let mut index = 0;
        loop {
            let more = if Some(index) == first {
                seq.next_element_seed(Locator { path: rest })?.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (key, rest) = match self.path.split_first() {
            None => return Err(found()),
            Some((Seg::Key(k), rest)) => (Some(*k), rest),
            Some((Seg::Index(_), _)) => (None, &[][..]),
        };
        while let Some(matched) = map.next_key_seed(KeyMatcher {
            want: key,
            is_target: rest.is_empty(),
        })? {
            if matched {
                map.next_value_seed(Locator { path: rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Reads a mapping key and says whether it is the wanted one; fails with [`FOUND`] on it when the
/// key itself is the target.
struct KeyMatcher<'a> {
    want: Option<&'a str>,
    is_target: bool,
}

impl KeyMatcher<'_> {
    fn check<E: de::Error>(&self, key: &str) -> Result<bool, E> {
        match self.want {
            Some(want) if want == key && self.is_target => Err(found()),
            Some(want) => Ok(want == key),
            None => Ok(false),
        }
    }
}

impl<'de> DeserializeSeed<'de> for KeyMatcher<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyMatcher<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }
    // Non-string keys are matched by their text so that `1: x` can be located as key "1".
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# comment
nodes:
  - id: a
    outputs:
      - x
      - y
  - { id: b, inputs: { in: a/x } }
  - id: c
    inputs:
      tick:
        source: adora/timer/millis/5
";

    #[test]
    fn finds_keys_elements_and_flow_style() {
        let line = |p: &[Seg<'_>]| line_of(DOC, p);
        assert_eq!(line(&[]), Some(2));
        assert_eq!(line(&[Seg::Key("nodes")]), Some(2));
        assert_eq!(line(&[Seg::Key("nodes"), Seg::Index(0)]), Some(3));
        assert_eq!(
            line(&[Seg::Key("nodes"), Seg::Index(0), Seg::Key("outputs")]),
            Some(4)
        );
        let y = [
            Seg::Key("nodes"),
            Seg::Index(0),
            Seg::Key("outputs"),
            Seg::Index(1),
        ];
        assert_eq!(line(&y), Some(6));
        let flow = [
            Seg::Key("nodes"),
            Seg::Index(1),
            Seg::Key("inputs"),
            Seg::Key("in"),
        ];
        assert_eq!(line(&flow), Some(7));
        let source = [
            Seg::Key("nodes"),
            Seg::Index(2),
            Seg::Key("inputs"),
            Seg::Key("tick"),
            Seg::Key("source"),
        ];
        assert_eq!(line(&source), Some(11));
    }

    #[test]
    fn missing_paths_have_no_line() {
        assert_eq!(line_of(DOC, &[Seg::Key("edges")]), None);
        assert_eq!(line_of(DOC, &[Seg::Key("nodes"), Seg::Index(7)]), None);
        let through_scalar = [
            Seg::Key("nodes"),
            Seg::Index(0),
            Seg::Key("id"),
            Seg::Key("x"),
        ];
        assert_eq!(line_of(DOC, &through_scalar), None);
    }

    #[test]
    fn finds_non_string_keys_by_text() {
        assert_eq!(line_of("a: 1\n5: x\n", &[Seg::Key("5")]), Some(2));
    }
}
