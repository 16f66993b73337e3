//! The cross-machine data plane: one Zenoh session per daemon (peer mode, no multicast
//! scouting, explicit endpoints) carrying node outputs to daemons on other machines.
//!
//! A daemon opens its session once the coordinator answers its registration (`Peers`); the
//! session listens and connects only to the site's router, if any. Links to other daemons are
//! separate sessions opened and closed as the dataflows need them ([`topology`]). Zenoh retries
//! configured endpoints forever, so a link that drops (network cut, peer restart) comes back on
//! its own.
//!
//! Samples are reliable with blocking congestion control, so messages between two connected daemons
//! arrive complete and in order. Messages published while no link to a subscriber exists are lost.
//!
//! With the daemon's cluster identity the links are TLS with client certificates on both sides
//! (see [`session_config`]); `--insecure-zenoh` keeps plain TCP (benchmark comparisons only).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use adora_core::{DataId, NodeId};
use adora_message::{
    daemon_to_daemon::{checksum_slices, decode_header_checked, output_key, RemoteKind, Sequence},
    SharedRef,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;
use zenoh::{
    bytes::ZBytes,
    handlers::{Callback, FifoChannel, IntoHandler},
    sample::{Locality, Sample},
    Wait,
};

use adora_tasks::Tasks;

use crate::config::ZenohTls;

/// Queue of outgoing messages per published output; when the link stalls and it fills up, new
/// messages are dropped (and counted) instead of blocking the daemon.
pub const PUBLISH_QUEUE: usize = 256;

/// A message waiting to be published: what it is, its output's sequence, its bytes and its share
/// of the publish budget.
pub(crate) type Outgoing = (RemoteKind, Sequence, Vec<u8>, Option<OwnedSemaphorePermit>);

/// How often a publisher checks whether a remote subscriber matched it yet.
const MATCH_POLL: Duration = Duration::from_millis(20);

/// Errors of the cross-machine data plane.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The listen endpoint is not `tcp/<ip>:<port>` (or `tls/<ip>:<port>`).
    #[error(
        "invalid Zenoh listen endpoint `{0}`: expected tcp/<ip>:<port>, e.g. tcp/0.0.0.0:7447"
    )]
    Endpoint(String),
    /// Zenoh refused.
    #[error("zenoh: {0}")]
    Zenoh(String),
}

fn zenoh_err(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Zenoh(e.to_string())
}

/// Parses a listen endpoint `tcp/<ip>:<port>` (port 0: Zenoh picks a free one when the session
/// opens). `tls/<ip>:<port>` names the same address: the transport follows the daemon's Zenoh
/// setting ([`ZenohTls`]), not the scheme written.
pub fn parse_listen(listen: &str) -> Result<SocketAddr, RemoteError> {
    listen
        .strip_prefix("tcp/")
        .or_else(|| listen.strip_prefix("tls/"))
        .or_else(|| listen.strip_prefix("quic/"))
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| RemoteError::Endpoint(listen.to_owned()))
}

/// The endpoint the session listens on: the address of `listen`, with an unspecified IP
/// (`0.0.0.0`) replaced by `link_ip`, the address this machine uses to reach the coordinator;
/// `tls/` with a cluster identity, else `tcp/`. Listening there, rather than on every interface,
/// is what the daemon advertises to its peers.
pub(crate) fn listen_endpoint(
    listen: &str,
    link_ip: Option<IpAddr>,
    tls: Option<&ZenohTls>,
) -> Result<String, RemoteError> {
    let addr = parse_listen(listen)?;
    let addr = match link_ip {
        Some(ip) if addr.ip().is_unspecified() => SocketAddr::new(ip, addr.port()),
        _ => addr,
    };
    Ok(format!("{}/{addr}", session_config::scheme(tls)))
}

impl std::fmt::Debug for RemoteDataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteDataPlane")
            .field("locators", &self.locators)
            .finish()
    }
}

