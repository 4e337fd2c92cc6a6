//! The DynamoDB store: one table, generic `pk`/`sk` keys from `keys.rs`, an `entity` attribute on every
//! item, a `version` checked by every write's condition, `TransactWriteItems` for multi-item batches,
//! `ttl` on finished operations and tombstones, and a sparse `unfinished` index. No Scan.
//!
//! The SDK retries transient failures by itself, also of a write that did commit (its response lost):
//! each transaction carries its own `ClientRequestToken`, and a single `PutItem` whose retry fails its
//! condition compares the item it finds with the one it wrote (`put_one`).
//!
//! The record itself is one JSON string attribute (`body`): platform-supplied JSON (parameters,
//! context) may hold what DynamoDB maps cannot (empty keys, numbers beyond 38 digits). Its secret fields
//! are sealed (`sealing`, with the store's `Sealer`: KMS data keys on AWS) before it is written.

use crate::ids::{BindingId, InstanceId};
use crate::keys;
use crate::ports::sealer::Sealer;
use crate::ports::{
    Bindings, Cursor, Expected, InstanceWithBindings, InventoryCursor, InventoryPage,
    InventoryQuery, KeyPage, MAX_PAGE, Record, RecordKey, Store, StoreError, Versioned, Write,
};
use crate::records::{
    Binding, BindingState, Callback, Instance, InstanceState, Operation, OperationKey,
    OperationState,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::{BoxError, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, KeysAndAttributes, Projection, ProjectionType, Put,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TransactWriteItem,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Name of the sparse index of operations in progress.
pub const UNFINISHED_INDEX: &str = "unfinished";

/// Name of the operator's inventory index (by tenant and kind, in update order; all attributes).
pub const INVENTORY_INDEX: &str = "inventory";

/// How long finished operations and deleted resources (tombstones) are kept: 30 days.
pub const RETENTION_SECS: i64 = 30 * 24 * 3600;

/// The stored shape of every item.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Item {
    pk: String,
    sk: String,
    entity: String,
    version: u64,
    body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unfinished_shard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inv_part: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inv_sort: Option<String>,
}

#[derive(Debug, Deserialize)]
struct KeyOnly {
    pk: String,
    sk: String,
}

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    sealer: Arc<dyn Sealer>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, code: String) -> StoreError {
    StoreError::Unavailable(format!("DynamoDB {what} failed: {code}"))
}

fn sdk_code<E, R>(e: &SdkError<E, R>) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    match e {
        SdkError::ServiceError(s) => super::error_code(s.err()),
        SdkError::TimeoutError(_) => "timeout".into(),
        SdkError::DispatchFailure(_) => "dispatch failure".into(),
        SdkError::ResponseError(_) => "unreadable response".into(),
        SdkError::ConstructionFailure(_) => "request construction failure".into(),
        _ => "unknown".into(),
    }
}

fn ttl_of(record: &Record) -> Option<i64> {
    let finished_at = match record {
        Record::Operation(o) if o.state != OperationState::InProgress => o.updated_at,
        Record::Instance(i) if i.state == InstanceState::Gone => i.updated_at,
        Record::Binding(b) if b.state == BindingState::Gone => b.updated_at,
        Record::Callback(c) if c.state.is_final() => c.updated_at,
        // sharing: purged/deleted lease entries, and tokens once expired (never rewritten)
        Record::Lease(l) if !l.active => l.updated_at,
        Record::SharingToken(t) => return Some(t.expires_at / 1000 + 24 * 3600),
        _ => return None,
    };
    Some(finished_at / 1000 + RETENTION_SECS)
}

async fn to_item(
    record: &Record,
    version: u64,
    sealer: &dyn Sealer,
) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let (pk, sk, entity) = keys::record_key(record);
    let body = String::from_utf8(crate::sealing::encode(record, sealer).await?)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let unfinished_shard = keys::index_shard(record);
    let (inv_part, inv_sort) = keys::inventory_key(record).unzip();
    let item = Item {
        pk,
        sk,
        entity: entity.to_owned(),
        version,
        body,
        ttl: ttl_of(record),
        unfinished_shard,
        inv_part,
        inv_sort,
    };
    serde_dynamo::to_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
}

