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