/// One message received from another daemon.
#[derive(Debug)]
pub(crate) struct RemoteSample {
    pub dataflow: Uuid,
    pub node: NodeId,
    pub output: DataId,
    pub kind: RemoteKind,
    /// The output's sequence, when the sending daemon sent one.
    pub sequence: Option<Sequence>,
    pub payload: Payload,
    /// Local inputs that already got it (through their lanes, see [`feed`]).
    pub served: Vec<(NodeId, DataId)>,
    /// The sample of the daemon's pool a feed copied it into (the payload is then empty).
    pub shared: Option<SharedRef>,
    /// Its share of the receive budget, returned when the sample is dropped (after the daemon
    /// copied it to its local receivers).
    pub _budget: Option<OwnedSemaphorePermit>,
}

/// A received payload as Zenoh handed it over: one slice, or several for a message that came in
/// fragments. Read in place, so a large message is copied once, into the shared memory of its
/// local receivers, instead of being joined into a buffer first.
#[derive(Debug)]
pub(crate) struct Payload(ZBytes);

#[cfg(test)]
impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Payload(ZBytes::from(bytes))
    }
}

impl Payload {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Copies the payload into `dst`, which must be [`Self::len`] bytes long.
    pub fn copy_to(&self, dst: &mut [u8]) {
        let mut at = 0;
        for slice in self.0.slices() {
            dst[at..at + slice.len()].copy_from_slice(slice);
            at += slice.len();
        }
    }

    /// The payload as one owned buffer (a copy).
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_bytes().into_owned()
    }

    /// The CRC-32 of the payload (the one [`checksum`] computes on its bytes).
    fn checksum(&self) -> u32 {
        checksum_slices(self.0.slices())
    }
}

/// What a subscription sends to its receiver: each sample, or several read at once as one
/// event where the receiver takes them that way (the daemon's actor routes them as one batch, so
/// a node waiting for them is woken once).
pub(crate) trait FromRemote: From<RemoteSample> + Send + 'static {
    /// `samples` (more than one) of `dataflow`, read from Zenoh back to back.
    fn batch(_dataflow: Uuid, samples: Vec<Self>) -> Vec<Self> {
        samples
    }

    /// Messages of `node/output` that went missing on the way (`None`: not wanted).
    fn missing(_dataflow: Uuid, _node: NodeId, _output: DataId, _: feed::Missing) -> Option<Self> {
        None
    }
}

impl FromRemote for RemoteSample {}

/// The most samples a subscription reads back to back into one batch.
const RECEIVE_BATCH: usize = 64;

/// Bytes of received messages a daemon holds before it stops reading from Zenoh (which then
/// pushes back on the senders through TCP).
pub const RECEIVE_BUDGET: usize = 256 << 20;
/// Bytes of outgoing messages a daemon holds for slow links; beyond it new messages are dropped
/// (and counted) instead of blocking local nodes.
pub const PUBLISH_BUDGET: usize = 256 << 20;

/// A byte budget counted in KiB (semaphore permits are `u32`). A message larger than the whole
/// budget takes all of it, so it still passes, alone.
#[derive(Debug, Clone)]
pub(crate) struct ByteBudget {
    semaphore: Arc<Semaphore>,
    total_kib: u32,
}

