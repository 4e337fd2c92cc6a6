//! The store port: tenant-namespaced instances, bindings and operations, read by key and written in
//! atomic, version-checked batches. Every adapter passes `contract::store`.

use crate::ids::{BindingId, InstanceId};
use crate::records::{Binding, Callback, Instance, Operation, OperationKey};
use async_trait::async_trait;

/// A record with the version the store holds it at (1 after creation, +1 per write).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub item: T,
    pub version: u64,
}

/// Which bindings `get_instance_with_bindings` reads.
#[derive(Debug, Clone, Copy)]
pub enum Bindings<'a> {
    All,
    Ids(&'a [BindingId]),
}

/// An instance (if any) and the bindings read with it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstanceWithBindings {
    pub instance: Option<Versioned<Instance>>,
    pub bindings: Vec<Versioned<Binding>>,
}

impl InstanceWithBindings {
    /// The binding with this id, if it was read and exists.
    pub fn binding(&self, id: &BindingId) -> Option<&Versioned<Binding>> {
        self.bindings.iter().find(|b| &b.item.id == id)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Instance(Instance),
    Binding(Binding),
    Operation(Operation),
    Callback(Callback),
    // --- sharing ---
    Lease(crate::sharing::Lease),
    ShareRules(crate::sharing::ShareRules),
    SharingToken(crate::sharing::SharingTokenRecord),
}

/// The key of any stored item (built in `keys.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    pub pk: String,
    pub sk: String,
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The record must not exist.
    Absent,
    /// The record must exist at exactly this version.
    Version(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub record: Record,
    pub expected: Expected,
}

impl Write {
    pub fn create(record: Record) -> Self {
        Write {
            record,
            expected: Expected::Absent,
        }
    }
    pub fn replace(record: Record, version: u64) -> Self {
        Write {
            record,
            expected: Expected::Version(version),
        }
    }
    /// Create when `version` is `None`, else replace that version.
    pub fn upsert(record: Record, version: Option<u64>) -> Self {
        match version {
            None => Write::create(record),
            Some(v) => Write::replace(record, v),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum StoreError {
    /// A write's expectation did not hold: someone else changed the record first. Nothing was written.
    #[error("the record was changed concurrently")]
    Conflict,
    /// The store could not be reached or failed; the request may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be decoded.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait Store: Send + Sync {
    async fn get_instance(
        &self,
        tenant: &str,
        id: &InstanceId,
    ) -> Result<Option<Versioned<Instance>>, StoreError>;

    async fn get_binding(
        &self,
        tenant: &str,
        instance_id: &InstanceId,
        id: &BindingId,
    ) -> Result<Option<Versioned<Binding>>, StoreError>;

    /// The instance and some or all of its binding records (any generation, any state), in one read:
    /// bindings that do not exist are left out.
    async fn get_instance_with_bindings(
        &self,
        tenant: &str,
        instance_id: &InstanceId,
        which: Bindings<'_>,
    ) -> Result<InstanceWithBindings, StoreError>;

    async fn get_operation(
        &self,
        key: &OperationKey,
    ) -> Result<Option<Versioned<Operation>>, StoreError>;

    /// Applies all writes or none. `Conflict` when any expectation fails.
    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError>;

    /// Sharing: the records under these keys, in one read (DynamoDB `BatchGetItem`); absent ones are
    /// left out, order is not kept.
    async fn get_records(&self, keys: &[RecordKey]) -> Result<Vec<Versioned<Record>>, StoreError>;

    /// Keys of operations still in progress (used to resume work after a restart).
    async fn unfinished_operations(&self) -> Result<Vec<OperationKey>, StoreError>;

    /// The webhook callback of an operation (`key` is the operation's key).
    async fn get_callback(
        &self,
        key: &OperationKey,
    ) -> Result<Option<Versioned<Callback>>, StoreError>;

    /// Keys of callbacks whose delivery is not final (resumed after a restart, re-driven by the sweep).
    async fn pending_callbacks(&self) -> Result<Vec<OperationKey>, StoreError>;
}
