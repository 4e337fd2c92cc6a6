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

/// The rule item of (offering, tenant `cf2`), as stored.
async fn rules_for_cf2(h: &Harness) -> Vec<(String, u64)> {
    let read = h
        .broker
        .store
        .get_records(&[keys::share_rules_key(PG, "cf2")])
        .await
        .unwrap();
    match read.into_iter().next().map(|r| r.item) {
        Some(osb_broker::ports::Record::ShareRules(r)) => r
            .owners
            .into_iter()
            .map(|o| (o.owner_id.to_string(), o.owner_generation))
            .collect(),
        _ => Vec::new(),
    }
}

fn rule(name: &str) -> Value {
    json!({"x_osb_cmdb": {"sharing_to": [{"tenant": "cf2", "space_guid": "space", "instance_name": name}]}})
}

#[tokio::test]
async fn a_deleted_owner_leaves_the_rule_items_and_a_new_life_of_its_id_keeps_its_own_entry() {
    let h = Harness::new();
    h.provision("cf1", "owner", SMALL, rule("a"), false)
        .await
        .expect(StatusCode::CREATED);
    h.provision("cf1", "other", SMALL, rule("b"), false)
        .await
        .expect(StatusCode::CREATED);
    let first = rules_for_cf2(&h).await;
    assert_eq!(first.len(), 2, "{first:?}");
    let delete = format!("/v2/service_instances/owner?service_id={PG}&plan_id={SMALL}");
    h.call("cf1", Method::DELETE, &delete, None)
        .await
        .expect(StatusCode::OK);
    let after = rules_for_cf2(&h).await;
    assert_eq!(
        after.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        vec!["other"],
        "the deleted owner's entry is pruned, the other owner's stays"
    );
    // The id provisioned again writes an entry of its new life.
    h.clock.advance(Duration::from_millis(5));
    h.provision("cf1", "owner", SMALL, rule("a"), false)
        .await
        .expect(StatusCode::CREATED);
    let again = rules_for_cf2(&h).await;
    let new_life = again.iter().find(|(id, _)| id == "owner").expect("entry");
    let old_life = first.iter().find(|(id, _)| id == "owner").expect("entry");
    assert!(new_life.1 > old_life.1, "{again:?} vs {first:?}");
}

#[tokio::test]
async fn a_failed_owner_creation_leaves_the_rule_items() {
    let h = Harness::new();
    let mut params = rule("a");
    params["simulate"] = json!({"fail": true});
    let r = h.provision("cf1", "failing", SMALL, params, false).await;
    assert!(
        r.status.is_server_error() || r.status.is_client_error(),
        "{r:?}"
    );
    assert_eq!(rules_for_cf2(&h).await, Vec::new());
}

#[tokio::test]
async fn the_owners_sharing_with_one_tenant_are_bounded_with_a_clear_422() {
    let h = Harness::new();
    for n in 0..100 {
        h.provision(
            "cf1",
            &format!("o{n}"),
            SMALL,
            rule(&format!("db{n}")),
            false,
        )
        .await
        .expect(StatusCode::CREATED);
    }
    let r = h
        .provision("cf1", "one-too-many", SMALL, rule("x"), false)
        .await;
    r.expect(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body["description"]
            .as_str()
            .is_some_and(|d| d.contains("100 instances of this offering")),
        "{r:?}"
    );
    get(&h, "cf1", "one-too-many")
        .await
        .expect(StatusCode::NOT_FOUND);
    // Revoking one makes room.
    patch(&h, "o7", json!({"x_osb_cmdb": {"sharing_to": []}}))
        .await
        .expect(StatusCode::OK);
    h.provision("cf1", "one-too-many", SMALL, rule("x"), false)
        .await
        .expect(StatusCode::CREATED);
}

#[tokio::test]
async fn a_lost_token_key_file_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = osb_broker::config::BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        ..osb_broker::config::BrokerConfig::default()
    };
    let clock: std::sync::Arc<dyn osb_broker::ports::Clock> =
        std::sync::Arc::new(osb_broker::ports::SystemClock);
    drop(osb_broker::embedded::build(&cfg, clock.clone()).unwrap());
    let file = dir.path().join("sharing-token-key");
    let kept = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let e = osb_broker::embedded::build(&cfg, clock.clone())
        .err()
        .expect("no silent new key")
        .to_string();
    assert!(
        e.contains(&file.display().to_string()) && e.contains("restore"),
        "{e}"
    );
    assert!(!file.exists());
    std::fs::write(&file, kept).unwrap();
    osb_broker::embedded::build(&cfg, clock).unwrap();
}