async fn from_item<T: DeserializeOwned>(
    item: HashMap<String, AttributeValue>,
    sealer: &dyn Sealer,
) -> Result<Versioned<T>, StoreError> {
    let item: Item =
        serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let record = crate::sealing::decode(&item.pk, &item.sk, item.body.as_bytes(), sealer).await?;
    Ok(Versioned {
        item: record,
        version: item.version,
    })
}

impl DynamoStore {
    /// The store on `table`; secret fields are sealed with `sealer`.
    pub fn new(client: Client, table: impl Into<String>, sealer: Arc<dyn Sealer>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            sealer,
        }
    }

    /// The client and table name (for the maintenance scan in `aws::maintenance`).
    pub(crate) fn parts(&self) -> (&Client, &str) {
        (&self.client, &self.table)
    }

    /// Creates the table from the code's own key definition (tests, local endpoints). On AWS the SAM
    /// template creates the same table.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
        };
        let built = (|| -> Result<_, aws_sdk_dynamodb::error::BuildError> {
            Ok((
                vec![
                    attr("pk")?,
                    attr("sk")?,
                    attr("unfinished_shard")?,
                    attr("inv_part")?,
                    attr("inv_sort")?,
                ],
                vec![key("pk", KeyType::Hash)?, key("sk", KeyType::Range)?],
                vec![
                    GlobalSecondaryIndex::builder()
                        .index_name(UNFINISHED_INDEX)
                        .key_schema(key("unfinished_shard", KeyType::Hash)?)
                        .key_schema(key("sk", KeyType::Range)?)
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::KeysOnly)
                                .build(),
                        )
                        .build()?,
                    GlobalSecondaryIndex::builder()
                        .index_name(INVENTORY_INDEX)
                        .key_schema(key("inv_part", KeyType::Hash)?)
                        .key_schema(key("inv_sort", KeyType::Range)?)
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::All)
                                .build(),
                        )
                        .build()?,
                ],
            ))
        })()
        .map_err(|e| StoreError::Unavailable(format!("cannot describe the table: {e}")))?;
        let (attrs, keys, gsi) = built;
        self.client
            .create_table()
            .table_name(&self.table)
            .set_attribute_definitions(Some(attrs))
            .set_key_schema(Some(keys))
            .set_global_secondary_indexes(Some(gsi))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| unavailable("CreateTable", sdk_code(&e)))?;
        Ok(())
    }

    async fn get<T: DeserializeOwned>(
        &self,
        pk: String,
        sk: String,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk))
            .key("sk", AttributeValue::S(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", sdk_code(&e)))?;
        match out.item {
            Some(item) => Ok(Some(from_item(item, self.sealer.as_ref()).await?)),
            None => Ok(None),
        }
    }

    /// The items at these `(pk, sk)` keys that exist: consistent `BatchGetItem`s of at most 100 keys, each
    /// retried for its unprocessed keys (a few times, then `Unavailable`).
    async fn batch_get(
        &self,
        wanted: &[(String, String)],
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut items = Vec::new();
        for chunk in wanted.chunks(100) {
            let keys_and_attributes = KeysAndAttributes::builder()
                .set_keys(Some(
                    chunk
                        .iter()
                        .map(|(pk, sk)| {
                            HashMap::from([
                                ("pk".to_owned(), AttributeValue::S(pk.clone())),
                                ("sk".to_owned(), AttributeValue::S(sk.clone())),
                            ])
                        })
                        .collect(),
                ))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Unavailable(format!("cannot build the read: {e}")))?;
            let mut request = Some(HashMap::from([(self.table.clone(), keys_and_attributes)]));
            for _ in 0..5 {
                let Some(req) = request.take().filter(|r| !r.is_empty()) else {
                    break;
                };
                let out = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(req))
                    .send()
                    .await
                    .map_err(|e| unavailable("BatchGetItem", sdk_code(&e)))?;
                if let Some(mut responses) = out.responses {
                    items.extend(responses.remove(&self.table).unwrap_or_default());
                }
                request = out.unprocessed_keys;
            }
            if request.is_some_and(|r| !r.is_empty()) {
                return Err(unavailable("BatchGetItem", "unprocessed keys".into()));
            }
        }
        Ok(items)
    }

    /// A single write: a conditional `PutItem`. PutItem takes no idempotency token, so a condition
    /// failure returns the current item (no extra call); when the SDK retried the call and that item is
    /// exactly the one written (keys, version, body, ttl, index shard), an earlier attempt of this call
    /// committed it (its response was lost) and the write is done, not a lost race.
    async fn put_one(&self, write: &Write) -> Result<(), StoreError> {
        let c = Conditional::of(write, self.sealer.as_ref()).await?;
        let written = c.item.clone();
        let attempts = Attempts::default();
        let sent = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(c.item))
            .condition_expression(c.condition)
            .set_expression_attribute_values(c.values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    if attempts.retried() && same_item(failed.item(), written) {
                        Ok(())
                    } else {
                        Err(StoreError::Conflict)
                    }
                }
                _ => Err(unavailable("PutItem", sdk_code(&e))),
            },
        }
    }

    async fn put(&self, write: &Write) -> Result<Put, StoreError> {
        let c = Conditional::of(write, self.sealer.as_ref()).await?;
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(c.item))
            .condition_expression(c.condition)
            .set_expression_attribute_values(c.values)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot build the write: {e}")))
    }
}

