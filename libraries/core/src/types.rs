//! Typed ports: type URNs (`std/<category>/v<N>/<Type>[k=v,...]`), the standard type library as
//! data (URN → description → Arrow data type, allowed parameters), and the compatibility rule
//! `adora validate` applies to every connected pair of annotated ports.
//!
//! Compatibility of a sender type `from` with a receiver type `to`:
//! 1. the same base URN, and every parameter set on both sides has the same value (a parameter
//!    set on one side only is a wildcard);
//! 2. `to` is `std/core/v1/Bytes` (the universal sink);
//! 3. a chain of at most [`MAX_WIDENING_STEPS`] widenings from `from`'s base to `to`'s base, using
//!    the standard widenings ([`STD_WIDENINGS`]) and the dataflow's own `type_rules`.

use std::{collections::BTreeMap, fmt};

use arrow_schema::{DataType, Field, Fields};

/// URN of the universal sink: every type may be sent to an input typed `Bytes`.
pub const BYTES_URN: &str = "std/core/v1/Bytes";

/// The type of every timer input (`adora/timer/...`, `dora/timer/...`): a `u64` tick.
pub const TIMER_URN: &str = "std/core/v1/UInt64";

/// Longest chain of widenings (standard or `type_rules`) tried from a sender type to a receiver.
pub const MAX_WIDENING_STEPS: usize = 3;

/// Implicit widenings between standard types (`from`, `to`).
pub const STD_WIDENINGS: &[(&str, &str)] = &[
    ("std/core/v1/UInt8", "std/core/v1/UInt32"),
    ("std/core/v1/UInt32", "std/core/v1/UInt64"),
    ("std/core/v1/Int32", "std/core/v1/Int64"),
    ("std/core/v1/Float32", "std/core/v1/Float64"),
];

/// One type of the standard library.
#[derive(Debug, Clone, Copy)]
pub struct StdType {
    /// The URN without parameters, e.g. `std/media/v1/Image`.
    pub urn: &'static str,
    /// What a value of this type is.
    pub description: &'static str,
    /// Parameters the URN may carry (`[encoding=rgb8]`).
    pub params: &'static [&'static str],
    arrow: fn() -> DataType,
}

impl StdType {
    /// The Arrow data type of a value of this type.
    pub fn arrow_type(&self) -> DataType {
        (self.arrow)()
    }
}

macro_rules! std_type {
    ($urn:literal, $description:literal, [$($param:literal),*], $arrow:expr) => {
        StdType {
            urn: $urn,
            description: $description,
            params: &[$($param),*],
            arrow: $arrow,
        }
    };
}