#[tokio::test]
async fn a_token_whose_key_was_rotated_out_is_not_shown_but_still_leases_until_it_expires() {
    let h = Harness::new();
    h.provision("cf1", "owner", SMALL, json!({}), false)
        .await
        .expect(StatusCode::CREATED);
    let t = token(&get(&h, "cf1", "owner").await);
    // Another process with a key set that no longer lists the token's key.
    let mut broker = (*h.broker).clone();
    broker.sharing = std::sync::Arc::new(
        osb_broker::sharing::SharingSettings::new(osb_broker::sharing::TokenKeys::random(), 3600)
            .with_tenants(h.state.tenants.names()),
    );
    let broker = std::sync::Arc::new(broker);
    let state =
        osb_broker::http::AppState::new(broker, h.state.tenants.clone(), h.state.body_limit);
    let other = Harness::with_state(&h, state);
    let view = get(&other, "cf1", "owner").await;
    view.expect(StatusCode::OK);
    let shown = &view.body["parameters"]["x_osb_cmdb"]["sharing_token"];
    assert_eq!(shown["token"], Value::Null, "{view:?}");
    assert!(
        shown["description"]
            .as_str()
            .is_some_and(|d| d.contains("regenerate")),
        "{view:?}"
    );
    other
        .provision("cf2", "lease", SMALL, json!({"sharing_token": t}), false)
        .await
        .expect(StatusCode::CREATED);
}

/// A backend that records the kind of every job it is asked to start, in order.
struct Recording {
    inner: std::sync::Arc<dyn osb_broker::ports::Backend>,
    calls: std::sync::Arc<std::sync::Mutex<Vec<osb_broker::records::OperationKind>>>,
}

#[async_trait::async_trait]
impl osb_broker::ports::Backend for Recording {
    fn plan_job(
        &self,
        job: &osb_broker::ports::BackendJob,
    ) -> Result<Option<u64>, osb_broker::ports::backend::BackendRejection> {
        self.inner.plan_job(job)
    }
    async fn start(
        &self,
        job: &osb_broker::ports::BackendJob,
    ) -> osb_broker::ports::backend::BackendResult {
        self.calls.lock().unwrap().push(job.kind);
        self.inner.start(job).await
    }
    async fn poll(
        &self,
        job: &osb_broker::ports::BackendJob,
        handle: &str,
    ) -> osb_broker::ports::backend::BackendResult {
        self.inner.poll(job, handle).await
    }
}

#[tokio::test]
async fn a_purge_on_delete_unbinds_the_leases_before_the_owner_is_deprovisioned_and_a_failed_unbind_leaves_the_lease_deletable()
 {
    use osb_broker::records::OperationKind::{Deprovision, Unbind};
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = calls.clone();
    let h = Harness::wrapped(
        move |inner| {
            std::sync::Arc::new(Recording {
                inner,
                calls: recorded,
            })
        },
        |s| s,
    );
    h.provision(
        "cf1",
        "owner",
        SMALL,
        json!({"x_osb_cmdb": {"purge_leases_on_delete": true}}),
        false,
    )
    .await
    .expect(StatusCode::CREATED);
    let t = token(&get(&h, "cf1", "owner").await);
    h.provision("cf2", "lease", SMALL, json!({"sharing_token": t}), false)
        .await
        .expect(StatusCode::CREATED);
    let binding = "/v2/service_instances/lease/service_bindings/b1";
    // The lease's binding refuses its first delete.
    h.call(
        "cf2",
        Method::PUT,
        binding,
        Some(
            json!({"service_id": PG, "plan_id": SMALL, "bind_resource": {"app_guid": "a"},
                    "parameters": {"simulate": {"fail_delete": 1}}}),
        ),
    )
    .await
    .expect(StatusCode::CREATED);
    calls.lock().unwrap().clear();
    let q = format!("service_id={PG}&plan_id={SMALL}");
    h.call(
        "cf1",
        Method::DELETE,
        &format!("/v2/service_instances/owner?{q}"),
        None,
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(
        *calls.lock().unwrap(),
        vec![Unbind, Deprovision],
        "the purge's unbind reaches the backend first"
    );
    // The failed unbind left the binding on the orphaned lease; the owner is gone from the backend, so
    // the leaser's unbind succeeds and the lease can be deleted.
    h.call("cf2", Method::DELETE, &format!("{binding}?{q}"), None)
        .await
        .expect(StatusCode::OK);
    h.call(
        "cf2",
        Method::DELETE,
        &format!("/v2/service_instances/lease?{q}"),
        None,
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(
        h.ledger(),
        Vec::<String>::new(),
        "nothing left on the backend"
    );
}
