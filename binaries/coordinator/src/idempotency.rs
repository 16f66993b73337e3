//! State-changing requests are idempotent by a client-generated request id
//! ([`ControlRequest::Idempotent`]): the first arrival runs the request; a retry (after a
//! dropped connection, or across a coordinator restart — the ids are stored) gets the same
//! answer, or waits for it if the first is still being handled.
//!
//! The answer is captured on its way to the client: the request runs with a proxy reply channel
//! whose first non-log message is recorded (an attached start streams logs after `Started`).

use std::collections::HashMap;

use adora_message::{
    cli_to_coordinator::ControlRequest, coordinator_to_cli::ControlReply, envelope::Envelope,
};
use adora_store::{now_ms, RequestRecord};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::actor::{reply, ClientTx, Coordinator, Event, Outgoing, Waiter};

/// Where a remembered request stands.
#[derive(Debug)]
enum RequestState {
    /// Being handled; these retries wait for the answer.
    InProgress(Vec<Waiter>),
    /// Was being handled when the previous coordinator stopped.
    Interrupted,
    /// Answered.
    Done(ControlReply),
}

/// Remembered requests by id.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    states: HashMap<Uuid, RequestState>,
}

impl Requests {
    /// Adopts the stored records (at startup).
    pub fn load(&mut self, records: Vec<RequestRecord>) {
        for r in records {
            let state = match r.reply {
                Some(reply) => RequestState::Done(reply),
                None => RequestState::Interrupted,
            };
            self.states.insert(r.id, state);
        }
    }
}

impl Coordinator {
    pub(crate) fn handle_idempotent(
        &mut self,
        request_id: Uuid,
        request: ControlRequest,
        tx: ClientTx,
        envelope_id: u64,
    ) {
        match self.requests.states.get_mut(&request_id) {
            Some(RequestState::Done(answer)) => {
                tracing::info!("request {request_id} retried: answering it again");
                let answer = answer.clone();
                reply(&tx, envelope_id, answer.clone());
                // An attached start retried on a new connection streams its logs there.
                if let (ControlRequest::Start(start), ControlReply::Started { id, .. }) =
                    (&request, &answer)
                {
                    if start.attach {
                        self.logs_complete(*id, tx, envelope_id, true);
                    }
                }
                return;
            }
            Some(RequestState::InProgress(waiters)) => {
                tracing::info!("request {request_id} retried while in progress: waiting for it");
                return waiters.push((tx, envelope_id));
            }
            Some(RequestState::Interrupted) => {
                if let Some(answer) = self.answer_from_records(request_id, &request) {
                    tracing::info!("request {request_id} retried after a restart: already done");
                    self.request_answered(request_id, answer.clone());
                    return reply(&tx, envelope_id, answer);
                }
            }
            None => {}
        }
        self.requests
            .states
            .insert(request_id, RequestState::InProgress(Vec::new()));
        self.save_request(request_id, None);
        let proxy = self.answer_proxy(request_id, tx);
        self.current_request = Some(request_id);
        self.handle_request(Envelope::new(envelope_id, request), proxy);
        self.current_request = None;
    }

    /// A reply channel that forwards to `tx` and reports the first real answer to the actor.
    fn answer_proxy(&self, request_id: Uuid, tx: ClientTx) -> ClientTx {
        let (proxy, mut rx) = mpsc::unbounded_channel::<Outgoing<ControlReply>>();
        let events = self.events.clone();
        tokio::spawn(async move {
            let mut answered = false;
            while let Some(out) = rx.recv().await {
                if let (false, Outgoing::Message(envelope)) = (answered, &out) {
                    if !matches!(envelope.body, ControlReply::Log(_)) {
                        answered = true;
                        if let Some(events) = &events {
                            let answer = Event::RequestAnswered {
                                request_id,
                                reply: envelope.body.clone(),
                            };
                            let _ = events.send(answer).await;
                        }
                    }
                }
                // A client that went away still gets its answer recorded for its retry.
                if tx.send(out).is_err() && answered {
                    break;
                }
            }
        });
        proxy
    }

    /// The first answer of a request: remember it and answer the retries waiting for it.
    pub(crate) fn request_answered(&mut self, request_id: Uuid, answer: ControlReply) {
        let previous = self
            .requests
            .states
            .insert(request_id, RequestState::Done(answer.clone()));
        if let Some(RequestState::InProgress(waiters)) = previous {
            for (tx, id) in waiters {
                reply(&tx, id, answer.clone());
            }
        }
        self.save_request(request_id, Some(answer));
    }

    fn save_request(&self, id: Uuid, reply: Option<ControlReply>) {
        let record = RequestRecord {
            id,
            reply,
            at_ms: now_ms(),
        };
        if let Err(e) = self.store.put_request(&record) {
            tracing::error!("cannot store request {id}: {e}");
        }
    }

    /// For a request interrupted by a coordinator restart: the answer, if its effect is in
    /// the records (a start whose dataflow was created).
    fn answer_from_records(
        &self,
        request_id: Uuid,
        request: &ControlRequest,
    ) -> Option<ControlReply> {
        // A start that failed (e.g. while being prepared) is run again.
        let flow = self.flows.values().find(|f| {
            f.record.request_id == Some(request_id)
                && f.record.status != adora_message::control::DataflowStatus::Failed
        })?;
        let (id, name) = (flow.record.id, flow.record.name.clone());
        match request {
            ControlRequest::Restart { .. } => {
                let old = self
                    .flows
                    .values()
                    .filter(|f| f.record.name == name && f.seq < flow.seq)
                    .max_by_key(|f| f.seq)?
                    .record
                    .id;
                Some(ControlReply::Restarted { old, new: id, name })
            }
            _ => Some(ControlReply::Started {
                id,
                name,
                placement: flow.record.placement.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
