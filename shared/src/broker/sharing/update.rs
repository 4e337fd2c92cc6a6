//! Updates on sharing: a lease's update (no plan or parameters of its own), and an owner's `x_osb_cmdb`
//! update (rules, token, purge flag, lease purge), applied at once without a backend call.

use super::purge::Purge;
use super::{UpdateSharing, not_shareable, too_many};
use crate::broker::{Broker, Reply};
use crate::error::{BrokerError, Result};
use crate::model::requests::UpdateRequest;
use crate::model::responses::ProvisionResponse;
use crate::ports::{Record, StoreError, Write};
use crate::records::{Instance, RequestMeta};
use crate::sharing::params::{self, Request};
use crate::sharing::{LeaseRef, SharingTokenRecord, TokenAction};
use crate::tenants::Tenant;

impl Broker {
    /// A lease's update (no plan change, no parameters of its own), or an owner's `x_osb_cmdb` update
    /// (rules, token, purge flag, lease purge), applied at once without a backend call.
    pub(in crate::broker) async fn sharing_on_update(
        &self,
        tenant: &Tenant,
        cur: &Instance,
        version: u64,
        req: &UpdateRequest,
        meta: &RequestMeta,
    ) -> Result<UpdateSharing> {
        let mut parameters = req.parameters.clone();
        let parsed = params::take(&mut parameters, Request::Update);
        if let Some(lease) = &cur.lease {
            if req.plan_id.as_ref().is_some_and(|p| p != &cur.plan_id) {
                return Err(BrokerError::Unprocessable(format!(
                    "a lease cannot change plan: it uses the plan of instance {} in tenant {}",
                    lease.owner_id, lease.owner_tenant
                )));
            }
            if req.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                return Err(BrokerError::Unprocessable(format!(
                    "a lease has no parameters of its own: they are those of instance {} in tenant {}",
                    lease.owner_id, lease.owner_tenant
                )));
            }
            return Ok(UpdateSharing::Done(Reply::Ok(ProvisionResponse::default())));
        }
        let params = parsed.map_err(|e| BrokerError::BadRequest(e.0))?;
        if !params.present {
            return Ok(UpdateSharing::NotSharing);
        }
        self.check_sharing_targets(&params)?;
        let plan = self
            .catalog
            .plan_by_id(&cur.plan_id)
            .ok_or_else(|| BrokerError::Unprocessable("the instance's plan is gone".into()))?;
        if !plan.shareable() {
            return Err(not_shareable(&plan));
        }
        if parameters.as_ref().is_some_and(|p| !p.is_empty())
            || req.plan_id.as_ref().is_some_and(|p| p != &cur.plan_id)
            || req.maintenance_info.is_some()
        {
            return Err(BrokerError::BadRequest(
                "x_osb_cmdb changes are made in an update of their own: no other parameters, plan or maintenance_info change".into(),
            ));
        }
        let now = self.clock.now_ms();
        let mut owner = cur.clone();
        let mut sharing = owner.sharing.take().unwrap_or_default();
        let mut writes = Vec::new();
        if let Some(to) = &params.sharing_to {
            sharing.sharing_to = to.clone();
            let owner_tenant = tenant;
            writes.extend(
                self.rule_writes(
                    owner_tenant,
                    &cur.id,
                    cur.generation,
                    &cur.plan_id,
                    &cur.service_id,
                    &mut sharing,
                    None,
                    now,
                )
                .await?,
            );
        }
        match params.token_action {
            Some(TokenAction::Revoke) => sharing.token = None,
            Some(TokenAction::Regenerate) => {
                let t = self.sharing.new_token(&tenant.name, cur.id.as_str(), now);
                writes.push(Write::create(Record::SharingToken(SharingTokenRecord {
                    hash: t.hash.clone(),
                    owner_tenant: tenant.name.clone(),
                    owner_id: cur.id.clone(),
                    expires_at: t.expires_at,
                })));
                sharing.token = Some(t);
            }
            None => {}
        }
        if let Some(p) = params.purge_leases_on_delete {
            sharing.purge_leases_on_delete = p;
        }
        let mut purge = Purge::default();
        if let Some(keep) = &params.leases {
            for sel in keep {
                let known = sharing.leases.iter().any(|l| {
                    l.id.as_str() == sel.instance_guid
                        && sel.tenant.as_ref().is_none_or(|t| t == &l.tenant)
                });
                if !known {
                    return Err(BrokerError::BadRequest(format!(
                        "unknown lease '{}' in x_osb_cmdb.leases: it is not a current lease of this instance",
                        sel.instance_guid
                    )));
                }
            }
            let (kept, purged): (Vec<LeaseRef>, Vec<LeaseRef>) =
                sharing.leases.iter().cloned().partition(|l| {
                    keep.iter().any(|sel| {
                        l.id.as_str() == sel.instance_guid
                            && sel.tenant.as_ref().is_none_or(|t| t == &l.tenant)
                    })
                });
            if !purged.is_empty() {
                purge = self.purge_plan(cur, &purged, now, meta).await?;
            }
            sharing.leases = kept;
        }
        owner.sharing = Some(sharing);
        owner.updated_at = now;
        writes.push(Write::replace(Record::Instance(owner), version));
        writes.extend(purge.writes);
        too_many(writes.len())?;
        match self.store.commit(writes).await {
            Err(StoreError::Conflict) => return Ok(UpdateSharing::Retry),
            r => r?,
        }
        self.enqueue_all(&purge.operations).await?;
        Ok(UpdateSharing::Done(Reply::Ok(ProvisionResponse::default())))
    }
}
