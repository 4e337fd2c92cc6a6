//! Leases on provision: the sharing keys split off the request, the lease search (a sharing token, or the
//! rule items of the offering and tenant), and the lease's atomic commit with its owner.

use super::{ProvisionSharing, invalid_token, not_shareable};
use crate::broker::{Attempt, Broker, Reply, race_retry};
use crate::catalog::{PlanRef, SchemaKind};
use crate::error::{BrokerError, Result};
use crate::ids::InstanceId;
use crate::keys;
use crate::model::Object;
use crate::model::requests::ProvisionRequest;
use crate::model::responses::ProvisionResponse;
use crate::ports::{Record, StoreError, Versioned, Write};
use crate::records::{Instance, InstanceState, RequestMeta};
use crate::sharing::matching::RequestFacts;
use crate::sharing::params::{self, Request};
use crate::sharing::{Lease, LeaseOf, LeaseRef};
use crate::tenants::{AcceptLeases, Tenant};
use std::collections::{BTreeMap, BTreeSet};

/// What the lease search of a provision found.
#[allow(clippy::large_enum_variant)] // one per provision, never stored
enum Found {
    /// A lease was created: answer this.
    Lease(Reply<ProvisionResponse>),
    /// No lease: provision an ordinary (owner) instance; the id's record as read.
    Owner(Option<Versioned<Instance>>),
}

/// How an attempt to create a lease ended.
enum LeaseOutcome {
    Created(Reply<ProvisionResponse>),
    /// Lost a race on a version check: read again.
    Raced,
    /// No candidate really shares with the request (stale rule entries): provision an ordinary instance.
    NoOwner,
}

fn is_free(existing: &Option<Versioned<Instance>>) -> bool {
    existing.as_ref().is_none_or(|v| {
        matches!(
            v.item.state,
            InstanceState::Gone | InstanceState::CreateFailed
        )
    })
}

fn usable(owner: &Instance) -> Result<()> {
    let why = match owner.state {
        InstanceState::Ready => return Ok(()),
        // An update in flight may change the plan the lease would share.
        InstanceState::Updating => "it is being updated; retry when the update is over",
        InstanceState::Creating => "it is still being provisioned",
        InstanceState::CreateFailed => "its provisioning failed",
        InstanceState::Deleting => "it is being deleted",
        InstanceState::Gone => "it has been deleted",
    };
    Err(BrokerError::Unprocessable(format!(
        "the shared instance {} in tenant {} cannot be leased now: {why}",
        owner.id, owner.tenant
    )))
}

