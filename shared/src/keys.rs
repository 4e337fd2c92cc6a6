//! Every storage key, built in one place from typed ids, shared by all store adapters.
//! Layout (one partition per instance, as on DynamoDB):
//! `pk = T#<tenant>#I#<instance>`, `sk = INSTANCE | B#<binding> | O#<operation> | W#<operation> |
//! L#<lease tenant>#<lease>` (`W#`: the webhook callback of that operation); sharing rules
//! `SHARE#<service>#T#<tenant>`/`RULES` and tokens `STOKEN#<sha-256>`/`TOKEN`.
//! Tenant names (`[a-z0-9_-]`) and ids (RFC 3986 unreserved) never contain `#`.

use crate::ids::{BindingId, InstanceId, OperationId};
use crate::ports::{Record, RecordKey};
use crate::records::{OperationKey, OperationState};
use crate::sharing::LeaseRef;

pub const SK_INSTANCE: &str = "INSTANCE";
pub const SK_BINDING_PREFIX: &str = "B#";
pub const SK_OPERATION_PREFIX: &str = "O#";
pub const SK_CALLBACK_PREFIX: &str = "W#";

/// Entity-type attribute stored with every item.
pub const KIND_INSTANCE: &str = "instance";
pub const KIND_BINDING: &str = "binding";
pub const KIND_OPERATION: &str = "operation";
pub const KIND_CALLBACK: &str = "callback";

pub fn instance_pk(tenant: &str, instance: &InstanceId) -> String {
    format!("T#{tenant}#I#{instance}")
}

pub fn binding_sk(binding: &BindingId) -> String {
    format!("{SK_BINDING_PREFIX}{binding}")
}

pub fn operation_sk(op: &OperationId) -> String {
    format!("{SK_OPERATION_PREFIX}{op}")
}

pub fn callback_sk(op: &OperationId) -> String {
    format!("{SK_CALLBACK_PREFIX}{op}")
}

/// `(pk, sk)` of the webhook callback of an operation.
pub fn callback_key(key: &OperationKey) -> (String, String) {
    (
        instance_pk(&key.tenant, &key.instance_id),
        callback_sk(&key.operation_id),
    )
}

pub fn operation_key(key: &OperationKey) -> (String, String) {
    (
        instance_pk(&key.tenant, &key.instance_id),
        operation_sk(&key.operation_id),
    )
}

// --- sharing (DESIGN §7, §8) ---
/// A lease item, in the owner's partition: `L#<lease tenant>#<lease instance>`.
pub const SK_LEASE_PREFIX: &str = "L#";
/// The rule item of (offering, target tenant): `pk = SHARE#<service_id>#T#<tenant>`, `sk = RULES`.
pub const SK_RULES: &str = "RULES";
/// The lookup item of a sharing token: `pk = STOKEN#<hex sha-256 of the token>`, `sk = TOKEN`.
pub const SK_TOKEN: &str = "TOKEN";
pub const KIND_LEASE: &str = "lease";
pub const KIND_SHARE_RULES: &str = "share_rules";
pub const KIND_SHARING_TOKEN: &str = "sharing_token";

pub fn lease_sk(lease_tenant: &str, lease_id: &InstanceId) -> String {
    format!("{SK_LEASE_PREFIX}{lease_tenant}#{lease_id}")
}

pub fn share_rules_pk(service_id: &str, tenant: &str) -> String {
    format!("SHARE#{service_id}#T#{tenant}")
}

pub fn sharing_token_pk(hash: &str) -> String {
    format!("STOKEN#{hash}")
}

pub fn instance_key(tenant: &str, id: &InstanceId) -> RecordKey {
    RecordKey {
        pk: instance_pk(tenant, id),
        sk: SK_INSTANCE.into(),
    }
}

pub fn lease_key(owner_tenant: &str, owner_id: &InstanceId, lease: &LeaseRef) -> RecordKey {
    RecordKey {
        pk: instance_pk(owner_tenant, owner_id),
        sk: lease_sk(&lease.tenant, &lease.id),
    }
}

pub fn share_rules_key(service_id: &str, tenant: &str) -> RecordKey {
    RecordKey {
        pk: share_rules_pk(service_id, tenant),
        sk: SK_RULES.into(),
    }
}

pub fn sharing_token_key(hash: &str) -> RecordKey {
    RecordKey {
        pk: sharing_token_pk(hash),
        sk: SK_TOKEN.into(),
    }
}

