//! Opening the daemon's Zenoh session when the coordinator names the peers, and attaching
//! dataflows to it.

use std::sync::Arc;

use uuid::Uuid;

use adora_message::{daemon_to_coordinator::DaemonMessage, envelope::Envelope};

use super::{Daemon, RemoteState};
use crate::{
    config::ZenohTls,
    event::{Event, Reports},
    remote::{listen_endpoint, RemoteDataPlane},
};

impl Daemon {
    /// Enables the cross-machine data plane: the session listens on `listen` once peers are
    /// known (over mutual TLS with `tls`, else plain TCP), and where it listens is reported
    /// through `reports`.
    pub(crate) fn enable_remote(
        &mut self,
        listen: String,
        tls: Option<ZenohTls>,
        reports: Reports,
    ) {
        self.remote = RemoteState::Waiting(listen);
        self.zenoh_tls = tls;
        self.remote_reports = Some(reports);
    }

    /// Tells the coordinator where the session listens (`ZenohListening`): the locators Zenoh
    /// bound when open, none when the data plane failed; nothing while it is not open yet.
    pub(crate) fn report_listening(&self) {
        let locators = match &self.remote {
            RemoteState::Open(plane) => plane.locators().to_vec(),
            RemoteState::Disabled => Vec::new(),
            RemoteState::Waiting(_) | RemoteState::Opening => return,
        };
        if let Some(reports) = &self.remote_reports {
            let _ = reports.send(Envelope::new(0, DaemonMessage::ZenohListening { locators }));
        }
    }

    /// After a re-registration: an open session's locators go to the coordinator again (it may
    /// have restarted and forgotten them).
    pub(crate) fn report_listening_if_open(&self) {
        if matches!(self.remote, RemoteState::Open(_)) {
            self.report_listening();
        }
    }

    /// The coordinator answered the registration with `Peers`: open the session (once). It
    /// connects only to the site's router: the daemons named in `endpoints` are not linked to
    /// now but when a dataflow needs it (`DataLinks`, see `remote::topology`). Zenoh binds the
    /// listen port itself (port 0 picks a free one); the actual locators are reported once open.
    pub(crate) fn handle_peers(&mut self, endpoints: Vec<String>) {
        tracing::debug!("daemons known to the coordinator: {endpoints:?}");
        let endpoints = self.zenoh_routers.clone();
        let listen = match &self.remote {
            RemoteState::Waiting(listen) => {
                listen_endpoint(listen, self.link_ip, self.zenoh_tls.as_ref())
            }
            RemoteState::Disabled | RemoteState::Open(_) => return self.report_listening(),
            RemoteState::Opening => return, // reported when open
        };
        let listen = match listen {
            Ok(listen) => listen,
            Err(e) => {
                tracing::error!("{e}; nodes on other machines cannot exchange data with this one");
                self.remote = RemoteState::Disabled;
                return self.report_listening();
            }
        };
        self.remote = RemoteState::Opening;
        let (events, tasks) = (self.events_tx.clone(), self.tasks.clone());
        let tls = self.zenoh_tls.clone();
        tracing::info!("opening the Zenoh session on {listen}, routers: {endpoints:?}");
        self.tasks.spawn("opening the Zenoh session", async move {
            let result = RemoteDataPlane::open(&listen, &endpoints, tls.as_ref(), tasks)
                .await
                .map(Arc::new)
                .map_err(|e| format!("cannot open the Zenoh session on {listen}: {e}"));
            let _ = events.send(Event::RemoteOpened(result)).await;
        });
    }

    pub(crate) fn remote_opened(&mut self, result: Result<Arc<RemoteDataPlane>, String>) {
        match result {
            Ok(plane) => {
                self.remote = RemoteState::Open(plane.clone());
                if let Some(peers) = self.pending_links.take() {
                    plane.links().set_peers(peers);
                }
                if let Some(reports) = self.remote_reports.clone() {
                    let links = plane.links().clone();
                    let site = self.site.clone();
                    self.tasks.spawn("the data links", links.run(reports, site));
                }
                for df in self.dataflows.values_mut() {
                    df.attach_remote(&plane, &self.events_tx);
                }
            }
            Err(e) => {
                // Local dataflows keep working; cross-machine inputs will not arrive.
                tracing::error!("{e}; nodes on other machines cannot exchange data with this one");
                self.remote = RemoteState::Disabled;
            }
        }
        self.report_listening();
    }

    /// `DataLinks`: the daemons to link to from now on (kept until the session is open).
    pub(crate) fn handle_data_links(&mut self, peers: Vec<adora_message::data_links::DataPeer>) {
        match &self.remote {
            RemoteState::Open(plane) => plane.links().set_peers(peers),
            RemoteState::Disabled => {}
            RemoteState::Waiting(_) | RemoteState::Opening => self.pending_links = Some(peers),
        }
    }

    /// Attaches a newly started dataflow when the session is already open.
    pub(crate) fn attach_remote(&mut self, dataflow: Uuid) {
        if let (RemoteState::Open(plane), Some(df)) =
            (&self.remote, self.dataflows.get_mut(&dataflow))
        {
            df.attach_remote(plane, &self.events_tx);
        }
    }
}
