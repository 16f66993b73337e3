//! `proptest` strategies for the binary wire types: node protocol messages, message metadata and
//! Arrow layouts (with recursive data types). Values cover every variant, and numbers across their
//! whole range (NaN and infinite floats included).

use std::sync::Arc;

use adora_message::{
    arrow_layout::{ArrowTypeInfo, BufferRange, TypeInfo, Validity},
    daemon_to_node::{DaemonReply, NodeEvent},
    node_to_daemon::{Channel, NodeRequest},
    DataRef, Metadata, Parameter, SegmentFile, SharedRef,
};
use arrow_schema::{DataType, Field, Fields, IntervalUnit, TimeUnit, UnionFields, UnionMode};
use proptest::{collection::vec, option, prelude::*, sample::select, strategy::Union};

/// Ids as a valid descriptor has them, and a few that are not.
pub fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => "[a-z][a-z0-9_.-]{0,12}",
        1 => ".{0,20}",
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-0.0)
    ]
}

fn parameter() -> impl Strategy<Value = Parameter> {
    prop_oneof![
        any::<bool>().prop_map(Parameter::Bool),
        any::<i64>().prop_map(Parameter::Integer),
        float().prop_map(Parameter::Float),
        ".{0,30}".prop_map(Parameter::String),
        vec(any::<i64>(), 0..8).prop_map(Parameter::ListInt),
        vec(float(), 0..8).prop_map(Parameter::ListFloat),
        vec(".{0,8}", 0..8).prop_map(Parameter::ListString),
    ]
}

/// Metadata with any timestamp, parameters and (encoded) Arrow layout.
pub fn metadata() -> impl Strategy<Value = Metadata> {
    (
        any::<u64>(),
        1u128..,
        prop_oneof![
            Just(TypeInfo::bytes()),
            type_info().prop_map(|i| TypeInfo::encode(&i))
        ],
        proptest::collection::btree_map(".{0,12}", parameter(), 0..5),
    )
        .prop_map(|(time, id, type_info, parameters)| Metadata {
            timestamp: uhlc::Timestamp::new(
                uhlc::NTP64(time),
                uhlc::ID::try_from(id).expect("ids are drawn from 1.."),
            ),
            type_info,
            parameters,
        })
}

pub fn data_ref() -> impl Strategy<Value = DataRef> {
    prop_oneof![
        vec(any::<u8>(), 0..256).prop_map(DataRef::Inline),
        (
            ".{0,40}",
            any::<usize>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(os_id, len, token, dev, ino)| DataRef::Shared(SharedRef {
                os_id,
                len,
                token,
                file: SegmentFile { dev, ino },
            })),
    ]
}

/// Every [`NodeRequest`] variant.
pub fn node_request() -> impl Strategy<Value = NodeRequest> {
    let channel = select(vec![Channel::Control, Channel::Events, Channel::Drops]);
    prop_oneof![
        (any::<u32>(), any::<u128>(), id(), channel).prop_map(|(v, uuid, node, channel)| {
            NodeRequest::Register {
                protocol_version: v,
                dataflow_id: uuid::Uuid::from_u128(uuid),
                node_id: node.into(),
                channel,
            }
        }),
        (id(), metadata(), data_ref(), any::<u64>()).prop_map(
            |(output, metadata, data, taps_before)| NodeRequest::SendOutput {
                output: output.into(),
                metadata,
                data,
                taps_before,
            }
        ),
        vec(id(), 0..5)
            .prop_map(|ids| NodeRequest::CloseOutputs(ids.into_iter().map(Into::into).collect())),
        vec(any::<u64>(), 0..10).prop_map(NodeRequest::ReportDropTokens),
        vec(any::<u64>(), 0..10).prop_map(|dropped| NodeRequest::NextEvents { dropped }),
        (any::<u64>(), ".{0,40}")
            .prop_map(|(lock, reason)| NodeRequest::TakeUpdateLock { lock, reason }),
        any::<u64>().prop_map(|lock| NodeRequest::ReleaseUpdateLock { lock }),
    ]
}

fn node_event() -> impl Strategy<Value = NodeEvent> {
    prop_oneof![
        (id(), metadata(), data_ref()).prop_map(|(id, metadata, data)| NodeEvent::Input {
            id: id.into(),
            metadata,
            data,
        }),
        id().prop_map(|id| NodeEvent::InputClosed { id: id.into() }),
        Just(NodeEvent::Stop),
        ".{0,40}".prop_map(NodeEvent::Error),
        (id(), vec(id(), 0..4)).prop_map(|(node, inputs)| NodeEvent::UpstreamRestarted {
            node: node.into(),
            inputs: inputs.into_iter().map(Into::into).collect(),
        }),
        (id(), vec(id(), 0..4), ".{0,40}").prop_map(|(node, inputs, reason)| {
            NodeEvent::UpstreamFailed {
                node: node.into(),
                inputs: inputs.into_iter().map(Into::into).collect(),
                reason,
            }
        }),
    ]
}

