//! Completes asynchronous operations: for one operation key (a queue message), start or poll the backend
//! job and either ask to be called again later or commit the final state of the operation and its
//! instance/binding in one atomic write. Every step is idempotent: duplicate or replayed messages and a
//! worker killed between any two steps end in the same final state.

use super::Broker;
use crate::error::{BrokerError, Result};
use crate::ports::queue::MAX_DELAY;
use crate::ports::{BackendOutcome, Queue, Record, StoreError, Versioned, Write};
use crate::records::OperationKey;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

pub use super::sweep::{SWEEP_CONCURRENCY, SWEEP_PAGE, SweepCounts, SweepReport};

/// How often a worker step still in progress refreshes the operation's `updated_at`.
pub const HEARTBEAT: Duration = Duration::from_secs(60);

/// How soon the worker tries a failed compensation again (the sweep re-drives it too).
const UNDO_RETRY: Duration = Duration::from_secs(30);

/// Slack allowed before an operation in progress counts as stalled (no message carries it any more).
/// Longer than the operations queue's visibility timeout (190 s in the template), so a message that a failed
/// worker left for redelivery is not taken for lost.
pub const STALL_GRACE: Duration = Duration::from_secs(300);

/// What to do with the message after processing it.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerStep {
    /// The operation is final (now or before): acknowledge the message.
    Finished,
    /// Still in progress: send the message again with this delay, then acknowledge this one.
    Again(Duration),
}

impl Broker {
    /// Processes one operation message.
    pub async fn process_operation(&self, key: &OperationKey) -> Result<WorkerStep> {
        for _ in 0..8 {
            let Some(Versioned { item: op, version }) = self.store.get_operation(key).await? else {
                tracing::warn!(operation = %key.operation_id, "message for an unknown operation; dropped");
                return Ok(WorkerStep::Finished);
            };
            if op.is_final() && op.compensation_pending {
                // A cancelled creation the backend completed anyway: its undo (re-driven by the sweep).
                let after = self
                    .finish_compensation(Versioned { item: op, version })
                    .await?;
                return Ok(if after.item.compensation_pending {
                    WorkerStep::Again(UNDO_RETRY)
                } else {
                    WorkerStep::Finished
                });
            }
            if op.is_final() {
                // A redelivered message of a finished operation: the worker may have died between the
                // final commit and the webhook queue send. A duplicate callback message sends nothing.
                if op.has_webhook {
                    self.enqueue_callback(key, Duration::ZERO).await?;
                }
                return Ok(WorkerStep::Finished);
            }
            let now = self.clock.now_ms();
            if op.backend_handle.is_none() && !self.predecessors_final(&op).await? {
                // A purge's unbinds first: look again shortly (their own messages run them).
                return Ok(WorkerStep::Again(Duration::from_secs(1)));
            }
            let outcome = if op.deadline.is_some_and(|d| now > d) {
                let secs = self
                    .catalog
                    .plan_by_id(&op.plan_id)
                    .and_then(|p| p.plan.maximum_polling_duration)
                    .unwrap_or_default();
                BackendOutcome::Failed(format!(
                    "{} did not finish within the plan's maximum_polling_duration of {secs} s",
                    op.kind.as_str()
                ))
            } else {
                let mut job = op.job();
                // The worker holds no platform request: a backend may always answer in progress (an
                // upstream broker is then polled by later steps, not waited for here).
                job.accepts_incomplete = true;
                match &op.backend_handle {
                    None => self.backend.start(&job).await,
                    Some(h) => self.backend.poll(&job, h).await,
                }
                // Nothing decided: the message is left for redelivery, the same step runs again.
                .map_err(|e| BrokerError::BackendUnavailable(e.0))?
            };
            let step = match outcome {
                BackendOutcome::InProgress {
                    handle,
                    retry_after_secs,
                } => {
                    // A new handle is written at once; otherwise the operation is touched at most every
                    // HEARTBEAT, so that `updated_at` tells a live chain of messages from a lost one.
                    let heartbeat_due = now - op.updated_at >= HEARTBEAT.as_millis() as i64;
                    if op.backend_handle.as_deref() != Some(handle.as_str()) || heartbeat_due {
                        let mut op = op;
                        op.backend_handle = Some(handle);
                        op.retry_after_secs = retry_after_secs.max(1);
                        op.updated_at = now;
                        self.store
                            .commit(vec![Write::replace(Record::Operation(op), version)])
                            .await
                            .map_err(BrokerError::from)
                    } else {
                        Ok(())
                    }
                    .map(|()| {
                        WorkerStep::Again(
                            Duration::from_secs(retry_after_secs.max(1)).min(MAX_DELAY),
                        )
                    })
                }
                BackendOutcome::Done(done) => self
                    .finalize(Versioned { item: op, version }, None, Ok(done))
                    .await
                    .map(|_| WorkerStep::Finished),
                BackendOutcome::Failed(d) => self
                    .finalize(Versioned { item: op, version }, None, Err(d))
                    .await
                    .map(|_| WorkerStep::Finished),
            };
            match step {
                Err(BrokerError::Store(StoreError::Conflict)) => continue,
                r => return r,
            }
        }
        Err(BrokerError::Store(StoreError::Conflict))
    }
}

