//! Time in a dataflow: timer inputs (`adora/timer/...`) and events scheduled for later (connect
//! timeout, stop escalation, restarts). Every one ends with the dataflow.

use std::time::Duration;

use tokio::sync::mpsc;

use super::Dataflow;
use crate::event::Event;

impl Dataflow {
    /// Starts one ticker per timer interval of the dataflow (once the start barrier is released).
    pub(super) fn spawn_timers(&self, events: &mpsc::Sender<Event>) {
        self.spawn_timer_intervals(events, &self.routing.timer_intervals());
    }

    /// Starts one ticker per interval (a node that moved here brought new ones).
    pub(super) fn spawn_timer_intervals(
        &self,
        events: &mpsc::Sender<Event>,
        intervals: &[std::time::Duration],
    ) {
        for &interval in intervals {
            let events = events.clone();
            let (cancel, dataflow) = (self.cancel.clone(), self.spec.id);
            let what = format!("the {interval:?} timer of dataflow {dataflow}");
            self.tasks.spawn(what, async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = ticker.tick() => {
                            if events.send(Event::TimerTick { dataflow, interval }).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    }

    /// Sends `make()` to the actor every `period` until the dataflow ends (`what` names the task).
    pub(super) fn spawn_ticker(
        &self,
        events: &mpsc::Sender<Event>,
        period: Duration,
        what: &str,
        make: impl Fn() -> Event + Send + 'static,
    ) {
        let (cancel, events) = (self.cancel.clone(), events.clone());
        let what = format!("the {what} of dataflow {}", self.spec.id);
        self.tasks.spawn(what, async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is immediate
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = ticker.tick() => {
                        if events.send(make()).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }

    /// Sends `event` to the actor after `delay`, unless the dataflow ends first.
    pub(super) fn schedule(&self, events: &mpsc::Sender<Event>, delay: Duration, event: Event) {
        let (cancel, events) = (self.cancel.clone(), events.clone());
        let what = format!("a scheduled {} of dataflow {}", event.kind(), self.spec.id);
        self.tasks.spawn(what, async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => { let _ = events.send(event).await; }
            }
        });
    }
}
