//! An owner's sharing state: a new owner's token and rules (on provision), and this owner's entries in
//! the rule items of the tenants it shares with (on provision and on update).

use crate::broker::Broker;
use crate::catalog::PlanRef;
use crate::error::{BrokerError, Result};
use crate::ids::InstanceId;
use crate::keys;
use crate::ports::{Record, StoreError, Versioned, Write};
use crate::records::Instance;
use crate::sharing::{OwnerSharing, RuleOwner, ShareRules, SharingParams, SharingTokenRecord};
use crate::tenants::Tenant;
use std::collections::{BTreeMap, BTreeSet};

/// Most owners one rule item (offering, target tenant) holds: past it a new owner's rules are a 422.
pub const MAX_RULE_OWNERS: usize = 100;
/// Largest encoded rule item: well below DynamoDB's 400 KB item limit.
pub const MAX_RULE_ITEM_BYTES: usize = 256 * 1024;

impl Broker {
    /// The sharing state and extra writes of a new owner instance of a shareable offering: a sharing
    /// token, and the rule items of its `sharing_to`. Called in each round of provision.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::broker) async fn owner_setup(
        &self,
        tenant: &Tenant,
        id: &InstanceId,
        generation: u64,
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
                generation,
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
    pub(super) async fn rule_writes(
        &self,
        tenant: &Tenant,
        id: &InstanceId,
        generation: u64,
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
                if rules.owners.len() >= MAX_RULE_OWNERS {
                    return Err(BrokerError::Unprocessable(format!(
                        "tenant '{t}' already has {MAX_RULE_OWNERS} instances of this offering sharing with it, the most the broker keeps: narrow or revoke the sharing_to of others first"
                    )));
                }
                rules.owners.push(RuleOwner {
                    owner_tenant: tenant.name.clone(),
                    owner_id: id.clone(),
                    owner_generation: generation,
                    plan_id: plan_id.to_owned(),
                    sets: sets.clone(),
                });
            }
            if version.is_none() && rules.owners.is_empty() {
                continue;
            }
            rules.updated_at = now;
            let size = serde_json::to_vec(&rules).map_or(usize::MAX, |b| b.len());
            if size > MAX_RULE_ITEM_BYTES {
                return Err(BrokerError::Unprocessable(format!(
                    "the sharing rules of this offering for tenant '{t}' would hold {size} bytes, more than the {MAX_RULE_ITEM_BYTES} the broker keeps: shorten this sharing_to"
                )));
            }
            writes.push(Write::upsert(Record::ShareRules(rules), version));
        }
        sharing.rule_tenants = by_tenant.into_keys().collect();
        Ok(writes)
    }

    /// Removes the entries of an owner that was deleted or whose creation failed from the rule items it
    /// wrote, so they do not grow without bound. Runs after the owner's final commit; a crash in between
    /// leaves entries that lease matching ignores (it re-reads every candidate owner), pruned on the next
    /// delete of that id or rewritten by its next life.
    pub(in crate::broker) async fn prune_owner_rules(&self, owner: &Instance) {
        let Some(sharing) = &owner.sharing else {
            return;
        };
        if sharing.rule_tenants.is_empty() {
            return;
        }
        let wanted: Vec<_> = sharing
            .rule_tenants
            .iter()
            .map(|t| keys::share_rules_key(&owner.service_id, t))
            .collect();
        for _ in 0..4 {
            let outcome = async {
                let mut writes = Vec::new();
                for r in self.store.get_records(&wanted).await? {
                    let Record::ShareRules(mut rules) = r.item else {
                        continue;
                    };
                    let before = rules.owners.len();
                    rules.owners.retain(|o| {
                        !(o.owner_tenant == owner.tenant
                            && o.owner_id == owner.id
                            && (o.owner_generation == owner.generation || o.owner_generation == 0))
                    });
                    if rules.owners.len() != before {
                        rules.updated_at = self.clock.now_ms();
                        writes.push(Write::replace(Record::ShareRules(rules), r.version));
                    }
                }
                if !writes.is_empty() {
                    self.store.commit(writes).await?;
                }
                Ok::<(), StoreError>(())
            }
            .await;
            match outcome {
                Ok(()) => return,
                Err(StoreError::Conflict) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, owner = %owner.id, "could not prune the sharing rules of a deleted owner");
                    return;
                }
            }
        }
        tracing::warn!(owner = %owner.id, "could not prune the sharing rules of a deleted owner: kept losing races");
    }
}
