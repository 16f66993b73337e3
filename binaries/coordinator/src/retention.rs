//! Forgetting what is over, so the coordinator's memory and store do not grow while it runs:
//! finished dataflows beyond [`CoordinatorConfig::finished_dataflows`](crate::CoordinatorConfig),
//! answered requests and expired builds (limits in [`adora_store::retention`]). Runs when the
//! state is loaded and on every heartbeat tick.

use std::collections::BTreeSet;

use adora_store::retention::build_expired;
use uuid::Uuid;

use crate::actor::Coordinator;

impl Coordinator {
    /// Forgets, in memory and in the store, what the retention limits let go at `now_ms`.
    pub(crate) fn prune(&mut self, now_ms: u64) {
        self.prune_dataflows(now_ms);
        self.prune_requests(now_ms);
        self.prune_builds(now_ms);
        self.prune_join_codes(now_ms);
    }

    /// Finished dataflows beyond the configured retention. One a logs request still reads is
    /// kept until it is answered.
    fn prune_dataflows(&mut self, now_ms: u64) {
        let reading: BTreeSet<Uuid> = self.pending_logs.values().map(|p| p.dataflow).collect();
        let finished = self
            .flows
            .values()
            .filter(|f| f.record.status.is_done() && !reading.contains(&f.record.id))
            .map(|f| (f.record.id, f.record.updated_at_ms));
        let expired: BTreeSet<Uuid> = self
            .config
            .finished_dataflows
            .expired(finished, now_ms)
            .into_iter()
            .collect();
        if expired.is_empty() {
            return;
        }
        for id in &expired {
            self.flows.remove(id);
        }
        let flows = &self.flows;
        self.node_stats.retain(|id| flows.contains_key(id));
        self.recovery.forget(&expired);
        let ids: Vec<Uuid> = expired.into_iter().collect();
        tracing::info!("forgot {} finished dataflow(s)", ids.len());
        if let Err(e) = self.store.remove_dataflows(&ids) {
            tracing::error!("cannot remove finished dataflows from the store: {e}");
        }
    }

    fn prune_requests(&mut self, now_ms: u64) {
        let expired = self.requests.prune(now_ms);
        if expired.is_empty() {
            return;
        }
        tracing::debug!("forgot {} answered request(s)", expired.len());
        if let Err(e) = self.store.remove_requests(&expired) {
            tracing::error!("cannot remove answered requests from the store: {e}");
        }
    }

    fn prune_builds(&mut self, now_ms: u64) {
        let expired: Vec<Uuid> = self
            .builds
            .values()
            .filter(|b| build_expired(b.created_at_ms, now_ms))
            .map(|b| b.id)
            .collect();
        if expired.is_empty() {
            return;
        }
        for id in &expired {
            self.builds.remove(id);
        }
        tracing::info!("forgot {} expired build(s)", expired.len());
        if let Err(e) = self.store.remove_builds(&expired) {
            tracing::error!("cannot remove expired builds from the store: {e}");
        }
    }
}

#[cfg(test)]
mod tests;