/// Every [`DaemonReply`] variant.
pub fn daemon_reply() -> impl Strategy<Value = DaemonReply> {
    let result = || prop_oneof![Just(Ok(())), ".{0,40}".prop_map(Err)];
    prop_oneof![
        result().prop_map(DaemonReply::Registered),
        (
            vec(node_event(), 0..6),
            proptest::collection::btree_map(id(), any::<u64>(), 0..4)
        )
            .prop_map(|(events, counts)| DaemonReply::Events {
                events,
                drop_counts: counts.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            }),
        vec(any::<u64>(), 0..10).prop_map(DaemonReply::FreedSamples),
        result().prop_map(DaemonReply::UpdateLock),
    ]
}

fn time_unit() -> impl Strategy<Value = TimeUnit> {
    select(vec![
        TimeUnit::Second,
        TimeUnit::Millisecond,
        TimeUnit::Microsecond,
        TimeUnit::Nanosecond,
    ])
}

fn leaf_type() -> impl Strategy<Value = DataType> {
    let plain = select(vec![
        DataType::Null,
        DataType::Boolean,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::UInt8,
        DataType::UInt16,
        DataType::UInt32,
        DataType::UInt64,
        DataType::Float16,
        DataType::Float32,
        DataType::Float64,
        DataType::Date32,
        DataType::Date64,
        DataType::Binary,
        DataType::LargeBinary,
        DataType::BinaryView,
        DataType::Utf8,
        DataType::LargeUtf8,
        DataType::Utf8View,
        DataType::Interval(IntervalUnit::MonthDayNano),
    ]);
    prop_oneof![
        6 => plain,
        1 => (time_unit(), option::of("[A-Za-z/_+0-9:]{0,20}"))
            .prop_map(|(u, tz)| DataType::Timestamp(u, tz.map(Arc::from))),
        1 => time_unit().prop_map(DataType::Duration),
        1 => any::<i32>().prop_map(DataType::FixedSizeBinary),
        1 => (any::<u8>(), any::<i8>()).prop_map(|(p, s)| DataType::Decimal128(p, s)),
    ]
}

fn field(inner: impl Strategy<Value = DataType>) -> impl Strategy<Value = Arc<Field>> {
    (".{0,10}", inner, any::<bool>())
        .prop_map(|(name, t, nullable)| Arc::new(Field::new(name, t, nullable)))
}

/// Arrow data types, nested up to a few levels (lists, structs, maps, unions, dictionaries).
pub fn data_type() -> impl Strategy<Value = DataType> {
    leaf_type().prop_recursive(4, 24, 4, |inner| {
        Union::new_weighted(vec![
            (2, field(inner.clone()).prop_map(DataType::List).boxed()),
            (
                1,
                field(inner.clone()).prop_map(DataType::LargeList).boxed(),
            ),
            (
                1,
                (field(inner.clone()), any::<i32>())
                    .prop_map(|(f, n)| DataType::FixedSizeList(f, n))
                    .boxed(),
            ),
            (
                2,
                vec(field(inner.clone()), 0..4)
                    .prop_map(|f| DataType::Struct(Fields::from(f)))
                    .boxed(),
            ),
            (
                1,
                (field(inner.clone()), any::<bool>())
                    .prop_map(|(f, s)| DataType::Map(f, s))
                    .boxed(),
            ),
            (
                1,
                (inner.clone(), inner.clone())
                    .prop_map(|(k, v)| DataType::Dictionary(Box::new(k), Box::new(v)))
                    .boxed(),
            ),
            (
                1,
                (vec(field(inner.clone()), 0..3), any::<bool>())
                    .prop_map(|(fields, dense)| {
                        let mode = if dense {
                            UnionMode::Dense
                        } else {
                            UnionMode::Sparse
                        };
                        DataType::Union((0..).zip(fields).collect::<UnionFields>(), mode)
                    })
                    .boxed(),
            ),
            (
                1,
                (field(inner.clone()), field(inner))
                    .prop_map(|(r, v)| DataType::RunEndEncoded(r, v))
                    .boxed(),
            ),
        ])
    })
}

fn range() -> impl Strategy<Value = BufferRange> {
    (any::<usize>(), any::<usize>()).prop_map(|(offset, len)| BufferRange { offset, len })
}

/// Arrow layouts with any numbers in them (the decoder must not trust them; it only decodes).
pub fn type_info() -> impl Strategy<Value = ArrowTypeInfo> {
    let node = |children: BoxedStrategy<Vec<ArrowTypeInfo>>| {
        (
            data_type(),
            any::<usize>(),
            any::<usize>(),
            option::of((range(), any::<usize>())),
            vec(range(), 0..4),
            children,
        )
            .prop_map(|(data_type, len, offset, validity, buffers, children)| {
                ArrowTypeInfo {
                    data_type,
                    len,
                    offset,
                    validity: validity.map(|(range, bit_offset)| Validity { range, bit_offset }),
                    buffers,
                    children,
                }
            })
    };
    node(Just(Vec::new()).boxed()).prop_recursive(3, 12, 3, move |inner| {
        node(vec(inner, 0..3).boxed()).boxed()
    })
}
