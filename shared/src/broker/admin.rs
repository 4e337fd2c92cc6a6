//! The operator's view (admin API): what each tenant has, read through the store's inventory index, and
//! the re-drive of one stuck operation or one webhook callback. Admin credentials are the operator's
//! own, never a tenant's. Views never hold credentials, binding results, webhook secrets or bodies, or
//! sharing tokens; a webhook destination is shown redacted (scheme, host and port).

use super::Broker;
use crate::error::{BrokerError, Result};
use crate::ids::{InstanceId, OperationId};
use crate::ports::{InventoryCursor, InventoryKind, InventoryQuery, Record, Versioned, Write};
use crate::records::{AttemptRecord, CallbackState, OperationKey};
use crate::tenants::Secret;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Largest page an admin listing returns.
pub const MAX_ADMIN_PAGE: usize = 500;
/// The page size when the request names none.
pub const DEFAULT_ADMIN_PAGE: usize = 100;

/// The operator's credentials (HTTP Basic), kept as a digest and compared in constant time.
pub struct AdminCredentials {
    digest: [u8; 32],
    username: String,
}

impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn digest(username: &[u8], password: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"osb-admin\0");
    h.update((username.len() as u64).to_be_bytes());
    h.update(username);
    h.update(password);
    h.finalize().into()
}

/// The admin credentials cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AdminConfigError {
    #[error("admin: the username must not be empty")]
    EmptyUsername,
    #[error("admin: the password must have at least 16 characters")]
    ShortPassword,
    #[error("admin: the credentials are also a tenant's; the operator's must be their own")]
    TenantCredentials,
}

impl AdminCredentials {
    /// Checks the credentials against the tenants': the admin username is nobody else's.
    pub fn new(
        username: &str,
        password: &Secret,
        tenants: &crate::tenants::Tenants,
    ) -> std::result::Result<Self, AdminConfigError> {
        if username.is_empty() {
            return Err(AdminConfigError::EmptyUsername);
        }
        if password.expose().chars().count() < 16 {
            return Err(AdminConfigError::ShortPassword);
        }
        if tenants
            .authenticate(username.as_bytes(), password.expose().as_bytes())
            .is_some()
        {
            return Err(AdminConfigError::TenantCredentials);
        }
        Ok(AdminCredentials {
            digest: digest(username.as_bytes(), password.expose().as_bytes()),
            username: username.to_owned(),
        })
    }

    pub fn verify(&self, username: &[u8], password: &[u8]) -> bool {
        bool::from(self.digest.ct_eq(&digest(username, password)))
    }

    pub fn username(&self) -> &str {
        &self.username
    }
}

/// What a listing reads: a kind of the inventory, and for leases which direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Instances,
    Bindings,
    Operations,
    Callbacks,
    /// Leases other tenants hold on this tenant's instances.
    LeasesGiven,
    /// This tenant's instances that are leases on another tenant's instance.
    LeasesHeld,
}

impl Listing {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "instances" => Listing::Instances,
            "bindings" => Listing::Bindings,
            "operations" => Listing::Operations,
            "callbacks" => Listing::Callbacks,
            "leases" | "leases_given" => Listing::LeasesGiven,
            "leases_held" => Listing::LeasesHeld,
            _ => return None,
        })
    }

    fn kind(self) -> InventoryKind {
        match self {
            Listing::Instances | Listing::LeasesHeld => InventoryKind::Instances,
            Listing::Bindings => InventoryKind::Bindings,
            Listing::Operations => InventoryKind::Operations,
            Listing::Callbacks => InventoryKind::Callbacks,
            Listing::LeasesGiven => InventoryKind::LeaseEntries,
        }
    }

    /// The states a `state` filter may name for this listing.
    pub fn states(self) -> &'static [&'static str] {
        match self {
            Listing::Instances | Listing::LeasesHeld => &[
                "creating", "ready", "updating", "deleting", "failed", "gone",
            ],
            Listing::Bindings => &["creating", "ready", "deleting", "failed", "gone"],
            Listing::Operations => &["in_progress", "succeeded", "failed"],
            Listing::Callbacks => &[
                "pending",
                "sending",
                "retrying",
                "delivered",
                "gone",
                "blocked",
                "too_large",
                "gave_up",
            ],
            Listing::LeasesGiven => &["active", "inactive"],
        }
    }
}

/// A listing request: which tenant and records, optional state filter and time window (ms), paging.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRequest {
    pub tenant: String,
    pub listing: Listing,
    /// Keep only records in one of these states (empty: all).
    pub states: Vec<String>,
    pub updated_since: Option<i64>,
    pub updated_before: Option<i64>,
    pub cursor: Option<InventoryCursor>,
    pub limit: usize,
}

