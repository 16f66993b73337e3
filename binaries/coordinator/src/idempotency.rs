//! State-changing requests are idempotent by a client-generated request id
//! ([`ControlRequest::Idempotent`]): the first arrival runs the request; a retry (after a
//! dropped connection, or across a coordinator restart — the ids are stored) gets the same
//! answer, or waits for it if the first is still being handled.
//!
//! The answer is captured on its way to the client, inside the actor: the request runs with a
//! proxy reply channel the actor drains after every event it handles
//! ([`Coordinator::forward_answers`]), forwarding everything to the client and recording the first
//! non-log message (an attached start streams logs after `Started`).

use std::collections::HashMap;

use adora_message::{
    cli_to_coordinator::ControlRequest, coordinator_to_cli::ControlReply, envelope::Envelope,
};
use adora_store::{now_ms, retention::expired_requests, RequestRecord};
use tokio::sync::mpsc::{self, error::TryRecvError};
use uuid::Uuid;

use crate::actor::{reply, ClientTx, Coordinator, Outgoing, Waiter};

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

/// A remembered request: where it stands, and since when (milliseconds since the Unix epoch).
#[derive(Debug)]
struct Remembered {
    state: RequestState,
    at_ms: u64,
}

/// The reply channel an idempotent request runs with: what arrives is forwarded to `client`,
/// and the first answer is recorded as the request's.
#[derive(Debug)]
struct AnswerProxy {
    request_id: Uuid,
    rx: mpsc::UnboundedReceiver<Outgoing<ControlReply>>,
    client: ClientTx,
    answered: bool,
}

/// Remembered requests by id, and the reply channels of those being handled.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    states: HashMap<Uuid, Remembered>,
    proxies: Vec<AnswerProxy>,
}

impl Requests {
    /// Adopts the stored records (at startup).
    pub fn load(&mut self, records: Vec<RequestRecord>) {
        for r in records {
            let state = match r.reply {
                Some(reply) => RequestState::Done(reply),
                None => RequestState::Interrupted,
            };
            self.states.insert(
                r.id,
                Remembered {
                    state,
                    at_ms: r.at_ms,
                },
            );
        }
    }

    /// Forgets the answered (and interrupted) requests past the limits of
    /// [`adora_store::retention`] at `now_ms`; returns their ids.
    pub fn prune(&mut self, now_ms: u64) -> Vec<Uuid> {
        let over = self
            .states
            .iter()
            .filter(|(_, r)| !matches!(r.state, RequestState::InProgress(_)))
            .map(|(id, r)| (*id, r.at_ms));
        let expired = expired_requests(over, now_ms);
        for id in &expired {
            self.states.remove(id);
        }
        expired
    }

    /// How many requests are remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.states.len()
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
        match self
            .requests
            .states
            .get_mut(&request_id)
            .map(|r| &mut r.state)
        {
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
        let at_ms = now_ms();
        let state = RequestState::InProgress(Vec::new());
        self.requests
            .states
            .insert(request_id, Remembered { state, at_ms });
        self.save_request(request_id, None, at_ms);
        let (proxy, rx) = mpsc::unbounded_channel();
        self.requests.proxies.push(AnswerProxy {
            request_id,
            rx,
            client: tx,
            answered: false,
        });
        self.current_request = Some(request_id);
        self.handle_request(Envelope::new(envelope_id, request), proxy);
        self.current_request = None;
        self.forward_answers();
    }

    /// Moves what the handlers replied on the proxies of idempotent requests to their clients,
    /// recording each request's first answer. The actor calls it after every event, so an
    /// answer reaches its client as soon as the handler that gave it returns.
    pub(crate) fn forward_answers(&mut self) {
        let mut answers = Vec::new();
        self.requests.proxies.retain_mut(|proxy| loop {
            let out = match proxy.rx.try_recv() {
                Ok(out) => out,
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            };
            if let (false, Outgoing::Message(envelope)) = (proxy.answered, &out) {
                if !matches!(envelope.body, ControlReply::Log(_)) {
                    proxy.answered = true;
                    answers.push((proxy.request_id, envelope.body.clone()));
                }
            }
            // A client that went away still gets its answer recorded for its retry; after
            // that, its proxy closes (log streams to it stop).
            if proxy.client.send(out).is_err() && proxy.answered {
                return false;
            }
        });
        for (request_id, answer) in answers {
            self.request_answered(request_id, answer);
        }
    }

    /// The first answer of a request: remember it and answer the retries waiting for it.
    pub(crate) fn request_answered(&mut self, request_id: Uuid, answer: ControlReply) {
        let at_ms = self
            .requests
            .states
            .get(&request_id)
            .map_or_else(now_ms, |r| r.at_ms);
        let state = RequestState::Done(answer.clone());
        let previous = self
            .requests
            .states
            .insert(request_id, Remembered { state, at_ms });
        if let Some(RequestState::InProgress(waiters)) = previous.map(|r| r.state) {
            for (tx, id) in waiters {
                reply(&tx, id, answer.clone());
            }
        }
        self.save_request(request_id, Some(answer), at_ms);
    }

    fn save_request(&self, id: Uuid, reply: Option<ControlReply>, at_ms: u64) {
        let record = RequestRecord { id, reply, at_ms };
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