/// The standard type library (names follow dora 1.x's; the Arrow layouts are Adora's).
pub const STD_TYPES: &[StdType] = &[
    std_type!("std/core/v1/Bool", "a boolean", [], || DataType::Boolean),
    std_type!("std/core/v1/UInt8", "an 8-bit unsigned integer", [], || {
        DataType::UInt8
    }),
    std_type!(
        "std/core/v1/UInt32",
        "a 32-bit unsigned integer",
        [],
        || DataType::UInt32
    ),
    std_type!(
        "std/core/v1/UInt64",
        "a 64-bit unsigned integer",
        [],
        || DataType::UInt64
    ),
    std_type!("std/core/v1/Int32", "a 32-bit signed integer", [], || {
        DataType::Int32
    }),
    std_type!("std/core/v1/Int64", "a 64-bit signed integer", [], || {
        DataType::Int64
    }),
    std_type!("std/core/v1/Float32", "a 32-bit float", [], || {
        DataType::Float32
    }),
    std_type!("std/core/v1/Float64", "a 64-bit float", [], || {
        DataType::Float64
    }),
    std_type!("std/core/v1/String", "UTF-8 text", [], || DataType::Utf8),
    std_type!(
        "std/core/v1/Bytes",
        "raw bytes; accepts any type",
        [],
        || { DataType::LargeBinary }
    ),
    std_type!("std/math/v1/Vector3", "a 3D vector (x, y, z)", [], vector3),
    std_type!(
        "std/math/v1/Quaternion",
        "a rotation (x, y, z, w)",
        [],
        quaternion
    ),
    std_type!("std/math/v1/Pose", "a 6-DOF pose", [], pose),
    std_type!(
        "std/math/v1/Transform",
        "a coordinate transform",
        [],
        || { record(&[("translation", vector3()), ("rotation", quaternion())]) }
    ),
    std_type!(
        "std/control/v1/Twist",
        "linear and angular velocity",
        [],
        twist
    ),
    std_type!(
        "std/control/v1/JointState",
        "joint positions, velocities, efforts",
        [],
        || {
            record(&[
                ("name", list(DataType::Utf8)),
                ("position", list(DataType::Float64)),
                ("velocity", list(DataType::Float64)),
                ("effort", list(DataType::Float64)),
            ])
        }
    ),
    std_type!(
        "std/control/v1/Odometry",
        "a pose and a twist in a frame",
        [],
        || {
            record(&[
                ("frame_id", DataType::Utf8),
                ("pose", pose()),
                ("twist", twist()),
            ])
        }
    ),
    std_type!("std/media/v1/Image", "a raw image", ["encoding"], || {
        record(&[
            ("width", DataType::UInt32),
            ("height", DataType::UInt32),
            ("encoding", DataType::Utf8),
            ("data", DataType::LargeBinary),
        ])
    }),
    std_type!(
        "std/media/v1/CompressedImage",
        "a JPEG/PNG image",
        ["format"],
        || { DataType::LargeBinary }
    ),
    std_type!(
        "std/media/v1/PointCloud",
        "a 3D point cloud",
        ["point_type"],
        || {
            record(&[
                ("point_type", DataType::Utf8),
                ("count", DataType::UInt64),
                ("data", DataType::LargeBinary),
            ])
        }
    ),
    std_type!(
        "std/media/v1/AudioFrame",
        "audio samples",
        ["sample_type", "channels", "sample_rate"],
        || {
            record(&[
                ("sample_rate", DataType::UInt32),
                ("channels", DataType::UInt32),
                ("sample_type", DataType::Utf8),
                ("data", DataType::LargeBinary),
            ])
        }
    ),
    std_type!(
        "std/vision/v1/BoundingBox",
        "a 2D box, confidence and label",
        [],
        bbox
    ),
    std_type!("std/vision/v1/Detection", "detected objects", [], || {
        record(&[("boxes", list(bbox()))])
    }),
    std_type!(
        "std/vision/v1/Segmentation",
        "a pixel-level mask",
        [],
        || {
            record(&[
                ("width", DataType::UInt32),
                ("height", DataType::UInt32),
                ("mask", DataType::LargeBinary),
                ("labels", list(DataType::Utf8)),
            ])
        }
    ),
];

fn record(fields: &[(&str, DataType)]) -> DataType {
    let fields: Fields = fields
        .iter()
        .map(|(name, dt)| Field::new(*name, dt.clone(), false))
        .collect();
    DataType::Struct(fields)
}

fn list(item: DataType) -> DataType {
    DataType::List(Field::new_list_field(item, false).into())
}

fn vector3() -> DataType {
    let f = DataType::Float64;
    record(&[("x", f.clone()), ("y", f.clone()), ("z", f)])
}

fn quaternion() -> DataType {
    let f = DataType::Float64;
    record(&[
        ("x", f.clone()),
        ("y", f.clone()),
        ("z", f.clone()),
        ("w", f),
    ])
}

fn pose() -> DataType {
    record(&[("position", vector3()), ("orientation", quaternion())])
}

fn twist() -> DataType {
    record(&[("linear", vector3()), ("angular", vector3())])
}

fn bbox() -> DataType {
    let f = DataType::Float32;
    record(&[
        ("x_min", f.clone()),
        ("y_min", f.clone()),
        ("x_max", f.clone()),
        ("y_max", f.clone()),
        ("confidence", f),
        ("label", DataType::Utf8),
    ])
}