/// Decodes a stored record body by its entity kind (what `get_records` returns).
pub fn decode_record(kind: &str, body: &[u8]) -> Result<Record, String> {
    let e = |e: serde_json::Error| e.to_string();
    Ok(match kind {
        KIND_INSTANCE => Record::Instance(serde_json::from_slice(body).map_err(e)?),
        KIND_BINDING => Record::Binding(serde_json::from_slice(body).map_err(e)?),
        KIND_OPERATION => Record::Operation(serde_json::from_slice(body).map_err(e)?),
        KIND_CALLBACK => Record::Callback(serde_json::from_slice(body).map_err(e)?),
        KIND_LEASE => Record::Lease(serde_json::from_slice(body).map_err(e)?),
        KIND_SHARE_RULES => Record::ShareRules(serde_json::from_slice(body).map_err(e)?),
        KIND_SHARING_TOKEN => Record::SharingToken(serde_json::from_slice(body).map_err(e)?),
        other => return Err(format!("unknown entity kind '{other}'")),
    })
}

/// The record as stored (JSON).
pub fn encode_record(record: &Record) -> Result<Vec<u8>, String> {
    match record {
        Record::Instance(i) => serde_json::to_vec(i),
        Record::Binding(b) => serde_json::to_vec(b),
        Record::Operation(o) => serde_json::to_vec(o),
        Record::Callback(c) => serde_json::to_vec(c),
        Record::Lease(l) => serde_json::to_vec(l),
        Record::ShareRules(r) => serde_json::to_vec(r),
        Record::SharingToken(t) => serde_json::to_vec(t),
    }
    .map_err(|e| e.to_string())
}

/// The record as JSON (what `sealing` seals the secret fields of before storing).
pub fn record_value(record: &Record) -> Result<serde_json::Value, String> {
    match record {
        Record::Instance(i) => serde_json::to_value(i),
        Record::Binding(b) => serde_json::to_value(b),
        Record::Operation(o) => serde_json::to_value(o),
        Record::Callback(c) => serde_json::to_value(c),
        Record::Lease(l) => serde_json::to_value(l),
        Record::ShareRules(r) => serde_json::to_value(r),
        Record::SharingToken(t) => serde_json::to_value(t),
    }
    .map_err(|e| e.to_string())
}

/// Sparse index of operations in progress: `unfinished_shard = U#<0..UNFINISHED_SHARDS>`.
pub const UNFINISHED_SHARDS: u32 = 4;

/// Index family of operations in progress (`U#0`..).
pub const UNFINISHED_OPERATIONS: &str = "U#";
/// Index family of callbacks whose delivery is not final (`C#0`..).
pub const PENDING_CALLBACKS: &str = "C#";

/// The one rule of what the sparse `unfinished` index holds, shared by both stores: the shard of an
/// operation in progress or of a callback not yet final (spread over a few index partitions), `None` for
/// everything else.
pub fn index_shard(record: &Record) -> Option<String> {
    let (family, key) = match record {
        Record::Operation(o) if o.state == OperationState::InProgress || o.compensation_pending => {
            (UNFINISHED_OPERATIONS, o.key())
        }
        Record::Callback(c) if !c.state.is_final() => (PENDING_CALLBACKS, c.key()),
        _ => return None,
    };
    Some(format!("{family}{}", shard_of(&key)))
}

fn shard_of(key: &OperationKey) -> u32 {
    key.operation_id
        .as_str()
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
        % UNFINISHED_SHARDS
}

/// The index partitions of each family: `U#n` operations in progress, `C#n` callbacks not final.
pub fn unfinished_shards(prefix: &str) -> impl Iterator<Item = String> + '_ {
    (0..UNFINISHED_SHARDS).map(move |n| format!("{prefix}{n}"))
}

/// The operation key back from an operation item's `(pk, sk)`.
pub fn parse_operation_key(pk: &str, sk: &str) -> Option<OperationKey> {
    parse_key(pk, sk, SK_OPERATION_PREFIX)
}

/// The operation key back from a callback item's `(pk, sk)`.
pub fn parse_callback_key(pk: &str, sk: &str) -> Option<OperationKey> {
    parse_key(pk, sk, SK_CALLBACK_PREFIX)
}

