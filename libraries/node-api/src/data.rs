//! Payloads: received [`Data`] (inline or a zero-copy view of a shared sample) and writable
//! [`Sample`]s for sending.

use std::{
    ops::{Deref, DerefMut},
    sync::Arc,
};

use adora_message::Parameter;
use adora_shm::{SampleMut, SharedSlice};

use crate::drops::DropReports;

/// User parameters attached to a message.
pub type MetadataParameters = std::collections::BTreeMap<String, Parameter>;

/// A received payload. Dereferences to the bytes.
///
/// Large payloads are a read-only view into the sender's shared-memory sample: no copy was made on
/// the way here. Dropping the `Data` tells the daemon this receiver is done with the sample (with
/// the event stream's next request for events, or at once if the stream is already waiting).
pub struct Data(Repr);

enum Repr {
    Inline(Vec<u8>),
    Shared {
        slice: SharedSlice,
        token: u64,
        drops: Arc<DropReports>,
    },
}

impl Data {
    pub(crate) fn inline(bytes: Vec<u8>) -> Self {
        Data(Repr::Inline(bytes))
    }

    pub(crate) fn shared(slice: SharedSlice, token: u64, drops: Arc<DropReports>) -> Self {
        Data(Repr::Shared {
            slice,
            token,
            drops,
        })
    }

    /// The name of the shared-memory segment holding the bytes, or `None` for inline payloads.
    /// Two receivers seeing the same id read the very same memory.
    pub fn shared_memory_id(&self) -> Option<&str> {
        match &self.0 {
            Repr::Inline(_) => None,
            Repr::Shared { slice, .. } => Some(slice.os_id()),
        }
    }

    /// Copies the payload into an owned vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.deref().to_vec()
    }
}

impl Deref for Data {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline(v) => v,
            Repr::Shared { slice, .. } => slice,
        }
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        if let Repr::Shared { token, drops, .. } = &self.0 {
            drops.dropped(*token);
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
