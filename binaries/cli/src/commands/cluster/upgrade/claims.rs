//! The upgrade's claims on its machines at the coordinator (`ControlRequest::Claim`): one at a
//! time per machine across every maintenance operation, refused while the machine has update
//! locks. A claim has a lease ([`LEASE`]) renewed in the background until it is released, so an
//! upgrade that dies mid-way frees its machines within a minute.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use adora_cluster::rollout::{ClaimError, StepError};
use adora_message::{
    cli_to_coordinator::ControlRequest,
    control::{ControlError, ErrorKind},
    maintenance::Operation,
};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::commands::client::{Client, ClientArgs};

/// How long a claim lasts unless renewed.
pub(crate) const LEASE: Duration = Duration::from_secs(60);
/// How often it is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(20);

/// This operation's claims.
pub(crate) struct Claims {
    /// The id every claim of this run carries.
    id: Uuid,
    operation: Operation,
    /// The renewing task of each claimed machine.
    renewers: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl Claims {
    /// Claims for `operation`, under a new id.
    pub fn new(operation: Operation) -> Self {
        Self {
            id: Uuid::new_v4(),
            operation,
            renewers: Mutex::default(),
        }
    }

    fn request(&self, machine: &str, force: bool) -> ControlRequest {
        ControlRequest::Claim {
            machine: machine.to_owned(),
            operation: self.operation,
            id: self.id,
            lease: LEASE,
            force,
        }
    }

    /// Claims `machine`; keeps renewing it until [`Claims::release`].
    pub async fn claim(
        &self,
        client: &ClientArgs,
        machine: &str,
        force: bool,
    ) -> Result<(), ClaimError> {
        let mut conn = Client::connect(client).await.map_err(|e| {
            ClaimError::Refused(StepError::new(
                format!("the coordinator does not answer: {e:#}"),
                "check that the coordinator runs",
            ))
        })?;
        if let Err(e) = conn.call(self.request(machine, force)).await {
            return Err(match e.downcast_ref::<ControlError>() {
                Some(e) if e.kind == ErrorKind::Locked => ClaimError::Locked(e.message.clone()),
                Some(e) => ClaimError::Refused(StepError::new(
                    e.message.clone(),
                    "wait for the other operation to finish (`adora cluster status` shows it)",
                )),
                None => ClaimError::Refused(StepError::new(format!("{e:#}"), "")),
            });
        }
        // Renewed with `force`: locks taken after the claim was granted are refused anyway.
        let renew = self.request(machine, true);
        let (client, name) = (client.clone(), machine.to_owned());
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let renewed = async {
                    let mut conn = Client::connect(&client).await?;
                    conn.call(renew.clone()).await
                };
                if let Err(e) = renewed.await {
                    eprintln!("warning: cannot renew the claim on `{name}`: {e:#}");
                }
            }
        });
        let old = self
            .renewers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(machine.to_owned(), renewer);
        if let Some(old) = old {
            old.abort();
        }
        Ok(())
    }

    /// Gives `machine` back (best effort: a claim not released lapses after [`LEASE`]).
    pub async fn release(&self, client: &ClientArgs, machine: &str) {
        let renewer = self
            .renewers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(machine);
        if let Some(renewer) = renewer {
            renewer.abort();
        }
        let request = ControlRequest::ReleaseClaim {
            machine: machine.to_owned(),
            id: self.id,
        };
        let released = async {
            let mut conn = Client::connect(client).await?;
            conn.call(request).await
        };
        if let Err(e) = released.await {
            eprintln!("warning: cannot release the claim on `{machine}` (it lapses within {LEASE:?}): {e:#}");
        }
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        for (_, renewer) in self
            .renewers
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            renewer.abort();
        }
    }
}
