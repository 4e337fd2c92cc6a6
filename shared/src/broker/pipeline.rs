//! The one shape every operation runs through, synchronous or not:
//!
//! ```text
//! read → decide → commit in progress (resource + operation) → backend step → commit final
//!                                    └─ async: enqueue; the worker runs the backend step and the final commit
//! ```
//!
//! Nothing reaches the backend before its operation is durable, so a process that dies at any point leaves
//! an operation in progress that the worker (resumed at start, or re-driven by the sweep) finishes with the
//! same operation id; the backend is idempotent per operation id (`ports::backend`). A backend success whose
//! operation was meanwhile finalized otherwise (a delete cancelled the creation) is compensated.

use super::instances::apply_change;
use super::webhooks::{
    callback_on_finish, created_callbacks, failure_body, success_body, success_status,
};
use super::{Broker, Reply};
use crate::error::{BrokerError, Result};
use crate::ids::OperationId;
use crate::ports::backend::{Done, InstanceResult};
use crate::ports::{BackendOutcome, Record, StoreError, Versioned, Write};
use crate::records::{BindingState, InstanceState, Operation, OperationKind, OperationState};
use std::time::Duration;

/// How often the final commit re-reads and retries after losing a race (a bind touching the instance, …).
const FINAL_COMMIT_RETRIES: usize = 8;

/// How soon the worker retries an operation whose backend could not be asked during the request.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

/// Steps a synchronous request gives each operation it waits for before it gives up and leaves the rest
/// to the worker.
const PREDECESSOR_STEPS: usize = 3;

/// The generation of an id used again (or for the first time): above every earlier one, also when the
/// earlier record is gone (DynamoDB TTL removes tombstones), because it is at least the current time.
pub(super) fn next_generation(previous: Option<u64>, now: i64) -> u64 {
    let floor = u64::try_from(now).unwrap_or(0);
    previous.map_or(floor, |p| p.saturating_add(1).max(floor))
}

/// An operation that reached its final state, with its resource as committed (`None` when the resource
/// had moved on to another operation).
#[derive(Debug, Clone)]
pub(super) struct Completed {
    pub op: Operation,
    pub resource: Option<Record>,
}

impl Completed {
    /// The error a synchronous request answers when the operation failed.
    pub fn failure(&self) -> Option<BrokerError> {
        (self.op.state != OperationState::Succeeded).then(|| {
            BrokerError::BackendFailed(
                self.op
                    .description
                    .clone()
                    .unwrap_or_else(|| format!("{} failed", self.op.kind.as_str())),
            )
        })
    }
}

/// What starting an operation led to.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // built once per request, never stored
pub(super) enum Launched {
    /// Asynchronous: committed and enqueued (202).
    Accepted(OperationId),
    /// Synchronous: the backend step ran in the request and the final state is committed.
    Finished(Completed),
}

impl Launched {
    /// The answer to the request that started the operation: 202 with the body `accepted` makes of the
    /// operation id; the error of a failed operation; or what `succeeded` makes of the finished one.
    pub(super) fn into_reply<T>(
        self,
        accepted: impl FnOnce(&OperationId) -> T,
        succeeded: impl FnOnce(Completed) -> Reply<T>,
    ) -> Result<Reply<T>> {
        match self {
            Launched::Accepted(operation) => Ok(Reply::Accepted {
                body: accepted(&operation),
                operation,
            }),
            Launched::Finished(done) => match done.failure() {
                Some(e) => Err(e),
                None => Ok(succeeded(done)),
            },
        }
    }
}

