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

/// How long an answer waits for the store to take the change it reports (the store retries
/// a failed write every second) before the client is told it could not be stored.
const STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends `answer` (the first answer of `proxy`'s request) once every write queued so far is
/// stored, then what else arrives on the proxy (logs) until it closes or the client is gone.
/// When the store keeps failing for [`STORE_WAIT`], the client gets an error saying what was
/// done and not stored instead: a change is never acknowledged before it would survive a
/// coordinator restart.
fn answer_when_stored(
    coordinator: &Coordinator,
    answer: Outgoing<ControlReply>,
    proxy: AnswerProxy,
) {
    let (store, tasks) = (coordinator.store.clone(), coordinator.tasks.clone());
    let AnswerProxy {
        request_id,
        mut rx,
        client,
    } = proxy;
    // A refusal changed nothing worth waiting for.
    let refused =
        matches!(&answer, Outgoing::Message(e) if matches!(e.body, ControlReply::Error(_)));
    let what = "answering a request once stored";
    coordinator.tasks.spawn(what, async move {
        if !refused {
            if let Err(e) = stored(store, tasks).await {
                tracing::error!("request {request_id} was carried out but not stored: {e}");
                if let Outgoing::Message(envelope) = answer {
                    let error = unstored(&envelope.body, &e);
                    let _ = client.send(Outgoing::Message(Envelope::new(envelope.id, error)));
                }
                return;
            }
        }
        let _ = client.send(answer);
        while let Some(out) = rx.recv().await {
            if client.send(out).is_err() {
                return;
            }
        }
    });
}

/// Waits until every write queued so far is stored, for up to [`STORE_WAIT`]; the store's
/// error when it still fails then.
async fn stored(
    store: std::sync::Arc<dyn adora_store::Store>,
    tasks: adora_tasks::Tasks,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + STORE_WAIT;
    loop {
        let store = store.clone();
        match tasks
            .spawn_blocking("syncing the store", move || store.sync())
            .await
        {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) if tokio::time::Instant::now() >= deadline => return Err(e.to_string()),
            Ok(Err(_)) => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            Err(e) => return Err(format!("the store sync task failed: {e}")),
        }
    }
}

/// The error a client gets for a request that was carried out (`done`) but not stored.
fn unstored(done: &ControlReply, error: &str) -> ControlReply {
    let what = match done {
        ControlReply::Started { name, id, .. } => format!("dataflow `{name}` ({id}) was started"),
        ControlReply::Restarted { name, new, .. } => {
            format!("dataflow `{name}` was restarted as {new}")
        }
        _ => "the request was carried out".to_owned(),
    };
    ControlReply::Error(adora_message::control::ControlError::new(
        adora_message::control::ErrorKind::Internal,
        format!(
            "{what}, but the coordinator could not store it: {error}. It keeps trying; until \
             the store takes it (free disk space?), a coordinator restart forgets this change"
        ),
    ))
}

/// The reply channel an idempotent request runs with: what arrives is forwarded to `client`,
/// and the first answer is recorded as the request's.
#[derive(Debug)]
struct AnswerProxy {
    request_id: Uuid,
    rx: mpsc::UnboundedReceiver<Outgoing<ControlReply>>,
    client: ClientTx,
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
        });
        self.current_request = Some(request_id);
        self.handle_request(Envelope::new(envelope_id, request), proxy);
        self.current_request = None;
        self.forward_answers();
    }

    /// Moves what the handlers replied on the proxies of idempotent requests to their clients,
    /// recording each request's first answer. The actor calls it after every event, so an
    /// answer is on its way as soon as the handler that gave it returns. The answer itself
    /// waits until the store has the change ([`answer_when_stored`]); what follows it (the
    /// logs of an attached start) goes after it.
    pub(crate) fn forward_answers(&mut self) {
        let mut answers = Vec::new();
        for mut proxy in std::mem::take(&mut self.requests.proxies) {
            let first = loop {
                let out = match proxy.rx.try_recv() {
                    Ok(out) => out,
                    Err(TryRecvError::Empty) => break None,
                    Err(TryRecvError::Disconnected) => break Some(None),
                };
                match &out {
                    Outgoing::Message(envelope)
                        if !matches!(envelope.body, ControlReply::Log(_)) =>
                    {
                        answers.push((proxy.request_id, envelope.body.clone()));
                        break Some(Some(out));
                    }
                    // Early log lines (build output) go at once; a client that went away
                    // still gets its answer recorded for its retry.
                    _ => {
                        let _ = proxy.client.send(out);
                    }
                }
            };
            match first {
                None => self.requests.proxies.push(proxy),
                Some(None) => {}
                Some(Some(answer)) => answer_when_stored(self, answer, proxy),
            }
        }
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
