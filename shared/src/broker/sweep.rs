//! The sweep: finds operations and webhook callbacks whose queue message was lost and sends it again
//! (the scheduled sweep), or re-enqueues all of them (a restart of the local broker). It owns the
//! paging through the store's index listings, the bounded fan-out, and keeping one bad item from
//! stopping the others.

use super::Broker;
use super::worker::{HEARTBEAT, STALL_GRACE};
use crate::error::Result;
use crate::ports::queue::MAX_DELAY;
use crate::ports::{Cursor, KeyPage, Record, StoreError, Versioned, Write};
use crate::records::{Callback, CallbackState, Operation, OperationKey};
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tracing::Instrument;

/// How many keys the sweep reads from an index listing at a time.
pub const SWEEP_PAGE: usize = 100;

/// How many items the sweep works on at once (reads, touches and sends).
pub const SWEEP_CONCURRENCY: usize = 8;

/// What one sweep (or resume) did: items re-driven, and items skipped after an error (logged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepCounts {
    pub redriven: usize,
    pub failed: usize,
}

/// The scheduled sweep's outcome, one result per index. An `Err` means the listing itself could not
/// be read (the sweep of that index stopped there); errors of single items are counted in `failed`.
#[derive(Debug)]
pub struct SweepReport {
    pub operations: Result<SweepCounts>,
    pub callbacks: Result<SweepCounts>,
}

/// Which index listing a sweep reads.
#[derive(Debug, Clone, Copy)]
enum Listing {
    Operations,
    Callbacks,
}

impl Listing {
    fn name(self) -> &'static str {
        match self {
            Listing::Operations => "operations",
            Listing::Callbacks => "webhook callbacks",
        }
    }
}

/// When a callback not yet final should have been worked on: its next attempt, or the end of the lease
/// of a sender that is (or was) attempting it.
fn callback_due(cb: &Callback) -> i64 {
    match cb.state {
        CallbackState::Sending => cb.lease_until.unwrap_or(cb.next_attempt_at),
        _ => cb.next_attempt_at,
    }
}

impl Broker {
    /// The scheduled sweep (the worker Lambda's schedule; every minute in local mode): stalled operations,
    /// then stalled callbacks. The second runs whatever the first returned.
    pub async fn sweep(&self) -> SweepReport {
        let operations = self.sweep_stalled().await;
        let callbacks = self.sweep_callbacks().await;
        SweepReport {
            operations,
            callbacks,
        }
    }

    /// Re-drives every stalled operation.
    pub async fn sweep_stalled(&self) -> Result<SweepCounts> {
        self.for_each_key(Listing::Operations, |broker, key| async move {
            match broker.store.get_operation(&key).await? {
                Some(op) => broker.redrive_if_stalled(&op).await,
                None => Ok(false),
            }
        })
        .await
    }

    /// Re-enqueues every operation still in progress (after a restart of the local broker).
    pub async fn resume_unfinished(&self) -> Result<SweepCounts> {
        self.for_each_key(Listing::Operations, |broker, key| async move {
            broker.enqueue(&key, Duration::ZERO).await.map(|()| true)
        })
        .await
    }

    /// Re-drives the callbacks whose message seems lost: not final, and due (or their sender's lease over)
    /// for longer than the stall grace. Duplicates send nothing twice.
    pub async fn sweep_callbacks(&self) -> Result<SweepCounts> {
        self.for_each_key(Listing::Callbacks, |broker, key| async move {
            match broker.store.get_callback(&key).await? {
                Some(cb) => broker.redrive_callback_if_stalled(&cb).await,
                None => Ok(false),
            }
        })
        .await
    }

    /// Re-enqueues every callback whose delivery is not final (after a restart of the local broker).
    /// Duplicates send nothing twice.
    pub async fn resume_callbacks(&self) -> Result<SweepCounts> {
        self.for_each_key(Listing::Callbacks, |broker, key| async move {
            broker
                .enqueue_callback(&key, Duration::ZERO)
                .await
                .map(|()| true)
        })
        .await
    }

    /// Whether no message has carried this operation in progress for longer than a live chain of
    /// messages would allow: its next step was due `retry_after` after the last touch (at most the
    /// queue's maximum delay), and the worker touches it at least every `HEARTBEAT`.
    pub fn is_stalled(&self, op: &Operation) -> bool {
        let expected = Duration::from_secs(op.retry_after_secs)
            .min(MAX_DELAY)
            .max(HEARTBEAT);
        (!op.is_final() || op.compensation_pending)
            && self.clock.now_ms() - op.updated_at > (expected + STALL_GRACE).as_millis() as i64
    }

