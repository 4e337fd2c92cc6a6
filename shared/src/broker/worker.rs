//! Completes asynchronous operations: for one operation key (a queue message), start or poll the backend
//! job and either ask to be called again later or commit the final state of the operation and its
//! instance/binding in one atomic write. Every step is idempotent: duplicate or replayed messages and a
//! worker killed between any two steps end in the same final state.

use super::Broker;
use super::instances::apply_change;
use super::webhooks::{
    callback_on_finish, created_callbacks, failure_body, success_body, success_status,
};
use crate::error::{BrokerError, Result};
use crate::ports::backend::{Done, InstanceResult};
use crate::ports::queue::MAX_DELAY;
use crate::ports::{BackendOutcome, Queue, Record, StoreError, Versioned, Write};
use crate::records::{
    BindingState, InstanceState, Operation, OperationKey, OperationKind, OperationState,
};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// How often a worker step still in progress refreshes the operation's `updated_at`.
pub const HEARTBEAT: Duration = Duration::from_secs(60);

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
            if op.is_final() {
                // A redelivered message of a finished operation: the worker may have died between the
                // final commit and the webhook queue send. A duplicate callback message sends nothing.
                if op.has_webhook {
                    self.enqueue_callback(key, Duration::ZERO).await?;
                }
                return Ok(WorkerStep::Finished);
            }
            let now = self.clock.now_ms();
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
                let job = op.job();
                match &op.backend_handle {
                    None => self.backend.start(&job).await,
                    Some(h) => self.backend.poll(&job, h).await,
                }
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
                BackendOutcome::Done(done) => self.finalize(op, version, Ok(done)).await,
                BackendOutcome::Failed(d) => self.finalize(op, version, Err(d)).await,
            };
            match step {
                Err(BrokerError::Store(StoreError::Conflict)) => continue,
                r => return r,
            }
        }
        Err(BrokerError::Store(StoreError::Conflict))
    }

    /// Commits the final state of the operation together with its instance or binding.
    async fn finalize(
        &self,
        mut op: Operation,
        op_version: u64,
        outcome: std::result::Result<Done, String>,
    ) -> Result<WorkerStep> {
        let now = self.clock.now_ms();
        let (succeeded, description, done) = match outcome {
            Ok(d) => (true, None, Some(d)),
            Err(d) => (false, Some(d), None),
        };
        let state = if succeeded {
            OperationState::Succeeded
        } else {
            OperationState::Failed
        };
        let mut writes = Vec::with_capacity(3);
        if op.kind.is_binding() {
            let binding_id = op.binding_id.clone().ok_or_else(|| {
                BrokerError::Store(StoreError::Corrupt(
                    "binding operation without binding id".into(),
                ))
            })?;
            if let Some(Versioned {
                item: mut b,
                version,
            }) = self
                .store
                .get_binding(&op.tenant, &op.instance_id, &binding_id)
                .await?
                && b.last_operation.as_ref() == Some(&op.id)
            {
                b.updated_at = now;
                b.state = match (op.kind, succeeded) {
                    (OperationKind::Bind, true) => {
                        if let Some(Done::Binding(r)) = done {
                            b.result = Some(r);
                        }
                        BindingState::Ready
                    }
                    (OperationKind::Bind, false) => BindingState::CreateFailed,
                    (_, true) => {
                        b.result = None;
                        BindingState::Gone
                    }
                    (_, false) => BindingState::Ready,
                };
                writes.push(Write::replace(Record::Binding(b), version));
            }
        } else if let Some(Versioned {
            item: mut i,
            version,
        }) = self.store.get_instance(&op.tenant, &op.instance_id).await?
            && i.last_operation.as_ref() == Some(&op.id)
        {
            i.updated_at = now;
            match (op.kind, succeeded) {
                (OperationKind::Provision, true) => {
                    if let Some(Done::Instance(r)) = done {
                        i.dashboard_url = r.dashboard_url;
                        i.metadata = r.metadata;
                    }
                    i.state = InstanceState::Ready;
                }
                (OperationKind::Provision, false) => i.state = InstanceState::CreateFailed,
                (OperationKind::Update, true) => {
                    let result = match done {
                        Some(Done::Instance(r)) => r,
                        _ => InstanceResult::default(),
                    };
                    if let Some(change) = op.change.clone() {
                        apply_change(&mut i, &change, result);
                    }
                    i.state = InstanceState::Ready;
                }
                (OperationKind::Deprovision, true) => i.state = InstanceState::Gone,
                _ => i.state = InstanceState::Ready,
            }
            writes.push(Write::replace(Record::Instance(i), version));
        }
        op.finish(state, description, now);
        // The webhook's body (only when one was registered): what the synchronous call would have returned.
        let callback = if op.webhook.is_none() {
            None
        } else if succeeded {
            let (status, body) = (success_status(op.kind), success_body(op.kind, &writes));
            callback_on_finish(&mut op, status, &body, now)?
        } else {
            let (status, body) = failure_body(&op);
            callback_on_finish(&mut op, status, &body, now)?
        };
        writes.extend(callback);
        writes.push(Write::replace(Record::Operation(op.clone()), op_version));
        let callbacks = created_callbacks(&writes);
        self.store.commit(writes).await?;
        self.enqueue_callbacks(&callbacks).await?;
        tracing::info!(
            operation = %op.id,
            kind = op.kind.as_str(),
            state = ?op.state,
            "operation finished"
        );
        Ok(WorkerStep::Finished)
    }

    /// Whether no message has carried this operation in progress for longer than a live chain of
    /// messages would allow: its next step was due `retry_after` after the last touch (at most the
    /// queue's maximum delay), and the worker touches it at least every `HEARTBEAT`.
    pub fn is_stalled(&self, op: &Operation) -> bool {
        let expected = Duration::from_secs(op.retry_after_secs)
            .min(MAX_DELAY)
            .max(HEARTBEAT);
        !op.is_final()
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
        self.enqueue(&op.item.key(), Duration::ZERO).await?;
        Ok(true)
    }

    /// Re-drives every stalled operation (the scheduled sweep; the local broker runs it periodically).
    /// Returns how many were re-driven.
    pub async fn sweep_stalled(&self) -> Result<usize> {
        let mut redriven = 0;
        for key in self.store.unfinished_operations().await? {
            if let Some(op) = self.store.get_operation(&key).await?
                && self.redrive_if_stalled(&op).await?
            {
                redriven += 1;
            }
        }
        Ok(redriven)
    }

    /// Re-enqueues every operation still in progress (after a restart of the local broker).
    pub async fn resume_unfinished(&self) -> Result<usize> {
        let keys = self.store.unfinished_operations().await?;
        for k in &keys {
            self.enqueue(k, Duration::ZERO).await?;
        }
        Ok(keys.len())
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