/// One page of views (JSON objects), newest update first; `next` continues the listing. A page may hold
/// fewer items than asked for (the state filter dropped some) and still have a next one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListPage {
    pub items: Vec<Value>,
    #[serde(skip)]
    pub next: Option<InventoryCursor>,
}

fn time(ms: i64) -> Value {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or(Value::Null, Value::String)
}

fn state_name<S: Serialize>(s: &S) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn attempt_view(a: &AttemptRecord) -> Value {
    serde_json::json!({
        "number": a.number,
        "started_at": time(a.started_at),
        "duration_ms": a.duration_ms,
        "outcome": a.outcome,
        "status": a.status,
        "remote_ip": a.remote_ip,
        "retry_after_secs": a.retry_after_secs,
        "next_attempt_at": a.next_attempt_at.map(time),
    })
}

/// The view of one record and its state's name; `None` for a record the listing does not show.
fn view(record: &Versioned<Record>, listing: Listing) -> Option<(String, Value)> {
    use serde_json::json;
    let v = record.version;
    Some(match (&record.item, listing) {
        (Record::Instance(i), Listing::Instances | Listing::LeasesHeld) => {
            if listing == Listing::LeasesHeld && i.lease.is_none() {
                return None;
            }
            let state = state_name(&i.state);
            let view = json!({
                "tenant": i.tenant,
                "instance_id": i.id.as_str(),
                "generation": i.generation,
                "state": state,
                "service_id": i.service_id,
                "plan_id": i.plan_id,
                "organization_guid": i.organization_guid,
                "space_guid": i.space_guid,
                "last_operation": i.last_operation.as_ref().map(OperationId::as_str),
                "created_at": time(i.created_at),
                "updated_at": time(i.updated_at),
                "provisioned_at": i.provisioned_at.map(time),
                "lease_of": i.lease.as_ref().map(|l| json!({
                    "owner_tenant": l.owner_tenant,
                    "owner_instance_id": l.owner_id.as_str(),
                    "owner_generation": l.owner_generation,
                    "orphaned": l.orphaned,
                })),
                "sharing": i.sharing.as_ref().map(|s| json!({
                    "leases": s.leases.len(),
                    "sharing_to_sets": s.sharing_to.len(),
                    "token_issued": s.token.is_some(),
                    "purge_leases_on_delete": s.purge_leases_on_delete,
                })),
                "version": v,
            });
            (state, view)
        }
        (Record::Binding(b), Listing::Bindings) => {
            let state = state_name(&b.state);
            let view = json!({
                "tenant": b.tenant,
                "instance_id": b.instance_id.as_str(),
                "binding_id": b.id.as_str(),
                "generation": b.generation,
                "state": state,
                "service_id": b.service_id,
                "plan_id": b.plan_id,
                "app_guid": b.app_guid,
                "last_operation": b.last_operation.as_ref().map(OperationId::as_str),
                "created_at": time(b.created_at),
                "updated_at": time(b.updated_at),
                "version": v,
            });
            (state, view)
        }
        (Record::Operation(o), Listing::Operations) => {
            let state = state_name(&o.state);
            let view = json!({
                "tenant": o.tenant,
                "instance_id": o.instance_id.as_str(),
                "binding_id": o.binding_id.as_ref().map(|b| b.as_str()),
                "operation_id": o.id.as_str(),
                "kind": state_name(&o.kind),
                "state": state,
                "asynchronous": o.asynchronous,
                "description": o.description,
                "service_id": o.service_id,
                "plan_id": o.plan_id,
                "deadline": o.deadline.map(time),
                "compensation_pending": o.compensation_pending,
                "webhook": o.webhook.is_some(),
                "created_at": time(o.created_at),
                "updated_at": time(o.updated_at),
                "version": v,
            });
            (state, view)
        }
        (Record::Callback(c), Listing::Callbacks) => {
            let state = c.state.as_str().to_owned();
            let view = json!({
                "tenant": c.tenant,
                "instance_id": c.instance_id.as_str(),
                "binding_id": c.binding_id.as_ref().map(|b| b.as_str()),
                "operation_id": c.operation_id.as_str(),
                "kind": state_name(&c.kind),
                "destination": crate::webhooks::policy::redacted(&c.url),
                "state": state,
                "outcome": state_name(&c.outcome),
                "status": c.status,
                "attempts": c.attempts.iter().map(attempt_view).collect::<Vec<_>>(),
                "next_attempt_at": (!c.state.is_final()).then(|| time(c.next_attempt_at)),
                "created_at": time(c.created_at),
                "updated_at": time(c.updated_at),
                "version": v,
            });
            (state, view)
        }
        (Record::Lease(l), Listing::LeasesGiven) => {
            let state = if l.active { "active" } else { "inactive" }.to_owned();
            let view = json!({
                "owner_tenant": l.owner_tenant,
                "owner_instance_id": l.owner_id.as_str(),
                "tenant": l.tenant,
                "instance_id": l.id.as_str(),
                "state": state,
                "profile": l.profile,
                "org_guid": l.org_guid,
                "space_guid": l.space_guid,
                "namespace": l.namespace,
                "created_at": time(l.created_at),
                "updated_at": time(l.updated_at),
                "version": v,
            });
            (state, view)
        }
        _ => return None,
    })
}

