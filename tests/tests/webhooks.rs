//! Webhook callbacks end to end: the real local broker sends them to receivers on 127.0.0.1 (allowed only
//! through the local-mode `allow_loopback` setting). Each receiver checks `x-osb-signature` with its own
//! HMAC over the raw bytes and `webhook-signature` with the official Standard Webhooks verifier
//! (`standardwebhooks` from PyPI, in `.venv`, installed by the test command); retries, 410, redirects,
//! timeouts, huge responses, a receiver that is down, restarts, and what the broker's log never holds.

use base64::Engine;
use e2e::receiver::{Received, Receiver, Reply};
use e2e::*;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const SECRET: &str = "e2e-webhook-secret-0123456789abc";
/// A path that stands for a receiver's own token: it must never reach the broker's log.
const HOOK_PATH: &str = "/osb/callback/receiver-private-path";

fn hook_query(receiver: &Receiver) -> String {
    format!("&{}", e2e::webhook_query(&receiver.url(HOOK_PATH), SECRET))
}

/// The receiver's own check of `x-osb-signature`: HMAC-SHA256 keyed with the secret's bytes over the raw
/// body, standard padded base64, compared in constant time.
#[track_caller]
fn assert_osb_signature(r: &Received) {
    let header = r.header("x-osb-signature").expect("x-osb-signature");
    let sig = base64::engine::general_purpose::STANDARD
        .decode(header)
        .expect("base64 signature");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(&r.body);
    mac.verify_slice(&sig).expect("x-osb-signature verifies");
}

/// `webhook-signature` checked by the official `standardwebhooks` Python library.
#[track_caller]
fn assert_standard_webhooks(r: &Received) -> Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run scripts/test-tools.sh (the README's test command does)",
        python.display()
    );
    let headers: serde_json::Map<String, Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let input = json!({
        "secret": SECRET,
        "headers": headers,
        "body_b64": base64::engine::general_purpose::STANDARD.encode(&r.body),
    });
    let mut child = std::process::Command::new(python)
        .arg(root.join("scripts/webhooks/verify.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run verify.py");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("verify.py output");
    assert!(
        out.status.success(),
        "standardwebhooks rejected the delivery: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("verified payload")
}

#[track_caller]
fn assert_verified(r: &Received) -> Value {
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, HOOK_PATH);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_osb_signature(r);
    let payload = assert_standard_webhooks(r);
    assert_eq!(payload, r.json(), "the verified payload is the body");
    assert_eq!(r.header("webhook-id"), r.header("x-osb-operation"));
    payload
}

async fn start() -> Broker {
    Broker::start_logging(&e2e::loopback_webhooks_config(&[1, 1]), "debug").await
}

