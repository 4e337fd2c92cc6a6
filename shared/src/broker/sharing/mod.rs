//! Sharing use cases (DESIGN §7, docs/design.md "Sharing instances through leases"): the hooks the instance
//! and binding use cases call, what they answer, and the small rules those use cases apply to leases.
//!
//! `provision.rs` leases on provision, `owner.rs` an owner's token and rule items, `update.rs` an owner's
//! `x_osb_cmdb` update, `purge.rs` orphaning leases, `delete.rs` the delete of a lease or owner, `view.rs`
//! the owner's view on GET.

mod delete;
mod owner;
mod provision;
mod purge;
mod update;
mod view;

use super::Reply;
use crate::catalog::PlanRef;
use crate::error::{BrokerError, Result};
use crate::model::requests::ProvisionRequest;
use crate::model::responses::ProvisionResponse;
use crate::ports::{Record, Versioned};
use crate::records::{Instance, Operation};
use crate::sharing::{BackendTarget, SharingParams};
use purge::Purge;

/// Most writes one store change may hold (DynamoDB `TransactWriteItems` takes 100).
const MAX_WRITES: usize = 100;

/// The one answer for a token that is unknown, expired or revoked (it never repeats the token).
fn invalid_token() -> BrokerError {
    BrokerError::BadRequest("the sharing token is invalid, expired or revoked".into())
}

fn not_shareable(plan: &PlanRef<'_>) -> BrokerError {
    BrokerError::BadRequest(format!(
        "service offering '{}' is not shareable (its catalog metadata.shareable is not true): x_osb_cmdb and sharing_token are not accepted",
        plan.service.name
    ))
}

/// What provision does after the sharing hook.
#[allow(clippy::large_enum_variant)] // built once per provision
pub(super) enum ProvisionSharing {
    /// A lease was created (or the request was refused): answer this.
    Done(Reply<ProvisionResponse>),
    /// Provision an ordinary (owner) instance with the sharing keys removed from the request.
    Owner {
        req: Box<ProvisionRequest>,
        params: SharingParams,
        /// The instance record already read, reused by the first round of provision.
        prefetched: Option<Option<Versioned<Instance>>>,
        /// The rule items of the `sharing_to` tenants, read with the instance (first round only).
        rules: Option<Vec<Versioned<Record>>>,
    },
}

/// What update does after the sharing hook.
pub(super) enum UpdateSharing {
    NotSharing,
    Done(Reply<ProvisionResponse>),
    Retry,
}

/// What deprovision does after the sharing hook.
pub(super) enum DeleteSharing {
    NotSharing,
    Done(Reply<()>),
    Retry,
    /// Delete the owner after purging its leases, in the same commit.
    Purge(Purge),
}

impl super::Broker {
    /// `sharing_to` may name only configured tenants (a typo would otherwise share with nobody, or with
    /// a tenant added later that the owner never meant).
    pub(super) fn check_sharing_targets(&self, params: &SharingParams) -> Result<()> {
        let (Some(known), Some(sets)) = (&self.sharing.tenants, &params.sharing_to) else {
            return Ok(());
        };
        match sets.iter().find(|s| !known.contains(s.tenant())) {
            Some(s) => Err(BrokerError::BadRequest(format!(
                "'x_osb_cmdb.sharing_to' names tenant '{}', which is not a tenant of this broker",
                s.tenant()
            ))),
            None => Ok(()),
        }
    }
}

/// Refuses a change of `writes` records that one atomic store change (a DynamoDB transaction) cannot hold.
pub(super) fn too_many(writes: usize) -> Result<()> {
    if writes > MAX_WRITES {
        return Err(BrokerError::Unprocessable(format!(
            "this change would touch {writes} records, more than the {MAX_WRITES} one atomic change may hold: share with fewer tenants or purge fewer leases at once"
        )));
    }
    Ok(())
}

/// A lease's bindings are made and revoked on its owner's backing instance: the job acts there, the
/// operation (and the credentials) stay with the lease.
pub(super) fn target_job(instance: Option<&Instance>, op: &mut Operation) {
    if let Some(lease) = instance.and_then(|i| i.lease.as_ref()) {
        op.backend_target = Some(BackendTarget {
            tenant: lease.owner_tenant.clone(),
            instance_id: lease.owner_id.clone(),
            generation: lease.owner_generation,
        });
    }
}

/// An orphaned lease cannot be bound.
pub(super) fn check_bindable(instance: &Instance) -> Result<()> {
    match &instance.lease {
        Some(l) if l.orphaned => Err(BrokerError::Unprocessable(format!(
            "this lease of instance {} in tenant {} is orphaned: the owner revoked it, so it can no longer be bound",
            l.owner_id, l.owner_tenant
        ))),
        _ => Ok(()),
    }
}