/// Processes one operations-queue message: run the operation's next step and, when it is still in
/// progress, send the message again with the backend's delay. On `Ok` the caller acknowledges the
/// message (local: `ack`; Lambda: not reported as failed); on `Err` it leaves it for redelivery.
/// An undecodable message is logged and dropped (`Ok`): redelivering it cannot help.
pub async fn process_message(broker: &Broker, body: &str) -> Result<()> {
    let key: OperationKey = match serde_json::from_str(body) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "undecodable operation message; dropped");
            return Ok(());
        }
    };
    let span =
        tracing::info_span!("operation", operation = %key.operation_id, tenant = %key.tenant);
    async {
        match broker.process_operation(&key).await? {
            WorkerStep::Finished => Ok(()),
            WorkerStep::Again(delay) => Ok(broker.queue.send(body.to_owned(), delay).await?),
        }
    }
    .instrument(span)
    .await
}

/// Handles one delivery from a queue consumer: process, then acknowledge. Errors leave the message
/// unacknowledged, so the queue delivers it again after its visibility timeout.
pub async fn handle_delivery(
    broker: &Broker,
    queue: &dyn Queue,
    body: &str,
    receipt: &str,
) -> Result<()> {
    process_message(broker, body).await?;
    queue.ack(receipt).await?;
    Ok(())
}

/// Runs `concurrency` consumers of the operations queue until the task is dropped (local mode).
pub async fn run_workers(broker: Arc<Broker>, concurrency: usize, visibility: Duration) {
    let queue = broker.queue.clone();
    consume(queue, "operations", concurrency, visibility, move |body| {
        let broker = broker.clone();
        async move { process_message(&broker, &body).await }
    })
    .await
}

/// Local-mode consumer of a queue: up to `concurrency` messages handled at once, each acknowledged when
/// `handle(body)` succeeds and left for redelivery after `visibility` when it fails. Runs until dropped.
pub(crate) async fn consume<F, Fut>(
    queue: Arc<dyn Queue>,
    name: &'static str,
    concurrency: usize,
    visibility: Duration,
    handle: F,
) where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    loop {
        let permits = sem.available_permits().max(1);
        let deliveries = match queue
            .receive(permits.min(10), Duration::from_secs(1), visibility)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(queue = name, error = %e, "queue receive failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        for d in deliveries {
            let Ok(permit) = sem.clone().acquire_owned().await else {
                return;
            };
            let work = handle(d.body);
            let queue = queue.clone();
            tokio::spawn(async move {
                match work.await {
                    Ok(()) => {
                        if let Err(e) = queue.ack(&d.receipt).await {
                            tracing::error!(queue = name, error = %e, "acknowledging a message failed");
                        }
                    }
                    Err(e) => {
                        tracing::error!(queue = name, error = %e, "message processing failed; it will be retried")
                    }
                }
                drop(permit);
            });
        }
    }
}