fn ctx_str(ctx: Option<&Object>, key: &str) -> Option<String> {
    ctx.and_then(|c| c.get(key))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

impl Broker {
    /// Splits the sharing keys off a provision and, when the request is a lease request (a sharing
    /// token, or a match of another owner's `sharing_to`), creates the lease.
    pub(in crate::broker) async fn sharing_on_provision(
        &self,
        tenant: &Tenant,
        id: &InstanceId,
        plan: &PlanRef<'_>,
        mut req: ProvisionRequest,
        meta: &RequestMeta,
    ) -> Result<ProvisionSharing> {
        let params = params::take(&mut req.parameters, Request::Provision)
            .map_err(|e| BrokerError::BadRequest(e.0))?;
        self.check_sharing_targets(&params)?;
        let owner = |req, params, prefetched| {
            Ok(ProvisionSharing::Owner {
                req: Box::new(req),
                params,
                prefetched,
                rules: None,
            })
        };
        if !plan.shareable() {
            if params.present || params.token.is_some() {
                return Err(not_shareable(plan));
            }
            return owner(req, params, None);
        }
        if let (Some(sets), None) = (&params.sharing_to, &params.token) {
            // One read: the requested id and the rule items of the tenants it will share with (a new
            // owner's `rule_writes` needs exactly those), so the provision stays within three calls.
            let mut wanted = vec![keys::instance_key(&tenant.name, id)];
            let targets: BTreeSet<&str> = sets.iter().map(|s| s.tenant()).collect();
            wanted.extend(
                targets
                    .into_iter()
                    .map(|t| keys::share_rules_key(&plan.service.id, t)),
            );
            let mut existing = None;
            let mut rules = Vec::new();
            for r in self.store.get_records(&wanted).await? {
                match r.item {
                    Record::Instance(i) => {
                        existing = Some(Versioned {
                            item: i,
                            version: r.version,
                        })
                    }
                    _ => rules.push(r),
                }
            }
            return Ok(ProvisionSharing::Owner {
                req: Box::new(req),
                params,
                prefetched: Some(existing),
                rules: Some(rules),
            });
        }
        if params.token.is_none() && tenant.accept_leases_from == AcceptLeases::None {
            // No tenant's rules may turn this tenant's provisions into leases: an ordinary provision.
            return owner(req, params, None);
        }
        let facts = RequestFacts::of(
            &tenant.name,
            tenant.profile.as_deref(),
            id.as_str(),
            req.context.as_ref(),
            req.organization_guid.as_deref(),
            req.space_guid.as_deref(),
            meta.originating_identity.as_ref(),
        );
        let token_hash = params
            .token
            .as_deref()
            .map(crate::sharing::token::token_hash);
        let found = race_retry("the shared instance", || async {
            // One read: the requested id and the token's lookup item or the (offering, tenant) rule item.
            let lookup = match &token_hash {
                Some(h) => keys::sharing_token_key(h),
                None => keys::share_rules_key(&plan.service.id, &tenant.name),
            };
            let read = self
                .store
                .get_records(&[keys::instance_key(&tenant.name, id), lookup])
                .await?;
            let mut existing = None;
            let mut candidates: Vec<(String, InstanceId)> = Vec::new();
            let mut token_owner = None;
            for r in read {
                match r.item {
                    Record::Instance(i) => {
                        existing = Some(Versioned {
                            item: i,
                            version: r.version,
                        })
                    }
                    Record::ShareRules(rules) => {
                        for o in rules.owners {
                            // Only the rules of tenants this tenant's operator consented to.
                            if tenant.accept_leases_from.accepts(&o.owner_tenant)
                                && o.sets.iter().any(|s| facts.matches(s))
                            {
                                candidates.push((o.owner_tenant, o.owner_id));
                            }
                        }
                    }
                    Record::SharingToken(t) => token_owner = Some(t),
                    _ => {}
                }
            }
            if !is_free(&existing) {
                // The id is taken: provision's idempotency rules answer (a lease re-sent gets 200).
                return Ok(Attempt::Done(Found::Owner(existing)));
            }
            if token_hash.is_some() {
                let Some(t) = token_owner else {
                    return Err(invalid_token());
                };
                candidates.push((t.owner_tenant, t.owner_id));
            } else if candidates.is_empty() {
                return Ok(Attempt::Done(Found::Owner(existing)));
            }
            let outcome = self
                .create_lease(
                    tenant,
                    id,
                    plan,
                    &req,
                    existing.as_ref(),
                    candidates,
                    token_hash.as_deref(),
                    &facts,
                )
                .await?;
            Ok(match outcome {
                LeaseOutcome::Created(reply) => Attempt::Done(Found::Lease(reply)),
                LeaseOutcome::NoOwner if token_hash.is_some() => return Err(invalid_token()),
                LeaseOutcome::NoOwner => Attempt::Done(Found::Owner(existing)),
                LeaseOutcome::Raced => Attempt::Retry,
            })
        })
        .await?;
        match found {
            Found::Lease(reply) => Ok(ProvisionSharing::Done(reply)),
            Found::Owner(existing) => owner(req, params, Some(existing)),
        }
    }

    /// Creates the lease of the one usable owner among `candidates`, in one atomic commit with a version
    /// check on the owner.
    #[allow(clippy::too_many_arguments)]
    async fn create_lease(
        &self,
        tenant: &Tenant,
        id: &InstanceId,
        plan: &PlanRef<'_>,
        req: &ProvisionRequest,
        existing: Option<&Versioned<Instance>>,
        candidates: Vec<(String, InstanceId)>,
        token_hash: Option<&str>,
        facts: &RequestFacts,
    ) -> Result<LeaseOutcome> {
        let now = self.clock.now_ms();
        let me = LeaseRef {
            tenant: tenant.name.clone(),
            id: id.clone(),
        };
        let mut wanted = Vec::new();
        for (t, i) in &candidates {
            wanted.push(keys::instance_key(t, i));
            wanted.push(keys::lease_key(t, i, &me));
        }
        let read = self.store.get_records(&wanted).await?;
        let mut owners: Vec<Versioned<Instance>> = Vec::new();
        let mut lease_items: BTreeMap<(String, String), Versioned<Lease>> = BTreeMap::new();
        for r in read {
            match r.item {
                Record::Instance(i) => owners.push(Versioned {
                    item: i,
                    version: r.version,
                }),
                Record::Lease(l) => {
                    lease_items.insert(
                        (l.owner_tenant.clone(), l.owner_id.to_string()),
                        Versioned {
                            item: l,
                            version: r.version,
                        },
                    );
                }
                _ => {}
            }
        }
        // Keep the owners whose own record still shares with this request (rule items can be stale).
        owners.retain(|o| {
            let Some(s) = &o.item.sharing else {
                return false;
            };
            if o.item.service_id != plan.service.id && token_hash.is_none() {
                return false;
            }
            match token_hash {
                Some(h) => s
                    .token
                    .as_ref()
                    .is_some_and(|t| t.hash == h && t.expires_at > now),
                None => {
                    !matches!(
                        o.item.state,
                        InstanceState::Gone | InstanceState::CreateFailed
                    ) && tenant.accept_leases_from.accepts(&o.item.tenant)
                        && s.sharing_to.iter().any(|set| facts.matches(set))
                }
            }
        });
        if token_hash.is_some() {
            match owners.first() {
                Some(o)
                    if !matches!(
                        o.item.state,
                        InstanceState::Gone | InstanceState::CreateFailed
                    ) => {}
                _ => return Err(invalid_token()),
            }
        }
        let owner = match owners.len() {
            0 => return Ok(LeaseOutcome::NoOwner),
            1 => owners.remove(0),
            _ => {
                // Only the tenants: another tenant's instance ids are not the requester's to know.
                let tenants: BTreeSet<&str> =
                    owners.iter().map(|o| o.item.tenant.as_str()).collect();
                return Err(BrokerError::Conflict(format!(
                    "this provision matches the sharing rules of {} instances, in tenants {}. Ask the owners to narrow their sharing_to, or use a sharing token",
                    owners.len(),
                    tenants.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
        };
        let Versioned {
            item: mut owner,
            version: owner_version,
        } = owner;
        if owner.service_id != plan.service.id {
            let expected = self
                .catalog
                .service(&owner.service_id)
                .map(|s| s.name.clone())
                .unwrap_or_else(|| owner.service_id.clone());
            return Err(BrokerError::BadRequest(format!(
                "a lease must use the service offering of the shared instance: expected service '{expected}' ({})",
                owner.service_id
            )));
        }
        if owner.plan_id != plan.plan.id {
            let expected = self
                .catalog
                .plan_by_id(&owner.plan_id)
                .map(|p| p.plan.name.clone())
                .unwrap_or_else(|| owner.plan_id.clone());
            return Err(BrokerError::BadRequest(format!(
                "a lease must use the plan of the shared instance: expected plan '{expected}' ({})",
                owner.plan_id
            )));
        }
        usable(&owner)?;
        self.validate_parameters(plan, SchemaKind::InstanceCreate, &req.parameters)?;

        let ctx = req.context.as_ref();
        let lease = Lease {
            owner_tenant: owner.tenant.clone(),
            owner_id: owner.id.clone(),
            tenant: tenant.name.clone(),
            id: id.clone(),
            profile: facts.profile.clone(),
            org_name: ctx_str(ctx, "organization_name"),
            org_guid: facts.org_guid.clone(),
            space_name: ctx_str(ctx, "space_name"),
            space_guid: facts.space_guid.clone(),
            namespace: facts.namespace.clone(),
            instance_name: facts.instance_name.clone(),
            created_at: now,
            active: true,
            updated_at: now,
        };
        let lease_version = lease_items
            .get(&(owner.tenant.clone(), owner.id.to_string()))
            .map(|v| v.version);
        let instance = Instance {
            tenant: tenant.name.clone(),
            id: id.clone(),
            generation: crate::broker::pipeline::next_generation(
                existing.map(|e| e.item.generation),
                now,
            ),
            service_id: owner.service_id.clone(),
            plan_id: owner.plan_id.clone(),
            organization_guid: req.organization_guid.clone(),
            space_guid: req.space_guid.clone(),
            context: req.context.clone(),
            parameters: req.parameters.clone(),
            maintenance_info: owner.maintenance_info.clone(),
            dashboard_url: None,
            metadata: None,
            state: InstanceState::Ready,
            last_operation: None,
            provisioned_at: Some(now),
            created_at: now,
            updated_at: now,
            sharing: None,
            lease: Some(LeaseOf {
                owner_tenant: owner.tenant.clone(),
                owner_id: owner.id.clone(),
                owner_generation: owner.generation,
                orphaned: false,
            }),
        };
        if let Some(s) = owner.sharing.as_mut() {
            s.leases.retain(|l| l != &me);
            s.leases.push(me);
        }
        let writes = vec![
            Write::replace(Record::Instance(owner), owner_version),
            Write::upsert(Record::Lease(lease), lease_version),
            Write::upsert(Record::Instance(instance), existing.map(|e| e.version)),
        ];
        match self.store.commit(writes).await {
            Err(StoreError::Conflict) => Ok(LeaseOutcome::Raced),
            Err(e) => Err(e.into()),
            Ok(()) => {
                tracing::info!(tenant = %tenant.name, instance = %id, "lease created");
                Ok(LeaseOutcome::Created(Reply::Created(
                    ProvisionResponse::default(),
                )))
            }
        }
    }
}
