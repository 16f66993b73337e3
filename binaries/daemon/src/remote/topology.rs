//! The daemon's Zenoh data links: which daemons it connects to, and their state.
//!
//! # Design
//!
//! A daemon links directly only to the daemons whose nodes' outputs its own nodes read in the
//! running dataflows (the coordinator computes the set from the placements and sends it with
//! `DataLinks` whenever it changes), and to its site's router when it has one (data from other
//! sites comes that way).
//!
//! Zenoh 1.10 cannot add or drop a link on an open session through its public API: connect
//! endpoints are read when the session opens (a configuration change later only affects which
//! endpoints are retried after a cut), `Runtime::connect_peer` is internal, and nothing closes
//! one transport. So links are **sessions**:
//!
//! - the daemon's *main* session listens (the one port other daemons connect to), connects only
//!   to the site's router, and carries every publisher of the daemon;
//! - for each daemon it reads from, a *link session* (no listener) connects to that daemon's
//!   main session. Closing it closes the link.
//!
//! Publishers stay on the main session, so whoever connects to it receives what the daemon
//! publishes. Every subscription of the daemon is declared on the main session (data through
//! the router) and on every link session (data straight from the publishing daemon), opened
//! before or after the subscription, into one channel. Only one daemon publishes an output at a
//! time, and each publisher is reached by one path, so no sample arrives twice. A link session
//! retries its peer forever, so a cut link comes back by itself, as before.
//!
//! A subscription declared on a link to a daemon that does not publish its key costs one
//! declaration message; links are few (those the dataflows need), so that stays small.
//!
//! A link session connects with the daemon's preferred encrypted transport (QUIC by default).
//! When it has not come up after [`TRANSPORT_FALLBACK`] and the peer offers the other one too,
//! it is opened again over that one (and back, if that does not come up either): QUIC needs
//! UDP, which a firewall may drop, while TLS needs only TCP.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use adora_message::{
    daemon_to_coordinator::DaemonMessage,
    data_links::{DataLinkStatus, DataPeer, LinkKind, ROUTER_TOKEN_PREFIX},
    envelope::Envelope,
};
use tokio::sync::watch;
use zenoh::{
    handlers::{Callback, FifoChannelHandler},
    pubsub::Subscriber,
    sample::{Locality, Sample, SampleKind},
    Wait,
};

use super::{session_config, zenoh_err, RemoteError};
use crate::{
    config::{SecureTransport, ZenohTls},
    event::Reports,
};

/// How often the state of the links is checked (and reported when it changed), and a failed
/// link session is opened again.
pub const LINK_POLL: Duration = Duration::from_secs(1);

/// Where a subscription is declared: the main session or the link to a daemon.
type Route = Option<String>;

/// How long a link no dataflow needs any more stays open: messages sent just before its last
/// reader or writer went away (the old instance of a moved node, a stopping dataflow) are still
/// on it.
pub const LINK_LINGER: Duration = Duration::from_secs(3);

/// How long a link gets to come up over one encrypted transport before it is opened again
/// over the other one (when the peer offers both): QUIC needs UDP, which some networks block.
pub const TRANSPORT_FALLBACK: Duration = Duration::from_secs(5);

/// One open link to another daemon.
struct Link {
    endpoints: Vec<String>,
    session: zenoh::Session,
    /// Since when no dataflow needs it (closed after [`LINK_LINGER`]).
    unneeded_since: Option<std::time::Instant>,
    /// When it was opened, until it is up for the first time.
    never_up_since: Option<Instant>,
}

/// The links and the subscriptions declared on them, under one lock so that a subscription and
/// a link added at the same time always meet.
#[derive(Default)]
struct Table {
    links: BTreeMap<String, Link>,
    /// Every subscription: its key and where its samples go.
    subscriptions: BTreeMap<u64, (String, Callback<Sample>)>,
    /// The declared Zenoh subscribers, by route and subscription.
    declared: BTreeMap<(Route, u64), Subscriber<()>>,
    next_id: u64,
    /// The daemons reached with the other encrypted transport than the preferred one (the
    /// preferred one did not come up within [`TRANSPORT_FALLBACK`]).
    other_transport: BTreeSet<String>,
}

impl Table {
    /// Removes the link to `name` and its subscribers (the caller closes its session).
    fn remove_link(&mut self, name: &str) -> Option<Link> {
        let route = Some(name.to_owned());
        self.declared.retain(|(r, _), _| *r != route);
        self.links.remove(name)
    }

    /// The transport to reach `name` with: `preferred`, or the other one after a fallback.
    fn transport_to(&self, name: &str, preferred: SecureTransport) -> SecureTransport {
        if self.other_transport.contains(name) {
            preferred.other()
        } else {
            preferred
        }
    }
}