impl ByteBudget {
    fn new(bytes: usize) -> Self {
        let total_kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    fn kib(&self, len: usize) -> u32 {
        u32::try_from(len.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib)
    }

    /// Waits until `len` bytes fit.
    pub async fn acquire(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        self.semaphore
            .clone()
            .acquire_many_owned(self.kib(len))
            .await
            .ok()
    }

    /// Takes `len` bytes if they fit now.
    pub fn try_acquire(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        self.semaphore
            .clone()
            .try_acquire_many_owned(self.kib(len))
            .ok()
    }
}

/// The daemon's Zenoh session.
pub(crate) struct RemoteDataPlane {
    session: zenoh::Session,
    /// Where the session listens, as Zenoh bound it (what peers connect to).
    locators: Vec<String>,
    receive_budget: ByteBudget,
    /// Shared by every publisher of this daemon.
    pub publish_budget: ByteBudget,
    /// The daemon's tasks: publishers and subscribers run there.
    tasks: Tasks,
    /// The links to other daemons, where subscriptions are declared too (see [`topology`]).
    links: Arc<topology::DataLinks>,
}

impl RemoteDataPlane {
    /// Opens the session listening on `listen` (`tcp/ip:port` or, with `tls`, `tls/ip:port`;
    /// port 0 lets Zenoh bind a free port, read back with [`Self::locators`]) and connecting to
    /// those of `peers` that speak the same transport.
    pub async fn open(
        listen: &str,
        peers: &[String],
        tls: Option<&ZenohTls>,
        tasks: Tasks,
    ) -> Result<Self, RemoteError> {
        // The transport follows `tls`, whatever scheme `listen` was written with.
        let listen = listen_endpoint(listen, None, tls)?;
        let peers = session_config::usable_peers(peers, tls);
        let config = session_config::session_config(&listen, &peers, tls)?;
        let session = zenoh::open(config).await.map_err(zenoh_err)?;
        let links = topology::DataLinks::new(session.clone(), tls.cloned(), peers);
        let locators = locators(&session).await;
        Ok(Self {
            session,
            locators,
            receive_budget: ByteBudget::new(RECEIVE_BUDGET),
            publish_budget: ByteBudget::new(PUBLISH_BUDGET),
            tasks,
            links,
        })
    }

    /// The links to other daemons (opened and closed as the coordinator's `DataLinks` say).
    pub fn links(&self) -> &Arc<topology::DataLinks> {
        &self.links
    }

    /// Where the session listens, as Zenoh bound it: the locators peers connect to.
    pub fn locators(&self) -> &[String] {
        &self.locators
    }