    /// Sends a stalled operation's message again (its message was lost: the API died between its
    /// commit and its send, or the message went to the dead-letter queue). The touch is committed
    /// first, so concurrent callers re-drive it once. Returns whether it re-drove.
    pub async fn redrive_if_stalled(&self, op: &Versioned<Operation>) -> Result<bool> {
        if !self.is_stalled(&op.item) {
            return Ok(false);
        }
        let mut touched = op.item.clone();
        touched.updated_at = self.clock.now_ms();
        match self
            .store
            .commit(vec![Write::replace(Record::Operation(touched), op.version)])
            .await
        {
            Err(StoreError::Conflict) => return Ok(false),
            r => r?,
        }
        tracing::warn!(operation = %op.item.id, tenant = %op.item.tenant, "stalled operation re-driven");
        crate::metrics::global().sweep_redrive("operations");
        self.enqueue(&op.item.key(), Duration::ZERO).await?;
        Ok(true)
    }

    /// Whether a callback not yet final has waited for its message longer than the stall grace.
    pub fn is_callback_stalled(&self, cb: &Callback) -> bool {
        !cb.state.is_final()
            && self.clock.now_ms() - callback_due(cb) > STALL_GRACE.as_millis() as i64
    }

    /// Sends a stalled callback's message again, after a version-checked touch that makes it due now
    /// (`next_attempt_at`; a dead sender's lapsed lease is dropped): concurrent sweeps re-drive it once,
    /// and the next sweeps leave it alone for the stall grace, so a receiver or queue outage does not
    /// add a message a minute. Returns whether it re-drove.
    pub async fn redrive_callback_if_stalled(&self, cb: &Versioned<Callback>) -> Result<bool> {
        if !self.is_callback_stalled(&cb.item) {
            return Ok(false);
        }
        let now = self.clock.now_ms();
        let mut touched = cb.item.clone();
        touched.next_attempt_at = now;
        touched.lease_until = None;
        touched.updated_at = now;
        match self
            .store
            .commit(vec![Write::replace(Record::Callback(touched), cb.version)])
            .await
        {
            Err(StoreError::Conflict) => return Ok(false),
            r => r?,
        }
        tracing::warn!(operation = %cb.item.operation_id, tenant = %cb.item.tenant, "stalled webhook callback re-driven");
        crate::metrics::global().sweep_redrive("callbacks");
        self.enqueue_callback(&cb.item.key(), Duration::ZERO)
            .await?;
        Ok(true)
    }

    /// Runs `step` on every key of a listing, page by page (`SWEEP_PAGE` keys), at most
    /// `SWEEP_CONCURRENCY` at once. `step` answers whether it re-drove the item; an item whose step
    /// fails is logged and skipped. Only a listing that cannot be read ends the sweep early (`Err`).
    async fn for_each_key<F, Fut>(&self, listing: Listing, step: F) -> Result<SweepCounts>
    where
        F: Fn(Arc<Broker>, OperationKey) -> Fut,
        Fut: Future<Output = Result<bool>> + Send + 'static,
    {
        let broker = Arc::new(self.clone());
        let mut counts = SweepCounts::default();
        let mut from: Option<Cursor> = None;
        loop {
            let page = match self.list(listing, from.as_ref()).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(
                        index = listing.name(),
                        error = %e,
                        redriven = counts.redriven,
                        failed = counts.failed,
                        "sweep stopped: the index listing could not be read"
                    );
                    return Err(e.into());
                }
            };
            let mut running = JoinSet::new();
            for key in page.keys {
                if running.len() >= SWEEP_CONCURRENCY {
                    counts.add(running.join_next().await, listing);
                }
                let span = tracing::info_span!("sweep", index = listing.name(), operation = %key.operation_id, tenant = %key.tenant);
                let work = step(broker.clone(), key.clone());
                running.spawn(async move { (key, work.await) }.instrument(span));
            }
            while let Some(done) = running.join_next().await {
                counts.add(Some(done), listing);
            }
            match page.next {
                Some(next) => from = Some(next),
                None => return Ok(counts),
            }
        }
    }

    async fn list(
        &self,
        listing: Listing,
        from: Option<&Cursor>,
    ) -> std::result::Result<KeyPage, StoreError> {
        match listing {
            Listing::Operations => self.store.unfinished_operations(from, SWEEP_PAGE).await,
            Listing::Callbacks => self.store.pending_callbacks(from, SWEEP_PAGE).await,
        }
    }
}

type Finished = std::result::Result<(OperationKey, Result<bool>), tokio::task::JoinError>;

impl SweepCounts {
    fn add(&mut self, done: Option<Finished>, listing: Listing) {
        match done {
            None | Some(Ok((_, Ok(false)))) => {}
            Some(Ok((_, Ok(true)))) => self.redriven += 1,
            Some(Ok((key, Err(e)))) => {
                self.failed += 1;
                tracing::error!(
                    index = listing.name(),
                    operation = %key.operation_id,
                    tenant = %key.tenant,
                    error = %e,
                    "sweep skipped an item that failed; a later sweep tries it again"
                );
            }
            Some(Err(e)) => {
                self.failed += 1;
                tracing::error!(index = listing.name(), error = %e, "sweep task died; skipped");
            }
        }
    }
}