/// The daemon's links and subscriptions (see the module docs).
pub(crate) struct DataLinks {
    main: zenoh::Session,
    tls: Option<ZenohTls>,
    /// The site's router endpoints the main session connects to (shown as the router link).
    routers: Vec<String>,
    table: Mutex<Table>,
    wanted: watch::Sender<Vec<DataPeer>>,
}

impl DataLinks {
    /// The links of a daemon whose main session is `main`, connected to `routers`.
    pub fn new(main: zenoh::Session, tls: Option<ZenohTls>, routers: Vec<String>) -> Arc<Self> {
        Arc::new(Self {
            main,
            tls,
            routers,
            table: Mutex::new(Table::default()),
            wanted: watch::Sender::new(Vec::new()),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The daemons to link to from now on (the coordinator's `DataLinks`); [`Self::run`] opens
    /// and closes sessions to match.
    pub fn set_peers(&self, peers: Vec<DataPeer>) {
        self.wanted.send_replace(peers);
    }

    /// Subscribes to `key` on the main session and on every link, now and later: samples go to
    /// `callback` (from any of them) until the [`LinkSubscription`] is dropped.
    pub fn subscribe(
        self: &Arc<Self>,
        key: &str,
        callback: Callback<Sample>,
    ) -> Result<LinkSubscription, RemoteError> {
        let mut table = self.table();
        let id = table.next_id;
        table.next_id += 1;
        let main = declare(&self.main, key, &callback)?;
        table.declared.insert((None, id), main);
        let routes: Vec<(String, zenoh::Session)> = table
            .links
            .iter()
            .map(|(peer, link)| (peer.clone(), link.session.clone()))
            .collect();
        for (peer, session) in routes {
            match declare(&session, key, &callback) {
                Ok(s) => {
                    table.declared.insert((Some(peer), id), s);
                }
                Err(e) => tracing::warn!("cannot subscribe to {key} on the link to `{peer}`: {e}"),
            }
        }
        table.subscriptions.insert(id, (key.to_owned(), callback));
        let guard = LinkSubscription {
            links: Arc::downgrade(self),
            id,
        };
        Ok(guard)
    }

    fn unsubscribe(&self, id: u64) {
        let mut table = self.table();
        table.subscriptions.remove(&id);
        // Dropping a subscriber undeclares it.
        table.declared.retain(|(_, sub), _| *sub != id);
    }

    /// Opens and closes link sessions to match the wanted peers, and reports the links' state
    /// through `reports` whenever it changes; runs until the session closes. With routers, the
    /// other sites (their routers' liveliness tokens, all but `site`'s) are links too.
    pub async fn run(self: Arc<Self>, reports: Reports, site: Option<String>) {
        let mut wanted = self.wanted.subscribe();
        let mut states: BTreeMap<(String, LinkKind), (bool, u64)> = BTreeMap::new();
        let mut last_sent: Option<Vec<DataLinkStatus>> = None;
        let mut sites = SitesSeen::watch(&self.main, &self.routers, site).await;
        loop {
            let peers = wanted.borrow_and_update().clone();
            self.reconcile(&peers).await;
            let mut now_up = self.links_up().await;
            self.fall_back(&now_up).await;
            sites.update(&mut now_up);
            let links = track(&mut states, now_up);
            if last_sent.as_ref() != Some(&links) {
                let message = DaemonMessage::DataLinks {
                    links: links.clone(),
                };
                if reports.send(Envelope::new(0, message)).is_err() {
                    return;
                }
                last_sent = Some(links);
            }
            if self.main.is_closed() {
                return;
            }
            tokio::select! {
                _ = wanted.changed() => {}
                () = sites.changed() => {}
                () = tokio::time::sleep(LINK_POLL) => {}
            }
        }
    }

    /// Closes the links no longer wanted (or whose endpoints changed), opens the missing ones.
    async fn reconcile(&self, peers: &[DataPeer]) {
        let stale: Vec<Link> = {
            let mut table = self.table();
            let mut gone: Vec<String> = Vec::new();
            for (name, link) in table.links.iter_mut() {
                match peers.iter().find(|p| &p.machine == name) {
                    // Unknown endpoints (a coordinator that just restarted) keep the link.
                    Some(p) if p.endpoints.is_empty() || p.endpoints == link.endpoints => {
                        link.unneeded_since = None;
                    }
                    // Moved elsewhere: replaced at once.
                    Some(_) => gone.push(name.clone()),
                    None => {
                        let since = link.unneeded_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= LINK_LINGER {
                            gone.push(name.clone());
                        }
                    }
                }
            }
            let mut stale = Vec::new();
            for name in gone {
                stale.extend(table.remove_link(&name));
                tracing::info!("closing the data link to `{name}`: no dataflow needs it");
            }
            stale
        };
        for link in stale {
            let _ = link.session.close().await;
        }
        for peer in peers {
            if peer.endpoints.is_empty() || self.table().links.contains_key(&peer.machine) {
                continue;
            }
            match self.open_link(peer).await {
                Ok(session) => self.add_link(peer, session),
                Err(e) => tracing::warn!(
                    "cannot open the data link to `{}`: {e}; retrying in {LINK_POLL:?}",
                    peer.machine
                ),
            }
        }
    }

    async fn open_link(&self, peer: &DataPeer) -> Result<zenoh::Session, RemoteError> {
        // The preferred transport, or the other one after a fallback.
        let tls = self.tls.clone().map(|tls| ZenohTls {
            transport: self.table().transport_to(&peer.machine, tls.transport),
            ..tls
        });
        let endpoints = session_config::usable_peers(&peer.endpoints, tls.as_ref());
        // A placeholder listen endpoint, cleared below: a link session accepts nothing.
        let mut config =
            session_config::session_config("tcp/127.0.0.1:0", &endpoints, tls.as_ref())?;
        config
            .insert_json5("listen/endpoints", "[]")
            .map_err(zenoh_err)?;
        tracing::info!(
            "opening the data link to `{}` at {endpoints:?}",
            peer.machine
        );
        zenoh::open(config).await.map_err(zenoh_err)
    }

    /// Adds an open link and declares every subscription on it.
    fn add_link(&self, peer: &DataPeer, session: zenoh::Session) {
        let mut table = self.table();
        let subscriptions: Vec<(u64, String, Callback<Sample>)> = table
            .subscriptions
            .iter()
            .map(|(id, (key, cb))| (*id, key.clone(), cb.clone()))
            .collect();
        for (id, key, callback) in subscriptions {
            match declare(&session, &key, &callback) {
                Ok(s) => {
                    table.declared.insert((Some(peer.machine.clone()), id), s);
                }
                Err(e) => tracing::warn!(
                    "cannot subscribe to {key} on the link to `{}`: {e}",
                    peer.machine
                ),
            }
        }
        let link = Link {
            endpoints: peer.endpoints.clone(),
            session,
            unneeded_since: None,
            never_up_since: Some(Instant::now()),
        };
        table.links.insert(peer.machine.clone(), link);
    }

    /// Links to daemons that never came up within [`TRANSPORT_FALLBACK`] over one encrypted
    /// transport, to a peer offering the other one too, are closed; the next round opens them
    /// over the other one (and back again if that does not come up either).
    async fn fall_back(&self, now_up: &BTreeMap<(String, LinkKind), bool>) {
        let Some(tls) = &self.tls else { return };
        let stale: Vec<zenoh::Session> = {
            let mut table = self.table();
            let table = &mut *table;
            let mut stale = Vec::new();
            for (name, link) in table.links.iter_mut() {
                if now_up.get(&(name.clone(), LinkKind::Daemon)) == Some(&true) {
                    link.never_up_since = None;
                }
            }
            let late: Vec<String> = table
                .links
                .iter()
                .filter(|(_, link)| {
                    link.never_up_since
                        .is_some_and(|t| t.elapsed() >= TRANSPORT_FALLBACK)
                        && offers_both(&link.endpoints)
                })
                .map(|(name, _)| name.clone())
                .collect();
            for name in late {
                let from = table.transport_to(&name, tls.transport);
                let to = from.other();
                tracing::warn!(
                    "the data link to `{name}` did not come up over {} in {TRANSPORT_FALLBACK:?}; \
                     trying {}{}",
                    from.scheme(),
                    to.scheme(),
                    if from == SecureTransport::Quic {
                        " (is UDP blocked on the way?)"
                    } else {
                        ""
                    }
                );
                if to == tls.transport {
                    table.other_transport.remove(&name);
                } else {
                    table.other_transport.insert(name.clone());
                }
                stale.extend(table.remove_link(&name).map(|link| link.session));
            }
            stale
        };
        for session in stale {
            let _ = session.close().await;
        }
    }

    /// Whether each link to a daemon, and to the router, is up.
    async fn links_up(&self) -> BTreeMap<(String, LinkKind), bool> {
        let sessions: Vec<(String, zenoh::Session)> = self
            .table()
            .links
            .iter()
            .map(|(name, link)| (name.clone(), link.session.clone()))
            .collect();
        let mut now_up: BTreeMap<(String, LinkKind), bool> = BTreeMap::new();
        for (name, session) in sessions {
            let up = session.info().peers_zid().await.next().is_some();
            now_up.insert((name, LinkKind::Daemon), up);
        }
        if !self.routers.is_empty() {
            let up = self.main.info().routers_zid().await.next().is_some();
            now_up.insert((self.routers.join(","), LinkKind::Router), up);
        }
        now_up
    }
}

/// Whether `endpoints` (a daemon's locators) offer both encrypted transports.
fn offers_both(endpoints: &[String]) -> bool {
    [SecureTransport::Quic, SecureTransport::Tls]
        .iter()
        .all(|t| {
            endpoints
                .iter()
                .any(|e| e.starts_with(&format!("{}/", t.scheme())))
        })
}

/// The links with their state; `states` keeps when each went up or down (and forgets links
/// that are gone).
fn track(
    states: &mut BTreeMap<(String, LinkKind), (bool, u64)>,
    now_up: BTreeMap<(String, LinkKind), bool>,
) -> Vec<DataLinkStatus> {
    states.retain(|key, _| now_up.contains_key(key));
    let mut out = Vec::new();
    for (key, up) in now_up {
        let (was_up, since) = states.entry(key.clone()).or_insert((!up, 0));
        if *was_up != up || *since == 0 {
            if *since != 0 {
                let state = if up { "up" } else { "down" };
                tracing::warn!("the data link to `{}` is {state}", key.0);
            }
            *was_up = up;
            *since = now_ms();
        }
        out.push(DataLinkStatus {
            peer: key.0,
            kind: key.1,
            up,
            since_ms: *since,
        });
    }
    out
}

/// The other sites a daemon has seen through its router: up while their router's liveliness
/// token is visible, down once it went away (the routers' link is cut).
struct SitesSeen {
    /// `None` without routers.
    tokens: Option<Subscriber<FifoChannelHandler<Sample>>>,
    own: Option<String>,
    seen: BTreeMap<String, bool>,
}

impl SitesSeen {
    async fn watch(main: &zenoh::Session, routers: &[String], own: Option<String>) -> Self {
        let tokens = if routers.is_empty() {
            None
        } else {
            let key = format!("{ROUTER_TOKEN_PREFIX}/*");
            match main
                .liveliness()
                .declare_subscriber(key)
                .history(true)
                .await
            {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("cannot watch the other sites' routers: {e}");
                    None
                }
            }
        };
        Self {
            tokens,
            own,
            seen: BTreeMap::new(),
        }
    }

    /// Waits for a router token to come or go (forever without routers), and records it.
    async fn changed(&mut self) {
        let next = match &self.tokens {
            Some(tokens) => tokens.recv_async().await,
            None => return std::future::pending().await,
        };
        match next {
            Ok(sample) => self.record(&sample),
            Err(_) => self.tokens = None,
        }
    }

    fn record(&mut self, sample: &Sample) {
        if let Some(site) = sample.key_expr().as_str().rsplit('/').next() {
            let up = sample.kind() == SampleKind::Put;
            self.seen.insert(site.to_owned(), up);
        }
    }

    /// Adds the other sites' state to the links.
    fn update(&mut self, links: &mut BTreeMap<(String, LinkKind), bool>) {
        let queued: Vec<Sample> = match &self.tokens {
            Some(tokens) => std::iter::from_fn(|| tokens.try_recv().ok().flatten()).collect(),
            None => Vec::new(),
        };
        for sample in &queued {
            self.record(sample);
        }
        for (site, up) in &self.seen {
            if Some(site) != self.own.as_ref() {
                links.insert((site.clone(), LinkKind::Site), *up);
            }
        }
    }
}

/// Declares a subscriber on `session` feeding `callback`, for samples of other processes.
fn declare(
    session: &zenoh::Session,
    key: &str,
    callback: &Callback<Sample>,
) -> Result<Subscriber<()>, RemoteError> {
    session
        .declare_subscriber(key.to_owned())
        .with(callback.clone())
        .allowed_origin(Locality::Remote)
        .wait()
        .map_err(zenoh_err)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(1)
        .max(1)
}

/// Ends a subscription on every session when dropped.
pub(crate) struct LinkSubscription {
    links: Weak<DataLinks>,
    id: u64,
}

impl Drop for LinkSubscription {
    fn drop(&mut self) {
        if let Some(links) = self.links.upgrade() {
            links.unsubscribe(self.id);
        }
    }
}

impl DataLinks {
    /// The daemons linked to now.
    #[cfg(test)]
    pub(crate) fn linked(&self) -> Vec<String> {
        self.table().links.keys().cloned().collect()
    }

    /// Closes every link session (the main session is closed by its owner).
    pub fn close(&self) {
        let links = std::mem::take(&mut self.table().links);
        self.table().declared.clear();
        for (_, link) in links {
            let _ = link.session.close().wait();
        }
    }
}
