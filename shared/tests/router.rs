//! Router tests (`tower::ServiceExt::oneshot`): authentication, version header, bodies, routes,
//! tenant catalog filtering, async completion by the worker, deadlines and races.
#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn catalog_is_filtered_per_tenant() {
    let h = Harness::new();
    let all = h.call("cf1", Method::GET, "/v2/catalog", None).await;
    assert_eq!(all.status, StatusCode::OK);
    let ids: Vec<&str> = all.body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![PG, QUEUE]);
    // The backend settings of a plan are never served.
    assert!(!all.body.to_string().contains("\"backend\""));
    let limited = h.call("limited", Method::GET, "/v2/catalog", None).await;
    let ids: Vec<&str> = limited.body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![QUEUE]);
    // …and a hidden offering cannot be provisioned.
    let r = h.provision("limited", "i1", SMALL, json!({}), false).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["description"]
            .as_str()
            .unwrap()
            .contains("not in the catalog")
    );
}

#[tokio::test]
async fn missing_or_wrong_credentials_get_401_with_an_error_body() {
    let h = Harness::new();
    for auth in [
        None,
        Some("Basic dXNlci1jZjE6d3Jvbmc="),
        Some("Bearer x"),
        Some("Basic !!!"),
    ] {
        let mut b = Request::builder()
            .uri("/v2/catalog")
            .header("x-broker-api-version", "2.17");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let r = h.raw(b.body(Body::empty()).unwrap()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(r.headers.contains_key("www-authenticate"));
        assert!(r.body["description"].is_string());
    }
}

#[tokio::test]
async fn missing_or_old_api_version_gets_412_with_an_error_body() {
    let h = Harness::new();
    for v in [None, Some("2.12"), Some("abc"), Some("3.0"), Some("2")] {
        let mut b = Request::builder()
            .uri("/v2/catalog")
            .header("authorization", Harness::auth("cf1"));
        if let Some(v) = v {
            b = b.header("x-broker-api-version", v);
        }
        let r = h.raw(b.body(Body::empty()).unwrap()).await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{v:?}");
        assert!(r.body["description"].as_str().unwrap().contains("2.13"));
    }
    for v in ["2.13", "2.14", "2.17"] {
        let r = h
            .raw(
                Request::builder()
                    .uri("/v2/catalog")
                    .header("authorization", Harness::auth("cf1"))
                    .header("x-broker-api-version", v)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{v}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let h = Harness::new();
    let r = h.call("cf1", Method::GET, "/v2/nope", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body["description"].is_string());
    let r = h.call("cf1", Method::POST, "/v2/catalog", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.body["description"].is_string());
}

#[tokio::test]
async fn oversized_and_mistyped_bodies_are_refused_without_writing() {
    let h = Harness::new();
    let big = json!({"service_id": PG, "plan_id": SMALL, "organization_guid": "o", "space_guid": "s",
        "parameters": {"extensions": vec!["x".repeat(1000); 80]}});
    let r = h
        .call("cf1", Method::PUT, "/v2/service_instances/big", Some(big))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.body["description"].as_str().unwrap().contains("65536"));

    let r = h
        .raw(
            Request::builder()
                .method(Method::PUT)
                .uri("/v2/service_instances/ct")
                .header("authorization", Harness::auth("cf1"))
                .header("x-broker-api-version", "2.17")
                .header("content-type", "text/plain")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["description"]
            .as_str()
            .unwrap()
            .contains("Content-Type")
    );

    for (body, needle) in [
        ("{", "not valid"),
        ("[]", "not valid"),
        ("", "required"),
        (r#"{"service_id": 5}"#, "invalid type"),
        (r#"{"service_id": "x", "parameters": "p"}"#, "invalid type"),
    ] {
        let r = h
            .raw(
                Request::builder()
                    .method(Method::PUT)
                    .uri("/v2/service_instances/bad")
                    .header("authorization", Harness::auth("cf1"))
                    .header("x-broker-api-version", "2.17")
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            r.body["description"].as_str().unwrap().contains(needle),
            "{body}: {}",
            r.body
        );
    }
    for id in ["big", "ct", "bad"] {
        let r = h
            .call(
                "cf1",
                Method::GET,
                &format!("/v2/service_instances/{id}"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{id} was written");
    }
}

#[tokio::test]
async fn request_identity_is_echoed_on_every_response() {
    let h = Harness::new();
    for (uri, auth) in [
        ("/v2/catalog", true),
        ("/v2/catalog", false),
        ("/v2/nope", true),
    ] {
        let mut b = Request::builder()
            .uri(uri)
            .header("x-broker-api-version", "2.17")
            .header("x-broker-api-request-identity", "req-42");
        if auth {
            b = b.header("authorization", Harness::auth("cf1"));
        }
        let r = h.raw(b.body(Body::empty()).unwrap()).await;
        assert_eq!(
            r.headers.get("x-broker-api-request-identity").unwrap(),
            "req-42",
            "{uri}"
        );
    }
}

#[tokio::test]
async fn async_provision_is_completed_by_the_worker_and_reported_with_retry_after() {
    let h = Harness::new();
    let r = h.provision("cf1", "a1", STANDARD, json!({}), true).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let op = r.body["operation"].clone();
    let lo = h.last_op("cf1", "a1").await;
    assert_eq!(lo.body["state"], "in progress");
    assert_eq!(lo.headers.get("retry-after").unwrap(), "3");
    let key = h.key("cf1", "a1", &op);
    let steps = h.complete(&key, 10).await;
    assert!(steps >= 2, "the 3 s job finished without waiting");
    let lo = h.last_op("cf1", "a1").await;
    assert_eq!(
        lo.body,
        json!({"state": "succeeded", "description": "provision succeeded"})
    );
    assert!(lo.headers.get("retry-after").is_none());
    // A duplicate message after completion changes nothing.
    let before = h
        .broker
        .store
        .get_instance("cf1", &key.instance_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.complete(&key, 1).await, 1);
    let after = h
        .broker
        .store
        .get_instance("cf1", &key.instance_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before, after);
    let get = h
        .call("cf1", Method::GET, "/v2/service_instances/a1", None)
        .await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.body["plan_id"], STANDARD);
}

#[tokio::test]
async fn an_operation_past_maximum_polling_duration_fails_with_a_clear_description() {
    let h = Harness::new();
    let r = h
        .provision(
            "cf1",
            "slow",
            STANDARD,
            json!({"simulate": {"delay_seconds": 3600}}),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let key = h.key("cf1", "slow", &r.body["operation"]);
    h.clock.advance(Duration::from_secs(601));
    h.complete(&key, 1).await;
    let lo = h.last_op("cf1", "slow").await;
    assert_eq!(lo.body["state"], "failed");
    assert!(
        lo.body["description"]
            .as_str()
            .unwrap()
            .contains("maximum_polling_duration of 600 s"),
        "{}",
        lo.body
    );
    assert!(
        lo.body.get("instance_usable").is_none(),
        "instance_usable is only for update/deprovision"
    );
    // The failed instance can be deleted (orphan mitigation) and provisioned again.
    let d = h.call("cf1", Method::DELETE, &format!("/v2/service_instances/slow?service_id={PG}&plan_id={STANDARD}&accepts_incomplete=true"), None).await;
    assert_eq!(d.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_failed_async_update_leaves_the_instance_unchanged_and_usable() {
    let h = Harness::new();
    assert_eq!(
        h.provision("cf1", "u1", SMALL, json!({"storage_gb": 5}), false)
            .await
            .status,
        StatusCode::CREATED
    );
    let r = h
        .call("cf1", Method::PATCH, "/v2/service_instances/u1?accepts_incomplete=true",
            Some(json!({"service_id": PG, "parameters": {"storage_gb": 9, "simulate": {"delay_seconds": 1, "fail": true}}})))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let key = h.key("cf1", "u1", &r.body["operation"]);
    h.complete(&key, 5).await;
    let lo = h.last_op("cf1", "u1").await;
    assert_eq!(lo.body["state"], "failed");
    assert_eq!(lo.body["instance_usable"], true);
    assert_eq!(lo.body["update_repeatable"], true);
    let get = h
        .call("cf1", Method::GET, "/v2/service_instances/u1", None)
        .await;
    assert_eq!(get.body["parameters"]["storage_gb"], 5);
    // Besides its own parameters the owner sees its sharing view (DESIGN §7), never the failed update's.
    assert_eq!(get.body["parameters"].as_object().map(|p| p.len()), Some(2));
}

#[tokio::test]
async fn a_worker_killed_after_its_commit_is_repaired_by_redelivery() {
    let h = Harness::new();
    let r = h
        .provision(
            "cf1",
            "k1",
            STANDARD,
            json!({"simulate": {"delay_seconds": 1}}),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let q = h.broker.queue.clone();
    // The worker receives the message, commits progress, then dies before re-enqueueing or acking.
    let d = q
        .receive(1, Duration::from_secs(2), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(d.len(), 1);
    let key: osb_broker::records::OperationKey = serde_json::from_str(&d[0].body).unwrap();
    h.broker.process_operation(&key).await.unwrap();
    h.clock.advance(Duration::from_secs(2));
    // The queue delivers it again after the visibility timeout; a healthy worker finishes the job.
    let d = q
        .receive(1, Duration::from_secs(5), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(d.len(), 1, "message not redelivered");
    assert_eq!(d[0].receive_count, 2);
    osb_broker::broker::worker::handle_delivery(&h.broker, q.as_ref(), &d[0].body, &d[0].receipt)
        .await
        .unwrap();
    assert_eq!(h.last_op("cf1", "k1").await.body["state"], "succeeded");
    assert!(
        q.receive(1, Duration::from_millis(200), Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn concurrent_provisions_of_one_id_have_exactly_one_winner() {
    let h = Harness::new();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let h2 = h.clone();
        tasks.push(tokio::spawn(async move {
            h2.provision("cf1", "race", SMALL, json!({"storage_gb": n + 1}), false)
                .await
                .status
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let created = codes.iter().filter(|c| **c == StatusCode::CREATED).count();
    assert_eq!(created, 1, "{codes:?}");
    assert!(
        codes.iter().all(|c| *c == StatusCode::CREATED
            || *c == StatusCode::CONFLICT
            || *c == StatusCode::UNPROCESSABLE_ENTITY),
        "{codes:?}"
    );
}

#[tokio::test]
async fn concurrent_updates_of_one_instance_have_exactly_one_winner() {
    let h = Harness::new();
    assert_eq!(
        h.provision("cf1", "up", SMALL, json!({}), false)
            .await
            .status,
        StatusCode::CREATED
    );
    let mut tasks = Vec::new();
    for n in 0..6 {
        let h2 = h.clone();
        tasks.push(tokio::spawn(async move {
            h2.call("cf1", Method::PATCH, "/v2/service_instances/up?accepts_incomplete=true",
                Some(json!({"service_id": PG, "parameters": {"storage_gb": n + 1, "simulate": {"delay_seconds": 5}}})))
                .await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::UNPROCESSABLE_ENTITY => assert_eq!(r.body["error"], "ConcurrencyError"),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(accepted, 1);
}

#[tokio::test]
async fn operation_ids_are_checked_on_last_operation() {
    let h = Harness::new();
    let r = h.provision("cf1", "o1", STANDARD, json!({}), true).await;
    let op = r.body["operation"].as_str().unwrap().to_owned();
    let ok = h
        .call(
            "cf1",
            Method::GET,
            &format!("/v2/service_instances/o1/last_operation?operation={op}"),
            None,
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let bad = h
        .call(
            "cf1",
            Method::GET,
            "/v2/service_instances/o1/last_operation?operation=not%20an%20id",
            None,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let unknown = h
        .call(
            "cf1",
            Method::GET,
            "/v2/service_instances/o1/last_operation?operation=01ARZ3NDEKTSV4RRFFQ69G5FAV",
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let other_tenant = h
        .call(
            "cf2",
            Method::GET,
            &format!("/v2/service_instances/o1/last_operation?operation={op}"),
            None,
        )
        .await;
    assert_eq!(other_tenant.status, StatusCode::NOT_FOUND);
    let _: Value = other_tenant.body;
}

#[tokio::test]
async fn simulate_parameters_are_validated_and_never_checked_against_the_plan_schema() {
    let h = Harness::new();
    // `small` has a schema with additionalProperties: false; `simulate` is still accepted.
    let r = h
        .provision(
            "cf1",
            "s1",
            SMALL,
            json!({"simulate": {"delay_seconds": 0}}),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    for bad in [
        json!({"simulate": 5}),
        json!({"simulate": {"delay": 1}}),
        json!({"simulate": {"delay_seconds": 99999}}),
    ] {
        let r = h.provision("cf1", "s2", SMALL, bad.clone(), true).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            r.body["description"].as_str().unwrap().contains("simulate"),
            "{}",
            r.body
        );
    }
    // A synchronous failure answers 502. The instance was committed (Creating) before the backend was
    // called; the failure leaves a tombstone: for the platform it never existed (GET 404, DELETE 410).
    let r = h
        .provision(
            "cf1",
            "s3",
            SMALL,
            json!({"simulate": {"fail": true, "failure_description": "disk full"}}),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.body["description"], "disk full");
    let r = h
        .call("cf1", Method::GET, "/v2/service_instances/s3", None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let delete = format!("/v2/service_instances/s3?service_id={PG}&plan_id={SMALL}");
    let r = h.call("cf1", Method::DELETE, &delete, None).await;
    assert_eq!(r.status, StatusCode::GONE, "{}", r.body);
    assert!(
        !h.ledger().iter().any(|k| k.starts_with("I/cf1/s3/")),
        "{:?}",
        h.ledger()
    );
    // The same id can be provisioned again.
    let r = h.provision("cf1", "s3", SMALL, json!({}), false).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

#[tokio::test]
async fn a_stalled_operation_is_re_driven_by_polling_and_by_the_sweep() {
    let h = Harness::new();
    let q = h.broker.queue.clone();
    let lose_messages = || async {
        let d = q
            .receive(10, Duration::from_millis(300), Duration::from_secs(300))
            .await
            .unwrap();
        for m in &d {
            q.ack(&m.receipt).await.unwrap();
        }
        d.len()
    };
    // Two async provisions whose messages are lost (e.g. the API died between its commit and its send).
    for id in ["st1", "st2"] {
        let r = h
            .provision(
                "cf1",
                id,
                STANDARD,
                json!({"simulate": {"delay_seconds": 1}}),
                true,
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
    assert_eq!(lose_messages().await, 2);
    // Not stalled yet: polling re-drives nothing.
    assert_eq!(h.last_op("cf1", "st1").await.body["state"], "in progress");
    assert_eq!(lose_messages().await, 0);
    h.clock.advance(Duration::from_secs(600));
    // A platform polling a stalled operation re-drives it, once.
    assert_eq!(h.last_op("cf1", "st1").await.body["state"], "in progress");
    assert_eq!(h.last_op("cf1", "st1").await.body["state"], "in progress");
    let d = q
        .receive(10, Duration::from_millis(300), Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(d.len(), 1, "polling re-drove it once");
    let key: osb_broker::records::OperationKey = serde_json::from_str(&d[0].body).unwrap();
    assert_eq!(key.instance_id.as_str(), "st1");
    osb_broker::broker::worker::handle_delivery(&h.broker, q.as_ref(), &d[0].body, &d[0].receipt)
        .await
        .unwrap();
    assert_eq!(h.last_op("cf1", "st1").await.body["state"], "succeeded");
    // The sweep re-drives the other one (nobody polls it: a webhook user, say).
    assert_eq!(h.broker.sweep_stalled().await.unwrap().redriven, 1);
    assert_eq!(
        h.broker.sweep_stalled().await.unwrap().redriven,
        0,
        "touched: not stalled any more"
    );
    let d = q
        .receive(10, Duration::from_millis(300), Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(d.len(), 1);
    osb_broker::broker::worker::handle_delivery(&h.broker, q.as_ref(), &d[0].body, &d[0].receipt)
        .await
        .unwrap();
    assert_eq!(h.last_op("cf1", "st2").await.body["state"], "succeeded");
}
