//! The DynamoDB store when the SDK retries a write that did commit (its response lost, a timeout, a 5xx
//! after the commit): the commit reports success, not a `Conflict` (which the domain would read as a lost
//! race). An interceptor on the client turns the first response of one operation into a 500, which the SDK
//! retries on its own.
//!
//! moto (5.2.5) ignores `ClientRequestToken`: it runs a repeated `TransactWriteItems` again. So the
//! interceptor also plays DynamoDB's side of the token: a transaction carrying the token of one that
//! committed is answered with success (DynamoDB does so, without running it again, for 10 minutes).
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use osb_broker::aws::DynamoStore;
use osb_broker::aws::testing::{moto, unique_name};
use osb_broker::contract::store::{instance, operation};
use osb_broker::ids::InstanceId;
use osb_broker::ports::{Record, Store, StoreError, Write};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TRANSACT: &str = "DynamoDB_20120810.TransactWriteItems";
const PUT: &str = "DynamoDB_20120810.PutItem";

#[derive(Debug, Default)]
struct Script {
    /// The operation (`x-amz-target`) whose next response, whatever it is, becomes a retryable 500.
    lose_next: Option<&'static str>,
    /// Remove `ClientRequestToken` from every transaction sent (what the store did before it set one).
    strip_tokens: bool,
    /// The token of every `TransactWriteItems` attempt, in order.
    tokens: Vec<Option<String>>,
    /// Tokens of transactions that moto committed.
    committed: HashSet<String>,
    /// The attempt in flight: its operation and token.
    in_flight: Option<(String, Option<String>)>,
}

#[derive(Clone, Debug, Default)]
struct Faults(Arc<Mutex<Script>>);

impl Faults {
    fn lose_next_response_of(&self, target: &'static str) {
        self.0.lock().unwrap().lose_next = Some(target);
    }
    fn tokens(&self) -> Vec<Option<String>> {
        std::mem::take(&mut self.0.lock().unwrap().tokens)
    }
}

impl Intercept for Faults {
    fn name(&self) -> &'static str {
        "Faults"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let mut script = self.0.lock().unwrap();
        let request = context.request_mut();
        let target = request
            .headers()
            .get("x-amz-target")
            .unwrap_or_default()
            .to_owned();
        let mut token = None;
        if target == TRANSACT {
            let mut body: serde_json::Value =
                serde_json::from_slice(request.body().bytes().expect("an in-memory body"))?;
            if script.strip_tokens {
                body.as_object_mut()
                    .and_then(|b| b.remove("ClientRequestToken"));
                let bytes = serde_json::to_vec(&body)?;
                request
                    .headers_mut()
                    .insert("content-length", bytes.len().to_string());
                *request.body_mut() = bytes.into();
            }
            token = body["ClientRequestToken"].as_str().map(str::to_owned);
            script.tokens.push(token.clone());
        }
        script.in_flight = Some((target, token));
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let mut script = self.0.lock().unwrap();
        let (target, token) = script.in_flight.take().unwrap_or_default();
        let response = context.response_mut();
        if target == TRANSACT
            && let Some(token) = token
        {
            if response.status().is_success() {
                script.committed.insert(token);
            } else if script.committed.contains(&token) {
                // DynamoDB: the repeat of a committed transaction succeeds without running again.
                *response.status_mut() = 200.try_into()?;
                response.headers_mut().remove("x-amz-crc32");
                *response.body_mut() = "{}".into();
            }
        }
        if script.lose_next == Some(target.as_str()) {
            script.lose_next = None;
            *response.status_mut() = 500.try_into()?;
            response.headers_mut().remove("x-amz-crc32");
            *response.body_mut() =
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected"}"#
                    .into();
        }
        Ok(())
    }
}

async fn store() -> (DynamoStore, Faults) {
    let sdk = moto().sdk_config().await;
    let faults = Faults::default();
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(10)),
            )
            .interceptor(faults.clone())
            .build(),
    );
    let sealer = osb_broker::aws::testing::kms_sealer(&sdk).await;
    let store = DynamoStore::new(client, unique_name("osb"), sealer);
    store.create_table().await.expect("create table");
    (store, faults)
}

fn iid(s: &str) -> InstanceId {
    InstanceId::parse(s).unwrap()
}