    /// Publishes `node/output` of `dataflow` from a task: declares the publisher, sends `matched`
    /// once a subscriber on another machine matches it (or right away if `matched` is `None`),
    /// then puts every message its sender pushes into `lane` and every message from `queue`
    /// until the queue's senders are gone (see [`publish`]).
    pub fn spawn_publisher<T: Send + 'static>(
        self: &Arc<Self>,
        (dataflow, node, output): (Uuid, &NodeId, &DataId),
        queue: mpsc::Receiver<Outgoing>,
        matched: Option<(mpsc::Sender<T>, T)>,
        lane: Option<publish::PublishLane>,
    ) {
        let key = output_key(dataflow, node, output);
        let plane = self.clone();
        let what = format!("publishing {key}");
        self.tasks.spawn(what, async move {
            let publisher = match plane
                .session
                .declare_publisher(key.clone())
                // Never to this daemon's own subscriptions: during a move, a daemon may
                // publish and subscribe one output at once (see `links.rs`).
                .allowed_destination(Locality::Remote)
                .reliability(session_config::RELIABILITY)
                .congestion_control(session_config::CONGESTION)
                .express(session_config::EXPRESS)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("cannot publish {key}: {e}; its remote receivers get nothing");
                    return;
                }
            };
            if let Some((notify, msg)) = matched {
                loop {
                    match publisher.matching_status().await {
                        Ok(status) if status.matching() => break,
                        Ok(_) => {}
                        Err(e) => tracing::debug!("matching status of {key}: {e}"),
                    }
                    if queue.is_closed() {
                        return;
                    }
                    tokio::time::sleep(MATCH_POLL).await;
                }
                let _ = notify.send(msg).await;
            }
            publish::run(&publisher, &key, queue, lane).await;
            let _ = publisher.undeclare().await;
        });
    }

    /// Subscribes to `node/output` of `dataflow` from other machines; every sample goes to `to`
    /// (samples already waiting when one is read go together, see [`FromRemote`]). Dropping the
    /// returned guard ends the subscription.
    #[cfg(test)]
    pub fn spawn_subscriber<T: FromRemote>(
        self: &Arc<Self>,
        dataflow: Uuid,
        node: &NodeId,
        output: &DataId,
        to: mpsc::Sender<T>,
    ) -> SubscriptionGuard {
        self.spawn_fed_subscriber(dataflow, (node, output), to, None)
    }

    /// Subscribes to `node/output` of `dataflow`: with a `feed`, Zenoh's callback writes what
    /// it can straight into the local receivers' lanes ([`feed`]); the rest, and what went
    /// missing on the way, goes to `to` through the subscription's task, which holds a share of
    /// the receive budget for each sample until the daemon has it.
    pub fn spawn_fed_subscriber<T: FromRemote>(
        self: &Arc<Self>,
        dataflow: Uuid,
        (node, output): (&NodeId, &DataId),
        to: mpsc::Sender<T>,
        feed: Option<feed::LaneFeed>,
    ) -> SubscriptionGuard {
        let key = output_key(dataflow, node, output);
        let plane = self.clone();
        let (node, output) = (node.clone(), output.clone());
        let what = format!("the subscription to {key}");
        let (forward, received) = FifoChannel::default().into_handler();
        let on_sample = on_sample(key.clone(), feed, forward);
        SubscriptionGuard(self.tasks.spawn(what, async move {
            // On the main session and every link to another daemon (see `topology`).
            let _subscription = match plane.links.subscribe(&key, on_sample) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot subscribe to {key}: {e}; those inputs get nothing");
                    return;
                }
            };
            let mut batch = Vec::new();
            while let Ok(first) = received.recv_async().await {
                let mut next = Some(first);
                while let Some(incoming) = next.take() {
                    let Received(kind, sequence, payload, served, shared) = match incoming {
                        Incoming::Sample(sample) => sample,
                        other => {
                            batch.extend(news(dataflow, (&node, &output), other));
                            if batch.len() < RECEIVE_BATCH {
                                next = received.try_recv().ok().flatten();
                            }
                            continue;
                        }
                    };
                    let len = payload.len();
                    let budget = match plane.receive_budget.try_acquire(len) {
                        Some(budget) => budget,
                        // Wait for room with nothing held here: the batch's share of the
                        // budget comes back once the daemon has it.
                        None => {
                            if !deliver(&to, dataflow, &mut batch).await {
                                return;
                            }
                            match plane.receive_budget.acquire(len).await {
                                Some(budget) => budget,
                                None => return,
                            }
                        }
                    };
                    batch.push(T::from(RemoteSample {
                        dataflow,
                        node: node.clone(),
                        output: output.clone(),
                        kind,
                        sequence,
                        payload,
                        served,
                        shared,
                        _budget: Some(budget),
                    }));
                    if batch.len() < RECEIVE_BATCH {
                        next = received.try_recv().ok().flatten();
                    }
                }
                if !deliver(&to, dataflow, &mut batch).await {
                    return;
                }
            }
        }))
    }

    /// Closes the session (all publishers and subscribers end).
    pub fn close(&self) {
        self.links.close();
        if let Err(e) = self.session.close().wait() {
            tracing::debug!("closing the zenoh session: {e}");
        }
    }
}

/// Sends the samples of `batch` to `to` (as one batch if there are several); false once `to` is
/// closed.
async fn deliver<T: FromRemote>(to: &mpsc::Sender<T>, dataflow: Uuid, batch: &mut Vec<T>) -> bool {
    let events = match batch.len() {
        0 => return true,
        1 => std::mem::take(batch),
        _ => T::batch(dataflow, std::mem::take(batch)),
    };
    for event in events {
        if to.send(event).await.is_err() {
            return false;
        }
    }
    true
}

