//! Room in the receivers' queues, for senders that must not lose a message (`adora replay
//! --speed 0`): an input queue that is full drops its oldest message, so such a sender asks
//! (`NodeRequest::AwaitRoom`) before each send and is answered once every local receiver of the
//! output can take one more. Waiters are checked whenever a receiver took its queued events or
//! exited; while none waits this costs one emptiness check.

use adora_core::{DataId, NodeId};
use tokio::sync::oneshot;

use super::Routing;

/// A sender waiting for room on one output.
pub(crate) struct RoomWaiter {
    sender: NodeId,
    output: DataId,
    reply: oneshot::Sender<()>,
}

impl Routing {
    /// Answers `reply` once every local receiver of `sender`'s `output` has room for one more
    /// message (at once if they have, or if nobody receives it).
    pub fn await_room(&mut self, sender: &NodeId, output: &DataId, reply: oneshot::Sender<()>) {
        // Room is counted in the daemon's queues: the output's lanes close.
        self.close_lanes(|n, o| n == sender && o == output);
        if self.has_room(sender, output) {
            let _ = reply.send(());
            return;
        }
        self.room_waiters.push(RoomWaiter {
            sender: sender.clone(),
            output: output.clone(),
            reply,
        });
    }

    /// Answers the waiters whose receivers now have room (and forgets those nobody waits for).
    pub(super) fn answer_room_waiters(&mut self) {
        if self.room_waiters.is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut self.room_waiters);
        for waiter in waiters {
            if waiter.reply.is_closed() {
                continue;
            }
            if self.has_room(&waiter.sender, &waiter.output) {
                let _ = waiter.reply.send(());
            } else {
                self.room_waiters.push(waiter);
            }
        }
    }

    /// Whether every local receiver of `sender`'s `output` can queue one more message without
    /// dropping one (a receiver that exited or closed that input needs no room).
    fn has_room(&self, sender: &NodeId, output: &DataId) -> bool {
        let Some(receivers) = self.nodes.get(sender).and_then(|s| s.routes.get(output)) else {
            return true;
        };
        receivers.iter().all(|(node, input)| {
            let Some(state) = self.nodes.get(node) else {
                return true;
            };
            state.exited
                || !state.open_inputs.contains(input)
                || state.queues.get(input).is_none_or(|q| q.has_room())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use adora_core::Descriptor;
    use adora_message::{DataRef, Metadata};

    use super::*;

    const SLOW: &str = r#"
nodes:
  - id: player
    path: player
    outputs: [out]
  - id: fast
    path: fast
    inputs: { x: player/out }
  - id: slow
    path: slow
    inputs: { y: { source: player/out, queue_size: 1 } }
"#;

    fn send(r: &mut Routing) {
        let metadata = Metadata::new(uhlc::HLC::default().new_timestamp());
        r.send_output(
            &"player".into(),
            &"out".into(),
            metadata,
            DataRef::Inline(vec![1]),
        );
    }

    fn take_events(r: &mut Routing, node: &str) {
        let (tx, mut rx) = oneshot::channel();
        r.next_events(&node.into(), tx);
        assert!(rx.try_recv().is_ok(), "{node} had events");
    }

    fn await_room(r: &mut Routing) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        r.await_room(&"player".into(), &"out".into(), tx);
        rx
    }

    #[test]
    fn a_sender_waits_until_its_slowest_receiver_took_its_queue() {
        let descriptor = Descriptor::parse(SLOW, Path::new("t.yml")).expect("valid");
        let mut r = Routing::new(&descriptor);
        let mut room = await_room(&mut r);
        assert!(room.try_recv().is_ok(), "empty queues have room");

        send(&mut r);
        let mut room = await_room(&mut r);
        assert!(room.try_recv().is_err(), "`slow` holds 1 of 1");
        take_events(&mut r, "fast");
        assert!(room.try_recv().is_err(), "`slow` still full");
        take_events(&mut r, "slow");
        assert!(room.try_recv().is_ok(), "`slow` took its message");

        send(&mut r);
        let mut room = await_room(&mut r);
        assert!(room.try_recv().is_err());
        r.node_exited(&"slow".into());
        assert!(room.try_recv().is_ok(), "an exited receiver needs no room");
    }
}
