//! Opening the daemon's Zenoh session when the coordinator names the peers, and attaching
//! dataflows to it.

use std::sync::Arc;

use uuid::Uuid;

use super::{Daemon, RemoteState};
use crate::{event::Event, remote::RemoteDataPlane};

impl Daemon {
    /// Enables the cross-machine data plane: the session listens on `listen` once peers are known.
    pub(crate) fn enable_remote(&mut self, listen: String) {
        self.remote = RemoteState::Waiting(listen);
    }

    /// The coordinator sent the endpoints of the other daemons: open the session (once; later
    /// daemons connect to this one, and Zenoh re-establishes dropped links by itself).
    pub(crate) fn handle_peers(&mut self, endpoints: Vec<String>) {
        let listen = match &self.remote {
            RemoteState::Waiting(listen) => listen.clone(),
            RemoteState::Disabled => {
                tracing::debug!("ignoring peers: cross-machine data plane disabled");
                return;
            }
            RemoteState::Opening | RemoteState::Open(_) => return,
        };
        self.remote = RemoteState::Opening;
        let (events, tasks) = (self.events_tx.clone(), self.tasks.clone());
        tracing::info!("opening the Zenoh session on {listen}, peers: {endpoints:?}");
        self.tasks.spawn("opening the Zenoh session", async move {
            let result = RemoteDataPlane::open(&listen, &endpoints, tasks)
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
