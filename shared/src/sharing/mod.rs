//! Sharing instances across tenants through leases (DESIGN §7): the records an owner, its leases, the
//! sharing rules and the sharing tokens are stored as, and the settings. Parsing of `x_osb_cmdb` is in
//! `params.rs`, constraint matching in `matching.rs`, token crypto in `token.rs`; use cases in `broker/sharing/`.

pub mod matching;
pub mod params;
pub mod token;

use crate::ids::InstanceId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub use params::{ConstraintSet, LeaseSelector, SharingParams, TokenAction};
pub use token::{SharingSettings, TokenKey, TokenKeys};

/// The sharing state of an owner instance (kept in its instance record, version-checked with it).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OwnerSharing {
    /// The constraint sets of UX 1 (canonical keys).
    #[serde(default)]
    pub sharing_to: Vec<ConstraintSet>,
    /// The current sharing token (UX 2), `None` once revoked.
    #[serde(default)]
    pub token: Option<TokenState>,
    #[serde(default)]
    pub purge_leases_on_delete: bool,
    /// The active leases: the authoritative list (their details are in the lease items).
    #[serde(default)]
    pub leases: Vec<LeaseRef>,
    /// Target tenants whose rule item lists this owner (so a later change can remove it).
    #[serde(default)]
    pub rule_tenants: BTreeSet<String>,
}

/// What the owner record keeps of its token: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenState {
    /// Random 128-bit nonce (hex) the token is derived from with the server-side key.
    pub nonce: String,
    /// Unix milliseconds.
    pub expires_at: i64,
    /// Hex SHA-256 of the token: the key of its lookup item.
    pub hash: String,
    /// Id of the key the token was derived with ("" for tokens made before keys had ids).
    #[serde(default)]
    pub key_id: String,
}

/// A lease as the owner record lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseRef {
    pub tenant: String,
    pub id: InstanceId,
}

/// Marks an instance as a lease of an owner instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseOf {
    pub owner_tenant: String,
    pub owner_id: InstanceId,
    /// The owner's life the lease uses (its bindings are made on it).
    #[serde(default = "crate::sharing::first_generation")]
    pub owner_generation: u64,
    /// The owner purged the lease: it no longer gives access to the owner's resources.
    #[serde(default)]
    pub orphaned: bool,
}

impl LeaseOf {
    /// "This is a lease from instance <owner id> in tenant <owner tenant>" (and whether it is orphaned).
    pub fn description(&self) -> String {
        let base = format!(
            "This is a lease from instance {} in tenant {}",
            self.owner_id, self.owner_tenant
        );
        if self.orphaned {
            format!(
                "{base}. The lease is orphaned: the owner revoked it, so it can no longer be bound; unbind and delete it"
            )
        } else {
            base
        }
    }
}

/// The lease item, in the owner's partition: who leases, from where (the owner's view shows it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub owner_tenant: String,
    pub owner_id: InstanceId,
    pub tenant: String,
    pub id: InstanceId,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub org_name: Option<String>,
    #[serde(default)]
    pub org_guid: Option<String>,
    #[serde(default)]
    pub space_name: Option<String>,
    #[serde(default)]
    pub space_guid: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub instance_name: Option<String>,
    pub created_at: i64,
    /// `false` once the lease was purged or deleted (a tombstone; `ttl` on DynamoDB).
    pub active: bool,
    pub updated_at: i64,
}

impl Lease {
    pub fn lease_ref(&self) -> LeaseRef {
        LeaseRef {
            tenant: self.tenant.clone(),
            id: self.id.clone(),
        }
    }
}

/// One owner's constraint sets for one target tenant, inside a rule item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleOwner {
    pub owner_tenant: String,
    pub owner_id: InstanceId,
    /// The life of the owner id that wrote the entry (0: written before generations were kept), so that
    /// pruning the entries of a deleted owner never removes those of a new life of its id.
    #[serde(default)]
    pub owner_generation: u64,
    pub plan_id: String,
    pub sets: Vec<ConstraintSet>,
}

/// The rule item of (offering, target tenant): every owner sharing that offering with that tenant, so
/// lease matching is one key read, never a scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareRules {
    pub service_id: String,
    pub tenant: String,
    #[serde(default)]
    pub owners: Vec<RuleOwner>,
    pub updated_at: i64,
}

/// The lookup item of a sharing token, keyed by the token's SHA-256: a database read yields the
/// owner, never a usable token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharingTokenRecord {
    pub hash: String,
    pub owner_tenant: String,
    pub owner_id: InstanceId,
    pub expires_at: i64,
}

/// The instance a backend job really acts on (a lease's jobs act on its owner's backing instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendTarget {
    pub tenant: String,
    pub instance_id: InstanceId,
    #[serde(default = "crate::sharing::first_generation")]
    pub generation: u64,
}

fn first_generation() -> u64 {
    1
}