/// The final records of an operation: the operation finished with `outcome`, and its resource (when it is
/// still the operation's) in the state that follows. A pure function of its inputs.
pub(super) fn final_records(
    mut op: Operation,
    resource: Option<Record>,
    outcome: std::result::Result<Done, String>,
    now: i64,
) -> (Operation, Option<Record>) {
    let succeeded = outcome.is_ok();
    let (state, description, done) = match outcome {
        Ok(d) => (OperationState::Succeeded, None, Some(d)),
        Err(d) => (OperationState::Failed, Some(d), None),
    };
    let resource = match resource {
        Some(Record::Instance(mut i)) if i.last_operation.as_ref() == Some(&op.id) => {
            i.updated_at = now;
            match (op.kind, succeeded) {
                (OperationKind::Provision, true) => {
                    if let Some(Done::Instance(r)) = done {
                        i.dashboard_url = r.dashboard_url;
                        i.metadata = r.metadata;
                    }
                    i.provisioned_at = Some(now);
                    i.state = InstanceState::Ready;
                }
                // A synchronous creation that failed was answered with an error: for the platform it never
                // existed (a tombstone: GET 404, DELETE 410). An asynchronous one was accepted (202) and
                // stays as a failed instance until the platform deletes it (orphan mitigation).
                (OperationKind::Provision, false) if !op.asynchronous => {
                    i.state = InstanceState::Gone
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
                // A failed delete leaves what was there: a provisioned instance is usable again, one whose
                // creation never finished (or was cancelled by this delete) stays failed.
                (OperationKind::Deprovision, false) if i.provisioned_at.is_none() => {
                    i.state = InstanceState::CreateFailed
                }
                _ => i.state = InstanceState::Ready,
            }
            Some(Record::Instance(i))
        }
        Some(Record::Binding(mut b)) if b.last_operation.as_ref() == Some(&op.id) => {
            b.updated_at = now;
            b.state = match (op.kind, succeeded) {
                (OperationKind::Bind, true) => {
                    if let Some(Done::Binding(r)) = done {
                        b.result = Some(r);
                    }
                    BindingState::Ready
                }
                (OperationKind::Bind, false) if !op.asynchronous => BindingState::Gone,
                (OperationKind::Bind, false) => BindingState::CreateFailed,
                (_, true) => {
                    b.result = None;
                    BindingState::Gone
                }
                // A failed unbind of credentials that were never made leaves a failed binding.
                (_, false) if b.result.is_none() => BindingState::CreateFailed,
                (_, false) => BindingState::Ready,
            };
            Some(Record::Binding(b))
        }
        _ => None,
    };
    op.finish(state, description, now);
    (op, resource)
}

impl Broker {
    /// Commits a new operation's writes (its resource in the in-progress state at `writes[resource]`, the
    /// operation, whatever else the decision needs), then runs it: asynchronously (enqueue, 202) when
    /// `op.asynchronous`, else now, in the request. `None` when the commit lost a race (nothing written):
    /// the caller re-reads and decides again.
    pub(super) async fn launch(
        &self,
        writes: Vec<Write>,
        resource: usize,
        op: Operation,
    ) -> Result<Option<Launched>> {
        let committed = Versioned {
            item: writes[resource].record.clone(),
            version: writes[resource].new_version(),
        };
        let key = op.key();
        if !self
            .commit_then_enqueue(writes, op.asynchronous.then_some(&key))
            .await?
        {
            return Ok(None);
        }
        if op.asynchronous {
            return Ok(Some(Launched::Accepted(op.id)));
        }
        self.run_now(
            Versioned {
                item: op,
                version: 1,
            },
            committed,
        )
        .await
        .map(Some)
    }

    /// Whether every operation `op` waits for is final.
    pub(super) async fn predecessors_final(&self, op: &Operation) -> Result<bool> {
        for key in &op.after {
            if self
                .store
                .get_operation(key)
                .await?
                .is_some_and(|o| !o.item.is_final())
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The backend step of a synchronous operation, in the request, then its final commit.
    async fn run_now(
        &self,
        op: Versioned<Operation>,
        resource: Versioned<Record>,
    ) -> Result<Launched> {
        // The operations it waits for (a purge's unbinds) run first, here, as the worker would run them.
        for key in &op.item.after {
            for _ in 0..PREDECESSOR_STEPS {
                if let super::WorkerStep::Finished = self.process_operation(key).await? {
                    break;
                }
            }
        }
        if !self.predecessors_final(&op.item).await? {
            self.enqueue(&op.item.key(), UNAVAILABLE_RETRY).await?;
            return Err(BrokerError::BackendUnavailable(format!(
                "the {} waits for operations that did not finish in time; it continues in the background as operation {}",
                op.item.kind.as_str(),
                op.item.id
            )));
        }
        let job = op.item.job();
        match self.backend.start(&job).await {
            Ok(BackendOutcome::Done(d)) => self
                .finalize(op, Some(resource), Ok(d))
                .await
                .map(Launched::Finished),
            Ok(BackendOutcome::Failed(d)) => self
                .finalize(op, Some(resource), Err(d))
                .await
                .map(Launched::Finished),
            Ok(BackendOutcome::InProgress {
                handle,
                retry_after_secs,
            }) => {
                // The backend went asynchronous after announcing it would not: the worker takes over.
                let mut next = op.item;
                next.backend_handle = Some(handle);
                next.retry_after_secs = retry_after_secs.max(1);
                next.updated_at = self.clock.now_ms();
                let key = next.key();
                self.store
                    .commit(vec![Write::replace(Record::Operation(next), op.version)])
                    .await?;
                self.enqueue(&key, Duration::from_secs(retry_after_secs.max(1)))
                    .await?;
                Err(BrokerError::BackendUnavailable(format!(
                    "the backend did not finish the {} synchronously; it continues as operation {}",
                    job.kind.as_str(),
                    key.operation_id
                )))
            }
            Err(e) => {
                // Nothing decided: the operation stays in progress and the worker tries again soon.
                tracing::warn!(operation = %op.item.id, error = %e, "backend unavailable during a synchronous request");
                self.enqueue(&op.item.key(), UNAVAILABLE_RETRY).await?;
                Err(BrokerError::BackendUnavailable(format!(
                    "the backend is unavailable; the {} continues in the background as operation {}",
                    job.kind.as_str(),
                    op.item.id
                )))
            }
        }
    }

    /// Reads the record an operation acts on.
    async fn read_resource(&self, op: &Operation) -> Result<Option<Versioned<Record>>> {
        Ok(match &op.binding_id {
            Some(b) => self
                .store
                .get_binding(&op.tenant, &op.instance_id, b)
                .await?
                .map(|v| Versioned {
                    item: Record::Binding(v.item),
                    version: v.version,
                }),
            None => self
                .store
                .get_instance(&op.tenant, &op.instance_id)
                .await?
                .map(|v| Versioned {
                    item: Record::Instance(v.item),
                    version: v.version,
                }),
        })
    }

    /// Commits the final state of the operation with its resource (read unless `known`), its webhook
    /// callback if one was registered, and then queues the callback. When someone else finalized the
    /// operation first (a delete cancelled it), theirs stands, and a backend success is compensated.
    pub(super) async fn finalize(
        &self,
        mut op: Versioned<Operation>,
        mut known: Option<Versioned<Record>>,
        outcome: std::result::Result<Done, String>,
    ) -> Result<Completed> {
        for _ in 0..FINAL_COMMIT_RETRIES {
            let now = self.clock.now_ms();
            let resource = match known.take() {
                Some(r) => Some(r),
                None => self.read_resource(&op.item).await?,
            };
            let (resource_version, resource) = match resource {
                Some(v) => (Some(v.version), Some(v.item)),
                None => (None, None),
            };
            let (mut fin, resource) =
                final_records(op.item.clone(), resource, outcome.clone(), now);
            let mut writes = Vec::with_capacity(3);
            if let (Some(r), Some(v)) = (&resource, resource_version) {
                writes.push(Write::replace(r.clone(), v));
            }
            // The webhook's body (only when one was registered): what the synchronous call would have
            // returned.
            if fin.webhook.is_some() {
                let (status, body) = if fin.state == OperationState::Succeeded {
                    (success_status(fin.kind), success_body(fin.kind, &writes))
                } else {
                    let (status, body) = failure_body(&fin);
                    (status, serde_json::to_value(body).unwrap_or_default())
                };
                writes.extend(callback_on_finish(&mut fin, status, &body, now)?);
            }
            writes.push(Write::replace(Record::Operation(fin.clone()), op.version));
            let callbacks = created_callbacks(&writes);
            match self.store.commit(writes).await {
                Ok(()) => {
                    // sharing: a deleted owner (or one whose creation failed) leaves the rule items.
                    if let Some(Record::Instance(i)) = &resource
                        && matches!(i.state, InstanceState::Gone | InstanceState::CreateFailed)
                    {
                        self.prune_owner_rules(i).await;
                    }
                    self.enqueue_callbacks(&callbacks).await?;
                    crate::metrics::global().operation(
                        fin.kind.as_str(),
                        &fin.plan_id,
                        if fin.state == OperationState::Succeeded {
                            "succeeded"
                        } else {
                            "failed"
                        },
                        (now - fin.created_at).max(0) as f64 / 1000.0,
                    );
                    tracing::info!(operation = %fin.id, kind = fin.kind.as_str(), state = ?fin.state, "operation finished");
                    return Ok(Completed { op: fin, resource });
                }
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
            let Some(current) = self.store.get_operation(&op.item.key()).await? else {
                return Err(BrokerError::Store(StoreError::Corrupt(
                    "the operation disappeared while finishing".into(),
                )));
            };
            if current.item.is_final() {
                let current = if outcome.is_ok()
                    && current.item.state != OperationState::Succeeded
                    && matches!(op.item.kind, OperationKind::Provision | OperationKind::Bind)
                {
                    self.compensate(current).await?
                } else {
                    current
                };
                let resource = self.read_resource(&current.item).await?.map(|v| v.item);
                return Ok(Completed {
                    op: current.item,
                    resource,
                });
            }
            op = current;
        }
        Err(BrokerError::Store(StoreError::Conflict))
    }

    /// Undoes a provision or bind that succeeded in the backend after its operation was finalized
    /// otherwise (`current`, as read), so no resource is left that no record knows about. The undo is
    /// recorded first (`compensation_pending`, which lists the operation as unfinished), then run, then
    /// cleared: a failure or a crash in between leaves it for the sweep, which runs it again
    /// (`finish_compensation`) until it succeeds.
    async fn compensate(&self, current: Versioned<Operation>) -> Result<Versioned<Operation>> {
        let mut pending = current.item.clone();
        pending.compensation_pending = true;
        pending.updated_at = self.clock.now_ms();
        let marked = Versioned {
            version: current.version + 1,
            item: pending.clone(),
        };
        match self
            .store
            .commit(vec![Write::replace(
                Record::Operation(pending),
                current.version,
            )])
            .await
        {
            Ok(()) => {}
            // Someone else changed the final record meanwhile (another compensation): theirs stands.
            Err(StoreError::Conflict) => return Ok(current),
            Err(e) => return Err(e.into()),
        }
        self.finish_compensation(marked).await
    }

    /// Runs the undo of an operation marked `compensation_pending` and clears the mark once it succeeded
    /// (the same operation id: the backend's deletes are idempotent). Returns the operation as it is now.
    pub(super) async fn finish_compensation(
        &self,
        op: Versioned<Operation>,
    ) -> Result<Versioned<Operation>> {
        let undo = op.item.job().compensation();
        let why = match self.backend.start(&undo).await {
            Ok(BackendOutcome::Done(_)) => {
                tracing::warn!(operation = %op.item.id, kind = op.item.kind.as_str(), "compensated a backend success whose operation had been cancelled");
                let mut done = op.item.clone();
                done.compensation_pending = false;
                done.updated_at = self.clock.now_ms();
                return match self
                    .store
                    .commit(vec![Write::replace(
                        Record::Operation(done.clone()),
                        op.version,
                    )])
                    .await
                {
                    Ok(()) => Ok(Versioned {
                        item: done,
                        version: op.version + 1,
                    }),
                    // Another run cleared it first.
                    Err(StoreError::Conflict) => Ok(op),
                    Err(e) => Err(e.into()),
                };
            }
            Ok(BackendOutcome::Failed(d)) => d,
            Ok(BackendOutcome::InProgress { .. }) => "still in progress".into(),
            Err(e) => e.to_string(),
        };
        tracing::error!(operation = %op.item.id, kind = op.item.kind.as_str(), error = %why, "could not yet compensate a backend success whose operation had been cancelled; the sweep tries again");
        Ok(op)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::contract::store::{binding, instance, operation};
    use crate::model::responses::BindingResult;

    fn op_for(kind: OperationKind, with_binding: bool) -> Operation {
        let mut op = operation("t", "i1", "op1");
        op.kind = kind;
        if with_binding {
            op.binding_id = Some(crate::ids::BindingId::parse("b1").unwrap());
        }
        op
    }

    fn inst(op: &Operation, state: InstanceState, provisioned: bool) -> Record {
        let mut i = instance("t", "i1");
        i.state = state;
        i.provisioned_at = provisioned.then_some(1);
        i.last_operation = Some(op.id.clone());
        Record::Instance(i)
    }

    fn state_of(r: &Option<Record>) -> String {
        match r {
            Some(Record::Instance(i)) => format!("{:?}", i.state),
            Some(Record::Binding(b)) => format!("{:?}", b.state),
            _ => "none".into(),
        }
    }

    #[test]
    fn generations_grow_even_after_the_tombstone_is_gone() {
        assert_eq!(next_generation(None, 5_000), 5_000);
        assert_eq!(next_generation(Some(7), 5), 8);
        assert_eq!(next_generation(Some(7), 5_000), 5_000);
        // A tombstone expired: the next life still starts above every earlier one (they were ≤ their time).
        let first = next_generation(None, 1_000);
        let second = next_generation(Some(first), 1_001);
        assert!(next_generation(None, 10_000) > second);
    }

    #[test]
    fn provision_outcomes() {
        let op = op_for(OperationKind::Provision, false);
        let (o, r) = final_records(
            op.clone(),
            Some(inst(&op, InstanceState::Creating, false)),
            Ok(Done::Instance(InstanceResult {
                dashboard_url: Some("d".into()),
                metadata: None,
            })),
            9,
        );
        assert_eq!(o.state, OperationState::Succeeded);
        let Some(Record::Instance(i)) = r else {
            panic!("instance")
        };
        assert_eq!(
            (i.state, i.dashboard_url.as_deref(), i.provisioned_at),
            (InstanceState::Ready, Some("d"), Some(9))
        );
        let (o, r) = final_records(
            op.clone(),
            Some(inst(&op, InstanceState::Creating, false)),
            Err("no".into()),
            9,
        );
        assert_eq!(
            (o.state, o.description.as_deref(), state_of(&r).as_str()),
            (OperationState::Failed, Some("no"), "CreateFailed")
        );
        // Synchronous: the platform got an error, the instance never existed for it.
        let mut sync = op.clone();
        sync.asynchronous = false;
        let (_, r) = final_records(
            sync.clone(),
            Some(inst(&sync, InstanceState::Creating, false)),
            Err("no".into()),
            9,
        );
        assert_eq!(state_of(&r), "Gone");
    }

    #[test]
    fn a_failed_delete_restores_what_was_there() {
        let op = op_for(OperationKind::Deprovision, false);
        let (o, r) = final_records(
            op.clone(),
            Some(inst(&op, InstanceState::Deleting, true)),
            Err("x".into()),
            1,
        );
        assert_eq!(state_of(&r), "Ready");
        assert_eq!(o.instance_usable, Some(true));
        // Deleting an instance whose creation never finished (or that this delete cancelled).
        let (_, r) = final_records(
            op.clone(),
            Some(inst(&op, InstanceState::Deleting, false)),
            Err("x".into()),
            1,
        );
        assert_eq!(state_of(&r), "CreateFailed");
        let (_, r) = final_records(
            op.clone(),
            Some(inst(&op, InstanceState::Deleting, true)),
            Ok(Done::Deleted),
            1,
        );
        assert_eq!(state_of(&r), "Gone");
    }

    #[test]
    fn binding_outcomes() {
        let bind = op_for(OperationKind::Bind, true);
        let mut b = binding("t", "i1", "b1");
        b.state = BindingState::Creating;
        b.last_operation = Some(bind.id.clone());
        let result = BindingResult {
            syslog_drain_url: Some("s".into()),
            ..Default::default()
        };
        let (_, r) = final_records(
            bind.clone(),
            Some(Record::Binding(b.clone())),
            Ok(Done::Binding(result.clone())),
            1,
        );
        let Some(Record::Binding(ready)) = r else {
            panic!("binding")
        };
        assert_eq!(
            (ready.state, ready.result.clone()),
            (BindingState::Ready, Some(result))
        );
        let mut unbind = op_for(OperationKind::Unbind, true);
        unbind.binding_id = Some(ready.id.clone());
        let mut deleting = ready.clone();
        deleting.state = BindingState::Deleting;
        deleting.last_operation = Some(unbind.id.clone());
        let (_, r) = final_records(
            unbind.clone(),
            Some(Record::Binding(deleting.clone())),
            Err("x".into()),
            1,
        );
        assert_eq!(state_of(&r), "Ready");
        let (_, r) = final_records(
            unbind.clone(),
            Some(Record::Binding(deleting.clone())),
            Ok(Done::Deleted),
            1,
        );
        let Some(Record::Binding(gone)) = r else {
            panic!("binding")
        };
        assert_eq!((gone.state, gone.result), (BindingState::Gone, None));
        // An unbind that cancelled a bind before it made credentials, and then failed: a failed binding.
        deleting.result = None;
        let (_, r) = final_records(unbind, Some(Record::Binding(deleting)), Err("x".into()), 1);
        assert_eq!(state_of(&r), "CreateFailed");
    }

    #[test]
    fn a_resource_that_moved_on_is_left_alone() {
        let op = op_for(OperationKind::Provision, false);
        let mut other = inst(&op, InstanceState::Deleting, false);
        if let Record::Instance(i) = &mut other {
            i.last_operation = Some(OperationId::parse("someone-else").unwrap());
        }
        let (o, r) = final_records(op, Some(other), Ok(Done::Deleted), 1);
        assert_eq!(o.state, OperationState::Succeeded);
        assert!(r.is_none());
    }
}
