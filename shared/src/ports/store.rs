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
    /// The version the record has once this write is committed.
    pub fn new_version(&self) -> u64 {
        match self.expected {
            Expected::Absent => 1,
            Expected::Version(v) => v + 1,
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

/// Most keys one page of an index listing (`unfinished_operations`, `pending_callbacks`) holds.
pub const MAX_PAGE: usize = 1000;

/// Where an index listing goes on: made by the adapter that returned the page, handed back unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The index partition the listing is in (DynamoDB's `unfinished` shards; always 0 in SQLite).
    pub(crate) shard: u32,
    /// The last item read in that partition; `None`: from its beginning.
    pub(crate) after: Option<RecordKey>,
}

/// One page of an index listing, in the index's order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyPage {
    pub keys: Vec<OperationKey>,
    /// Where the next page starts; `None` once the listing is complete. A page may hold fewer than
    /// `limit` keys, even none, and still have a next one.
    pub next: Option<Cursor>,
}

/// Which of a tenant's records an inventory listing reads (`Store::inventory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InventoryKind {
    Instances,
    Bindings,
    Operations,
    Callbacks,
    /// Lease entries on the tenant's instances (leases other tenants hold on them).
    LeaseEntries,
}

impl InventoryKind {
    /// The record kind stored for it (`keys::KIND_*`).
    pub fn record_kind(self) -> &'static str {
        match self {
            InventoryKind::Instances => crate::keys::KIND_INSTANCE,
            InventoryKind::Bindings => crate::keys::KIND_BINDING,
            InventoryKind::Operations => crate::keys::KIND_OPERATION,
            InventoryKind::Callbacks => crate::keys::KIND_CALLBACK,
            InventoryKind::LeaseEntries => crate::keys::KIND_LEASE,
        }
    }
}

/// One page of the operator's inventory: a tenant's records of one kind, most recently updated first,
/// optionally within a window of update times.
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryQuery {
    pub tenant: String,
    pub kind: InventoryKind,
    /// Only records last updated at or after this time (ms).
    pub updated_since: Option<i64>,
    /// Only records last updated before this time (ms).
    pub updated_before: Option<i64>,
    /// Where the previous page ended (its `next`).
    pub after: Option<InventoryCursor>,
    /// Most records of the page (clamped to `1..=MAX_PAGE`).
    pub limit: usize,
}

/// The index keys one inventory page reads: partition `part`, sort keys from `lo` (inclusive) to `hi`
/// (exclusive; `hi` is the previous page's last key when `after_is_hi`, else a bound no key equals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryRange {
    pub part: String,
    pub lo: String,
    pub hi: String,
    pub after_is_hi: bool,
}

impl InventoryQuery {
    /// The key range of this page, the same for every store.
    pub fn range(&self) -> InventoryRange {
        let part = crate::keys::inventory_partition(&self.tenant, self.kind.record_kind());
        let lo = crate::keys::inventory_time(self.updated_since.unwrap_or(0));
        let end = self
            .updated_before
            .map(crate::keys::inventory_time)
            .unwrap_or_else(|| "~".into());
        match &self.after {
            Some(after) if after.0 < end => InventoryRange {
                part,
                lo,
                hi: after.0.clone(),
                after_is_hi: true,
            },
            _ => InventoryRange {
                part,
                lo,
                hi: end,
                after_is_hi: false,
            },
        }
    }
}

/// Where an inventory listing goes on: the index sort key of the last record read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryCursor(pub(crate) String);

impl InventoryCursor {
    /// The cursor as text, to hand to a client and back (`parse`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A cursor a client handed back: it must look like an inventory sort key.
    pub fn parse(text: &str) -> Option<Self> {
        let (time, rest) = text.split_once('#')?;
        (time.len() == 15 && time.bytes().all(|b| b.is_ascii_digit()) && rest.starts_with("T#"))
            .then(|| InventoryCursor(text.to_owned()))
    }
}

/// A page of the inventory, newest update first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InventoryPage {
    pub records: Vec<Versioned<Record>>,
    /// Where the next page starts; `None` once the listing is complete.
    pub next: Option<InventoryCursor>,
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

    /// One page of the keys of operations still in progress (the sweep; resuming after a restart):
    /// at most `limit` keys (clamped to `1..=MAX_PAGE`), starting where `from` says (`None`: the
    /// beginning). Keys finished meanwhile drop out; keys touched meanwhile are not listed twice.
    async fn unfinished_operations(
        &self,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<KeyPage, StoreError>;

    /// The webhook callback of an operation (`key` is the operation's key).
    async fn get_callback(
        &self,
        key: &OperationKey,
    ) -> Result<Option<Versioned<Callback>>, StoreError>;

    /// One page of the keys of callbacks whose delivery is not final (re-driven by the sweep, resumed
    /// after a restart); paged like `unfinished_operations`.
    async fn pending_callbacks(
        &self,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<KeyPage, StoreError>;

    /// The operator's inventory (admin API): one page of a tenant's records of one kind, most recently
    /// updated first, through an index by tenant (DynamoDB GSI `inventory`, SQLite `items_inventory`;
    /// one `Query` per page, never a Scan). A page may hold fewer than `limit` records and still have a
    /// next one.
    async fn inventory(&self, query: &InventoryQuery) -> Result<InventoryPage, StoreError>;
}
