//! The client side of a tap (`adora record`, `adora topic`): asks the coordinator for copies of
//! outputs and acknowledges each batch once the caller asks for the next one, so a slow caller
//! slows the tap (and, lossless, the tapped nodes) down instead of queueing without bound.

use std::collections::BTreeMap;

use adora_message::{
    cli_to_coordinator::{ControlRequest, TapRequest},
    coordinator_to_cli::ControlReply,
    tap::TappedMessage,
};
use anyhow::bail;
use uuid::Uuid;

use super::client::Client;

/// What a tap delivers next.
pub enum TapEvent {
    /// Copied messages (of one daemon, in the order each node sent them).
    Messages(Vec<TappedMessage>),
    /// The dataflow ended; the drops of a lossy tap, per `node/output`.
    End(BTreeMap<String, u64>),
}

/// An open tap.
pub struct TapStream {
    client: Client,
    request: u64,
    /// The batch to acknowledge before waiting for the next: (daemon, cost).
    unacked: Option<(String, u64)>,
    /// The tapped dataflow.
    pub dataflow: Uuid,
    /// The tapped outputs.
    pub outputs: Vec<String>,
}

impl TapStream {
    /// Opens a tap of `outputs` (`node/output`; empty for all) of a running dataflow.
    pub async fn open(
        client: Client,
        dataflow: &str,
        outputs: Vec<String>,
        lossy: bool,
    ) -> anyhow::Result<Self> {
        let request = TapRequest {
            dataflow: dataflow.to_owned(),
            outputs,
            lossy,
            dry_run: false,
            before_start: false,
        };
        Self::request(client, request).await
    }

    /// Asks for a tap (`lossy` or lossless) of every output of the dataflow that will be
    /// started under `name`, before it starts; [`Self::wait_started`] once the start was asked
    /// for.
    pub async fn before_start(mut client: Client, name: &str, lossy: bool) -> anyhow::Result<Self> {
        let request = TapRequest {
            dataflow: name.to_owned(),
            outputs: Vec::new(),
            lossy,
            dry_run: false,
            before_start: true,
        };
        let request = client.send(ControlRequest::Tap(request)).await?;
        loop {
            match client.next().await? {
                ControlReply::TapWaiting => {
                    return Ok(Self {
                        client,
                        request,
                        unacked: None,
                        dataflow: Uuid::nil(),
                        outputs: Vec::new(),
                    })
                }
                ControlReply::Error(e) => return Err(e.into()),
                other => tracing::debug!("ignoring {other:?}"),
            }
        }
    }

    /// Waits until a tap asked [`Self::before_start`] is in place (the dataflow is spawning).
    pub async fn wait_started(&mut self) -> anyhow::Result<()> {
        loop {
            match self.client.next().await? {
                ControlReply::TapStarted { dataflow, outputs } => {
                    self.dataflow = dataflow;
                    self.outputs = outputs;
                    return Ok(());
                }
                ControlReply::Error(e) => return Err(e.into()),
                other => tracing::debug!("ignoring {other:?}"),
            }
        }
    }

    /// Sends `request` and waits for its `TapStarted`.
    pub async fn request(mut client: Client, request: TapRequest) -> anyhow::Result<Self> {
        let request = client.send(ControlRequest::Tap(request)).await?;
        loop {
            match client.next().await? {
                ControlReply::TapStarted { dataflow, outputs } => {
                    return Ok(Self {
                        client,
                        request,
                        unacked: None,
                        dataflow,
                        outputs,
                    })
                }
                ControlReply::Error(e) => return Err(e.into()),
                other => tracing::debug!("ignoring {other:?}"),
            }
        }
    }

    /// The next batch (acknowledging the previous one), or the end.
    pub async fn next(&mut self) -> anyhow::Result<TapEvent> {
        if let Some((machine, cost)) = self.unacked.take() {
            let ack = ControlRequest::TapAck {
                tap: self.request,
                machine,
                cost,
            };
            self.client.send(ack).await?;
        }
        loop {
            match self.client.next().await? {
                ControlReply::Tapped { machine, batch } => {
                    self.unacked = Some((machine, batch.cost()));
                    return Ok(TapEvent::Messages(batch.messages));
                }
                ControlReply::TapEnd { dropped } => return Ok(TapEvent::End(dropped)),
                ControlReply::Error(e) => bail!("{e}"),
                other => tracing::debug!("ignoring {other:?}"),
            }
        }
    }
}
