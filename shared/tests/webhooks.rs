//! Webhook callbacks through the router and the domain, on the embedded store with a manual clock and a
//! scripted in-memory sender: registration checks (400, nothing created), what is stored and sent, the
//! retry schedule, final outcomes, the delivery lease and the fault cases (duplicate or lost messages).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use common::*;
use osb_broker::broker::webhooks::{DeliveryStep, WebhookDelivery};
use osb_broker::ports::{
    AttemptOutcome, AttemptReport, Queue, Record, WebhookRequest, WebhookSender, Write,
};
use osb_broker::records::{CallbackState, OperationKey};
use osb_broker::webhooks::schedule::RetryPolicy;
use osb_broker::webhooks::sign::{osb_signature, standard_signature};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const HOOK: &str = "https://platform.example.com/osb/callback?token=receiver-own-token";

/// A sender that records every request and answers from a script (the last answer repeats).
#[derive(Default)]
struct FakeSender {
    script: Mutex<VecDeque<AttemptOutcome>>,
    sent: Mutex<Vec<WebhookRequest>>,
    delay: Mutex<Duration>,
}

impl FakeSender {
    fn new(script: Vec<AttemptOutcome>) -> Arc<Self> {
        Arc::new(FakeSender {
            script: Mutex::new(script.into()),
            ..Default::default()
        })
    }
    fn sent(&self) -> Vec<WebhookRequest> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl WebhookSender for FakeSender {
    async fn send(&self, request: &WebhookRequest) -> AttemptReport {
        self.sent.lock().unwrap().push(request.clone());
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut script = self.script.lock().unwrap();
        let outcome = if script.len() > 1 {
            script.pop_front().unwrap()
        } else {
            script
                .front()
                .cloned()
                .unwrap_or(AttemptOutcome::Delivered { status: 200 })
        };
        AttemptReport {
            outcome,
            duration: Duration::from_millis(3),
            remote_ip: None,
        }
    }
}

fn header<'a>(r: &'a WebhookRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

struct Env {
    h: Harness,
    sender: Arc<FakeSender>,
    delivery: WebhookDelivery,
    dlq: Arc<osb_broker::adapters::MemoryQueue>,
}

fn env_with(script: Vec<AttemptOutcome>, retry: RetryPolicy) -> Env {
    let h = Harness::new();
    let sender = FakeSender::new(script);
    let dlq = Arc::new(osb_broker::adapters::MemoryQueue::new());
    let delivery = WebhookDelivery {
        store: h.broker.store.clone(),
        queue: h.broker.webhook_queue.clone(),
        dead_letters: Some(dlq.clone()),
        sender: sender.clone(),
        clock: h.clock.clone(),
        retry,
        attempt_timeout: Duration::from_secs(15),
    };
    Env {
        h,
        sender,
        delivery,
        dlq,
    }
}

fn env(script: Vec<AttemptOutcome>) -> Env {
    env_with(script, RetryPolicy::default())
}

fn query(webhook: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!("&webhook={}&secret={}", enc(webhook), enc(secret))
}

impl Env {
    async fn provision_with_hook(&self, id: &str, plan: &str, params: Value) -> Resp {
        self.h
            .call(
                "cf1",
                Method::PUT,
                &format!(
                    "/v2/service_instances/{id}?accepts_incomplete=true{}",
                    query(HOOK, SECRET)
                ),
                Some(
                    json!({"service_id": PG, "plan_id": plan, "organization_guid": "org",
                            "space_guid": "space", "parameters": params}),
                ),
            )
            .await
    }