/// The standard type with this base URN (parameters ignored).
pub fn lookup(urn: &str) -> Option<&'static StdType> {
    let base = urn.split_once('[').map_or(urn, |(base, _)| base);
    STD_TYPES.iter().find(|t| t.urn == base)
}

/// The Arrow data type of a standard type URN (parameters ignored), or `None` when unknown.
pub fn arrow_type(urn: &str) -> Option<DataType> {
    lookup(urn).map(StdType::arrow_type)
}

/// Why a string is not a type URN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid type URN `{urn}`: {reason}")]
pub struct UrnError {
    /// The text as written.
    pub urn: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A parsed type URN: its base and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeUrn {
    /// `std/media/v1/AudioFrame`.
    pub base: String,
    /// `sample_type=f32` → `{sample_type: f32}`.
    pub params: BTreeMap<String, String>,
}

impl TypeUrn {
    /// Parses `a/b/.../Type` with optional `[k=v,...]`; `std/...` URNs must be
    /// `std/<category>/v<N>/<Type>`.
    pub fn parse(urn: &str) -> Result<Self, UrnError> {
        let err = |reason| UrnError {
            urn: urn.to_owned(),
            reason,
        };
        let (base, params) = match urn.split_once('[') {
            None => (urn, None),
            Some((base, rest)) => match rest.strip_suffix(']') {
                Some(inner) => (base, Some(inner)),
                None => return Err(err("a `[` without its closing `]` at the end")),
            },
        };
        let segments: Vec<&str> = base.split('/').collect();
        let segment_ok = |s: &&str| crate::ids::is_valid_id(s);
        if segments.len() < 2 || !segments.iter().all(segment_ok) {
            return Err(err(
                "expected `std/<category>/v<N>/<Type>` (segments of [A-Za-z0-9_.-] separated by `/`)",
            ));
        }
        if segments[0] == "std" {
            let version_ok = |v: &str| {
                v.strip_prefix('v')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            };
            if segments.len() != 4 || !version_ok(segments[2]) {
                return Err(err(
                    "standard types are written `std/<category>/v<N>/<Type>`",
                ));
            }
        }
        let mut parsed = BTreeMap::new();
        for pair in params.into_iter().flat_map(|p| p.split(',')) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| err("parameters are written `[key=value,...]`"))?;
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() || value.is_empty() {
                return Err(err("a parameter with an empty key or value"));
            }
            if parsed.insert(key.to_owned(), value.to_owned()).is_some() {
                return Err(err("a parameter given twice"));
            }
        }
        Ok(TypeUrn {
            base: base.to_owned(),
            params: parsed,
        })
    }

    /// Whether a value of type `self` may be sent to a port of type `to`, with the dataflow's
    /// `type_rules` as extra widenings (see the module docs).
    pub fn compatible_with(&self, to: &TypeUrn, rules: &[(String, String)]) -> bool {
        if to.base == BYTES_URN {
            return true;
        }
        if self.base == to.base {
            return self
                .params
                .iter()
                .all(|(k, v)| to.params.get(k).is_none_or(|w| w == v));
        }
        let widenings = STD_WIDENINGS
            .iter()
            .map(|(a, b)| (*a, *b))
            .chain(rules.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        let widenings: Vec<(&str, &str)> = widenings.collect();
        let mut frontier = vec![self.base.as_str()];
        for _ in 0..MAX_WIDENING_STEPS {
            let next: Vec<&str> = frontier
                .iter()
                .flat_map(|f| {
                    widenings
                        .iter()
                        .filter(move |(a, _)| a == f)
                        .map(|(_, b)| *b)
                })
                .collect();
            if next.contains(&to.base.as_str()) {
                return true;
            }
            frontier = next;
        }
        false
    }

    /// The last segment of the base, e.g. `Image` (for short labels).
    pub fn short_name(&self) -> &str {
        self.base.rsplit('/').next().unwrap_or(&self.base)
    }
}

impl fmt::Display for TypeUrn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)?;
        if !self.params.is_empty() {
            let pairs: Vec<String> = self
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, "[{}]", pairs.join(","))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
