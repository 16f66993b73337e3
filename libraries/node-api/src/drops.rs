//! The node's control connection and the reports of dropped shared samples that travel on it
//! (or along with the event stream's requests). A leaf: used by the node handle, the event stream
//! and received payloads alike.

use std::{
    os::unix::net::UnixStream,
    sync::{Arc, Mutex, MutexGuard},
};

use adora_message::{
    codec::{read_frame, write_frame},
    daemon_to_node::DaemonReply,
    node_to_daemon::NodeRequest,
};

use crate::error::NodeError;

/// The control connection, shared by the node (sending outputs) and [`DropReports`].
pub(crate) struct ControlChannel {
    stream: Mutex<UnixStream>,
}

impl ControlChannel {
    /// Wraps the node's registered control connection.
    pub(crate) fn new(stream: UnixStream) -> Self {
        Self {
            stream: Mutex::new(stream),
        }
    }

    fn lock(&self) -> MutexGuard<'_, UnixStream> {
        // A poisoned lock only means another thread panicked mid-write; the socket is still usable
        // for reporting, and the daemon rejects a torn frame by closing the connection.
        self.stream.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn send(&self, request: &NodeRequest) -> Result<(), NodeError> {
        write_frame(&mut *self.lock(), request)?;
        Ok(())
    }

    /// Sends a `TakeUpdateLock` and reads the daemon's answer, holding the connection so no other
    /// thread's frame comes in between (they wait for the answer, which is rare and short).
    pub(crate) fn request_lock(
        &self,
        request: &NodeRequest,
    ) -> Result<Result<(), String>, NodeError> {
        let mut stream = self.lock();
        write_frame(&mut *stream, request)?;
        let mut buf = Vec::new();
        match read_frame::<DaemonReply>(&mut *stream, &mut buf)? {
            DaemonReply::UpdateLock(answer) => Ok(answer),
            other => Err(NodeError::Protocol(format!(
                "expected the answer to an update lock request, got {other:?}"
            ))),
        }
    }

    /// Sends an `AwaitRoom` and waits for the daemon's `Room`, holding the connection like
    /// [`Self::request_lock`].
    pub(crate) fn await_room(&self, request: &NodeRequest) -> Result<(), NodeError> {
        let mut stream = self.lock();
        write_frame(&mut *stream, request)?;
        let mut buf = Vec::new();
        match read_frame::<DaemonReply>(&mut *stream, &mut buf)? {
            DaemonReply::Room => Ok(()),
            other => Err(NodeError::Protocol(format!(
                "expected the answer to a room request, got {other:?}"
            ))),
        }
    }

    /// Best effort: if the daemon is gone there is nobody left to tell.
    fn report_dropped(&self, tokens: Vec<u64>) {
        if let Err(e) = self.send(&NodeRequest::ReportDropTokens(tokens)) {
            tracing::debug!("could not report dropped samples: {e}");
        }
    }
}

/// Tells the daemon which received shared samples the node dropped. Reports ride along with the
/// event stream's next `NextEvents` request, so the common loop (receive, use, drop, receive)
/// costs no extra message; a drop while the stream is already waiting for events (or has ended)
/// cannot wait for that and goes out at once on the control connection.
pub(crate) struct DropReports {
    control: Arc<ControlChannel>,
    state: Mutex<DropState>,
}

#[derive(Default)]
struct DropState {
    /// Dropped since the last `NextEvents` request.
    pending: Vec<u64>,
    /// The event stream is waiting for a reply, or will not ask again: report at once.
    send_now: bool,
}

impl DropReports {
    pub(crate) fn new(control: Arc<ControlChannel>) -> Self {
        Self {
            control,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DropState> {
        // Every mutation leaves the state consistent, so a panic elsewhere does not invalidate it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A received shared sample was dropped.
    pub(crate) fn dropped(&self, token: u64) {
        let mut state = self.lock();
        if state.send_now {
            drop(state);
            self.control.report_dropped(vec![token]);
        } else {
            state.pending.push(token);
        }
    }

    /// The event stream is about to wait for a reply: takes the pending reports to send with its
    /// request; drops from now on are reported at once.
    pub(crate) fn start_waiting(&self) -> Vec<u64> {
        let mut state = self.lock();
        state.send_now = true;
        std::mem::take(&mut state.pending)
    }

    /// The reply arrived: collect drops again, unless the stream `ended` (it will not ask again).
    pub(crate) fn stop_waiting(&self, ended: bool) {
        self.lock().send_now = ended;
    }

    /// The event stream is gone: report what is pending, and every later drop at once.
    pub(crate) fn flush_for_good(&self) {
        let pending = self.start_waiting();
        if !pending.is_empty() {
            self.control.report_dropped(pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use adora_message::codec::read_frame;

    use super::*;

    /// Drop reports wired to one end of a socket pair; the other end plays the daemon.
    fn reports() -> (DropReports, UnixStream) {
        let (node, daemon) = UnixStream::pair().expect("socket pair");
        // A guard against hanging, not a timed assertion.
        daemon
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let control = Arc::new(ControlChannel::new(node));
        (DropReports::new(control), daemon)
    }

    fn next(daemon: &mut UnixStream) -> NodeRequest {
        read_frame(daemon, &mut Vec::new()).expect("a report")
    }

    #[test]
    fn drops_ride_with_the_next_request_unless_the_stream_already_waits() {
        let (reports, mut daemon) = reports();
        reports.dropped(1);
        reports.dropped(2);
        assert_eq!(reports.start_waiting(), vec![1, 2], "for NextEvents");

        reports.dropped(3); // the stream is blocked in recv: nothing would carry it
        assert_eq!(next(&mut daemon), NodeRequest::ReportDropTokens(vec![3]));

        reports.stop_waiting(false);
        reports.dropped(4);
        assert_eq!(reports.start_waiting(), vec![4]);
        reports.stop_waiting(true); // the stream ended: it will not ask again
        reports.dropped(5);
        assert_eq!(next(&mut daemon), NodeRequest::ReportDropTokens(vec![5]));
    }

    #[test]
    fn a_dropped_stream_flushes_pending_drops_and_reports_later_ones_at_once() {
        let (reports, mut daemon) = reports();
        reports.dropped(7);
        reports.flush_for_good();
        assert_eq!(next(&mut daemon), NodeRequest::ReportDropTokens(vec![7]));
        reports.dropped(8);
        assert_eq!(next(&mut daemon), NodeRequest::ReportDropTokens(vec![8]));
    }
}
