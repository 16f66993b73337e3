//! Payloads: received [`Data`] (inline or a zero-copy view of a shared sample) and writable
//! [`Sample`]s for sending.

use std::{
    ops::{Deref, DerefMut},
    sync::Arc,
};

use adora_message::{arrow_layout::TypeInfo, Parameter};
use adora_shm::{SampleMut, SharedSlice, ShmRegion};
use arrow_array::ArrayRef;
use arrow_buffer::Buffer;

use crate::{drops::DropReports, error::NodeError};

/// User parameters attached to a message.
pub type MetadataParameters = std::collections::BTreeMap<String, Parameter>;

/// A received payload. Dereferences to the bytes; [`Data::to_arrow`] reads it as the Arrow array
/// the sender sent.
///
/// Large payloads are a read-only view into the sender's shared-memory sample: no copy was made on
/// the way here. Dropping the `Data` (and every array made from it) releases the sample: through
/// a lane, by clearing the lane's bit in the sample's holder words (the sender's pool sees it);
/// through the daemon, by telling it (with the event stream's next request for events, or at once
/// if the stream is already waiting).
pub struct Data {
    repr: Repr,
    type_info: TypeInfo,
}

enum Repr {
    /// Owned bytes (moved in from the frame, not copied), shared with arrays made from them.
    Inline(Buffer),
    Shared(Arc<SharedPayload>),
}

/// A received shared sample; released when the last `Data` or Arrow buffer using it goes.
struct SharedPayload {
    slice: SharedSlice,
    _release: Release,
}

/// Releases a received shared sample when dropped.
pub(crate) enum Release {
    /// It came through the daemon (or a lane fed from another machine): report the drop.
    Daemon { token: u64, drops: Arc<DropReports> },
    /// It came through a lane of a local sender: clear the lane's holder bit in the sample.
    Lane { region: Arc<ShmRegion>, bit: u32 },
}

impl Drop for Release {
    fn drop(&mut self) {
        match self {
            Release::Daemon { token, drops } => drops.dropped(*token),
            Release::Lane { region, bit } => adora_shm::release_lane(region, *bit),
        }
    }
}

impl Data {
    pub(crate) fn inline(bytes: Vec<u8>, type_info: TypeInfo) -> Self {
        Data {
            repr: Repr::Inline(Buffer::from_vec(bytes)),
            type_info,
        }
    }

    pub(crate) fn shared(slice: SharedSlice, release: Release, type_info: TypeInfo) -> Self {
        let payload = SharedPayload {
            slice,
            _release: release,
        };
        Data {
            repr: Repr::Shared(Arc::new(payload)),
            type_info,
        }
    }

    /// A payload read back from elsewhere (a recording): its bytes and the Arrow layout its
    /// sender described, to read with [`Self::to_arrow`].
    pub fn from_bytes(bytes: Vec<u8>, type_info: TypeInfo) -> Self {
        Self::inline(bytes, type_info)
    }

    /// The name of the shared-memory segment holding the bytes, or `None` for inline payloads.
    /// Two receivers seeing the same id read the very same memory.
    pub fn shared_memory_id(&self) -> Option<&str> {
        match &self.repr {
            Repr::Inline(_) => None,
            Repr::Shared(payload) => Some(payload.slice.os_id()),
        }
    }

    /// Copies the payload into an owned vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.deref().to_vec()
    }

    /// The payload as the Arrow array its sender sent (raw bytes are a `UInt8Array`).
    ///
    /// A shared-memory payload is not copied: the array's buffers point into the sample, which
    /// stays with this receiver until the `Data` and every array made from it are dropped; a small
    /// inline payload is not copied either (unless a buffer of it is misaligned for its type). A
    /// payload whose description does not fit it (a misbehaving sender) is an error.
    pub fn to_arrow(&self) -> Result<ArrayRef, NodeError> {
        self.to_arrow_data().map(arrow_array::make_array)
    }

    /// [`Self::to_arrow`] as the array's [`arrow_data::ArrayData`] (what language bindings hand on).
    pub fn to_arrow_data(&self) -> Result<arrow_data::ArrayData, NodeError> {
        let info = self
            .type_info
            .decode(self.len())
            .map_err(|e| NodeError::Arrow(e.to_string()))?;
        let buffer = match &self.repr {
            Repr::Inline(buffer) => buffer.clone(),
            Repr::Shared(payload) => payload.slice.clone().into_arrow_buffer(payload.clone()),
        };
        crate::arrow::read(&info, &buffer).map_err(NodeError::Arrow)
    }
}

impl Deref for Data {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.repr {
            Repr::Inline(buffer) => buffer.as_slice(),
            Repr::Shared(payload) => &payload.slice,
        }
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Data")
            .field("len", &self.len())
            .field("shared_memory_id", &self.shared_memory_id())
            .finish()
    }
}

/// A writable payload obtained from [`crate::AdoraNode::allocate_sample`]: write the bytes in place,
/// then hand it to [`crate::AdoraNode::send_sample`]. Large samples live in shared memory, so
/// nothing is copied after you wrote them.
pub struct Sample(pub(crate) SampleRepr);

pub(crate) enum SampleRepr {
    Inline(Vec<u8>),
    Shared(SampleMut),
}

impl Sample {
    /// The name of the shared-memory segment, or `None` for small inline samples.
    pub fn shared_memory_id(&self) -> Option<&str> {
        match &self.0 {
            SampleRepr::Inline(_) => None,
            SampleRepr::Shared(s) => Some(s.os_id()),
        }
    }
}

impl Deref for Sample {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            SampleRepr::Inline(v) => v,
            SampleRepr::Shared(s) => s,
        }
    }
}

impl DerefMut for Sample {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            SampleRepr::Inline(v) => v,
            SampleRepr::Shared(s) => s,
        }
    }
}