async fn instance_version(store: &DynamoStore, id: &str) -> Option<u64> {
    let got = store.get_instance("t1", &iid(id)).await.unwrap();
    got.map(|v| v.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_retried_after_it_committed_is_done() {
    let (store, faults) = store().await;
    let i = instance("t1", "i1");
    let o = operation("t1", "i1", "op1");
    faults.lose_next_response_of(TRANSACT);
    store
        .commit(vec![
            Write::create(Record::Instance(i.clone())),
            Write::create(Record::Operation(o.clone())),
        ])
        .await
        .expect("the retry of a committed transaction is a success");
    assert_eq!(instance_version(&store, "i1").await, Some(1));

    let first = faults.tokens();
    assert_eq!(
        first.len(),
        2,
        "one attempt, then the SDK's retry: {first:?}"
    );
    let token = first[0].clone().expect("a ClientRequestToken");
    assert!((1..=36).contains(&token.len()), "{token}");
    assert_eq!(
        first[1].as_deref(),
        Some(token.as_str()),
        "the retry resends the token"
    );

    // The next commit has a token of its own (the same token would make DynamoDB skip it).
    store
        .commit(vec![
            Write::replace(Record::Instance(i), 1),
            Write::replace(Record::Operation(o), 1),
        ])
        .await
        .unwrap();
    let second = faults.tokens();
    assert_eq!(second.len(), 1);
    assert!(second[0].is_some() && second[0] != first[0], "{second:?}");
    assert_eq!(instance_version(&store, "i1").await, Some(2));
}

/// The harness itself: without a token, the same fault makes the committed transaction read as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_a_retried_committed_transaction_reads_as_a_conflict() {
    let (store, faults) = store().await;
    faults.0.lock().unwrap().strip_tokens = true;
    faults.lose_next_response_of(TRANSACT);
    let got = store
        .commit(vec![
            Write::create(Record::Instance(instance("t1", "i1"))),
            Write::create(Record::Operation(operation("t1", "i1", "op1"))),
        ])
        .await;
    assert_eq!(got, Err(StoreError::Conflict));
    assert_eq!(
        instance_version(&store, "i1").await,
        Some(1),
        "yet it committed"
    );
    assert_eq!(faults.tokens(), vec![None, None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_transaction_that_lost_a_race_is_still_a_conflict() {
    let (store, faults) = store().await;
    let mut i = instance("t1", "i1");
    store
        .commit(vec![Write::create(Record::Instance(i.clone()))])
        .await
        .unwrap();
    i.plan_id = "other".into();
    store
        .commit(vec![Write::replace(Record::Instance(i.clone()), 1)])
        .await
        .unwrap();
    // At version 2 now; a writer that read version 1 loses, even when its (cancelled) answer is retried.
    faults.lose_next_response_of(TRANSACT);
    i.plan_id = "stale".into();
    let got = store
        .commit(vec![
            Write::replace(Record::Instance(i), 1),
            Write::create(Record::Operation(operation("t1", "i1", "op1"))),
        ])
        .await;
    assert_eq!(got, Err(StoreError::Conflict));
    assert_eq!(faults.tokens().len(), 2, "retried");
    let got = store.get_instance("t1", &iid("i1")).await.unwrap().unwrap();
    assert_eq!((got.item.plan_id.as_str(), got.version), ("other", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_write_retried_after_it_committed_is_done() {
    let (store, faults) = store().await;
    let mut i = instance("t1", "i1");
    faults.lose_next_response_of(PUT);
    store
        .commit(vec![Write::create(Record::Instance(i.clone()))])
        .await
        .expect("the retry of a committed create is a success");
    assert_eq!(instance_version(&store, "i1").await, Some(1));

    i.plan_id = "other".into();
    faults.lose_next_response_of(PUT);
    store
        .commit(vec![Write::replace(Record::Instance(i), 1)])
        .await
        .expect("the retry of a committed replace is a success");
    let got = store.get_instance("t1", &iid("i1")).await.unwrap().unwrap();
    assert_eq!((got.item.plan_id.as_str(), got.version), ("other", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_single_write_that_lost_a_race_is_still_a_conflict() {
    let (store, faults) = store().await;
    let mut i = instance("t1", "i1");
    store
        .commit(vec![Write::create(Record::Instance(i.clone()))])
        .await
        .unwrap();
    i.plan_id = "other".into();
    store
        .commit(vec![Write::replace(Record::Instance(i.clone()), 1)])
        .await
        .unwrap();
    i.plan_id = "stale".into();
    for stale in [
        Write::replace(Record::Instance(i), 1),
        Write::create(Record::Instance(instance("t1", "i1"))),
    ] {
        faults.lose_next_response_of(PUT);
        assert_eq!(store.commit(vec![stale]).await, Err(StoreError::Conflict));
    }
    let got = store.get_instance("t1", &iid("i1")).await.unwrap().unwrap();
    assert_eq!((got.item.plan_id.as_str(), got.version), ("other", 2));
}
