//! Deletes on sharing: a lease is deleted at once, with its entry in the owner; an owner that still has
//! leases is refused, or, with `purge_leases_on_delete`, purges them in the delete's own commit.

use super::DeleteSharing;
use crate::broker::{Broker, Reply};
use crate::error::{BrokerError, Result};
use crate::keys;
use crate::ports::{Record, StoreError, Versioned, Write};
use crate::records::{Binding, BindingState, Instance, InstanceState, RequestMeta};
use crate::sharing::{LeaseOf, LeaseRef};

impl Broker {
    /// A lease is deleted at once (its entry removed from the owner in the same commit); an owner with
    /// leases is refused, or, with `purge_leases_on_delete`, purged in the delete's commit. `bindings`
    /// are the instance's, read with it.
    pub(in crate::broker) async fn sharing_on_deprovision(
        &self,
        cur: &Instance,
        version: u64,
        bindings: &[Versioned<Binding>],
        meta: &RequestMeta,
    ) -> Result<DeleteSharing> {
        if let Some(lease) = &cur.lease {
            return self.delete_lease(cur, version, lease, bindings).await;
        }
        let now = self.clock.now_ms();
        let Some(sharing) = &cur.sharing else {
            return Ok(DeleteSharing::NotSharing);
        };
        if sharing.leases.is_empty() {
            return Ok(DeleteSharing::NotSharing);
        }
        if !sharing.purge_leases_on_delete {
            let list: Vec<String> = sharing
                .leases
                .iter()
                .map(|l| format!("instance {} in tenant {}", l.id, l.tenant))
                .collect();
            return Err(BrokerError::Unprocessable(format!(
                "service instance can not be deleted as it is still shared with {}. Delete those leases, purge them (update with x_osb_cmdb.leases), or set x_osb_cmdb.purge_leases_on_delete to true",
                list.join(", ")
            )));
        }
        let leases = sharing.leases.clone();
        Ok(DeleteSharing::Purge(
            self.purge_plan(cur, &leases, now, meta).await?,
        ))
    }

    /// Deletes the lease `cur` and its entry in the owner's record in one commit (no backend call).
    async fn delete_lease(
        &self,
        cur: &Instance,
        version: u64,
        lease: &LeaseOf,
        bindings: &[Versioned<Binding>],
    ) -> Result<DeleteSharing> {
        // A lease's bindings hold credentials on the owner's backing instance, which outlives the lease:
        // they must be unbound first, or nothing could revoke them afterwards.
        let bound: Vec<String> = bindings
            .iter()
            .filter(|b| {
                b.item.instance_generation == cur.generation && b.item.state == BindingState::Ready
            })
            .map(|b| b.item.id.to_string())
            .collect();
        if !bound.is_empty() {
            return Err(BrokerError::Unprocessable(format!(
                "this lease still has bindings ({}) whose credentials live on the owner's instance; unbind them first",
                bound.join(", ")
            )));
        }
        let now = self.clock.now_ms();
        let me = LeaseRef {
            tenant: cur.tenant.clone(),
            id: cur.id.clone(),
        };
        let read = self
            .store
            .get_records(&[
                keys::instance_key(&lease.owner_tenant, &lease.owner_id),
                keys::lease_key(&lease.owner_tenant, &lease.owner_id, &me),
            ])
            .await?;
        let mut gone = cur.clone();
        gone.state = InstanceState::Gone;
        gone.updated_at = now;
        let mut writes = vec![Write::replace(Record::Instance(gone), version)];
        for r in read {
            match r.item {
                Record::Instance(mut owner) => {
                    if let Some(s) = owner.sharing.as_mut()
                        && s.leases.contains(&me)
                    {
                        s.leases.retain(|l| l != &me);
                        writes.push(Write::replace(Record::Instance(owner), r.version));
                    }
                }
                Record::Lease(mut l) if l.active => {
                    l.active = false;
                    l.updated_at = now;
                    writes.push(Write::replace(Record::Lease(l), r.version));
                }
                _ => {}
            }
        }
        match self.store.commit(writes).await {
            Err(StoreError::Conflict) => Ok(DeleteSharing::Retry),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(DeleteSharing::Done(Reply::Ok(()))),
        }
    }
}