#[tokio::test]
async fn provision_success_and_failure_are_called_back_signed_and_verifiable() {
    bounded(async {
        let broker = start().await;
        let rx = Receiver::start(vec![Reply::Status(200)]).await;
        let cf1 = broker.client("cf1");
        let r = cf1
            .request(
                reqwest::Method::PUT,
                &format!("/v2/service_instances/wh-ok?accepts_incomplete=true{}", hook_query(&rx)),
            )
            .header("x-broker-api-request-identity", "req-42")
            .json(&json!({"service_id": PG_SERVICE, "plan_id": STANDARD, "organization_guid": "o",
                          "space_guid": "s", "parameters": {"simulate": {"delay_seconds": 1}}}));
        let r = send(r).await;
        r.expect(202);
        let op = r.operation();
        let got = rx.wait_for(1, Duration::from_secs(20)).await;
        let d = &got[0];
        let body = assert_verified(d);
        assert_eq!(d.header("webhook-id"), Some(op.as_str()));
        assert_eq!(d.header("x-osb-operation-type"), Some("provision"));
        assert_eq!(d.header("x-osb-instance-id"), Some("wh-ok"));
        assert_eq!(d.header("x-osb-state"), Some("succeeded"));
        assert_eq!(d.header("x-osb-status"), Some("201"));
        assert_eq!(d.header("x-osb-attempt"), Some("1"));
        assert_eq!(d.header("x-broker-api-request-identity"), Some("req-42"));
        // The body a synchronous provision returns; the state it reports is already visible.
        let inst = cf1.get("/v2/service_instances/wh-ok").await;
        inst.expect(200);
        assert_eq!(body["dashboard_url"], inst.json["dashboard_url"]);
        let lo = cf1
            .get(&format!("/v2/service_instances/wh-ok/last_operation?operation={op}"))
            .await;
        assert_eq!(lo.state(), "succeeded");

        // A failure sends the OSB error body.
        let r = cf1
            .put(
                &format!("/v2/service_instances/wh-fail?accepts_incomplete=true{}", hook_query(&rx)),
                &json!({"service_id": PG_SERVICE, "plan_id": STANDARD, "organization_guid": "o", "space_guid": "s",
                       "parameters": {"simulate": {"delay_seconds": 1, "fail": true,
                                                   "failure_description": "quota exceeded"}}}),
            )
            .await;
        r.expect(202);
        let got = rx.wait_for(2, Duration::from_secs(20)).await;
        let d = &got[1];
        let body = assert_verified(d);
        assert!(body["description"].as_str().unwrap_or("").contains("quota exceeded"), "{body}");
        assert_eq!(d.header("x-osb-state"), Some("failed"));
        assert_eq!(d.header("x-osb-instance-id"), Some("wh-fail"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(rx.received().len(), 2, "one POST per operation");
        assert_clean_log(&broker);
    })
    .await;
}

#[tokio::test]
async fn bind_update_and_deprovision_callbacks_carry_their_sync_bodies() {
    bounded(async {
        let broker = start().await;
        let rx = Receiver::start(vec![Reply::Status(200)]).await;
        let cf1 = broker.client("cf1");
        cf1.put(
            "/v2/service_instances/wh-b",
            &json!({"service_id": PG_SERVICE, "plan_id": ASYNC_BINDINGS, "organization_guid": "o", "space_guid": "s"}),
        )
        .await
        .expect(201);
        let r = cf1
            .put(
                &format!(
                    "/v2/service_instances/wh-b/service_bindings/b1?accepts_incomplete=true{}",
                    hook_query(&rx)
                ),
                &json!({"service_id": PG_SERVICE, "plan_id": ASYNC_BINDINGS}),
            )
            .await;
        r.expect(202);
        let got = rx.wait_for(1, Duration::from_secs(20)).await;
        let body = assert_verified(&got[0]);
        assert_eq!(got[0].header("x-osb-operation-type"), Some("bind"));
        assert_eq!(got[0].header("x-osb-binding-id"), Some("b1"));
        let binding = cf1.get("/v2/service_instances/wh-b/service_bindings/b1").await;
        binding.expect(200);
        assert_eq!(body["credentials"], binding.json["credentials"]);
        assert!(body["credentials"]["password"].is_string());

        let r = cf1
            .patch(
                &format!("/v2/service_instances/wh-b?accepts_incomplete=true{}", hook_query(&rx)),
                &json!({"service_id": PG_SERVICE, "plan_id": STANDARD}),
            )
            .await;
        r.expect(202);
        let got = rx.wait_for(2, Duration::from_secs(20)).await;
        assert_verified(&got[1]);
        assert_eq!(got[1].header("x-osb-operation-type"), Some("update"));
        assert_eq!(got[1].header("x-osb-status"), Some("200"));

        let unbind = cf1
            .delete(&format!(
                "/v2/service_instances/wh-b/service_bindings/b1?accepts_incomplete=true&service_id={PG_SERVICE}&plan_id={STANDARD}"
            ))
            .await;
        assert!(unbind.status == 200 || unbind.status == 202, "{unbind:?}");
        if unbind.status == 202 {
            let lo = cf1
                .poll_until_final("/v2/service_instances/wh-b/service_bindings/b1/last_operation")
                .await;
            assert_eq!(lo.status, 410, "unbound");
        }
        let r = cf1
            .delete(&format!(
                "/v2/service_instances/wh-b?accepts_incomplete=true&service_id={PG_SERVICE}&plan_id={STANDARD}{}",
                hook_query(&rx)
            ))
            .await;
        r.expect(202);
        let got = rx.wait_for(3, Duration::from_secs(20)).await;
        let body = assert_verified(&got[2]);
        assert_eq!(body, json!({}));
        assert_eq!(got[2].header("x-osb-operation-type"), Some("deprovision"));
        assert_clean_log(&broker);
        // The credentials went to the receiver, never to the log.
        let password = body_password(&got[0]);
        assert!(!broker.log().contains(&password));
    })
    .await;
}

fn body_password(r: &Received) -> String {
    r.json()["credentials"]["password"]
        .as_str()
        .expect("password")
        .to_owned()
}

async fn provision_async(broker: &Broker, id: &str, rx: &Receiver) -> String {
    let r = broker
        .client("cf1")
        .put(
            &format!("/v2/service_instances/{id}?accepts_incomplete=true{}", hook_query(rx)),
            &json!({"service_id": PG_SERVICE, "plan_id": STANDARD, "organization_guid": "o", "space_guid": "s",
                   "parameters": {"simulate": {"delay_seconds": 1}}}),
        )
        .await;
    r.expect(202);
    r.operation()
}

#[tokio::test]
async fn a_500_then_200_is_delivered_in_exactly_two_attempts_with_the_same_bytes() {
    bounded(async {
        let broker = start().await;
        let rx = Receiver::start(vec![Reply::Status(500), Reply::Status(200)]).await;
        let op = provision_async(&broker, "wh-retry", &rx).await;
        let got = rx.wait_for(2, Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let got2 = rx.received();
        assert_eq!(got2.len(), 2, "nothing after the 2xx");
        for d in &got {
            assert_verified(d);
            assert_eq!(d.header("webhook-id"), Some(op.as_str()));
        }
        assert_eq!(got[0].body, got[1].body);
        assert_eq!(
            got[0].header("x-osb-signature"),
            got[1].header("x-osb-signature")
        );
        assert_eq!(got[0].header("x-osb-attempt"), Some("1"));
        assert_eq!(got[1].header("x-osb-attempt"), Some("2"));
        let gap = got[1].at - got[0].at;
        assert!(
            gap >= Duration::from_millis(900),
            "backoff respected: {gap:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn gone_stops_and_redirects_are_never_followed() {
    bounded(async {
        let broker = start().await;
        let gone = Receiver::start(vec![Reply::Status(410)]).await;
        let target = Receiver::start(vec![Reply::Status(200)]).await;
        let redirect = Receiver::start(vec![Reply::Redirect(307, target.url(HOOK_PATH))]).await;
        provision_async(&broker, "wh-gone", &gone).await;
        provision_async(&broker, "wh-redirect", &redirect).await;
        gone.wait_for(1, Duration::from_secs(20)).await;
        // The redirecting receiver gets the first attempt and the two retries of the schedule.
        redirect.wait_for(3, Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(gone.received().len(), 1, "410 stops at once");
        assert_eq!(redirect.received().len(), 3);
        assert_eq!(
            target.connections(),
            0,
            "the redirect target never saw a connection"
        );
        assert!(
            broker.log().contains("gave up"),
            "the redirecting receiver was given up"
        );
    })
    .await;
}

#[tokio::test]
async fn a_hanging_receiver_times_out_and_huge_or_endless_responses_are_not_read() {
    bounded(async {
        let broker = start().await;
        let hang = Receiver::start(vec![Reply::Hang, Reply::Status(200)]).await;
        let huge = Receiver::start(vec![Reply::Huge(10 * 1024 * 1024)]).await;
        let endless = Receiver::start(vec![Reply::Endless]).await;
        provision_async(&broker, "wh-hang", &hang).await;
        provision_async(&broker, "wh-huge", &huge).await;
        provision_async(&broker, "wh-endless", &endless).await;
        let got = hang.wait_for(2, Duration::from_secs(20)).await;
        let gap = got[1].at - got[0].at;
        // Attempt deadline 800 ms + 1 s backoff: far less than the hang.
        assert!(
            gap < Duration::from_secs(4),
            "the hanging attempt was cut: {gap:?}"
        );
        huge.wait_for(1, Duration::from_secs(20)).await;
        endless.wait_for(1, Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            huge.received().len(),
            1,
            "a 200 with 10 MiB is delivered at once"
        );
        assert_eq!(
            endless.received().len(),
            1,
            "a 200 with an endless body is delivered at once"
        );
        // Memory stays bounded: the broker never buffered the 10 MiB or the endless stream.
        if let Some(pid) = broker.pid()
            && let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
        {
            let hwm_kb: u64 = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            assert!(hwm_kb > 0 && hwm_kb < 100 * 1024, "peak RSS {hwm_kb} kB");
        }
    })
    .await;
}

#[tokio::test]
async fn a_receiver_that_is_down_is_retried_then_given_up_and_polling_still_works() {
    bounded(async {
        let broker = start().await;
        // A port with nothing listening.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let url = format!("http://127.0.0.1:{port}{HOOK_PATH}");
        let cf1 = broker.client("cf1");
        let r = cf1
            .put(
                &format!(
                    "/v2/service_instances/wh-down?accepts_incomplete=true&{}",
e2e::webhook_query(&url, SECRET)
                ),
                &json!({"service_id": PG_SERVICE, "plan_id": STANDARD, "organization_guid": "o", "space_guid": "s",
                       "parameters": {"simulate": {"delay_seconds": 1}}}),
            )
            .await;
        r.expect(202);
        let started = Instant::now();
        while !broker.log().contains("gave up") {
            assert!(started.elapsed() < Duration::from_secs(30), "never gave up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let attempts = broker.log().matches("webhook attempt").count();
        assert_eq!(attempts, 3, "first attempt + two scheduled retries");
        let lo = cf1.get("/v2/service_instances/wh-down/last_operation").await;
        assert_eq!(lo.state(), "succeeded", "nothing lost from last_operation");
        assert_clean_log(&broker);
    })
    .await;
}

#[tokio::test]
async fn a_restart_after_delivery_sends_nothing_again_and_a_restart_before_it_still_delivers() {
    bounded(async {
        let mut broker = start().await;
        let rx = Receiver::start(vec![Reply::Status(200)]).await;
        provision_async(&broker, "wh-r1", &rx).await;
        rx.wait_for(1, Duration::from_secs(20)).await;
        broker.restart().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            rx.received().len(),
            1,
            "a delivered callback is not sent again"
        );

        // Killed while the operation runs: after the restart the operation finishes and is called back.
        let slow = Receiver::start(vec![Reply::Status(200)]).await;
        provision_async(&broker, "wh-r2", &slow).await;
        broker.kill();
        broker.restart().await;
        let got = slow.wait_for(1, Duration::from_secs(30)).await;
        assert_verified(&got[0]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(slow.received().len(), 1);
    })
    .await;
}

/// The broker's log (at debug) never holds the secret, a signature, the webhook's path, or credentials.
#[track_caller]
fn assert_clean_log(broker: &Broker) {
    let log = broker.log();
    assert!(log.contains("webhook attempt"), "the log has the attempts");
    assert!(!log.contains(SECRET), "the secret is in the log");
    assert!(
        !log.contains(&e2e::urlencode(SECRET)),
        "the encoded secret is in the log"
    );
    assert!(
        !log.contains("receiver-private-path"),
        "the webhook's path is in the log"
    );
    assert!(
        !log.contains("x-osb-signature:") && !log.contains("v1,"),
        "a signature is in the log"
    );
}
