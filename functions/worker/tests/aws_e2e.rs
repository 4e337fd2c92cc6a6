//! End to end on the AWS wiring against moto on loopback: the API handler serves API Gateway v2 events
//! through `lambda_http`; the worker handler is fed SQS events built from messages received from the
//! queue, and deletes what it reports as done, as the Lambda event source does. Also: fault tests
//! (duplicate message, a worker dying between commit and enqueue, concurrent requests) and the
//! DynamoDB/SQS call counts per OSB request, by an SDK interceptor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use base64::Engine;
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Context, LambdaEvent, Service};
use osb_broker::aws::testing::{moto, unique_name};
use osb_broker::aws::{self, AwsConfig, SqsQueue};
use osb_broker::broker::Broker;
use osb_broker::broker::webhooks::WebhookDelivery;
use osb_broker::config::WebhookSettings;
use osb_broker::ports::{Queue, QueueError};
use osb_broker::webhooks::{RetryPolicy, WebhookPolicy, verify_osb_signature};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PG: &str = "6d3a9a9e-6c2f-4c55-9d0e-3b1f2f6c1a01";
const SMALL: &str = "0a7f4a34-5b0b-4b8e-8d4e-1f0d3c9a2b11";
const STANDARD: &str = "1b8e5b45-6c1c-4c9f-9e5f-2a1e4d0b3c22";
const ASYNC_BIND: &str = "2c9f6c56-7d2d-4daf-8f60-3b2f5e1c4d33";

/// Counts SDK operations (one per API call, retries excluded).
#[derive(Debug, Default)]
struct Counter(AtomicUsize);

#[derive(Debug, Clone)]
struct Counting(Arc<Counter>);

impl aws_sdk_dynamodb::config::Intercept for Counting {
    fn name(&self) -> &'static str {
        "Counting"
    }
    fn read_before_execution(
        &self,
        _: &aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct Env {
    router: axum::Router,
    broker: Arc<Broker>,
    queue: SqsQueue,
    webhook_queue: SqsQueue,
    webhooks: Arc<WebhookDelivery>,
    calls: Arc<Counter>,
    /// The table's raw items (what a reader of the table or a backup sees).
    dynamo: aws_sdk_dynamodb::Client,
    table: String,
    cfg: AwsConfig,
    sealer: Arc<aws::KmsSealer>,
}

/// The sharing token keys' secret, as the template makes it (`GenerateSecretString`).
const SHARING_KEYS: &str = r#"{"current": "k1", "k1": "Zq3rT8vX2mN5pL7wY1cB4dF6hJ9kS0aE"}"#;

/// The tenants' secret: cf1 (Cloud Foundry), ks2 (Kubernetes, consenting to cf1's sharing rules) and a
/// third tenant whose password is `other_password`.
fn tenants_secret(other_password: &str) -> String {
    json!({"tenants": [
        {"name": "cf1", "username": "cf1-user", "password": "cf1-pass", "profile": "cloudfoundry"},
        {"name": "ks2", "username": "ks2-user", "password": "ks2-pass", "profile": "kubernetes",
         "accept_leases_from": ["cf1"]},
        {"name": "other", "username": "other-user", "password": other_password}
    ]})
    .to_string()
}

async fn secret(sdk: &aws_config::SdkConfig, name: &str, text: &str) -> String {
    let id = unique_name(name);
    aws_sdk_secretsmanager::Client::new(sdk)
        .create_secret()
        .name(&id)
        .secret_string(text)
        .send()
        .await
        .unwrap();
    id
}

async fn env() -> Env {
    let sdk = moto().sdk_config().await;
    let calls = Arc::new(Counter::default());
    let counting = Counting(calls.clone());
    let table = unique_name("osb");
    let kms_key = osb_broker::aws::testing::kms_key(&sdk).await;
    let sealer = Arc::new(aws::KmsSealer::new(
        aws_sdk_kms::Client::new(&sdk),
        &kms_key,
    ));
    let dynamo = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(counting.clone())
            .build(),
    );
    aws::DynamoStore::new(dynamo.clone(), &table, sealer.clone())
        .create_table()
        .await
        .unwrap();
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk)
            .interceptor(counting)
            .build(),
    );
    let url = SqsQueue::create(&sqs, &unique_name("ops")).await.unwrap();
    let webhook_url = SqsQueue::create(&sqs, &unique_name("webhooks"))
        .await
        .unwrap();
    let secret_id = secret(&sdk, "tenants", &tenants_secret("other-pass")).await;
    let keys_id = secret(&sdk, "sharing-keys", SHARING_KEYS).await;
    let cfg = AwsConfig {
        table: table.clone(),
        kms_key_id: kms_key,
        operations_queue_url: url.clone(),
        webhook_queue_url: webhook_url.clone(),
        webhook_dlq_url: None,
        webhook_allow_http: false,
        tenants_secret_id: Some(secret_id),
        sharing_keys_secret_id: Some(keys_id),
        catalog_file: None,
        postgres_secret_id: None,
        admin_secret_id: None,
    };
    let state = aws::api_state(&cfg, &sdk, osb_broker::http::DEFAULT_BODY_LIMIT)
        .await
        .unwrap();
    // Rebuild the broker on the counting clients so that every DynamoDB/SQS call is seen.
    let mut broker = (*state.broker).clone();
    broker.store = Arc::new(aws::DynamoStore::new(
        dynamo.clone(),
        &table,
        sealer.clone(),
    ));
    broker.queue = Arc::new(SqsQueue::new(sqs.clone(), &url));
    broker.webhook_queue = Arc::new(SqsQueue::new(sqs.clone(), &webhook_url));
    // Test receivers listen on 127.0.0.1: the loopback escape hatch, which only code can turn on (the
    // Lambda wiring's policy comes from `aws::webhook_policy`, which refuses it).
    let policy = WebhookPolicy::default()
        .allowing_http()
        .allowing_loopback_for_local_mode();
    broker.webhook_policy = Arc::new(policy.clone());
    let broker = Arc::new(broker);
    let settings = WebhookSettings {
        retry: RetryPolicy {
            delays_secs: vec![1, 1],
            jitter: 0.0,
            ..RetryPolicy::default()
        },
        connect_timeout_ms: 500,
        timeout_ms: 800,
        ..WebhookSettings::default()
    };
    let webhooks = Arc::new(WebhookDelivery::over_http(&broker, policy, &settings, None).unwrap());
    let state = osb_broker::http::AppState::new(
        broker.clone(),
        state.tenants.clone(),
        osb_broker::http::DEFAULT_BODY_LIMIT,
    );
    Env {
        router: osb_broker::http::router(state),
        broker,
        queue: SqsQueue::new(sqs.clone(), url),
        webhook_queue: SqsQueue::new(sqs, webhook_url),
        webhooks,
        calls,
        dynamo,
        table,
        cfg,
        sealer,
    }
}

