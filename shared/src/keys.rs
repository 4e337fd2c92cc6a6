//! Every storage key, built in one place from typed ids, shared by all store adapters.
//! Layout (one partition per instance, as on DynamoDB):
//! `pk = T#<tenant>#I#<instance>`, `sk = INSTANCE | B#<binding> | O#<operation> | W#<operation>`
//! (`W#`: the webhook callback of that operation).
//! Tenant names (`[a-z0-9_-]`) and ids (RFC 3986 unreserved) never contain `#`.

use crate::ids::{BindingId, InstanceId, OperationId};
use crate::ports::Record;
use crate::records::OperationKey;

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

/// Sparse index of operations in progress: `unfinished_shard = U#<0..UNFINISHED_SHARDS>`.
pub const UNFINISHED_SHARDS: u32 = 4;

/// The shard an unfinished operation is indexed under (spreads writes over a few index partitions).
pub fn unfinished_shard(key: &OperationKey) -> String {
    format!("U#{}", shard_of(key))
}

fn shard_of(key: &OperationKey) -> u32 {
    key.operation_id
        .as_str()
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
        % UNFINISHED_SHARDS
}

/// The shard a callback whose delivery is not final is indexed under (same index, `C#` partitions).
pub fn pending_callback_shard(key: &OperationKey) -> String {
    format!("C#{}", shard_of(key))
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
    }
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
        assert!(unfinished_shard(&key).starts_with("U#"));
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
