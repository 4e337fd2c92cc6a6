//! Sharing use cases (DESIGN §7): leases created on provision (by matching rules or a token), the owner's
//! sharing updates (rules, token, purge), the delete guard and purge, lease deletion, the owner's view on
//! GET, and which backing instance a lease's bindings use. The instance/binding use cases call these
//! through short hooks.

use super::{Broker, MAX_RACE_RETRIES, Reply};
use crate::catalog::{PlanRef, SchemaKind};
use crate::error::{BrokerError, Result};
use crate::ids::InstanceId;
use crate::keys;
use crate::model::Object;
use crate::model::requests::{ProvisionRequest, UpdateRequest};
use crate::model::responses::ProvisionResponse;
use crate::ports::{Bindings, Record, StoreError, Versioned, Write, rfc3339_ms};
use crate::records::{
    BindingState, Instance, InstanceState, Operation, OperationKey, OperationKind, RequestMeta,
};
use crate::sharing::matching::RequestFacts;
use crate::sharing::params::{self, Request};
use crate::sharing::{
    BackendTarget, Lease, LeaseOf, LeaseRef, OwnerSharing, RuleOwner, ShareRules, SharingParams,
    SharingTokenRecord, TokenAction,
};
use crate::tenants::Tenant;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

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

/// How an attempt to create a lease ended.
enum LeaseOutcome {
    Created(Reply<ProvisionResponse>),
    /// Lost a race on a version check: read again.
    Raced,
    /// No candidate really shares with the request (stale rule entries): provision an ordinary instance.
    NoOwner,
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

/// The writes that orphan leases and the unbind operations (one per binding) the worker then runs.
#[derive(Debug, Default)]
pub(super) struct Purge {
    pub writes: Vec<Write>,
    pub operations: Vec<OperationKey>,
}

impl Purge {
    /// Clears the owner's lease list (the owner record is written by the caller).
    pub(super) fn apply_to(&self, owner: &mut Instance) {
        if let Some(s) = owner.sharing.as_mut() {
            s.leases.clear();
        }
    }
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
        InstanceState::Ready | InstanceState::Updating => return Ok(()),
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

/// Refuses a change of `writes` records that one atomic store change (a DynamoDB transaction) cannot hold.
pub(super) fn too_many(writes: usize) -> Result<()> {
    if writes > MAX_WRITES {
        return Err(BrokerError::Unprocessable(format!(
            "this change would touch {writes} records, more than the {MAX_WRITES} one atomic change may hold: purge fewer leases at once"
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

impl Broker {
    // ---------------------------------------------------------------- provision

    /// Splits the sharing keys off a provision and, when the request is a lease request (a sharing
    /// token, or a match of another owner's `sharing_to`), creates the lease.
    pub(super) async fn sharing_on_provision(
        &self,
        tenant: &Tenant,
        id: &InstanceId,
        plan: &PlanRef<'_>,
        mut req: ProvisionRequest,
        meta: &RequestMeta,
    ) -> Result<ProvisionSharing> {
        let params = params::take(&mut req.parameters, Request::Provision)
            .map_err(|e| BrokerError::BadRequest(e.0))?;
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
        for _ in 0..MAX_RACE_RETRIES {
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
                            if o.sets.iter().any(|s| facts.matches(s)) {
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
                return owner(req, params, Some(existing));
            }
            if let Some(hash) = &token_hash {
                let Some(t) = token_owner else {
                    return Err(invalid_token());
                };
                candidates.push((t.owner_tenant, t.owner_id));
                match self
                    .create_lease(
                        tenant,
                        id,
                        plan,
                        &req,
                        existing,
                        candidates,
                        Some(hash),
                        &facts,
                    )
                    .await?
                {
                    LeaseOutcome::Created(reply) => return Ok(ProvisionSharing::Done(reply)),
                    LeaseOutcome::NoOwner => return Err(invalid_token()),
                    LeaseOutcome::Raced => continue,
                }
            }
            if candidates.is_empty() {
                return owner(req, params, Some(existing));
            }
            match self
                .create_lease(
                    tenant,
                    id,
                    plan,
                    &req,
                    existing.clone(),
                    candidates,
                    None,
                    &facts,
                )
                .await?
            {
                LeaseOutcome::Created(reply) => return Ok(ProvisionSharing::Done(reply)),
                LeaseOutcome::NoOwner => return owner(req, params, Some(existing)),
                LeaseOutcome::Raced => continue,
            }
        }
        Err(BrokerError::Concurrency(
            "the shared instance is being changed by another request".into(),
        ))
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
        existing: Option<Versioned<Instance>>,
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
                    ) && s.sharing_to.iter().any(|set| facts.matches(set))
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
            generation: existing.as_ref().map_or(1, |e| e.item.generation + 1),
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
            Write::upsert(
                Record::Instance(instance),
                existing.as_ref().map(|e| e.version),
            ),
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

    /// The sharing state and extra writes of a new owner instance of a shareable offering: a sharing
    /// token, and the rule items of its `sharing_to`. Called in each round of provision.
    pub(super) async fn owner_setup(
        &self,
        tenant: &Tenant,
        id: &InstanceId,
        plan: &PlanRef<'_>,
        params: &SharingParams,
        rules: Option<Vec<Versioned<Record>>>,
        now: i64,
    ) -> Result<Option<(OwnerSharing, Vec<Write>)>> {
        if !plan.shareable() {
            return Ok(None);
        }
        let token = self.sharing.new_token(&tenant.name, id.as_str(), now);
        let mut writes = vec![Write::create(Record::SharingToken(SharingTokenRecord {
            hash: token.hash.clone(),
            owner_tenant: tenant.name.clone(),
            owner_id: id.clone(),
            expires_at: token.expires_at,
        }))];
        let sharing_to = params.sharing_to.clone().unwrap_or_default();
        let mut sharing = OwnerSharing {
            sharing_to,
            token: Some(token),
            purge_leases_on_delete: params.purge_leases_on_delete.unwrap_or(false),
            leases: Vec::new(),
            rule_tenants: BTreeSet::new(),
        };
        writes.extend(
            self.rule_writes(
                tenant,
                id,
                &plan.plan.id,
                &plan.service.id,
                &mut sharing,
                rules,
                now,
            )
            .await?,
        );
        Ok(Some((sharing, writes)))
    }

    /// Rewrites this owner's entries in the rule items of the tenants it shared with before and shares
    /// with now (one read of those items, unless `prefetched` holds them); updates `rule_tenants`.
    #[allow(clippy::too_many_arguments)]
    async fn rule_writes(
        &self,
        tenant: &Tenant,
        id: &InstanceId,
        plan_id: &str,
        service_id: &str,
        sharing: &mut OwnerSharing,
        prefetched: Option<Vec<Versioned<Record>>>,
        now: i64,
    ) -> Result<Vec<Write>> {
        let mut by_tenant: BTreeMap<String, Vec<crate::sharing::ConstraintSet>> = BTreeMap::new();
        for set in &sharing.sharing_to {
            by_tenant
                .entry(set.tenant().to_owned())
                .or_default()
                .push(set.clone());
        }
        let touched: BTreeSet<String> = sharing
            .rule_tenants
            .iter()
            .cloned()
            .chain(by_tenant.keys().cloned())
            .collect();
        if touched.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<_> = touched
            .iter()
            .map(|t| keys::share_rules_key(service_id, t))
            .collect();
        let mut current: BTreeMap<String, Versioned<ShareRules>> = BTreeMap::new();
        let read = match prefetched {
            Some(r) => r,
            None => self.store.get_records(&wanted).await?,
        };
        for r in read {
            if let Record::ShareRules(rules) = r.item {
                current.insert(
                    rules.tenant.clone(),
                    Versioned {
                        item: rules,
                        version: r.version,
                    },
                );
            }
        }
        let mut writes = Vec::new();
        for t in &touched {
            let (mut rules, version) = match current.remove(t) {
                Some(v) => (v.item, Some(v.version)),
                None => (
                    ShareRules {
                        service_id: service_id.to_owned(),
                        tenant: t.clone(),
                        owners: Vec::new(),
                        updated_at: now,
                    },
                    None,
                ),
            };
            rules
                .owners
                .retain(|o| !(o.owner_tenant == tenant.name && &o.owner_id == id));
            if let Some(sets) = by_tenant.get(t) {
                rules.owners.push(RuleOwner {
                    owner_tenant: tenant.name.clone(),
                    owner_id: id.clone(),
                    plan_id: plan_id.to_owned(),
                    sets: sets.clone(),
                });
            }
            if version.is_none() && rules.owners.is_empty() {
                continue;
            }
            rules.updated_at = now;
            writes.push(Write::upsert(Record::ShareRules(rules), version));
        }
        sharing.rule_tenants = by_tenant.into_keys().collect();
        Ok(writes)
    }

    // ---------------------------------------------------------------- update

    /// A lease's update (no plan change, no parameters of its own), or an owner's `x_osb_cmdb` update
    /// (rules, token, purge flag, lease purge), applied at once without a backend call.
    pub(super) async fn sharing_on_update(
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

    /// Orphans `leases` of `owner`: their lease items become inactive, their instances orphaned, and every
    /// ready binding gets an unbind operation that the worker runs on the owner's backing instance.
    async fn purge_plan(
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
                    &super::Target {
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
    pub(super) async fn enqueue_all(&self, ops: &[OperationKey]) -> Result<()> {
        for k in ops {
            self.enqueue(k, Duration::ZERO).await?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- deprovision

    /// A lease is deleted at once (its entry removed from the owner in the same commit); an owner with
    /// leases is refused, or, with `purge_leases_on_delete`, purged in the delete's commit.
    pub(super) async fn sharing_on_deprovision(
        &self,
        cur: &Instance,
        version: u64,
        meta: &RequestMeta,
    ) -> Result<DeleteSharing> {
        let now = self.clock.now_ms();
        if let Some(lease) = &cur.lease {
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
            return match self.store.commit(writes).await {
                Err(StoreError::Conflict) => Ok(DeleteSharing::Retry),
                Err(e) => Err(e.into()),
                Ok(()) => Ok(DeleteSharing::Done(Reply::Ok(()))),
            };
        }
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

    // ---------------------------------------------------------------- reads

    /// GET instance of a lease or an owner: the description of a lease, and the owner's sharing view
    /// under `parameters.x_osb_cmdb` (only the owner's own tenant ever reads its record).
    pub(super) async fn sharing_view(
        &self,
        cur: &Instance,
    ) -> Result<(Option<Object>, Option<String>)> {
        if let Some(lease) = &cur.lease {
            return Ok((cur.parameters.clone(), Some(lease.description())));
        }
        let Some(sharing) = &cur.sharing else {
            return Ok((cur.parameters.clone(), None));
        };
        let mut leases = Vec::new();
        if !sharing.leases.is_empty() {
            let wanted: Vec<_> = sharing
                .leases
                .iter()
                .map(|l| keys::lease_key(&cur.tenant, &cur.id, l))
                .collect();
            let mut items: Vec<Lease> = self
                .store
                .get_records(&wanted)
                .await?
                .into_iter()
                .filter_map(|r| match r.item {
                    Record::Lease(l) if l.active => Some(l),
                    _ => None,
                })
                .collect();
            items.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            for l in items {
                leases.push(json!({
                    "tenant": l.tenant,
                    "profile": l.profile,
                    "org_name": l.org_name,
                    "org_guid": l.org_guid,
                    "space_name": l.space_name,
                    "space_guid": l.space_guid,
                    "namespace": l.namespace,
                    "instance_name": l.instance_name,
                    "instance_guid": l.id,
                    "created_at": rfc3339_ms(l.created_at),
                }));
            }
        }
        let mut view = serde_json::Map::new();
        view.insert("sharing_to".into(), json!(sharing.sharing_to));
        view.insert("leases".into(), Value::Array(leases));
        if let Some(t) = &sharing.token {
            view.insert(
                "sharing_token".into(),
                json!({
                    "token": self.sharing.token(&cur.tenant, cur.id.as_str(), &t.nonce, t.expires_at),
                    "expiration_date": rfc3339_ms(t.expires_at),
                }),
            );
        }
        view.insert(
            "purge_leases_on_delete".into(),
            json!(sharing.purge_leases_on_delete),
        );
        let mut params = cur.parameters.clone().unwrap_or_default();
        params.insert(params::KEY.into(), Value::Object(view));
        Ok((Some(params), None))
    }
}