/// What a re-drive did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Redriven {
    /// The operation's message was sent again: the worker takes its next step now.
    Operation,
    /// The callback is due now and its message was sent again.
    Callback,
}

impl Broker {
    /// One page of a tenant's records as the operator sees them (one store read per page).
    pub async fn admin_list(&self, req: &ListRequest) -> Result<ListPage> {
        for s in &req.states {
            if !req.listing.states().contains(&s.as_str()) {
                return Err(BrokerError::BadRequest(format!(
                    "state '{s}' is not one of {}",
                    req.listing.states().join(", ")
                )));
            }
        }
        let page = self
            .store
            .inventory(&InventoryQuery {
                tenant: req.tenant.clone(),
                kind: req.listing.kind(),
                updated_since: req.updated_since,
                updated_before: req.updated_before,
                after: req.cursor.clone(),
                limit: req.limit.clamp(1, MAX_ADMIN_PAGE),
            })
            .await?;
        let items = page
            .records
            .iter()
            .filter_map(|r| view(r, req.listing))
            .filter(|(state, _)| req.states.is_empty() || req.states.contains(state))
            .map(|(_, v)| v)
            .collect();
        Ok(ListPage {
            items,
            next: page.next,
        })
    }

    /// Sends a stuck operation's message again now, whatever its timers say: after a version-checked
    /// touch, like the sweep's re-drive. A finished operation (without a pending undo) is refused (409).
    pub async fn admin_redrive_operation(&self, key: &OperationKey) -> Result<Redriven> {
        let Some(op) = self.store.get_operation(key).await? else {
            return Err(BrokerError::NotFound("no such operation".into()));
        };
        if op.item.is_final() && !op.item.compensation_pending {
            return Err(BrokerError::Conflict(format!(
                "the operation is {}: nothing to re-drive",
                state_name(&op.item.state)
            )));
        }
        let mut touched = op.item.clone();
        touched.updated_at = self.clock.now_ms();
        self.store
            .commit(vec![Write::replace(Record::Operation(touched), op.version)])
            .await?;
        tracing::warn!(operation = %key.operation_id, tenant = %key.tenant, "operation re-driven by the operator");
        self.enqueue(key, std::time::Duration::ZERO).await?;
        Ok(Redriven::Operation)
    }

    /// Makes a callback that is waiting, or whose delivery gave up, due now and sends its message again:
    /// one more attempt (a given-up callback gives up again if it fails). Delivered callbacks and those
    /// that can never be delivered (gone, blocked, too large) are refused (409).
    pub async fn admin_redrive_callback(&self, key: &OperationKey) -> Result<Redriven> {
        let Some(cb) = self.store.get_callback(key).await? else {
            return Err(BrokerError::NotFound("no such callback".into()));
        };
        let redrivable = matches!(
            cb.item.state,
            CallbackState::Pending | CallbackState::Retrying | CallbackState::Sending
        ) || (cb.item.state == CallbackState::GaveUp
            && cb.item.secret.is_some()
            && cb.item.body.is_some());
        if !redrivable {
            return Err(BrokerError::Conflict(format!(
                "the callback is {}: nothing to re-drive",
                cb.item.state.as_str()
            )));
        }
        let now = self.clock.now_ms();
        let mut touched = cb.item.clone();
        if touched.state == CallbackState::GaveUp {
            touched.state = CallbackState::Retrying;
        }
        touched.next_attempt_at = now;
        touched.lease_until = None;
        touched.updated_at = now;
        self.store
            .commit(vec![Write::replace(Record::Callback(touched), cb.version)])
            .await?;
        tracing::warn!(operation = %key.operation_id, tenant = %key.tenant, "webhook callback re-driven by the operator");
        self.enqueue_callback(key, std::time::Duration::ZERO)
            .await?;
        Ok(Redriven::Callback)
    }
}

/// The key of one operation (or its callback) named in an admin path.
pub fn operation_key(tenant: &str, instance: &str, operation: &str) -> Result<OperationKey> {
    let bad = |what: &str| BrokerError::BadRequest(format!("invalid {what}"));
    Ok(OperationKey {
        tenant: tenant.to_owned(),
        instance_id: InstanceId::parse(instance).map_err(|_| bad("instance id"))?,
        operation_id: OperationId::parse(operation).map_err(|_| bad("operation id"))?,
    })
}
