//! Maintenance-only access to the table, never on a request path: the `Scan` behind `sealing::reseal`
//! (the operator's one-off re-encryption, run by the worker on an `osb_reseal` invocation). Kept out of
//! `dynamodb.rs`, whose request-path store never scans (scripts/aws/check_template.py checks both).

use super::DynamoStore;
use crate::ports::{MAX_PAGE, RecordKey, StoreError};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

fn key_of(item: &HashMap<String, AttributeValue>) -> Result<RecordKey, StoreError> {
    match (item.get("pk"), item.get("sk")) {
        (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => Ok(RecordKey {
            pk: pk.clone(),
            sk: sk.clone(),
        }),
        _ => Err(StoreError::Corrupt("an item without pk/sk".into())),
    }
}

#[async_trait]
impl crate::sealing::RecordScan for DynamoStore {
    /// One `Scan` page filtered to the kinds, projecting the keys. DynamoDB's scan order is its own, so
    /// `after` is the scan's `ExclusiveStartKey` (the key of the last item it read).
    async fn scan_keys(
        &self,
        kinds: &[&'static str],
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<(Vec<RecordKey>, Option<RecordKey>), StoreError> {
        let (client, table) = self.parts();
        let names: Vec<String> = (0..kinds.len()).map(|n| format!(":k{n}")).collect();
        let mut scan = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .projection_expression("pk, sk")
            .filter_expression(format!("entity IN ({})", names.join(", ")))
            .limit(i32::try_from(limit.clamp(1, MAX_PAGE)).unwrap_or(100));
        for (name, kind) in names.iter().zip(kinds) {
            scan = scan.expression_attribute_values(name, AttributeValue::S((*kind).to_owned()));
        }
        if let Some(k) = after {
            scan = scan
                .exclusive_start_key("pk", AttributeValue::S(k.pk.clone()))
                .exclusive_start_key("sk", AttributeValue::S(k.sk.clone()));
        }
        let out = scan.send().await.map_err(|e| {
            let code = e
                .as_service_error()
                .map(super::error_code)
                .unwrap_or_else(|| "unreachable".into());
            StoreError::Unavailable(format!("DynamoDB Scan failed: {code}"))
        })?;
        let keys = out
            .items
            .unwrap_or_default()
            .iter()
            .map(key_of)
            .collect::<Result<Vec<_>, _>>()?;
        let next = out
            .last_evaluated_key
            .filter(|k| !k.is_empty())
            .map(|k| key_of(&k))
            .transpose()?;
        Ok((keys, next))
    }
}
