//! Purging leases: their lease items inactive, their instances orphaned, and an unbind operation (run by
//! the worker on the owner's backing instance) for each of their ready bindings.

use crate::broker::{Broker, Target};
use crate::error::{BrokerError, Result};
use crate::keys;
use crate::ports::{Bindings, Record, Versioned, Write};
use crate::records::{
    BindingState, Instance, InstanceState, Operation, OperationKey, OperationKind, RequestMeta,
};
use crate::sharing::{BackendTarget, LeaseRef};
use std::time::Duration;

/// The writes that orphan leases and the unbind operations (one per binding) the worker then runs.
#[derive(Debug, Default)]
pub(in crate::broker) struct Purge {
    pub writes: Vec<Write>,
    pub operations: Vec<OperationKey>,
}

impl Purge {
    /// Clears the owner's lease list (the owner record is written by the caller).
    pub(in crate::broker) fn apply_to(&self, owner: &mut Instance) {
        if let Some(s) = owner.sharing.as_mut() {
            s.leases.clear();
        }
    }
}

impl Broker {
    /// Orphans `leases` of `owner`: their lease items become inactive, their instances orphaned, and every
    /// ready binding gets an unbind operation that the worker runs on the owner's backing instance.
    pub(super) async fn purge_plan(
        &self,
        owner: &Instance,
        leases: &[LeaseRef],
        now: i64,
        meta: &RequestMeta,
    ) -> Result<Purge> {
        let mut purge = Purge::default();
        let items = self
            .store
            .get_records(
                &leases
                    .iter()
                    .map(|l| keys::lease_key(&owner.tenant, &owner.id, l))
                    .collect::<Vec<_>>(),
            )
            .await?;
        for r in items {
            if let Record::Lease(mut l) = r.item {
                l.active = false;
                l.updated_at = now;
                purge
                    .writes
                    .push(Write::replace(Record::Lease(l), r.version));
            }
        }
        let target = BackendTarget {
            tenant: owner.tenant.clone(),
            instance_id: owner.id.clone(),
            generation: owner.generation,
        };
        for l in leases {
            let read = self
                .store
                .get_instance_with_bindings(&l.tenant, &l.id, Bindings::All)
                .await?;
            let Some(Versioned {
                item: mut inst,
                version,
            }) = read.instance
            else {
                continue;
            };
            let ours = inst
                .lease
                .as_ref()
                .is_some_and(|lo| lo.owner_tenant == owner.tenant && lo.owner_id == owner.id);
            if !ours || inst.state == InstanceState::Gone {
                continue;
            }
            for b in &read.bindings {
                if b.item.instance_generation != inst.generation {
                    continue;
                }
                match b.item.state {
                    BindingState::Ready => {}
                    BindingState::Creating | BindingState::Deleting => {
                        return Err(BrokerError::Concurrency(format!(
                            "an operation on binding '{}' of lease {} in tenant {} is in progress; retry when it is over",
                            b.item.id, l.id, l.tenant
                        )));
                    }
                    BindingState::CreateFailed | BindingState::Gone => continue,
                }
                let op_id = self.ids.operation_id();
                let job = self.job(
                    OperationKind::Unbind,
                    &op_id,
                    &Target {
                        tenant: &l.tenant,
                        instance_id: &l.id,
                        generation: inst.generation,
                        binding: Some((&b.item.id, b.item.generation)),
                    },
                    &b.item.service_id,
                    &b.item.plan_id,
                    None,
                    now,
                );
                // The purge's unbinds belong to the leaser's binding: never the owner's webhook.
                let unbind_meta = RequestMeta {
                    webhook: None,
                    ..meta.clone()
                };
                let mut op = Operation::start(&job, true, &unbind_meta);
                op.backend_target = Some(target.clone());
                op.description = Some(format!(
                    "unbind: the lease was purged by its owner (instance {} in tenant {})",
                    owner.id, owner.tenant
                ));
                let mut binding = b.item.clone();
                binding.state = BindingState::Deleting;
                binding.last_operation = Some(op_id);
                binding.updated_at = now;
                purge.operations.push(op.key());
                purge
                    .writes
                    .push(Write::replace(Record::Binding(binding), b.version));
                purge.writes.push(Write::create(Record::Operation(op)));
            }
            if let Some(lo) = inst.lease.as_mut() {
                lo.orphaned = true;
            }
            inst.updated_at = now;
            purge
                .writes
                .push(Write::replace(Record::Instance(inst), version));
        }
        Ok(purge)
    }

    /// Sends the purge's unbind operations to the worker.
    pub(in crate::broker) async fn enqueue_all(&self, ops: &[OperationKey]) -> Result<()> {
        for k in ops {
            self.enqueue(k, Duration::ZERO).await?;
        }
        Ok(())
    }
}