/// One API Gateway event through `router` as the API function's Lambda adapter runs it: status and body.
async fn lambda_call(
    router: &axum::Router,
    tenant: &str,
    method: &str,
    path: &str,
    query: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let resp = Adapter::from(router.clone())
        .call(LambdaEvent::new(
            event(tenant, method, path, query, body),
            Context::default(),
        ))
        .await
        .unwrap();
    let json = serde_json::to_value(&resp).unwrap();
    let body = json["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (json["statusCode"].as_u64().unwrap() as u16, body)
}

/// One poll of a queue as the Lambda event source does it: receive, invoke `handle` with an SQS event,
/// delete the messages it did not report as failed. Returns (handled, failed).
async fn sqs_round(
    queue: &SqsQueue,
    wait: Duration,
    visibility: Duration,
    handle: impl AsyncFnOnce(SqsEvent) -> SqsBatchResponse,
) -> (usize, usize) {
    let deliveries = queue.receive(10, wait, visibility).await.unwrap();
    if deliveries.is_empty() {
        return (0, 0);
    }
    let records: Vec<Value> = deliveries
        .iter()
        .enumerate()
        .map(|(n, d)| {
            json!({"messageId": format!("m{n}"), "receiptHandle": d.receipt, "body": d.body,
                   "attributes": {"ApproximateReceiveCount": d.receive_count.to_string()},
                   "eventSource": "aws:sqs", "awsRegion": "us-east-1"})
        })
        .collect();
    let event: SqsEvent = serde_json::from_value(json!({"Records": records})).unwrap();
    let failed = failed_ids(&handle(event).await);
    for (n, d) in deliveries.iter().enumerate() {
        if !failed.contains(&format!("m{n}")) {
            queue.ack(&d.receipt).await.unwrap();
        }
    }
    (deliveries.len(), failed.len())
}

/// The message ids a batch response reports as failed.
fn failed_ids(resp: &SqsBatchResponse) -> Vec<String> {
    resp.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

fn event(
    tenant: &str,
    method: &str,
    path: &str,
    query: &str,
    body: Option<Value>,
) -> LambdaRequest {
    // Each tenant's credentials as `tenants_secret` has them; "admin": the operator's (`ADMIN_SECRET`).
    let credentials = match tenant {
        "admin" => "admin-user:admin-pass-0123456789".to_owned(),
        t => format!("{t}-user:{t}-pass"),
    };
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    );
    let mut e = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": {"authorization": auth, "x-broker-api-version": "2.17", "content-type": "application/json",
                    "host": "abc123.execute-api.us-east-1.amazonaws.com"},
        "requestContext": {"accountId": "123456789012", "apiId": "abc123", "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123", "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "198.51.100.7", "userAgent": "test"},
            "requestId": "r", "routeKey": "$default", "stage": "$default", "time": "24/Nov/2026:19:03:58 +0000", "timeEpoch": 1795532638390u64},
        "isBase64Encoded": false
    });
    if !query.is_empty() {
        let q: serde_json::Map<String, Value> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect();
        e["queryStringParameters"] = Value::Object(q);
    }
    if let Some(b) = body {
        e["body"] = json!(b.to_string());
    }
    serde_json::from_value(e).unwrap()
}

impl Env {
    async fn api(
        &self,
        tenant: &str,
        method: &str,
        path: &str,
        query: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        lambda_call(&self.router, tenant, method, path, query, body).await
    }

    /// One poll of the queue as the Lambda event source does it: receive, invoke the worker handler
    /// with an SQS event, delete the messages it did not report as failed. Returns (handled, failed).
    async fn worker_round(&self, broker: &Arc<Broker>) -> (usize, usize) {
        sqs_round(
            &self.queue,
            Duration::from_secs(1),
            Duration::from_secs(2),
            async |event| osb_worker::handle_batch(broker.clone(), event).await,
        )
        .await
    }

    /// One poll of the webhook queue as its Lambda event source does it (see `sqs_round`).
    async fn webhook_round(&self) -> usize {
        let delivery = self.webhooks.clone();
        let (handled, _) = sqs_round(
            &self.webhook_queue,
            Duration::from_millis(200),
            Duration::from_secs(5),
            async |event| osb_webhooks::handle_batch(delivery, event).await,
        )
        .await;
        handled
    }

    /// Runs worker rounds until the `last_operation` at `path` is final (bounded).
    async fn settle(&self, tenant: &str, path: &str) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let (status, body) = self.api(tenant, "GET", path, "", None).await;
            if status != 200 || body["state"] != "in progress" {
                return (status, body);
            }
            assert!(Instant::now() < deadline, "operation not final: {body}");
            self.worker_round(&self.broker).await;
        }
    }

    fn calls(&self) -> usize {
        self.calls.0.swap(0, Ordering::SeqCst)
    }
}

