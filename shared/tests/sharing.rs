//! Sharing through the router on the embedded store with a manual clock: token expiry at the configured
//! lifetime, and no usable token in what the store holds.
#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use osb_broker::ids::InstanceId;
use osb_broker::keys;
use serde_json::{Value, json};
use std::time::Duration;

fn token(r: &Resp) -> String {
    r.body["parameters"]["x_osb_cmdb"]["sharing_token"]["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn get(h: &Harness, tenant: &str, id: &str) -> Resp {
    h.call(
        tenant,
        Method::GET,
        &format!("/v2/service_instances/{id}"),
        None,
    )
    .await
}

async fn patch(h: &Harness, id: &str, params: Value) -> Resp {
    h.call(
        "cf1",
        Method::PATCH,
        &format!("/v2/service_instances/{id}"),
        Some(json!({"service_id": PG, "parameters": params})),
    )
    .await
}

#[tokio::test]
async fn a_sharing_token_expires_after_its_lifetime_on_the_clock_and_regenerates() {
    let h = Harness::new();
    assert_eq!(
        h.provision("cf1", "owner", SMALL, json!({}), false)
            .await
            .status,
        StatusCode::CREATED
    );
    let view = get(&h, "cf1", "owner").await;
    let t = token(&view);
    // Default lifetime: 7 days from now on the manual clock.
    assert_eq!(
        view.body["parameters"]["x_osb_cmdb"]["sharing_token"]["expiration_date"],
        "2027-01-22T08:00:00Z"
    );
    h.clock.advance(Duration::from_secs(7 * 24 * 3600 - 1));
    let r = h
        .provision("cf2", "in-time", SMALL, json!({"sharing_token": t}), false)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    h.clock.advance(Duration::from_secs(2));
    let r = h
        .provision("cf2", "too-late", SMALL, json!({"sharing_token": t}), false)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body["description"],
        "the sharing token is invalid, expired or revoked"
    );
    assert_eq!(
        get(&h, "cf2", "too-late").await.status,
        StatusCode::NOT_FOUND
    );
    // The lease made in time stays.
    let lease = get(&h, "cf2", "in-time").await;
    assert_eq!(
        lease.body["description"],
        "This is a lease from instance owner in tenant cf1"
    );

    assert_eq!(
        patch(
            &h,
            "owner",
            json!({"x_osb_cmdb": {"sharing_token": "regenerate"}})
        )
        .await
        .status,
        StatusCode::OK
    );
    let fresh = token(&get(&h, "cf1", "owner").await);
    assert_ne!(fresh, t);
    let r = h
        .provision(
            "cf2",
            "again",
            SMALL,
            json!({"x_osb_cmdb": {"sharing_token": fresh}}),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

#[tokio::test]
async fn the_store_holds_only_the_tokens_hash_and_nonce_never_the_token() {
    let h = Harness::new();
    h.provision("cf1", "owner", SMALL, json!({"storage_gb": 2}), false)
        .await;
    let t = token(&get(&h, "cf1", "owner").await);
    let owner = h
        .broker
        .store
        .get_instance("cf1", &InstanceId::parse("owner").unwrap())
        .await
        .unwrap()
        .unwrap();
    let state = owner.item.sharing.as_ref().unwrap().token.clone().unwrap();
    let records = h
        .broker
        .store
        .get_records(&[keys::sharing_token_key(&state.hash)])
        .await
        .unwrap();
    assert_eq!(
        records.len(),
        1,
        "the lookup item is keyed by the token's hash"
    );
    let stored = format!("{:?} {:?}", owner.item, records);
    assert!(!stored.contains(&t), "a store read yields no usable token");
    assert!(!stored.contains(t.trim_start_matches("osbst_")));
    // The stored parameters never hold x_osb_cmdb (it is not the backend's).
    assert_eq!(
        owner.item.parameters,
        json!({"storage_gb": 2}).as_object().cloned()
    );
}

#[tokio::test]
async fn a_purge_leaves_unbind_operations_that_the_worker_runs_on_the_owner() {
    let h = Harness::new();
    h.provision("cf1", "owner", SMALL, json!({}), false).await;
    let t = token(&get(&h, "cf1", "owner").await);
    h.provision("cf2", "lease", SMALL, json!({"sharing_token": t}), false)
        .await;
    let bind = |tenant: &'static str, iid: &'static str, bid: &'static str| {
        let h = h.clone();
        async move {
            h.call(
                tenant,
                Method::PUT,
                &format!("/v2/service_instances/{iid}/service_bindings/{bid}"),
                Some(
                    json!({"service_id": PG, "plan_id": SMALL, "bind_resource": {"app_guid": "a"}}),
                ),
            )
            .await
        }
    };
    let b = bind("cf2", "lease", "b1").await;
    assert_eq!(b.status, StatusCode::CREATED);
    assert_eq!(b.body["credentials"]["name"], "db_owner");
    assert_eq!(
        patch(&h, "owner", json!({"x_osb_cmdb": {"leases": []}}))
            .await
            .status,
        StatusCode::OK
    );
    let binding = h
        .broker
        .store
        .get_binding(
            "cf2",
            &InstanceId::parse("lease").unwrap(),
            &osb_broker::ids::BindingId::parse("b1").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        binding.item.state,
        osb_broker::records::BindingState::Deleting
    );
    let key = osb_broker::records::OperationKey {
        tenant: "cf2".into(),
        instance_id: InstanceId::parse("lease").unwrap(),
        operation_id: binding.item.last_operation.clone().unwrap(),
    };
    let op = h
        .broker
        .store
        .get_operation(&key)
        .await
        .unwrap()
        .unwrap()
        .item;
    let job = op.job();
    assert_eq!(
        (job.tenant.as_str(), job.instance_id.as_str()),
        ("cf1", "owner"),
        "revoked on the owner's backing instance"
    );
    h.complete(&key, 3).await;
    let r = h
        .call(
            "cf2",
            Method::GET,
            "/v2/service_instances/lease/service_bindings/b1",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = bind("cf2", "lease", "b2").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn bind(h: &Harness, tenant: &str, iid: &str, bid: &str) -> Resp {
    h.call(
        tenant,
        Method::PUT,
        &format!("/v2/service_instances/{iid}/service_bindings/{bid}"),
        Some(json!({"service_id": PG, "plan_id": SMALL, "bind_resource": {"app_guid": "a"}})),
    )
    .await
}

/// An owner `owner` in cf1 and a lease `lease` of it in cf2 (by token).
async fn owner_and_lease(h: &Harness) {
    h.provision("cf1", "owner", SMALL, json!({}), false).await;
    let t = token(&get(h, "cf1", "owner").await);
    let r = h
        .provision("cf2", "lease", SMALL, json!({"sharing_token": t}), false)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test]
async fn a_lease_with_bindings_is_deleted_only_once_they_are_unbound() {
    let h = Harness::new();
    owner_and_lease(&h).await;
    assert_eq!(
        bind(&h, "cf2", "lease", "b1").await.status,
        StatusCode::CREATED
    );
    let del = format!("/v2/service_instances/lease?service_id={PG}&plan_id={SMALL}");
    let r = h.call("cf2", Method::DELETE, &del, None).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert!(r.body["description"].as_str().unwrap().contains("b1"));
    let r = h
        .call(
            "cf2",
            Method::DELETE,
            &format!(
                "/v2/service_instances/lease/service_bindings/b1?service_id={PG}&plan_id={SMALL}"
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        h.call("cf2", Method::DELETE, &del, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_owner_with_leases_keeps_its_plan() {
    let h = Harness::new();
    owner_and_lease(&h).await;
    let r = h
        .call(
            "cf1",
            Method::PATCH,
            "/v2/service_instances/owner?accepts_incomplete=true",
            Some(json!({"service_id": PG, "plan_id": STANDARD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert!(r.body["description"].as_str().unwrap().contains("leases"));
}

#[tokio::test]
async fn a_purge_requested_with_a_webhook_gives_the_leasers_unbinds_no_webhook() {
    let h = Harness::new();
    owner_and_lease(&h).await;
    assert_eq!(
        bind(&h, "cf2", "lease", "b1").await.status,
        StatusCode::CREATED
    );
    let r = h
        .call(
            "cf1",
            Method::PATCH,
            "/v2/service_instances/owner?accepts_incomplete=true&webhook=https%3A%2F%2Fowner.example.com%2Fcb&secret=s",
            Some(json!({"service_id": PG, "parameters": {"x_osb_cmdb": {"leases": []}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let b = h
        .broker
        .store
        .get_binding(
            "cf2",
            &InstanceId::parse("lease").unwrap(),
            &osb_broker::ids::BindingId::parse("b1").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    let key = osb_broker::records::OperationKey {
        tenant: "cf2".into(),
        instance_id: InstanceId::parse("lease").unwrap(),
        operation_id: b.item.last_operation.clone().unwrap(),
    };
    let op = h
        .broker
        .store
        .get_operation(&key)
        .await
        .unwrap()
        .unwrap()
        .item;
    assert_eq!(op.kind, osb_broker::records::OperationKind::Unbind);
    assert!(op.webhook.is_none() && !op.has_webhook);
    h.complete(&key, 5).await;
    assert!(
        h.broker
            .store
            .pending_callbacks(None, 10)
            .await
            .unwrap()
            .keys
            .is_empty()
    );
}
