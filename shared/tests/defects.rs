//! Defects found in the core review (issue 10), each with the request that showed it.
#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::json;

fn binding_uri(instance: &str, binding: &str) -> String {
    format!("/v2/service_instances/{instance}/service_bindings/{binding}")
}

#[tokio::test]
async fn a_predecessor_binding_id_equal_to_the_binding_id_is_a_400() {
    let h = Harness::new();
    assert_eq!(
        h.provision("cf1", "i1", SMALL, json!({}), false)
            .await
            .status,
        StatusCode::CREATED
    );
    let r = h
        .call(
            "cf1",
            Method::PUT,
            &binding_uri("i1", "b1"),
            Some(json!({"service_id": PG, "plan_id": SMALL, "predecessor_binding_id": "b1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.body["description"]
            .as_str()
            .unwrap()
            .contains("predecessor_binding_id")
    );
}

#[tokio::test]
async fn re_binding_an_existing_binding_with_another_plan_is_a_409_and_a_new_one_a_400() {
    let h = Harness::new();
    assert_eq!(
        h.provision("cf1", "i1", SMALL, json!({}), false)
            .await
            .status,
        StatusCode::CREATED
    );
    let bind = |binding: &'static str, plan: &'static str| {
        let h = h.clone();
        async move {
            h.call(
                "cf1",
                Method::PUT,
                &binding_uri("i1", binding),
                Some(json!({"service_id": PG, "plan_id": plan})),
            )
            .await
        }
    };
    assert_eq!(bind("b1", SMALL).await.status, StatusCode::CREATED);
    let r = bind("b1", STANDARD).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = bind("b2", STANDARD).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
}

#[tokio::test]
async fn a_re_sent_put_of_an_async_operation_without_accepts_incomplete_is_async_required() {
    let h = Harness::new();
    let first = h.provision("cf1", "i1", STANDARD, json!({}), true).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let again = h.provision("cf1", "i1", STANDARD, json!({}), true).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["operation"], first.body["operation"]);
    let r = h.provision("cf1", "i1", STANDARD, json!({}), false).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["error"], "AsyncRequired");
}

#[tokio::test]
async fn patches_cannot_grow_the_stored_parameters_past_their_bound() {
    let h = Harness::new();
    let sync = json!({"delay_seconds": 0});
    let r = h
        .provision("cf1", "i1", STANDARD, json!({"simulate": sync}), false)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let chunk = "x".repeat(25_000);
    let patch = |key: &str| json!({"service_id": PG, "parameters": {key: chunk, "simulate": sync}});
    for key in ["a", "b"] {
        let r = h
            .call(
                "cf1",
                Method::PATCH,
                "/v2/service_instances/i1",
                Some(patch(key)),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{key}: {}", r.body);
    }
    let r = h
        .call(
            "cf1",
            Method::PATCH,
            "/v2/service_instances/i1",
            Some(patch("c")),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.body["description"].as_str().unwrap().contains("65536"),
        "{}",
        r.body
    );
    // Nothing of the refused update was kept.
    let got = h
        .call("cf1", Method::GET, "/v2/service_instances/i1", None)
        .await;
    assert!(got.body["parameters"].get("c").is_none());
    assert!(got.body["parameters"].get("b").is_some());
}

#[tokio::test]
async fn a_failed_sync_delete_of_an_owner_leaves_it_ready_and_a_later_delete_succeeds() {
    let h = Harness::new();
    let r = h
        .provision(
            "cf1",
            "i1",
            SMALL,
            json!({"simulate": {"fail_delete": 1}}),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let delete = format!("/v2/service_instances/i1?service_id={PG}&plan_id={SMALL}");
    let r = h.call("cf1", Method::DELETE, &delete, None).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
    let got = h
        .call("cf1", Method::GET, "/v2/service_instances/i1", None)
        .await;
    assert_eq!(got.status, StatusCode::OK, "usable again: {}", got.body);
    let last = h.last_op("cf1", "i1").await;
    assert_eq!(last.body["state"], "failed");
    assert_eq!(last.body["instance_usable"], true);
    // Bindings work on it, and the second delete goes through.
    let b = h
        .call(
            "cf1",
            Method::PUT,
            &binding_uri("i1", "b1"),
            Some(json!({"service_id": PG, "plan_id": SMALL})),
        )
        .await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.body);
    let r = h.call("cf1", Method::DELETE, &delete, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(h.ledger().is_empty(), "{:?}", h.ledger());
}

#[tokio::test]
async fn bindings_of_an_earlier_life_do_not_come_back_when_the_tombstone_expired() {
    let h = Harness::new();
    assert_eq!(
        h.provision("cf1", "i1", SMALL, json!({}), false)
            .await
            .status,
        StatusCode::CREATED
    );
    let b = h
        .call(
            "cf1",
            Method::PUT,
            &binding_uri("i1", "b1"),
            Some(json!({"service_id": PG, "plan_id": SMALL})),
        )
        .await;
    assert_eq!(b.status, StatusCode::CREATED);
    let delete = format!("/v2/service_instances/i1?service_id={PG}&plan_id={SMALL}");
    assert_eq!(
        h.call("cf1", Method::DELETE, &delete, None).await.status,
        StatusCode::OK
    );
    // DynamoDB's TTL removes the instance's tombstone, not the binding record it left.
    let db = rusqlite::Connection::open(h.data_dir().join("broker.db")).unwrap();
    let removed = db
        .execute(
            "DELETE FROM items WHERE pk = 'T#cf1#I#i1' AND sk = 'INSTANCE'",
            [],
        )
        .unwrap();
    assert_eq!(removed, 1);
    h.clock.advance(std::time::Duration::from_millis(5));
    assert_eq!(
        h.provision("cf1", "i1", SMALL, json!({}), false)
            .await
            .status,
        StatusCode::CREATED
    );
    let got = h
        .call("cf1", Method::GET, &binding_uri("i1", "b1"), None)
        .await;
    assert_eq!(got.status, StatusCode::NOT_FOUND, "{}", got.body);
    let again = h
        .call(
            "cf1",
            Method::PUT,
            &binding_uri("i1", "b1"),
            Some(json!({"service_id": PG, "plan_id": SMALL})),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_ne!(again.body["credentials"], b.body["credentials"]);
}