/// A fresh `ClientRequestToken` for one `TransactWriteItems` call: 128 random bits as 32 hex digits (the
/// API takes 1 to 36 characters; a token is remembered for 10 minutes).
fn request_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Whether the item DynamoDB holds (returned by a failed condition) is the one this write put.
fn same_item(
    current: Option<&HashMap<String, AttributeValue>>,
    written: HashMap<String, AttributeValue>,
) -> bool {
    let (Some(current), Ok(written)) = (current, serde_dynamo::from_item::<_, Item>(written))
    else {
        return false;
    };
    serde_dynamo::from_item::<_, Item>(current.clone()).is_ok_and(|current| current == written)
}

/// Counts the attempts of one SDK call: the SDK retries timeouts, lost connections, 5xx and throttling
/// by itself, so a condition failure on a later attempt may be an earlier attempt's own success.
#[derive(Clone, Debug, Default)]
struct Attempts(Arc<AtomicU32>);

impl Attempts {
    fn retried(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 1
    }
}

impl Intercept for Attempts {
    fn name(&self) -> &'static str {
        "DynamoStoreAttempts"
    }

    fn read_before_attempt(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A write as DynamoDB sees it: the item at its next version and the condition on the current one.
struct Conditional {
    item: HashMap<String, AttributeValue>,
    condition: &'static str,
    values: Option<HashMap<String, AttributeValue>>,
}

impl Conditional {
    async fn of(write: &Write, sealer: &dyn Sealer) -> Result<Self, StoreError> {
        Ok(match write.expected {
            Expected::Absent => Conditional {
                item: to_item(&write.record, 1, sealer).await?,
                condition: "attribute_not_exists(pk)",
                values: None,
            },
            Expected::Version(v) => Conditional {
                item: to_item(&write.record, v + 1, sealer).await?,
                condition: "version = :expected",
                values: Some(HashMap::from([(
                    ":expected".to_owned(),
                    AttributeValue::N(v.to_string()),
                )])),
            },
        })
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn get_instance(
        &self,
        tenant: &str,
        id: &InstanceId,
    ) -> Result<Option<Versioned<Instance>>, StoreError> {
        self.get(keys::instance_pk(tenant, id), keys::SK_INSTANCE.into())
            .await
    }

    async fn get_binding(
        &self,
        tenant: &str,
        instance_id: &InstanceId,
        id: &BindingId,
    ) -> Result<Option<Versioned<Binding>>, StoreError> {
        self.get(keys::instance_pk(tenant, instance_id), keys::binding_sk(id))
            .await
    }

    async fn get_instance_with_bindings(
        &self,
        tenant: &str,
        instance_id: &InstanceId,
        which: Bindings<'_>,
    ) -> Result<InstanceWithBindings, StoreError> {
        let pk = keys::instance_pk(tenant, instance_id);
        let mut items = Vec::new();
        match which {
            // 'B#…' < 'INSTANCE': the instance and all its bindings are one key range, one Query.
            Bindings::All => {
                let mut start = None;
                loop {
                    let page = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("pk = :pk AND sk BETWEEN :first AND :last")
                        .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                        .expression_attribute_values(
                            ":first",
                            AttributeValue::S(keys::SK_BINDING_PREFIX.into()),
                        )
                        .expression_attribute_values(
                            ":last",
                            AttributeValue::S(keys::SK_INSTANCE.into()),
                        )
                        .consistent_read(true)
                        .set_exclusive_start_key(start)
                        .send()
                        .await
                        .map_err(|e| unavailable("Query", sdk_code(&e)))?;
                    items.extend(page.items.unwrap_or_default());
                    match page.last_evaluated_key {
                        Some(k) if !k.is_empty() => start = Some(k),
                        _ => break,
                    }
                }
            }
            // The instance and the named bindings: one BatchGetItem (plus retries of unprocessed keys).
            Bindings::Ids(ids) => {
                let wanted: Vec<(String, String)> =
                    std::iter::once((pk.clone(), keys::SK_INSTANCE.to_owned()))
                        .chain(ids.iter().map(|id| (pk.clone(), keys::binding_sk(id))))
                        .collect();
                items = self.batch_get(&wanted).await?;
            }
        }
        let mut out = InstanceWithBindings::default();
        for item in items {
            let is_instance =
                matches!(item.get("sk"), Some(AttributeValue::S(sk)) if sk == keys::SK_INSTANCE);
            if is_instance {
                out.instance = Some(from_item(item, self.sealer.as_ref()).await?);
            } else {
                out.bindings
                    .push(from_item(item, self.sealer.as_ref()).await?);
            }
        }
        Ok(out)
    }

    async fn get_operation(
        &self,
        key: &OperationKey,
    ) -> Result<Option<Versioned<Operation>>, StoreError> {
        let (pk, sk) = keys::operation_key(key);
        self.get(pk, sk).await
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        match writes.as_slice() {
            [] => Ok(()),
            [single] => self.put_one(single).await,
            many => {
                let mut items = Vec::with_capacity(many.len());
                for w in many {
                    items.push(TransactWriteItem::builder().put(self.put(w).await?).build());
                }
                match self
                    .client
                    .transact_write_items()
                    .set_transact_items(Some(items))
                    // One token per commit, sent again by the SDK's own retries of this call: DynamoDB
                    // answers a repeat of a transaction that did commit (response lost, timeout) with
                    // success instead of running it again, whose version conditions would fail and read as
                    // a Conflict. (Left unset, the SDK's idempotency interceptor fills one in from the
                    // client's token provider; set here, it does not depend on how the client is built.)
                    .client_request_token(request_token())
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) => Err(classify_transaction_error(e)),
                }
            }
        }
    }

    async fn get_records(
        &self,
        wanted: &[RecordKey],
    ) -> Result<Vec<Versioned<Record>>, StoreError> {
        let mut out = Vec::new();
        let mut unique: Vec<&RecordKey> = Vec::new();
        for k in wanted {
            if !unique.contains(&k) {
                unique.push(k);
            }
        }
        let wanted: Vec<(String, String)> = unique
            .iter()
            .map(|k| (k.pk.clone(), k.sk.clone()))
            .collect();
        for item in self.batch_get(&wanted).await? {
            let item: Item =
                serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push(Versioned {
                item: crate::sealing::decode_record(
                    &item.entity,
                    &item.pk,
                    &item.sk,
                    item.body.as_bytes(),
                    self.sealer.as_ref(),
                )
                .await?,
                version: item.version,
            });
        }
        Ok(out)
    }

    async fn inventory(&self, query: &InventoryQuery) -> Result<InventoryPage, StoreError> {
        // BETWEEN is inclusive: no key equals the window's end or "~"; the previous page's last key is
        // read again and dropped.
        let crate::ports::store::InventoryRange {
            part,
            lo,
            hi,
            after_is_hi,
        } = query.range();
        let after = after_is_hi.then(|| hi.clone());
        let limit = query.limit.clamp(1, MAX_PAGE);
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(INVENTORY_INDEX)
            .key_condition_expression("inv_part = :p AND inv_sort BETWEEN :lo AND :hi")
            .expression_attribute_values(":p", AttributeValue::S(part))
            .expression_attribute_values(":lo", AttributeValue::S(lo))
            .expression_attribute_values(":hi", AttributeValue::S(hi))
            .scan_index_forward(false)
            .limit(i32::try_from(limit + usize::from(after.is_some())).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| unavailable("Query", sdk_code(&e)))?;
        let mut more = out.last_evaluated_key.is_some_and(|k| !k.is_empty());
        let mut page = InventoryPage::default();
        let mut last = None;
        for item in out.items.unwrap_or_default() {
            let item: Item =
                serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if item.inv_sort.is_some() && item.inv_sort == after {
                continue;
            }
            let record = crate::sealing::decode_record(
                &item.entity,
                &item.pk,
                &item.sk,
                item.body.as_bytes(),
                self.sealer.as_ref(),
            )
            .await?;
            page.records.push(Versioned {
                item: record,
                version: item.version,
            });
            last = item.inv_sort;
            if page.records.len() == limit {
                more = true;
                break;
            }
        }
        if more {
            page.next = last.map(InventoryCursor).or(query.after.clone());
        }
        Ok(page)
    }

    async fn unfinished_operations(
        &self,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<KeyPage, StoreError> {
        self.indexed_keys(
            keys::UNFINISHED_OPERATIONS,
            keys::parse_operation_key,
            from,
            limit,
        )
        .await
    }

    async fn get_callback(
        &self,
        key: &OperationKey,
    ) -> Result<Option<Versioned<Callback>>, StoreError> {
        let (pk, sk) = keys::callback_key(key);
        self.get(pk, sk).await
    }

    async fn pending_callbacks(
        &self,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<KeyPage, StoreError> {
        self.indexed_keys(
            keys::PENDING_CALLBACKS,
            keys::parse_callback_key,
            from,
            limit,
        )
        .await
    }
}

impl DynamoStore {
    /// One page of the keys in the sparse `unfinished` index under one family of shards: `Query`s of the
    /// shards in turn (`Limit` = what the page still lacks), from the cursor's shard and
    /// `ExclusiveStartKey`; the cursor says where the last `Query` stopped.
    async fn indexed_keys(
        &self,
        family: &str,
        parse: fn(&str, &str) -> Option<OperationKey>,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<KeyPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let (mut shard, mut after) = from.map_or((0, None), |c| (c.shard, c.after.clone()));
        let mut page = KeyPage::default();
        while shard < keys::UNFINISHED_SHARDS {
            let shard_key = format!("{family}{shard}");
            // A GSI's start key: the index key (`unfinished_shard`, `sk`) and the table key (`pk`, `sk`).
            let start = after.take().map(|k: RecordKey| {
                HashMap::from([
                    (
                        "unfinished_shard".to_owned(),
                        AttributeValue::S(shard_key.clone()),
                    ),
                    ("pk".to_owned(), AttributeValue::S(k.pk)),
                    ("sk".to_owned(), AttributeValue::S(k.sk)),
                ])
            });
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(UNFINISHED_INDEX)
                .key_condition_expression("unfinished_shard = :s")
                .expression_attribute_values(":s", AttributeValue::S(shard_key))
                .set_exclusive_start_key(start)
                .limit(i32::try_from(limit - page.keys.len()).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(|e| unavailable("Query", sdk_code(&e)))?;
            for item in out.items.unwrap_or_default() {
                let k: KeyOnly = serde_dynamo::from_item(item)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                page.keys.extend(parse(&k.pk, &k.sk));
            }
            match out.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(last) => {
                    let k: KeyOnly = serde_dynamo::from_item(last)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    after = Some(RecordKey { pk: k.pk, sk: k.sk });
                }
                None => shard += 1,
            }
            if page.keys.len() >= limit {
                break;
            }
        }
        if shard < keys::UNFINISHED_SHARDS {
            page.next = Some(Cursor { shard, after });
        }
        Ok(page)
    }
}

/// A cancelled transaction whose reasons are condition failures or conflicts with another transaction
/// is a `Conflict` (the domain re-reads and decides); anything else is retryable unavailability.
fn classify_transaction_error<R>(e: SdkError<TransactWriteItemsError, R>) -> StoreError {
    if let SdkError::ServiceError(s) = &e
        && let TransactWriteItemsError::TransactionCanceledException(c) = s.err()
    {
        {
            let conflict = c.cancellation_reasons().iter().any(|r| {
                matches!(
                    r.code(),
                    Some("ConditionalCheckFailed") | Some("TransactionConflict")
                )
            });
            let other_failure = c.cancellation_reasons().iter().any(|r| {
                !matches!(
                    r.code(),
                    None | Some("None")
                        | Some("ConditionalCheckFailed")
                        | Some("TransactionConflict")
                )
            });
            if conflict && !other_failure {
                return StoreError::Conflict;
            }
        }
    }
    unavailable("TransactWriteItems", sdk_code(&e))
}