fn parse_key(pk: &str, sk: &str, prefix: &str) -> Option<OperationKey> {
    let rest = pk.strip_prefix("T#")?;
    let (tenant, instance) = rest.split_once("#I#")?;
    let op = sk.strip_prefix(prefix)?;
    Some(OperationKey {
        tenant: tenant.to_owned(),
        instance_id: InstanceId::parse(instance).ok()?,
        operation_id: OperationId::parse(op).ok()?,
    })
}

/// `(pk, sk, entity kind)` of a record.
pub fn record_key(record: &Record) -> (String, String, &'static str) {
    match record {
        Record::Instance(i) => (
            instance_pk(&i.tenant, &i.id),
            SK_INSTANCE.into(),
            KIND_INSTANCE,
        ),
        Record::Binding(b) => (
            instance_pk(&b.tenant, &b.instance_id),
            binding_sk(&b.id),
            KIND_BINDING,
        ),
        Record::Operation(o) => (
            instance_pk(&o.tenant, &o.instance_id),
            operation_sk(&o.id),
            KIND_OPERATION,
        ),
        Record::Callback(c) => (
            instance_pk(&c.tenant, &c.instance_id),
            callback_sk(&c.operation_id),
            KIND_CALLBACK,
        ),
        Record::Lease(l) => (
            instance_pk(&l.owner_tenant, &l.owner_id),
            lease_sk(&l.tenant, &l.id),
            KIND_LEASE,
        ),
        Record::ShareRules(r) => (
            share_rules_pk(&r.service_id, &r.tenant),
            SK_RULES.into(),
            KIND_SHARE_RULES,
        ),
        Record::SharingToken(t) => (
            sharing_token_pk(&t.hash),
            SK_TOKEN.into(),
            KIND_SHARING_TOKEN,
        ),
    }
}

/// The operator's inventory index of a record (`Store::inventory`): partition `T#<tenant>#<kind>`
/// and sort key `<updated_at in ms, 15 digits>#<pk>#<sk>`, so a partition lists in update order and a
/// time window is a key range. Instances, bindings, operations and callbacks are under their tenant;
/// lease entries under the owner's tenant (leases *from* the owner; a lease instance is an instance of
/// its own tenant with `lease` set). Rule and token items are not in the inventory.
pub fn inventory_key(record: &Record) -> Option<(String, String)> {
    let (tenant, updated_at) = match record {
        Record::Instance(i) => (&i.tenant, i.updated_at),
        Record::Binding(b) => (&b.tenant, b.updated_at),
        Record::Operation(o) => (&o.tenant, o.updated_at),
        Record::Callback(c) => (&c.tenant, c.updated_at),
        Record::Lease(l) => (&l.owner_tenant, l.updated_at),
        Record::ShareRules(_) | Record::SharingToken(_) => return None,
    };
    let (pk, sk, kind) = record_key(record);
    Some((
        inventory_partition(tenant, kind),
        format!("{}#{pk}#{sk}", inventory_time(updated_at)),
    ))
}

/// The inventory partition of a tenant's records of one kind.
pub fn inventory_partition(tenant: &str, kind: &str) -> String {
    format!("T#{tenant}#{kind}")
}

/// A time (ms) as the inventory sort key's prefix: every sort key of a record updated before `t`
/// is less than `inventory_time(t)`, every one updated at or after it is greater.
pub fn inventory_time(t: i64) -> String {
    format!("{:015}", t.clamp(0, 999_999_999_999_999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_keys_round_trip() {
        let key = OperationKey {
            tenant: "cf-1".into(),
            instance_id: InstanceId::parse("i-1.a").expect("id"),
            operation_id: OperationId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").expect("id"),
        };
        let (pk, sk) = operation_key(&key);
        assert_eq!(pk, "T#cf-1#I#i-1.a");
        assert_eq!(parse_operation_key(&pk, &sk), Some(key.clone()));
        assert!(shard_of(&key) < UNFINISHED_SHARDS);
        assert_eq!(parse_operation_key(&pk, "B#x"), None);
        let (cpk, csk) = callback_key(&key);
        assert_eq!(
            (cpk.as_str(), csk.as_str()),
            ("T#cf-1#I#i-1.a", "W#01ARZ3NDEKTSV4RRFFQ69G5FAV")
        );
        assert_eq!(parse_callback_key(&cpk, &csk), Some(key.clone()));
        assert_eq!(parse_operation_key(&cpk, &csk), None);
    }
}