fn provision_body(plan: &str, params: Value) -> Value {
    json!({"service_id": PG, "plan_id": plan, "organization_guid": "org", "space_guid": "space", "parameters": params})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_provision_bind_unbind_deprovision_through_api_events_and_sqs_worker_events() {
    let e = env().await;
    let (s, b) = e
        .api(
            "cf1",
            "PUT",
            "/v2/service_instances/aws-1",
            "accepts_incomplete=true",
            Some(provision_body(
                ASYNC_BIND,
                json!({"simulate": {"delay_seconds": 1}}),
            )),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let (s, b) = e
        .settle("cf1", "/v2/service_instances/aws-1/last_operation")
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("succeeded")), "{b}");

    let bind = json!({"service_id": PG, "plan_id": ASYNC_BIND});
    let (s, b) = e
        .api(
            "cf1",
            "PUT",
            "/v2/service_instances/aws-1/service_bindings/b1",
            "accepts_incomplete=true",
            Some(bind),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    assert!(b.get("credentials").is_none());
    let (s, b) = e
        .settle(
            "cf1",
            "/v2/service_instances/aws-1/service_bindings/b1/last_operation",
        )
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("succeeded")), "{b}");
    let (s, b) = e
        .api(
            "cf1",
            "GET",
            "/v2/service_instances/aws-1/service_bindings/b1",
            "",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        b["credentials"]["password"]
            .as_str()
            .is_some_and(|p| p.len() >= 32)
    );

    let q = format!("service_id={PG}&plan_id={ASYNC_BIND}&accepts_incomplete=true");
    let (s, _) = e
        .api(
            "cf1",
            "DELETE",
            "/v2/service_instances/aws-1/service_bindings/b1",
            &q,
            None,
        )
        .await;
    assert_eq!(s, 202);
    let (s, _) = e
        .settle(
            "cf1",
            "/v2/service_instances/aws-1/service_bindings/b1/last_operation",
        )
        .await;
    assert_eq!(s, 410, "binding last_operation after async unbind");

    let (s, b) = e
        .api("cf1", "DELETE", "/v2/service_instances/aws-1", &q, None)
        .await;
    assert_eq!(
        s, 200,
        "deprovision of a plan with synchronous deprovisioning: {b}"
    );
    let (s, _) = e
        .api(
            "cf1",
            "GET",
            "/v2/service_instances/aws-1/last_operation",
            "",
            None,
        )
        .await;
    assert_eq!(s, 410);
    // Tenant isolation holds on DynamoDB too.
    let (s, _) = e
        .api(
            "ks2",
            "GET",
            "/v2/service_instances/aws-1/last_operation",
            "",
            None,
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_message_after_completion_changes_nothing() {
    let e = env().await;
    let (s, b) = e
        .api(
            "cf1",
            "PUT",
            "/v2/service_instances/dup",
            "accepts_incomplete=true",
            Some(provision_body(
                STANDARD,
                json!({"simulate": {"delay_seconds": 1}}),
            )),
        )
        .await;
    assert_eq!(s, 202);
    let op = b["operation"].as_str().unwrap().to_owned();
    e.settle("cf1", "/v2/service_instances/dup/last_operation")
        .await;
    let key = osb_broker::records::OperationKey {
        tenant: "cf1".into(),
        instance_id: osb_broker::ids::InstanceId::parse("dup").unwrap(),
        operation_id: osb_broker::ids::OperationId::parse(&op).unwrap(),
    };
    let before_op = e.broker.store.get_operation(&key).await.unwrap().unwrap();
    let before_i = e
        .broker
        .store
        .get_instance("cf1", &key.instance_id)
        .await
        .unwrap()
        .unwrap();
    // The same message twice more: both handled and acknowledged, nothing written.
    let body = serde_json::to_string(&key).unwrap();
    e.queue.send(body.clone(), Duration::ZERO).await.unwrap();
    e.queue.send(body, Duration::ZERO).await.unwrap();
    let mut handled = 0;
    for _ in 0..5 {
        let (h, failed) = e.worker_round(&e.broker).await;
        assert_eq!(failed, 0);
        handled += h;
        if handled >= 2 {
            break;
        }
    }
    assert_eq!(handled, 2);
    assert_eq!(
        e.broker.store.get_operation(&key).await.unwrap().unwrap(),
        before_op
    );
    let after_i = e
        .broker
        .store
        .get_instance("cf1", &key.instance_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after_i, before_i);
}

/// A queue whose sends fail: a worker that commits its step and then cannot enqueue the follow-up.
struct BrokenQueue;

#[async_trait::async_trait]
impl Queue for BrokenQueue {
    async fn send(&self, _: String, _: Duration) -> Result<(), QueueError> {
        Err(QueueError::Unavailable("injected".into()))
    }
    async fn receive(
        &self,
        _: usize,
        _: Duration,
        _: Duration,
    ) -> Result<Vec<osb_broker::ports::Delivery>, QueueError> {
        Ok(vec![])
    }
    async fn ack(&self, _: &str) -> Result<(), QueueError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_failing_between_commit_and_enqueue_is_repaired_by_redelivery() {
    let e = env().await;
    let (s, _) = e
        .api(
            "cf1",
            "PUT",
            "/v2/service_instances/crash",
            "accepts_incomplete=true",
            Some(provision_body(
                STANDARD,
                json!({"simulate": {"delay_seconds": 2}}),
            )),
        )
        .await;
    assert_eq!(s, 202);
    let mut broken = (*e.broker).clone();
    broken.queue = Arc::new(BrokenQueue);
    let broken = Arc::new(broken);
    // The broken worker stores the backend's handle, then fails to re-enqueue: reported as failed.
    let (handled, failed) = e.worker_round(&broken).await;
    assert_eq!((handled, failed), (1, 1));
    // SQS redelivers it after the visibility timeout; a healthy worker completes the operation.
    let (s, b) = e
        .settle("cf1", "/v2/service_instances/crash/last_operation")
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("succeeded")), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_updates_on_one_instance_have_one_winner() {
    let e = env().await;
    let (s, _) = e
        .api(
            "cf1",
            "PUT",
            "/v2/service_instances/race",
            "",
            Some(provision_body(SMALL, json!({}))),
        )
        .await;
    assert_eq!(s, 201);
    // Four PATCHes in flight at once (the adapter's futures are not Send, so they interleave on one
    // task; their DynamoDB calls overlap all the same).
    let patch = |n: u64| {
        e.api(
            "cf1",
            "PATCH",
            "/v2/service_instances/race",
            "accepts_incomplete=true",
            Some(json!({"service_id": PG, "parameters": {"storage_gb": n, "simulate": {"delay_seconds": 5}}})),
        )
    };
    let (a, b, c, d) = tokio::join!(patch(1), patch(2), patch(3), patch(4));
    let mut accepted = 0;
    for (s, b) in [a, b, c, d] {
        match s {
            202 => accepted += 1,
            422 => assert_eq!(b["error"], "ConcurrencyError", "{b}"),
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!(accepted, 1);
}

/// (name, method, path, query, body, expected status)
type Step<'a> = (&'a str, &'a str, String, &'a str, Option<Value>, u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_and_sqs_calls_per_request_stay_within_three() {
    let e = env().await;
    let mut table = Vec::new();
    let mut measure = |name: &str, n: usize| {
        table.push(format!("{name}: {n}"));
        assert!(n <= 3, "{name} made {n} DynamoDB/SQS calls");
    };
    let q = format!("service_id={PG}&plan_id={SMALL}");
    let bind = json!({"service_id": PG, "plan_id": SMALL});
    e.calls();
    let steps: Vec<Step> = vec![
        ("catalog", "GET", "/v2/catalog".into(), "", None, 200),
        (
            "provision (sync)",
            "PUT",
            "/v2/service_instances/c1".into(),
            "",
            Some(provision_body(SMALL, json!({}))),
            201,
        ),
        (
            "provision (repeat)",
            "PUT",
            "/v2/service_instances/c1".into(),
            "",
            Some(provision_body(SMALL, json!({}))),
            200,
        ),
        (
            "fetch instance",
            "GET",
            "/v2/service_instances/c1".into(),
            "",
            None,
            200,
        ),
        (
            "update (sync)",
            "PATCH",
            "/v2/service_instances/c1".into(),
            "",
            Some(json!({"service_id": PG, "parameters": {"storage_gb": 3}})),
            200,
        ),
        (
            "bind (sync)",
            "PUT",
            "/v2/service_instances/c1/service_bindings/b".into(),
            "",
            Some(bind),
            201,
        ),
        (
            "fetch binding",
            "GET",
            "/v2/service_instances/c1/service_bindings/b".into(),
            "",
            None,
            200,
        ),
        (
            "unbind (sync)",
            "DELETE",
            "/v2/service_instances/c1/service_bindings/b".into(),
            &q,
            None,
            200,
        ),
        (
            "deprovision (sync)",
            "DELETE",
            "/v2/service_instances/c1".into(),
            &q,
            None,
            200,
        ),
        (
            "provision (async)",
            "PUT",
            "/v2/service_instances/c2".into(),
            "accepts_incomplete=true",
            Some(provision_body(
                STANDARD,
                json!({"simulate": {"delay_seconds": 1}}),
            )),
            202,
        ),
        (
            "instance last_operation",
            "GET",
            "/v2/service_instances/c2/last_operation".into(),
            "",
            None,
            200,
        ),
    ];
    for (name, method, path, query, body, expected) in steps {
        let (s, b) = e.api("cf1", method, &path, query, body).await;
        assert_eq!(s, expected, "{name}: {b}");
        measure(name, e.calls());
    }
    // One worker step that completes the operation (after the simulated second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let msg = e
        .queue
        .receive(1, Duration::from_secs(2), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(msg.len(), 1);
    e.calls();
    osb_broker::broker::worker::process_message(&e.broker, &msg[0].body)
        .await
        .unwrap();
    measure("async completion (one worker step)", e.calls());
    e.queue.ack(&msg[0].receipt).await.unwrap();

    let aq = format!("service_id={PG}&plan_id={ASYNC_BIND}&accepts_incomplete=true");
    let bind_async = json!({"service_id": PG, "plan_id": ASYNC_BIND});
    let rotate = json!({"service_id": PG, "plan_id": SMALL, "predecessor_binding_id": "r1"});
    let more: Vec<Step> = vec![
        (
            "deprovision (async)",
            "DELETE",
            "/v2/service_instances/c2".into(),
            "service_id=x&plan_id=y&accepts_incomplete=true",
            None,
            202,
        ),
        (
            "provision (sync, async-bindings plan)",
            "PUT",
            "/v2/service_instances/c3".into(),
            "",
            Some(provision_body(ASYNC_BIND, json!({}))),
            201,
        ),
        (
            "bind (async)",
            "PUT",
            "/v2/service_instances/c3/service_bindings/ab".into(),
            "accepts_incomplete=true",
            Some(bind_async),
            202,
        ),
        (
            "binding last_operation",
            "GET",
            "/v2/service_instances/c3/service_bindings/ab/last_operation".into(),
            "",
            None,
            200,
        ),
        (
            "provision (sync, rotatable plan)",
            "PUT",
            "/v2/service_instances/c4".into(),
            "",
            Some(provision_body(SMALL, json!({}))),
            201,
        ),
        (
            "bind (sync)",
            "PUT",
            "/v2/service_instances/c4/service_bindings/r1".into(),
            "",
            Some(json!({"service_id": PG, "plan_id": SMALL})),
            201,
        ),
        (
            "bind with predecessor_binding_id (rotation)",
            "PUT",
            "/v2/service_instances/c4/service_bindings/r2".into(),
            "",
            Some(rotate),
            201,
        ),
    ];
    e.calls();
    for (name, method, path, query, body, expected) in more {
        let (s, b) = e.api("cf1", method, &path, query, body).await;
        assert_eq!(s, expected, "{name}: {b}");
        measure(name, e.calls());
    }
    e.settle(
        "cf1",
        "/v2/service_instances/c3/service_bindings/ab/last_operation",
    )
    .await;
    e.calls();
    let (s, b) = e
        .api(
            "cf1",
            "DELETE",
            "/v2/service_instances/c3/service_bindings/ab",
            &aq,
            None,
        )
        .await;
    assert_eq!(s, 202, "{b}");
    measure("unbind (async)", e.calls());
    println!(
        "DynamoDB + SQS calls per request:\n  {}",
        table.join("\n  ")
    );
}

#[tokio::test]
async fn the_worker_fixture_event_reports_only_failed_message_ids() {
    // The fixture names an operation that does not exist (acknowledged: nothing to do) and carries an
    // undecodable body (dropped, acknowledged): neither is reported as failed.
    let e = env().await;
    let text = std::fs::read_to_string(format!(
        "{}/fixtures/sqs-operation-event.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let event: SqsEvent = serde_json::from_str(&text).unwrap();
    assert_eq!(event.records.len(), 2);
    let resp = osb_worker::handle_batch(e.broker.clone(), event).await;
    assert!(resp.batch_item_failures.is_empty());
    // With the store unreachable, every message of the batch is reported failed, by id.
    let mut broken = (*e.broker).clone();
    broken.store = Arc::new(aws::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&moto().sdk_config().await),
        "no-such-table",
        e.sealer.clone(),
    ));
    let event: SqsEvent = serde_json::from_str(&text).unwrap();
    let resp = osb_worker::handle_batch(Arc::new(broken), event).await;
    assert_eq!(
        failed_ids(&resp),
        vec!["059f36b4-87a3-44ab-83d2-661975830a7d"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_fixture_event_is_handled_and_failures_are_reported_by_id() {
    // The fixture names a callback that does not exist: acknowledged, nothing sent.
    let e = env().await;
    let text = std::fs::read_to_string(format!(
        "{}/../webhooks/fixtures/sqs-callback-event.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let event: SqsEvent = serde_json::from_str(&text).unwrap();
    let resp = osb_webhooks::handle_batch(e.webhooks.clone(), event).await;
    assert!(resp.batch_item_failures.is_empty());
    // With the store unreachable the message is reported failed, by id, for SQS to redeliver.
    let mut broken = (*e.webhooks).clone();
    broken.store = Arc::new(aws::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&moto().sdk_config().await),
        "no-such-table",
        e.sealer.clone(),
    ));
    let event: SqsEvent = serde_json::from_str(&text).unwrap();
    let resp = osb_webhooks::handle_batch(Arc::new(broken), event).await;
    assert_eq!(
        failed_ids(&resp),
        vec!["7b1c2a90-3d4e-4f51-9a6b-0c8d7e6f5a41"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_sweep_re_drives_an_operation_whose_message_was_lost() {
    let e = env().await;
    let (s, _) = e
        .api(
            "cf1",
            "PUT",
            "/v2/service_instances/lost",
            "accepts_incomplete=true",
            Some(provision_body(
                STANDARD,
                json!({"simulate": {"delay_seconds": 1}}),
            )),
        )
        .await;
    assert_eq!(s, 202);
    // The message is lost (say the API died after its commit, before its send).
    for d in e
        .queue
        .receive(10, Duration::from_secs(1), Duration::from_secs(30))
        .await
        .unwrap()
    {
        e.queue.ack(&d.receipt).await.unwrap();
    }
    let sweep: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/fixtures/scheduled-sweep-event.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    // Now: nothing is stalled yet.
    let out = osb_worker::handle_event(e.broker.clone(), sweep.clone())
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"redriven": 0, "failed": 0, "callbacks_redriven": 0, "callbacks_failed": 0})
    );
    // Ten minutes later (a broker whose clock is ahead): the sweep re-drives it, and the worker finishes it.
    let mut later = (*e.broker).clone();
    let clock = osb_broker::ports::ManualClock::new(
        osb_broker::ports::Clock::now_ms(&osb_broker::ports::SystemClock) + 600_000,
    );
    later.clock = Arc::new(clock);
    let later = Arc::new(later);
    let out = osb_worker::handle_event(later.clone(), sweep)
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"redriven": 1, "failed": 0, "callbacks_redriven": 0, "callbacks_failed": 0})
    );
    let (s, b) = e
        .settle("cf1", "/v2/service_instances/lost/last_operation")
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("succeeded")), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_delivered_from_the_webhook_queue_with_retries_and_no_duplicates() {
    use e2e::receiver::{Receiver, Reply};
    let e = env().await;
    let rx = Receiver::start(vec![Reply::Status(500), Reply::Status(200)]).await;
    let secret = "aws-webhook-secret";
    let q = format!(
        "accepts_incomplete=true&webhook={}&secret={secret}",
        rx.url("/hook")
    );
    let (s, b) = e
        .api(
            "cf1",
            "PUT",
            "/v2/service_instances/aws-wh",
            &q,
            Some(provision_body(
                STANDARD,
                json!({"simulate": {"delay_seconds": 1}}),
            )),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let op = b["operation"].as_str().unwrap().to_owned();
    let (s, b) = e
        .settle("cf1", "/v2/service_instances/aws-wh/last_operation")
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("succeeded")), "{b}");
    // 500, then the message comes back with its 1 s delay, then 200.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rx.received().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "not delivered: {:?}",
            rx.received().len()
        );
        e.webhook_round().await;
    }
    let got = rx.received();
    assert_eq!(got[0].body, got[1].body);
    for (n, d) in got.iter().enumerate() {
        assert!(verify_osb_signature(
            secret.as_bytes(),
            &d.body,
            d.header("x-osb-signature").unwrap()
        ));
        assert_eq!(d.header("webhook-id"), Some(op.as_str()));
        assert_eq!(
            d.header("x-osb-attempt"),
            Some((n + 1).to_string().as_str())
        );
    }
    let (_, inst) = e
        .api("cf1", "GET", "/v2/service_instances/aws-wh", "", None)
        .await;
    assert_eq!(got[1].json()["dashboard_url"], inst["dashboard_url"]);
    // A duplicate queue message after delivery sends nothing.
    let key = json!({"tenant": "cf1", "instance_id": "aws-wh", "operation_id": op}).to_string();
    e.webhook_queue.send(key, Duration::ZERO).await.unwrap();
    while e.webhook_round().await > 0 {}
    assert_eq!(rx.received().len(), 2);
    let cb = e
        .broker
        .store
        .get_callback(
            &serde_json::from_value(
                json!({"tenant": "cf1", "instance_id": "aws-wh", "operation_id": op}),
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .unwrap()
        .item;
    assert_eq!(cb.state, osb_broker::records::CallbackState::Delivered);
    assert_eq!((cb.secret, cb.body), (None, None));
    let outcomes: Vec<_> = cb.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["http_status", "delivered"]);
}

/// The sharing story on DynamoDB + SQS (DESIGN §7): an owner in `cf1` shares with a Kubernetes
/// namespace of `ks2` and by token; leases, a binding through a lease, the delete guard, a purge whose
/// unbind the worker runs from an SQS event, orphan, deletes — with the DynamoDB/SQS calls of each request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_story_through_api_events_and_sqs_worker_events_with_call_counts() {
    let e = env().await;
    let mut table = Vec::new();
    let mut measure = |name: &str, n: usize, max: usize| {
        table.push(format!("{name}: {n}"));
        assert!(
            n <= max,
            "{name} made {n} DynamoDB/SQS calls (at most {max})"
        );
    };
    let k8s = |ns: &str, params: Value| {
        json!({"service_id": PG, "plan_id": SMALL, "organization_guid": "cluster", "space_guid": ns,
               "context": {"platform": "kubernetes", "namespace": ns, "instance_name": "db"}, "parameters": params})
    };
    let q = format!("service_id={PG}&plan_id={SMALL}");
    e.calls();
    let (s, b) = e
        .api("cf1", "PUT", "/v2/service_instances/owner", "", Some(provision_body(SMALL,
            json!({"storage_gb": 4, "x_osb_cmdb": {"sharing_to": [{"tenant": "ks2", "namespace": "team", "instance_name": "db"}]}}))))
        .await;
    assert_eq!(s, 201, "{b}");
    measure("provision of an owner with sharing_to", e.calls(), 3);
    let (s, view) = e
        .api("cf1", "GET", "/v2/service_instances/owner", "", None)
        .await;
    assert_eq!(s, 200);
    measure("fetch owner (no lease yet)", e.calls(), 1);
    let token = view["parameters"]["x_osb_cmdb"]["sharing_token"]["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let (s, b) = e
        .api(
            "ks2",
            "PUT",
            "/v2/service_instances/by-rule",
            "",
            Some(k8s("team", json!({}))),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    measure("lease by sharing_to", e.calls(), 3);
    let (s, b) = e
        .api(
            "ks2",
            "PUT",
            "/v2/service_instances/by-token",
            "",
            Some(k8s("elsewhere", json!({"sharing_token": token}))),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    measure("lease by token", e.calls(), 3);
    let (s, b) = e
        .api(
            "ks2",
            "PUT",
            "/v2/service_instances/plain",
            "",
            Some(k8s("elsewhere", json!({}))),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    measure(
        "provision matching no rule (shareable offering)",
        e.calls(),
        3,
    );
    let (s, b) = e
        .api("ks2", "GET", "/v2/service_instances/plain", "", None)
        .await;
    assert!(s == 200 && b.get("description").is_none(), "{b}");

    let (s, lease) = e
        .api("ks2", "GET", "/v2/service_instances/by-rule", "", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        lease["description"],
        "This is a lease from instance owner in tenant cf1"
    );
    assert_eq!(
        lease["parameters"],
        json!({}),
        "never the owner's parameters: {lease}"
    );
    e.calls();
    let (s, b) = e
        .api(
            "ks2",
            "PUT",
            "/v2/service_instances/by-rule/service_bindings/lb",
            "",
            Some(json!({"service_id": PG, "plan_id": SMALL})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        b["credentials"]["name"], "db_owner",
        "bound on the owner's backing instance"
    );
    measure("bind a lease", e.calls(), 3);
    let (s, view) = e
        .api("cf1", "GET", "/v2/service_instances/owner", "", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        view["parameters"]["x_osb_cmdb"]["leases"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{view}"
    );
    measure("fetch owner with leases", e.calls(), 2);

    let (s, b) = e
        .api("cf1", "DELETE", "/v2/service_instances/owner", &q, None)
        .await;
    assert_eq!(s, 422);
    assert!(
        b["description"]
            .as_str()
            .unwrap()
            .contains("still shared with"),
        "{b}"
    );
    measure("delete guard", e.calls(), 1);

    let (s, b) = e
        .api("cf1", "PATCH", "/v2/service_instances/owner", "",
             Some(json!({"service_id": PG, "parameters": {"x_osb_cmdb": {"leases": [{"tenant": "ks2", "instance_guid": "by-token"}]}}})))
        .await;
    assert_eq!(s, 200, "{b}");
    // GetItem owner, BatchGetItem lease entries, Query lease + bindings, TransactWriteItems, SendMessage.
    measure("purge of one lease with one binding", e.calls(), 5);
    let (s, _) = e
        .settle(
            "ks2",
            "/v2/service_instances/by-rule/service_bindings/lb/last_operation",
        )
        .await;
    assert_eq!(s, 410, "the worker revoked the lease's binding");
    let (s, _) = e
        .api(
            "ks2",
            "GET",
            "/v2/service_instances/by-rule/service_bindings/lb",
            "",
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (_, lease) = e
        .api("ks2", "GET", "/v2/service_instances/by-rule", "", None)
        .await;
    assert!(
        lease["description"].as_str().unwrap().contains("orphaned"),
        "{lease}"
    );
    let (s, _) = e
        .api(
            "ks2",
            "PUT",
            "/v2/service_instances/by-rule/service_bindings/lb2",
            "",
            Some(json!({"service_id": PG, "plan_id": SMALL})),
        )
        .await;
    assert_eq!(s, 422);
    e.calls();
    for id in ["by-rule", "by-token"] {
        let (s, b) = e
            .api(
                "ks2",
                "DELETE",
                &format!("/v2/service_instances/{id}"),
                &q,
                None,
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    measure("delete two leases", e.calls(), 6);
    let (s, b) = e
        .api("cf1", "DELETE", "/v2/service_instances/owner", &q, None)
        .await;
    assert_eq!(s, 200, "{b}");
    println!(
        "DynamoDB + SQS calls per sharing request:\n  {}",
        table.join("\n  ")
    );
}

/// The sharing token key is a secret of its own: a second API (another cold start) after a tenant's
/// password was rotated shows the same token for the owner, and that token makes a lease through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharing_token_survives_a_tenant_password_rotation_between_cold_starts() {
    let sdk = moto().sdk_config().await;
    let table = unique_name("osb");
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let kms_key = osb_broker::aws::testing::kms_key(&sdk).await;
    aws::DynamoStore::new(
        dynamo,
        &table,
        osb_broker::aws::testing::kms_sealer(&sdk).await,
    )
    .create_table()
    .await
    .unwrap();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let keys_id = secret(&sdk, "sharing-keys", SHARING_KEYS).await;
    let cold_start = |tenants_text: String| {
        let (sdk, sqs, table, keys_id, kms_key_id) = (
            sdk.clone(),
            sqs.clone(),
            table.clone(),
            keys_id.clone(),
            kms_key.clone(),
        );
        async move {
            let cfg = AwsConfig {
                table,
                kms_key_id,
                operations_queue_url: SqsQueue::create(&sqs, &unique_name("ops")).await.unwrap(),
                webhook_queue_url: SqsQueue::create(&sqs, &unique_name("wh")).await.unwrap(),
                webhook_dlq_url: None,
                webhook_allow_http: false,
                tenants_secret_id: Some(secret(&sdk, "tenants", &tenants_text).await),
                sharing_keys_secret_id: Some(keys_id),
                catalog_file: None,
                postgres_secret_id: None,
                admin_secret_id: None,
            };
            let state = aws::api_state(&cfg, &sdk, osb_broker::http::DEFAULT_BODY_LIMIT)
                .await
                .unwrap();
            osb_broker::http::router(state)
        }
    };
    let call = |router: axum::Router,
                tenant: &'static str,
                method: &'static str,
                path: String,
                body: Option<Value>| async move {
        lambda_call(&router, tenant, method, &path, "", body).await
    };
    let before = cold_start(tenants_secret("old-password")).await;
    let (s, b) = call(
        before.clone(),
        "cf1",
        "PUT",
        "/v2/service_instances/owner".into(),
        Some(provision_body(SMALL, json!({"storage_gb": 2}))),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let token_of = |view: Value| {
        view["parameters"]["x_osb_cmdb"]["sharing_token"]["token"]
            .as_str()
            .map(str::to_owned)
    };
    let (_, view) = call(
        before,
        "cf1",
        "GET",
        "/v2/service_instances/owner".into(),
        None,
    )
    .await;
    let shown = token_of(view).expect("a token");

    let after = cold_start(tenants_secret("new-password")).await;
    let (_, view) = call(
        after.clone(),
        "cf1",
        "GET",
        "/v2/service_instances/owner".into(),
        None,
    )
    .await;
    assert_eq!(
        token_of(view).as_deref(),
        Some(shown.as_str()),
        "the same token after the rotation"
    );
    let (s, b) = call(after.clone(), "ks2", "PUT", "/v2/service_instances/leased".into(),
        Some(json!({"service_id": PG, "plan_id": SMALL, "organization_guid": "cluster", "space_guid": "ns",
                    "context": {"platform": "kubernetes", "namespace": "ns"},
                    "parameters": {"sharing_token": shown}}))).await;
    assert_eq!(s, 201, "{b}");
    let (_, lease) = call(
        after,
        "ks2",
        "GET",
        "/v2/service_instances/leased".into(),
        None,
    )
    .await;
    assert!(
        lease["description"]
            .as_str()
            .is_some_and(|d| d.contains("lease from instance owner")),
        "{lease}"
    );
}

/// Every raw item of the table as DynamoDB holds it (what a reader of the table, a backup or an export
/// sees), as JSON text.
async fn raw_items(e: &Env) -> Vec<(String, String, String)> {
    let out = e
        .dynamo
        .scan()
        .table_name(&e.table)
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.items
        .unwrap_or_default()
        .into_iter()
        .map(|item| {
            let s = |k: &str| match item.get(k) {
                Some(aws_sdk_dynamodb::types::AttributeValue::S(v)) => v.clone(),
                _ => String::new(),
            };
            (s("pk"), s("sk"), format!("{item:?}"))
        })
        .collect()
}

/// Writes an item's `body` attribute as it is (a tampered item, or one written before encryption).
async fn set_raw_body(e: &Env, pk: &str, sk: &str, body: &str) {
    use aws_sdk_dynamodb::types::AttributeValue;
    e.dynamo
        .update_item()
        .table_name(&e.table)
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S(sk.into()))
        .update_expression("SET body = :b")
        .expression_attribute_values(":b", AttributeValue::S(body.into()))
        .send()
        .await
        .unwrap();
}

async fn raw_body(e: &Env, pk: &str, sk: &str) -> String {
    use aws_sdk_dynamodb::types::AttributeValue;
    let out = e
        .dynamo
        .get_item()
        .table_name(&e.table)
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S(sk.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    match out.item.unwrap().get("body") {
        Some(AttributeValue::S(b)) => b.clone(),
        other => panic!("no body: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_items_hold_no_secret_and_kms_sealed_credentials_read_back_exactly() {
    use e2e::receiver::{Receiver, Reply};
    let e = env().await;
    // Bind synchronously, then the same PUT again: the exact credentials both times.
    let (s, b) = e
        .api(
            "cf1",
            "PUT",
            "/v2/service_instances/enc-1",
            "",
            Some(provision_body(SMALL, json!({}))),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let bind = json!({"service_id": PG, "plan_id": SMALL});
    let path = "/v2/service_instances/enc-1/service_bindings/b1";
    let (s, first) = e.api("cf1", "PUT", path, "", Some(bind.clone())).await;
    assert_eq!(s, 201, "{first}");
    let (s, again) = e.api("cf1", "PUT", path, "", Some(bind)).await;
    assert_eq!((s, &again["credentials"]), (200, &first["credentials"]));
    let (s, got) = e.api("cf1", "GET", path, "", None).await;
    assert_eq!((s, &got["credentials"]), (200, &first["credentials"]));
    let password = first["credentials"]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let uri = first["credentials"]["uri"].as_str().unwrap().to_owned();

    // An asynchronous bind with a webhook whose receiver fails once: the callback stays pending with
    // its secret and body (the credentials), then the retry delivers the exact credentials.
    let rx = Receiver::start(vec![Reply::Status(500), Reply::Status(200)]).await;
    let secret = "aws-enc-webhook-secret-0042";
    let (s, b) = e
        .api(
            "cf1",
            "PUT",
            "/v2/service_instances/enc-2",
            "",
            Some(provision_body(ASYNC_BIND, json!({}))),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let hook_path = "/v2/service_instances/enc-2/service_bindings/b2";
    let q = format!(
        "accepts_incomplete=true&webhook={}&secret={secret}",
        rx.url("/hook")
    );
    let (s, b) = e
        .api(
            "cf1",
            "PUT",
            hook_path,
            &q,
            Some(json!({"service_id": PG, "plan_id": ASYNC_BIND})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    // While the bind runs, its operation holds the webhook registration.
    let items = raw_items(&e).await;
    assert!(items.iter().any(|(_, sk, _)| sk.starts_with("O#")));
    for (_, _, item) in &items {
        assert!(
            !item.contains(secret),
            "the webhook secret is stored plain: {item}"
        );
    }
    let (s, b) = e
        .settle("cf1", &format!("{hook_path}/last_operation"))
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("succeeded")), "{b}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while rx.received().is_empty() {
        assert!(Instant::now() < deadline, "no first attempt");
        e.webhook_round().await;
    }
    let (_, got2) = e.api("cf1", "GET", hook_path, "", None).await;
    let password2 = got2["credentials"]["password"].as_str().unwrap().to_owned();
    // The pending callback (after the failed attempt) and every other item: no secret in plain text.
    let items = raw_items(&e).await;
    assert!(
        items
            .iter()
            .any(|(_, sk, item)| sk.starts_with("W#") && item.contains("sealed"))
    );
    for (_, _, item) in &items {
        for s in [password.as_str(), uri.as_str(), password2.as_str(), secret] {
            assert!(!item.contains(s), "'{s}' is stored plain: {item}");
        }
    }
    while rx.received().len() < 2 {
        assert!(Instant::now() < deadline, "not delivered");
        e.webhook_round().await;
    }
    assert_eq!(rx.received()[1].json()["credentials"], got2["credentials"]);
    // Data keys are cached per cold start: two purposes, so at most two GenerateDataKey calls, and no
    // Decrypt of what this process sealed itself.
    let (generated, decrypted) = e.sealer.kms_calls();
    assert!(generated <= 2, "GenerateDataKey called {generated} times");
    assert_eq!(decrypted, 0);

    // A fresh sealer (another cold start) opens them through KMS Decrypt, once per data key.
    let sdk = moto().sdk_config().await;
    let cold = Arc::new(aws::KmsSealer::new(
        aws_sdk_kms::Client::new(&sdk),
        &e.cfg.kms_key_id,
    ));
    let cold_store = aws::DynamoStore::new(e.dynamo.clone(), &e.table, cold.clone());
    use osb_broker::ports::Store;
    let iid = osb_broker::ids::InstanceId::parse("enc-1").unwrap();
    let b1 = osb_broker::ids::BindingId::parse("b1").unwrap();
    let read = cold_store
        .get_binding("cf1", &iid, &b1)
        .await
        .unwrap()
        .unwrap();
    let creds = serde_json::to_value(read.item.result.unwrap().credentials).unwrap();
    assert_eq!(creds, first["credentials"]);
    assert_eq!(cold.kms_calls(), (0, 1));
    let (pk, sk) = ("T#cf1#I#enc-1".to_owned(), "B#b1".to_owned());
    let body = raw_body(&e, &pk, &sk).await;

    // Tampered: one character of the sealed credentials changed → 500, never other credentials.
    let mut v: Value = serde_json::from_str(&body).unwrap();
    let env_text = v["sealed"]["result"].as_str().unwrap().to_owned();
    let mut chars: Vec<char> = env_text.chars().collect();
    let at = chars.len() - 4;
    chars[at] = if chars[at] == 'x' { 'y' } else { 'x' };
    v["sealed"]["result"] = json!(chars.into_iter().collect::<String>());
    set_raw_body(&e, &pk, &sk, &v.to_string()).await;
    let (s, b) = e.api("cf1", "GET", path, "", None).await;
    assert_eq!(s, 500, "{b}");
    assert!(b.get("credentials").is_none());
    // Moved: b1's sealed credentials copied into b2's item do not open there.
    let b2_body = raw_body(&e, "T#cf1#I#enc-2", "B#b2").await;
    let mut moved: Value = serde_json::from_str(&b2_body).unwrap();
    moved["sealed"]["result"] = json!(env_text);
    set_raw_body(&e, "T#cf1#I#enc-2", "B#b2", &moved.to_string()).await;
    let (s, b) = e.api("cf1", "GET", hook_path, "", None).await;
    assert_eq!(s, 500, "{b}");
    // Put b1 back as it was.
    set_raw_body(&e, &pk, &sk, &body).await;
    set_raw_body(&e, "T#cf1#I#enc-2", "B#b2", &b2_body).await;
    let (s, got) = e.api("cf1", "GET", path, "", None).await;
    assert_eq!((s, &got["credentials"]), (200, &first["credentials"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reseal_invocation_seals_plain_items_and_rewraps_under_a_new_kms_key() {
    use osb_broker::ports::Store;
    let e = env().await;
    let (s, b) = e
        .api(
            "cf1",
            "PUT",
            "/v2/service_instances/rs-1",
            "",
            Some(provision_body(SMALL, json!({}))),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let path = "/v2/service_instances/rs-1/service_bindings/b1";
    let (s, first) = e
        .api(
            "cf1",
            "PUT",
            path,
            "",
            Some(json!({"service_id": PG, "plan_id": SMALL})),
        )
        .await;
    assert_eq!(s, 201, "{first}");
    let password = first["credentials"]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let (pk, sk) = ("T#cf1#I#rs-1", "B#b1");
    // The binding as a broker before encryption wrote it: plain JSON. It still reads.
    let sealed_body = raw_body(&e, pk, sk).await;
    let iid = osb_broker::ids::InstanceId::parse("rs-1").unwrap();
    let bid = osb_broker::ids::BindingId::parse("b1").unwrap();
    let plain = e
        .broker
        .store
        .get_binding("cf1", &iid, &bid)
        .await
        .unwrap()
        .unwrap()
        .item;
    set_raw_body(&e, pk, sk, &serde_json::to_string(&plain).unwrap()).await;
    assert!(raw_body(&e, pk, sk).await.contains(&password));
    let (s, got) = e.api("cf1", "GET", path, "", None).await;
    assert_eq!((s, &got["credentials"]), (200, &first["credentials"]));

    // Rotation to a new KMS key: the functions now seal with it; the operator's reseal invocation
    // rewrites every item, in pages that go on from `next`.
    let sdk = moto().sdk_config().await;
    let new_key = osb_broker::aws::testing::kms_key(&sdk).await;
    let sealer = Arc::new(aws::KmsSealer::new(
        aws_sdk_kms::Client::new(&sdk),
        &new_key,
    ));
    let store = aws::DynamoStore::new(e.dynamo.clone(), &e.table, sealer.clone());
    let mut event = json!({"osb_reseal": {}});
    let mut rewritten = 0;
    loop {
        let out = osb_worker::handle_reseal(&store, &event, Duration::ZERO)
            .await
            .unwrap();
        rewritten += out["rewritten"].as_u64().unwrap();
        if out["next"].is_null() {
            break;
        }
        event = json!({"osb_reseal": {"from": out["next"]}});
    }
    assert!(rewritten >= 2, "the binding and its operation: {rewritten}");
    let body = raw_body(&e, pk, sk).await;
    assert!(!body.contains(&password), "sealed again: {body}");
    assert_ne!(body, sealed_body);
    // Sealed under the new key: the new key's sealer generated its data key and opens it without KMS.
    let read = store
        .get_binding("cf1", &iid, &bid)
        .await
        .unwrap()
        .unwrap()
        .item;
    assert_eq!(
        serde_json::to_value(read.result.unwrap().credentials).unwrap(),
        first["credentials"]
    );
    assert_eq!(sealer.kms_calls().0, 1);
    // A bad `from` is refused.
    let err =
        osb_worker::handle_reseal(&store, &json!({"osb_reseal": {"from": 3}}), Duration::ZERO)
            .await;
    assert!(err.is_err());
}

/// The operator's admin API on AWS: served by the API function beside the OSB routes when
/// `OSB_ADMIN_SECRET_ID` names its credentials, listing through the `inventory` GSI; tenants' credentials
/// get 401 there, the admin's get 401 on the OSB routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_is_served_beside_the_osb_api_with_credentials_from_secrets_manager() {
    let e = env().await;
    let sdk = moto().sdk_config().await;
    let mut cfg = e.cfg.clone();
    cfg.admin_secret_id = Some(
        secret(
            &sdk,
            "admin",
            r#"{"username": "admin-user", "password": "admin-pass-0123456789"}"#,
        )
        .await,
    );
    let router = aws::api_router(&cfg, &sdk, osb_broker::http::DEFAULT_BODY_LIMIT)
        .await
        .unwrap();
    for id in ["adm-1", "adm-2"] {
        let (s, b) = lambda_call(
            &router,
            "cf1",
            "PUT",
            &format!("/v2/service_instances/{id}"),
            "",
            Some(provision_body(SMALL, json!({}))),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, bound) = lambda_call(
        &router,
        "cf1",
        "PUT",
        "/v2/service_instances/adm-1/service_bindings/b1",
        "",
        Some(json!({"service_id": PG, "plan_id": SMALL})),
    )
    .await;
    assert_eq!(s, 201, "{bound}");
    let (s, list) = lambda_call(
        &router,
        "admin",
        "GET",
        "/admin/v1/tenants/cf1/instances",
        "limit=1",
        None,
    )
    .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["items"][0]["instance_id"], "adm-1", "{list}");
    let cursor = list["next"].as_str().expect("a next page").to_owned();
    let (s, next) = lambda_call(
        &router,
        "admin",
        "GET",
        "/admin/v1/tenants/cf1/instances",
        &format!("limit=1&cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(
        (s, &next["items"][0]["instance_id"]),
        (200, &json!("adm-2"))
    );
    let (s, bindings) = lambda_call(
        &router,
        "admin",
        "GET",
        "/admin/v1/tenants/cf1/bindings",
        "",
        None,
    )
    .await;
    assert_eq!(
        (s, &bindings["items"][0]["binding_id"]),
        (200, &json!("b1"))
    );
    let password = bound["credentials"]["password"].as_str().unwrap();
    assert!(!bindings.to_string().contains(password), "{bindings}");
    for tenant in ["cf1", "ks2", "other"] {
        let (s, _) = lambda_call(&router, tenant, "GET", "/admin/v1/tenants", "", None).await;
        assert_eq!(s, 401, "{tenant} on the admin API");
    }
    let (s, _) = lambda_call(&router, "admin", "GET", "/v2/catalog", "", None).await;
    assert_eq!(s, 401, "the admin on the OSB API");
    let (s, _) = lambda_call(&router, "cf1", "GET", "/v2/catalog", "", None).await;
    assert_eq!(s, 200);
}
