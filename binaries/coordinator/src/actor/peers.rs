//! Zenoh discovery between daemons (`Peers` / `ZenohListening`).
//!
//! A daemon opens its Zenoh session once, when it is told the locators of the daemons before it,
//! and listens on a port Zenoh binds itself; it then reports where it listens. Zenoh cannot add
//! peers to an open session, so every daemon must learn about all those before it:
//! one daemon at a time is told its peers, and the next waits until that one answered (or
//! [`PEERS_ANSWER_TIMEOUT`] passed). A daemon that registers with its locators (its session was
//! already open, e.g. after a coordinator restart) needs no wait.

use std::time::{Duration, Instant};

use adora_message::{coordinator_to_daemon::DaemonCommand, envelope::Envelope};

use super::{ConnId, Coordinator, Outgoing};

/// Longest the coordinator waits for a daemon told its peers to report where it listens before
/// telling the next one (a daemon whose session hangs must not block every later one).
pub(crate) const PEERS_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a daemon stands in Zenoh discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ZenohState {
    /// Registered without locators, not told its peers yet.
    Unoffered,
    /// Told its peers at this instant; its locators are not known yet.
    Opening(Instant),
    /// Its locators are known (possibly none: no cross-machine data plane there).
    Listening,
}

impl ZenohState {
    /// The state of a daemon that registered with these locators.
    pub(crate) fn registered_with(locators: &[String]) -> Self {
        if locators.is_empty() {
            ZenohState::Unoffered
        } else {
            ZenohState::Listening
        }
    }
}

impl Coordinator {
    /// Tells the next waiting daemon its peers, unless one told before has not answered yet.
    pub(super) fn offer_peers(&mut self) {
        let connected = |d: &&super::DaemonEntry| d.tx.is_some();
        if self
            .daemons
            .iter()
            .filter(connected)
            .any(|d| matches!(d.zenoh, ZenohState::Opening(_)))
        {
            return;
        }
        let Some(next) = self
            .daemons
            .iter()
            .position(|d| d.tx.is_some() && d.zenoh == ZenohState::Unoffered)
        else {
            return;
        };
        let conn = self.daemons[next].conn;
        self.send_peers(conn);
        self.daemons[next].zenoh = ZenohState::Opening(Instant::now());
    }

    /// Sends `Peers` to the daemon on `conn`: the first locator of every other connected daemon
    /// whose locators are known.
    pub(super) fn send_peers(&self, conn: ConnId) {
        let endpoints: Vec<String> = self
            .daemons
            .iter()
            .filter(|d| d.tx.is_some() && d.conn != conn && d.zenoh == ZenohState::Listening)
            .filter_map(|d| d.zenoh_locators.first().cloned())
            .collect();
        if let Some(tx) = self
            .daemons
            .iter()
            .find(|d| d.conn == conn)
            .and_then(|d| d.tx.as_ref())
        {
            let peers = DaemonCommand::Peers { endpoints };
            let _ = tx.send(Outgoing::Message(Envelope::new(0, peers)));
        }
    }

    /// `ZenohListening`: the daemon's session is open (or failed); the next daemon may go.
    pub(super) fn zenoh_listening(&mut self, conn: ConnId, locators: Vec<String>) {
        if let Some(d) = self.daemons.iter_mut().find(|d| d.conn == conn) {
            tracing::info!("daemon `{}` listens for Zenoh on {locators:?}", d.name());
            d.zenoh_locators = locators;
            d.zenoh = ZenohState::Listening;
        }
        self.offer_peers();
    }

    /// From the heartbeat: a daemon that did not answer `Peers` in time no longer holds up the
    /// others (it is taken as having no locators until it reports); daemons lost meanwhile
    /// neither.
    pub(super) fn peers_timeouts(&mut self) {
        for d in &mut self.daemons {
            if let ZenohState::Opening(since) = d.zenoh {
                if since.elapsed() > PEERS_ANSWER_TIMEOUT {
                    tracing::warn!(
                        "daemon `{}` did not report its Zenoh locators within {PEERS_ANSWER_TIMEOUT:?}; \
                         telling the next daemons their peers without it",
                        d.name()
                    );
                    d.zenoh = ZenohState::Listening;
                }
            }
        }
        self.offer_peers();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use adora_message::daemon_to_coordinator::DaemonMessage;
    use adora_store::MemoryStore;

    use super::*;
    use crate::testkit::{DaemonRx, Harness};

    /// The `Peers` commands a fake daemon received so far.
    fn peers(rx: &mut DaemonRx) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        while let Ok(o) = rx.try_recv() {
            if let Outgoing::Message(e) = o {
                if let DaemonCommand::Peers { endpoints } = e.body {
                    out.push(endpoints);
                }
            }
        }
        out
    }

    fn listening(locator: &str) -> DaemonMessage {
        DaemonMessage::ZenohListening {
            locators: vec![locator.into()],
        }
    }

    #[tokio::test]
    async fn each_daemon_is_told_its_peers_once_the_one_before_reported_where_it_listens() {
        let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
        let (a, mut a_rx) = h.register("a", vec![]);
        assert_eq!(peers(&mut a_rx), vec![Vec::<String>::new()]);
        let (b, mut b_rx) = h.register("b", vec![]);
        let (_c, mut c_rx) = h.register("c", vec![]);
        assert!(peers(&mut b_rx).is_empty(), "b must wait for a's locators");

        h.daemon_says(a, listening("tcp/10.0.0.1:40001"));
        assert_eq!(
            peers(&mut b_rx),
            vec![vec!["tcp/10.0.0.1:40001".to_owned()]]
        );
        assert!(peers(&mut c_rx).is_empty(), "c must wait for b's locators");

        h.daemon_says(b, listening("tcp/10.0.0.2:40002"));
        assert_eq!(
            peers(&mut c_rx),
            vec![vec![
                "tcp/10.0.0.1:40001".to_owned(),
                "tcp/10.0.0.2:40002".to_owned()
            ]]
        );
        assert!(peers(&mut a_rx).is_empty() && peers(&mut b_rx).is_empty());
    }

    #[tokio::test]
    async fn a_daemon_lost_or_silent_while_opening_holds_up_nobody() {
        let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
        let (a, _a_rx) = h.register("a", vec![]);
        let (_b, mut b_rx) = h.register("b", vec![]);
        let (_c, mut c_rx) = h.register("c", vec![]);
        assert!(peers(&mut b_rx).is_empty());

        // `a` goes away before answering: `b` is told (nobody to connect to).
        h.gone(a);
        assert_eq!(peers(&mut b_rx), vec![Vec::<String>::new()]);

        // `b` never answers: after the timeout `c` is told without it.
        assert!(peers(&mut c_rx).is_empty());
        let long_ago = Instant::now()
            .checked_sub(PEERS_ANSWER_TIMEOUT * 2)
            .expect("the clock is past the timeout");
        for d in &mut h.c.daemons {
            if matches!(d.zenoh, ZenohState::Opening(_)) {
                d.zenoh = ZenohState::Opening(long_ago);
            }
        }
        h.c.peers_timeouts();
        assert_eq!(peers(&mut c_rx), vec![Vec::<String>::new()]);
    }
}
