//! Every storage key, built in one place from typed ids, shared by all store adapters.
//! Layout (one partition per instance, as on DynamoDB):
//! `pk = T#<tenant>#I#<instance>`, `sk = INSTANCE | B#<binding> | O#<operation>`.
//! Tenant names (`[a-z0-9_-]`) and ids (RFC 3986 unreserved) never contain `#`.

use crate::ids::{BindingId, InstanceId, OperationId};
use crate::ports::Record;
use crate::records::OperationKey;

pub const SK_INSTANCE: &str = "INSTANCE";
pub const SK_BINDING_PREFIX: &str = "B#";
pub const SK_OPERATION_PREFIX: &str = "O#";

/// Entity-type attribute stored with every item.
pub const KIND_INSTANCE: &str = "instance";
pub const KIND_BINDING: &str = "binding";
pub const KIND_OPERATION: &str = "operation";

pub fn instance_pk(tenant: &str, instance: &InstanceId) -> String {
    format!("T#{tenant}#I#{instance}")
}

pub fn binding_sk(binding: &BindingId) -> String {
    format!("{SK_BINDING_PREFIX}{binding}")
}

pub fn operation_sk(op: &OperationId) -> String {
    format!("{SK_OPERATION_PREFIX}{op}")
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
    let h = key
        .operation_id
        .as_str()
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    format!("U#{}", h % UNFINISHED_SHARDS)
}

/// The operation key back from an operation item's `(pk, sk)`.
pub fn parse_operation_key(pk: &str, sk: &str) -> Option<OperationKey> {
    let rest = pk.strip_prefix("T#")?;
    let (tenant, instance) = rest.split_once("#I#")?;
    let op = sk.strip_prefix(SK_OPERATION_PREFIX)?;
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
    }
}