    /// An async provision with the webhook, completed by the worker; the operation's key.
    async fn finished(&self, id: &str) -> OperationKey {
        let r = self.provision_with_hook(id, STANDARD, json!({})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
        let key = self.h.key("cf1", id, &r.body["operation"]);
        self.h.complete(&key, 20).await;
        key
    }

    /// The callback messages waiting on the webhook queue (received and acknowledged).
    async fn take_messages(&self) -> Vec<OperationKey> {
        let q = &self.h.broker.webhook_queue;
        let got = q
            .receive(10, Duration::from_millis(10), Duration::from_secs(30))
            .await
            .unwrap();
        let mut keys = Vec::new();
        for d in got {
            q.ack(&d.receipt).await.unwrap();
            keys.push(serde_json::from_str(&d.body).unwrap());
        }
        keys
    }
}

#[tokio::test]
async fn async_provision_success_sends_the_sync_body_signed_once_then_nothing_more() {
    let e = env(vec![]);
    let r = e.provision_with_hook("wh-1", STANDARD, json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let op = r.body["operation"].clone();
    let key = e.h.key("cf1", "wh-1", &op);
    // The secret never shows in what the platform can read.
    let lo = e.h.last_op("cf1", "wh-1").await;
    assert!(!lo.body.to_string().contains(SECRET));
    assert!(
        e.take_messages().await.is_empty(),
        "no callback before the end"
    );
    e.h.complete(&key, 20).await;
    assert_eq!(e.take_messages().await, vec![key.clone()]);

    let stored = e.h.broker.store.get_callback(&key).await.unwrap().unwrap();
    assert_eq!(stored.item.state, CallbackState::Pending);
    let body = stored.item.body.clone().unwrap();
    assert_eq!(
        e.delivery.deliver(&key).await.unwrap(),
        DeliveryStep::Finished
    );
    let sent = e.sender.sent();
    assert_eq!(sent.len(), 1);
    let req = &sent[0];
    assert_eq!(req.url, HOOK);
    assert_eq!(req.body.as_ref(), body.as_bytes());
    // The body is what a synchronous provision answers: the instance's dashboard URL.
    let fetched =
        e.h.call("cf1", Method::GET, "/v2/service_instances/wh-1", None)
            .await;
    let v: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(v["dashboard_url"], fetched.body["dashboard_url"]);
    assert!(v.get("operation").is_none());
    assert_eq!(header(req, "content-type"), Some("application/json"));
    assert_eq!(
        header(req, "x-osb-signature").unwrap(),
        osb_signature(SECRET.as_bytes(), &req.body)
    );
    let op_id = op.as_str().unwrap();
    let ts: i64 = header(req, "webhook-timestamp").unwrap().parse().unwrap();
    assert_eq!(header(req, "webhook-id"), Some(op_id));
    assert_eq!(header(req, "x-osb-operation"), Some(op_id));
    assert_eq!(
        header(req, "webhook-signature").unwrap(),
        standard_signature(SECRET.as_bytes(), op_id, ts, &req.body)
    );
    assert_eq!(header(req, "x-osb-operation-type"), Some("provision"));
    assert_eq!(header(req, "x-osb-instance-id"), Some("wh-1"));
    assert_eq!(header(req, "x-osb-binding-id"), None);
    assert_eq!(header(req, "x-osb-state"), Some("succeeded"));
    assert_eq!(header(req, "x-osb-status"), Some("201"));
    assert_eq!(header(req, "x-osb-attempt"), Some("1"));
    assert_eq!(header(req, "x-broker-api-version"), Some("2.17"));
    for (_, v) in &req.headers {
        assert!(!v.contains(SECRET), "the secret is never sent");
    }

    // Final: the secret and body are gone, the attempt is recorded without them.
    let done =
        e.h.broker
            .store
            .get_callback(&key)
            .await
            .unwrap()
            .unwrap()
            .item;
    assert_eq!(done.state, CallbackState::Delivered);
    assert_eq!((done.secret, done.body), (None, None));
    assert_eq!(done.attempts.len(), 1);
    assert_eq!(done.attempts[0].outcome, "delivered");
    assert_eq!(done.attempts[0].status, Some(200));
    let recorded = serde_json::to_string(&done.attempts).unwrap();
    assert!(!recorded.contains(SECRET) && !recorded.contains("receiver-own-token"));

    // A duplicate message after delivery sends nothing.
    assert_eq!(
        e.delivery.deliver(&key).await.unwrap(),
        DeliveryStep::Finished
    );
    assert_eq!(e.sender.sent().len(), 1);
}

#[tokio::test]
async fn synchronous_answers_register_no_webhook() {
    let e = env(vec![]);
    let r = e.provision_with_hook("wh-sync", SMALL, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(e.take_messages().await.is_empty());
    assert!(
        e.h.broker
            .store
            .pending_callbacks(None, 10)
            .await
            .unwrap()
            .keys
            .is_empty()
    );
}

#[tokio::test]
async fn a_500_then_200_makes_exactly_two_attempts_with_the_same_bytes() {
    let e = env(vec![
        AttemptOutcome::HttpStatus {
            status: 500,
            retry_after: None,
        },
        AttemptOutcome::Delivered { status: 204 },
    ]);
    let key = e.finished("wh-retry").await;
    let DeliveryStep::Again(d) = e.delivery.deliver(&key).await.unwrap() else {
        panic!("a 500 is retried");
    };
    // 5 s ± 20 % jitter.
    assert!(
        d >= Duration::from_secs(4) && d <= Duration::from_secs(6),
        "{d:?}"
    );
    // Not yet due: a message arriving early sends nothing and comes back later.
    assert!(matches!(
        e.delivery.deliver(&key).await.unwrap(),
        DeliveryStep::Again(_)
    ));
    assert_eq!(e.sender.sent().len(), 1);
    e.h.clock.advance(d);
    assert_eq!(
        e.delivery.deliver(&key).await.unwrap(),
        DeliveryStep::Finished
    );
    let sent = e.sender.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].body, sent[1].body);
    for h in ["x-osb-signature", "webhook-id"] {
        assert_eq!(header(&sent[0], h), header(&sent[1], h), "{h}");
    }
    assert_ne!(
        header(&sent[0], "webhook-timestamp"),
        header(&sent[1], "webhook-timestamp")
    );
    assert_eq!(header(&sent[0], "x-osb-attempt"), Some("1"));
    assert_eq!(header(&sent[1], "x-osb-attempt"), Some("2"));
    let cb =
        e.h.broker
            .store
            .get_callback(&key)
            .await
            .unwrap()
            .unwrap()
            .item;
    let outcomes: Vec<_> = cb.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["http_status", "delivered"]);
    assert_eq!(cb.attempts[0].status, Some(500));
    assert!(cb.attempts[0].next_attempt_at.is_some());
}

#[tokio::test]
async fn gone_and_blocked_are_final_after_one_attempt() {
    for (outcome, state) in [
        (AttemptOutcome::Gone, CallbackState::Gone),
        (AttemptOutcome::BlockedDestination, CallbackState::Blocked),
        (AttemptOutcome::InvalidUrl, CallbackState::Blocked),
    ] {
        let e = env(vec![outcome.clone()]);
        let key = e.finished("wh-final").await;
        assert_eq!(
            e.delivery.deliver(&key).await.unwrap(),
            DeliveryStep::Finished,
            "{outcome:?}"
        );
        e.h.clock.advance(Duration::from_secs(3600));
        assert_eq!(
            e.delivery.deliver(&key).await.unwrap(),
            DeliveryStep::Finished
        );
        assert_eq!(e.sender.sent().len(), 1, "{outcome:?}");
        let cb =
            e.h.broker
                .store
                .get_callback(&key)
                .await
                .unwrap()
                .unwrap()
                .item;
        assert_eq!(cb.state, state);
        assert_eq!((cb.secret, cb.body), (None, None));
        assert!(
            e.h.broker
                .store
                .pending_callbacks(None, 10)
                .await
                .unwrap()
                .keys
                .is_empty()
        );
    }
}

#[tokio::test]
async fn retry_after_lengthens_the_wait_up_to_its_cap() {
    let e = env(vec![
        AttemptOutcome::HttpStatus {
            status: 429,
            retry_after: Some(Duration::from_secs(7)),
        },
        AttemptOutcome::HttpStatus {
            status: 503,
            retry_after: Some(Duration::from_secs(86_400)),
        },
    ]);
    let key = e.finished("wh-ra").await;
    let DeliveryStep::Again(d) = e.delivery.deliver(&key).await.unwrap() else {
        panic!("retried");
    };
    assert!(d >= Duration::from_secs(7), "{d:?}");
    e.h.clock.advance(d);
    let DeliveryStep::Again(d) = e.delivery.deliver(&key).await.unwrap() else {
        panic!("retried");
    };
    assert_eq!(d, Duration::from_secs(3600), "clamped to max_retry_after");
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_is_given_up_and_dead_lettered_while_polling_still_works() {
    let retry = RetryPolicy {
        delays_secs: vec![1, 2],
        ..RetryPolicy::default()
    };
    let e = env_with(vec![AttemptOutcome::ConnectError], retry);
    let key = e.finished("wh-down").await;
    let mut steps = 0;
    loop {
        steps += 1;
        match e.delivery.deliver(&key).await.unwrap() {
            DeliveryStep::Again(d) => e.h.clock.advance(d),
            DeliveryStep::Finished => break,
        }
        assert!(steps < 10);
    }
    assert_eq!(e.sender.sent().len(), 3, "1 + one per scheduled delay");
    let cb =
        e.h.broker
            .store
            .get_callback(&key)
            .await
            .unwrap()
            .unwrap()
            .item;
    assert_eq!(cb.state, CallbackState::GaveUp);
    // Kept (sealed at rest) until the record expires, so the operator can re-drive the delivery.
    assert!(cb.secret.is_some() && cb.body.is_some());
    let dead = e
        .dlq
        .receive(10, Duration::from_millis(10), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        serde_json::from_str::<OperationKey>(&dead[0].body).unwrap(),
        key
    );
    // last_operation stays the source of truth.
    let lo = e.h.last_op("cf1", "wh-down").await;
    assert_eq!(lo.body["state"], "succeeded");
}

#[tokio::test]
async fn a_failed_operation_sends_the_osb_error_body() {
    let e = env(vec![]);
    let r = e
        .provision_with_hook(
            "wh-fail",
            STANDARD,
            json!({"simulate": {"delay_seconds": 1, "fail": true, "failure_description": "disk full"}}),
        )
        .await;
    let key = e.h.key("cf1", "wh-fail", &r.body["operation"]);
    e.h.complete(&key, 20).await;
    e.delivery.deliver(&key).await.unwrap();
    let req = &e.sender.sent()[0];
    let v: Value = serde_json::from_slice(&req.body).unwrap();
    assert!(
        v["description"].as_str().unwrap().contains("disk full"),
        "{v}"
    );
    assert_eq!(header(req, "x-osb-state"), Some("failed"));
    assert_eq!(header(req, "x-osb-status"), Some("502"));
}

#[tokio::test]
async fn an_async_bind_sends_the_binding_with_its_credentials() {
    let e = env(vec![]);
    let r =
        e.h.provision("cf1", "wh-b", ASYNC_BIND, json!({}), true)
            .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r =
        e.h.call(
            "cf1",
            Method::PUT,
            &format!(
                "/v2/service_instances/wh-b/service_bindings/bd-1?accepts_incomplete=true{}",
                query(HOOK, SECRET)
            ),
            Some(json!({"service_id": PG, "plan_id": ASYNC_BIND})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let key = e.h.key("cf1", "wh-b", &r.body["operation"]);
    e.h.complete(&key, 20).await;
    e.delivery.deliver(&key).await.unwrap();
    let req = &e.sender.sent()[0];
    let v: Value = serde_json::from_slice(&req.body).unwrap();
    let got =
        e.h.call(
            "cf1",
            Method::GET,
            "/v2/service_instances/wh-b/service_bindings/bd-1",
            None,
        )
        .await;
    assert_eq!(v["credentials"], got.body["credentials"]);
    assert!(v["credentials"]["password"].is_string());
    assert_eq!(header(req, "x-osb-operation-type"), Some("bind"));
    assert_eq!(header(req, "x-osb-binding-id"), Some("bd-1"));
    assert_eq!(header(req, "x-osb-status"), Some("201"));
}

#[tokio::test]
async fn async_update_and_deprovision_accept_webhooks_too() {
    let e = env(vec![]);
    let key = e.finished("wh-u").await;
    let r =
        e.h.call(
            "cf1",
            Method::PATCH,
            &format!(
                "/v2/service_instances/wh-u?accepts_incomplete=true{}",
                query(HOOK, SECRET)
            ),
            Some(json!({"service_id": PG, "parameters": {"storage_gb": 5}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let ukey = e.h.key("cf1", "wh-u", &r.body["operation"]);
    e.h.complete(&ukey, 20).await;
    let r = e
        .h
        .call(
            "cf1",
            Method::DELETE,
            &format!(
                "/v2/service_instances/wh-u?accepts_incomplete=true&service_id={PG}&plan_id={STANDARD}{}",
                query(HOOK, SECRET)
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let dkey = e.h.key("cf1", "wh-u", &r.body["operation"]);
    e.h.complete(&dkey, 20).await;
    let keys = e.take_messages().await;
    assert_eq!(keys, vec![key.clone(), ukey.clone(), dkey.clone()]);
    for k in &keys {
        e.delivery.deliver(k).await.unwrap();
    }
    let sent = e.sender.sent();
    let types: Vec<_> = sent
        .iter()
        .map(|r| header(r, "x-osb-operation-type").unwrap())
        .collect();
    assert_eq!(types, ["provision", "update", "deprovision"]);
    assert_eq!(header(&sent[1], "x-osb-status"), Some("200"));
    assert_eq!(sent[2].body.as_ref(), b"{}");
}

#[tokio::test]
async fn a_delete_that_cancels_a_creation_reports_the_failure_to_its_webhook() {
    let e = env(vec![]);
    let r = e.provision_with_hook("wh-c", STANDARD, json!({})).await;
    let key = e.h.key("cf1", "wh-c", &r.body["operation"]);
    let r = e
        .h
        .call(
            "cf1",
            Method::DELETE,
            &format!(
                "/v2/service_instances/wh-c?accepts_incomplete=true&service_id={PG}&plan_id={STANDARD}"
            ),
            None,
        )
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    assert!(e.take_messages().await.contains(&key));
    e.delivery.deliver(&key).await.unwrap();
    let req = &e.sender.sent()[0];
    assert_eq!(header(req, "x-osb-state"), Some("failed"));
    assert!(String::from_utf8_lossy(&req.body).contains("cancelled"));
}

#[tokio::test]
async fn a_lost_webhook_message_is_sent_again_when_the_operation_message_comes_back() {
    let e = env(vec![]);
    let key = e.finished("wh-lost").await;
    // The webhook message is lost (e.g. the worker died after its commit, before the send succeeded)...
    assert_eq!(e.take_messages().await, vec![key.clone()]);
    // ...so the operations message is redelivered; the operation is final, its callback re-enqueued.
    e.h.complete(&key, 1).await;
    assert_eq!(e.take_messages().await, vec![key.clone()]);
    // And the restart/sweep path lists it while it is pending.
    assert_eq!(e.h.broker.resume_callbacks().await.unwrap().redriven, 1);
    e.delivery.deliver(&key).await.unwrap();
    assert_eq!(e.h.broker.resume_callbacks().await.unwrap().redriven, 0);
    assert_eq!(e.sender.sent().len(), 1);
}

#[tokio::test]
async fn concurrent_duplicate_messages_make_one_attempt() {
    let e = env(vec![]);
    *e.sender.delay.lock().unwrap() = Duration::from_millis(200);
    let key = e.finished("wh-dup").await;
    let (a, b, c) = tokio::join!(
        e.delivery.deliver(&key),
        e.delivery.deliver(&key),
        e.delivery.deliver(&key)
    );
    let steps = [a.unwrap(), b.unwrap(), c.unwrap()];
    assert_eq!(e.sender.sent().len(), 1, "{steps:?}");
    // The others were told to look again once the lease is over; by then it is delivered.
    assert_eq!(
        steps
            .iter()
            .filter(|s| matches!(s, DeliveryStep::Again(_)))
            .count(),
        2
    );
    e.h.clock.advance(Duration::from_secs(60));
    assert_eq!(
        e.delivery.deliver(&key).await.unwrap(),
        DeliveryStep::Finished
    );
    assert_eq!(e.sender.sent().len(), 1);
}

#[tokio::test]
async fn a_body_over_the_cap_is_not_sent() {
    let e = env(vec![]);
    let key = e.finished("wh-big").await;
    let cb = e.h.broker.store.get_callback(&key).await.unwrap().unwrap();
    let mut big = cb.item.clone();
    big.body = Some(format!("{{\"x\":\"{}\"}}", "a".repeat(300 * 1024)));
    e.h.broker
        .store
        .commit(vec![Write::replace(Record::Callback(big), cb.version)])
        .await
        .unwrap();
    assert_eq!(
        e.delivery.deliver(&key).await.unwrap(),
        DeliveryStep::Finished
    );
    assert!(e.sender.sent().is_empty());
    let cb =
        e.h.broker
            .store
            .get_callback(&key)
            .await
            .unwrap()
            .unwrap()
            .item;
    assert_eq!(cb.state, CallbackState::TooLarge);
    assert_eq!(cb.body, None);
}

/// Every bad registration is a 400 that names the problem without echoing the secret or the URL, and
/// creates nothing.
#[tokio::test]
async fn bad_webhook_registrations_are_refused_before_anything_is_created() {
    let e = env(vec![]);
    let long = format!("https://h.example.com/{}", "a".repeat(2040));
    let euro11 = "€".repeat(11);
    let cases: Vec<(String, &str)> = vec![
        (format!("&webhook={}", "https://h.example.com/x"), "secret"),
        (format!("&secret={SECRET}"), "webhook"),
        (query("https://h.example.com/x", ""), "secret"),
        (query("https://h.example.com/x", &"s".repeat(33)), "secret"),
        (query("https://h.example.com/x", &euro11), "secret"),
        (
            format!("{}&secret=again", query("https://h.example.com/x", SECRET)),
            "secret",
        ),
        (query("not a url", SECRET), "webhook"),
        (query("/callback", SECRET), "webhook"),
        (query(&long, SECRET), "webhook"),
        (query("http://public.example.com/x", SECRET), "https"),
        (query("file:///etc/passwd", SECRET), "webhook"),
        (query("https://u:p@h.example.com/", SECRET), "user"),
        (query("https://h.example.com/#frag", SECRET), "fragment"),
        (query("https://127.0.0.1/x", SECRET), "public"),
        (query("https://169.254.169.254/latest", SECRET), "public"),
        (query("https://[::ffff:127.0.0.1]/", SECRET), "public"),
        (query("https://10.0.0.1/", SECRET), "public"),
        (query("https://localhost/", SECRET), "public"),
        (query("https://h.example.com:22/", SECRET), "port"),
    ];
    for (n, (q, word)) in cases.iter().enumerate() {
        let id = format!("bad-{n}");
        let r = e
            .h
            .call(
                "cf1",
                Method::PUT,
                &format!("/v2/service_instances/{id}?accepts_incomplete=true{q}"),
                Some(json!({"service_id": PG, "plan_id": STANDARD, "organization_guid": "org", "space_guid": "space"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {:?}", r.body);
        let d = r.body["description"].as_str().unwrap();
        assert!(d.contains(word), "{q}: {d}");
        assert!(
            !d.contains(SECRET) && !d.contains("h.example.com") && !d.contains("etc/passwd"),
            "{d}"
        );
        let lo = e.h.last_op("cf1", &id).await;
        assert_eq!(lo.status, StatusCode::NOT_FOUND, "nothing created for {q}");
    }
    // The same checks guard bind.
    e.h.provision("cf1", "wh-bb", ASYNC_BIND, json!({}), true)
        .await;
    let r =
        e.h.call(
            "cf1",
            Method::PUT,
            &format!(
                "/v2/service_instances/wh-bb/service_bindings/b1?accepts_incomplete=true{}",
                query("https://192.168.1.1/", SECRET)
            ),
            Some(json!({"service_id": PG, "plan_id": ASYNC_BIND})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r =
        e.h.call(
            "cf1",
            Method::GET,
            "/v2/service_instances/wh-bb/service_bindings/b1/last_operation",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(e.take_messages().await.is_empty());
}

#[tokio::test]
async fn the_sweep_re_drives_a_callback_whose_message_was_lost() {
    let e = env(vec![]);
    let key = e.finished("wh-sweep").await;
    assert_eq!(e.take_messages().await, vec![key.clone()], "then lost");
    assert_eq!(
        e.h.broker.sweep_callbacks().await.unwrap().redriven,
        0,
        "within the grace"
    );
    e.h.clock.advance(Duration::from_secs(301));
    assert_eq!(e.h.broker.sweep_callbacks().await.unwrap().redriven, 1);
    assert_eq!(e.take_messages().await, vec![key.clone()]);
    e.delivery.deliver(&key).await.unwrap();
    e.h.clock.advance(Duration::from_secs(3600));
    assert_eq!(
        e.h.broker.sweep_callbacks().await.unwrap().redriven,
        0,
        "delivered"
    );
}