/// What a subscription's callback hands to its task.
enum Incoming {
    /// A message for the daemon to deliver, but to the inputs named (its lanes took it).
    Sample(Received),
    /// Messages that went missing on the way, counted by a [`feed::LaneFeed`].
    Missing(feed::Missing),
}

/// A message for the daemon: its kind, sequence (`None`: counted already) and payload, the
/// inputs whose lanes took it, and the sample of the daemon's pool it is in, if a feed copied it
/// there (the payload is then empty).
struct Received(
    RemoteKind,
    Option<Sequence>,
    Payload,
    Vec<(NodeId, DataId)>,
    Option<SharedRef>,
);

/// What a feed reports besides messages, as the subscription's receiver takes it.
fn news<T: FromRemote>(
    dataflow: Uuid,
    (node, output): (&NodeId, &DataId),
    news: Incoming,
) -> Option<T> {
    match news {
        Incoming::Missing(missing) => T::missing(dataflow, node.clone(), output.clone(), missing),
        Incoming::Sample(_) => None,
    }
}

/// Zenoh's callback of a subscription to `key`: decodes each sample and, with a `feed`, writes
/// it into the receivers' lanes; hands the rest to `forward` (the subscription's task; it blocks
/// while the task's queue is full, which holds Zenoh back as the task's budget does).
fn on_sample(
    key: String,
    feed: Option<feed::LaneFeed>,
    forward: Callback<Incoming>,
) -> Callback<Sample> {
    Callback::from(move |sample: Sample| {
        let Some((kind, sequence, payload)) = decode(&key, sample) else {
            return;
        };
        let Some(feed) = &feed else {
            let received = Received(kind, sequence, payload, Vec::new(), None);
            forward.call(Incoming::Sample(received));
            return;
        };
        let outcome = feed.feed(&kind, sequence, &payload);
        if let Some(missing) = outcome.missing.filter(|m| m.iter().any(|(_, n)| *n > 0)) {
            forward.call(Incoming::Missing(missing));
        }
        // Counted by the feed: the daemon does not count it again (no sequence).
        let received = match outcome.fed {
            feed::Fed::Lanes => None,
            feed::Fed::Daemon { served } => Some(Received(kind, None, payload, served, None)),
            feed::Fed::Shared { shared, served } => {
                let empty = Payload(ZBytes::default());
                Some(Received(kind, None, empty, served, Some(shared)))
            }
        };
        if let Some(received) = received {
            forward.call(Incoming::Sample(received));
        }
    })
}

/// A received sample's kind, sequence and payload, or `None` (with a warning) when it has no valid
/// Adora header or its payload fails its checksum (the next message's sequence then counts it
/// lost on the way).
fn decode(key: &str, sample: Sample) -> Option<(RemoteKind, Option<Sequence>, Payload)> {
    let header = sample.attachment().map(|a| a.to_bytes());
    let (kind, sequence, sum) = match header.as_deref().map(decode_header_checked) {
        Some(Ok(decoded)) => decoded,
        Some(Err(e)) => {
            tracing::warn!("dropping a sample on {key}: {e}");
            return None;
        }
        None => {
            tracing::warn!("dropping a sample on {key} without an adora header");
            return None;
        }
    };
    let payload = Payload(sample.payload().clone());
    if sum.is_some_and(|sum| sum != payload.checksum()) {
        tracing::warn!(
            "dropping a message on {key} whose {} bytes fail their checksum (corrupted on the way)",
            payload.len()
        );
        return None;
    }
    Some((kind, sequence, payload))
}

/// Where `session` listens, as Zenoh bound it (what others connect to).
pub(crate) async fn locators(session: &zenoh::Session) -> Vec<String> {
    session
        .info()
        .locators()
        .await
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Ends a subscription when dropped.
pub(crate) struct SubscriptionGuard(tokio::task::JoinHandle<()>);

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) mod feed;
pub(crate) mod links;
pub(crate) mod publish;
pub(crate) mod session_config;
pub(crate) mod topology;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
#[cfg(test)]
mod topology_tests;
