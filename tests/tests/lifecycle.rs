//! Lifecycles over HTTP: catalog, sync and async provision / update / bind / unbind / deprovision,
//! and binding rotation, each step asserting status code and body.

use e2e::*;
use serde_json::{Value, json};

fn credentials(v: &Value) -> &serde_json::Map<String, Value> {
    v["credentials"]
        .as_object()
        .unwrap_or_else(|| panic!("no credentials object in {v}"))
}

#[track_caller]
fn assert_realistic_credentials(v: &Value) {
    let c = credentials(v);
    for key in ["uri", "hostname", "port", "name", "username", "password"] {
        assert!(c.contains_key(key), "credentials lack '{key}': {v}");
    }
    assert!(
        c["uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("postgresql://")),
        "uri: {v}"
    );
}

#[tokio::test]
async fn given_the_demo_catalog_when_each_tenant_fetches_it_then_all_offerings_and_plans_are_listed_without_backend_settings()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        for t in TENANTS {
            let r = broker.client(t.name).get("/v2/catalog").await;
            r.expect(200);
            assert!(r.is_json(), "catalog content type: {:?}", r.headers);
            let services = r.json["services"].as_array().expect("services array");
            let ids: Vec<&str> = services.iter().filter_map(|s| s["id"].as_str()).collect();
            assert!(
                ids.contains(&PG_SERVICE) && ids.contains(&QUEUE_SERVICE),
                "{ids:?}"
            );
            let pg = services
                .iter()
                .find(|s| s["id"] == PG_SERVICE)
                .expect("pg service");
            assert_eq!(pg["bindable"], true);
            assert_eq!(pg["plan_updateable"], true);
            assert_eq!(pg["instances_retrievable"], true);
            assert_eq!(pg["bindings_retrievable"], true);
            let plans = pg["plans"].as_array().expect("plans");
            let plan = |id: &str| {
                plans
                    .iter()
                    .find(|p| p["id"] == id)
                    .unwrap_or_else(|| panic!("plan {id} missing"))
            };
            let small = plan(SMALL);
            assert_eq!(small["name"], "small");
            assert_eq!(small["binding_rotatable"], true);
            assert_eq!(small["maintenance_info"]["version"], "1.2.0");
            assert_eq!(
                small["schemas"]["service_instance"]["create"]["parameters"]["$schema"],
                "http://json-schema.org/draft-04/schema#"
            );
            assert_eq!(plan(STANDARD)["maximum_polling_duration"], 600);
            assert_eq!(plan(ASYNC_BINDINGS)["name"], "async-bindings");
            for s in services {
                for p in s["plans"].as_array().expect("plans") {
                    assert!(p.get("backend").is_none(), "backend settings leak: {p}");
                }
            }
        }
    })
    .await;
}

#[tokio::test]
async fn given_a_sync_plan_when_walking_the_whole_lifecycle_then_each_step_answers_as_the_spec_requires()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("sync-inst");
        let bid = unique_id("sync-bind");
        let inst = instance_path(&id);
        let body = provision_body(SMALL, Some(json!({"storage_gb": 10})));

        // provision: 201, then the same PUT again: 200 with the same body
        let created = c.put(&inst, &body).await;
        created.expect(201);
        assert!(created.json.is_object(), "{}", created.text);
        assert!(created.json.get("operation").is_none(), "{}", created.text);
        let dashboard = created.json["dashboard_url"].as_str().map(str::to_owned);
        assert!(dashboard.is_some(), "dashboard_url: {}", created.text);
        let again = c.put(&inst, &body).await;
        again.expect(200);
        assert_eq!(again.json, created.json);

        // fetch: 200 with the parameters and the plan's maintenance_info
        let got = c.get(&inst).await;
        got.expect(200);
        assert_eq!(got.json["service_id"], PG_SERVICE);
        assert_eq!(got.json["plan_id"], SMALL);
        assert_eq!(own_parameters(&got.json), json!({"storage_gb": 10}));
        assert_eq!(got.json["maintenance_info"]["version"], "1.2.0");
        assert_eq!(got.json["dashboard_url"].as_str(), dashboard.as_deref());

        // last_operation of a sync provision: succeeded, no Retry-After
        let lo = c.get(&instance_last_op_path(&id)).await;
        lo.expect(200);
        assert_eq!(lo.state(), "succeeded", "{}", lo.text);
        assert!(lo.retry_after().is_none(), "{:?}", lo.headers);

        // update parameters synchronously: 200, no operation; fetch shows the new value
        let upd = c
            .patch(
                &inst,
                &json!({
                    "service_id": PG_SERVICE,
                    "parameters": {"storage_gb": 20},
                    "previous_values": {"plan_id": SMALL, "service_id": PG_SERVICE}
                }),
            )
            .await;
        upd.expect(200);
        assert!(upd.json.is_object(), "{}", upd.text);
        assert!(upd.json.get("operation").is_none(), "{}", upd.text);
        let got = c.get(&inst).await;
        got.expect(200);
        assert_eq!(got.json["parameters"]["storage_gb"], 20);
        assert_eq!(
            got.json["plan_id"], SMALL,
            "PATCH without plan_id keeps the plan"
        );

        // bind: 201 with credentials (and the credential TTL metadata), same PUT: 200, same body
        let bpath = binding_path(&id, &bid);
        let bbody = bind_body(SMALL, Some(json!({"read_only": true})));
        let bound = c.put(&bpath, &bbody).await;
        bound.expect(201);
        assert_realistic_credentials(&bound.json);
        assert!(
            bound.json["metadata"]["expires_at"].is_string()
                && bound.json["metadata"]["renew_before"].is_string(),
            "credential_ttl metadata: {}",
            bound.text
        );
        let rebound = c.put(&bpath, &bbody).await;
        rebound.expect(200);
        assert_eq!(credentials(&rebound.json), credentials(&bound.json));

        // fetch binding: 200 with the same credentials and the bind parameters
        let gotb = c.get(&bpath).await;
        gotb.expect(200);
        assert_eq!(credentials(&gotb.json), credentials(&bound.json));
        assert_eq!(gotb.json["parameters"], json!({"read_only": true}));

        // unbind: 200 {}, again: 410; the binding is gone
        let unbound = c.delete(&unbind_path(&id, &bid, SMALL, false)).await;
        unbound.expect(200);
        assert_eq!(unbound.json, json!({}));
        let unbound = c.delete(&unbind_path(&id, &bid, SMALL, false)).await;
        unbound.expect(410);
        c.get(&bpath).await.expect(404);

        // deprovision: 200 {}, again: 410; the instance is gone
        let deleted = c.delete(&deprovision_path(&id, SMALL, false)).await;
        deleted.expect(200);
        assert_eq!(deleted.json, json!({}));
        c.delete(&deprovision_path(&id, SMALL, false))
            .await
            .expect(410);
        c.get(&inst).await.expect(404);
    })
    .await;
}

#[tokio::test]
async fn given_an_async_provision_when_polling_then_it_is_in_progress_with_retry_after_and_then_succeeds()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("async-inst");
        let path = format!("{}?accepts_incomplete=true", instance_path(&id));
        let body = provision_body(STANDARD, Some(delay(2)));

        let accepted = c.put(&path, &body).await;
        accepted.expect(202);
        let op = accepted.operation();
        assert!(accepted.json.get("credentials").is_none());

        // the same PUT while in progress: 202 with the same operation
        let again = c.put(&path, &body).await;
        again.expect(202);
        assert_eq!(again.operation(), op);

        // fetch while being created: 404
        c.get(&instance_path(&id)).await.expect(404);

        // last_operation (with and without the operation id): in progress, with Retry-After
        for lo_path in [
            instance_last_op_path(&id),
            format!(
                "{}?operation={op}&service_id={PG_SERVICE}&plan_id={STANDARD}",
                instance_last_op_path(&id)
            ),
        ] {
            let lo = c.get(&lo_path).await;
            lo.expect(200);
            assert_eq!(lo.state(), "in progress", "{}", lo.text);
            let retry = lo
                .retry_after()
                .unwrap_or_else(|| panic!("no Retry-After: {:?}", lo.headers));
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
        }

        let done = c.poll_until_final(&instance_last_op_path(&id)).await;
        done.expect(200);
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        assert!(done.retry_after().is_none(), "{:?}", done.headers);

        // fetch works immediately after succeeded
        let got = c.get(&instance_path(&id)).await;
        got.expect(200);
        assert_eq!(got.json["plan_id"], STANDARD);
        assert_eq!(got.json["service_id"], PG_SERVICE);
        assert_eq!(own_parameters(&got.json), delay(2));

        // the same PUT once done: 200
        let done_put = c.put(&path, &body).await;
        done_put.expect(200);
        assert!(
            done_put.json.get("operation").is_none(),
            "{}",
            done_put.text
        );
    })
    .await;
}

#[tokio::test]
async fn given_an_async_instance_when_changing_its_plan_asynchronously_then_re_patch_is_202_and_fetch_is_422_until_done()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("upd-inst");
        c.provision_ready(&id, &provision_body(STANDARD, Some(delay(1))))
            .await;

        let path = format!("{}?accepts_incomplete=true", instance_path(&id));
        let body = json!({
            "service_id": PG_SERVICE,
            "plan_id": SMALL,
            "parameters": {"storage_gb": 5, "simulate": {"delay_seconds": 2}},
            "previous_values": {"plan_id": STANDARD, "service_id": PG_SERVICE,
                                "maintenance_info": {"version": "1.2.0"}}
        });
        let accepted = c.patch(&path, &body).await;
        accepted.expect(202);
        let op = accepted.operation();

        // the same PATCH while updating: 202, same operation
        let again = c.patch(&path, &body).await;
        again.expect(202);
        assert_eq!(again.operation(), op);

        // fetch while updating: 422 ConcurrencyError
        c.get(&instance_path(&id))
            .await
            .expect_error(422, Some("ConcurrencyError"));

        // last_operation, polled with the pre-update plan as the platform does
        let lo_path = format!(
            "{}?operation={op}&service_id={PG_SERVICE}&plan_id={STANDARD}",
            instance_last_op_path(&id)
        );
        let lo = c.get(&lo_path).await;
        lo.expect(200);
        assert_eq!(lo.state(), "in progress", "{}", lo.text);
        assert!(lo.retry_after().is_some(), "{:?}", lo.headers);

        let done = c.poll_until_final(&lo_path).await;
        done.expect(200);
        assert_eq!(done.state(), "succeeded", "{}", done.text);

        let got = c.get(&instance_path(&id)).await;
        got.expect(200);
        assert_eq!(got.json["plan_id"], SMALL, "{}", got.text);
        assert_eq!(got.json["parameters"]["storage_gb"], 5, "{}", got.text);
        assert_eq!(got.json["maintenance_info"]["version"], "1.2.0");
    })
    .await;
}

#[tokio::test]
async fn given_an_async_bindings_plan_when_binding_and_unbinding_then_both_run_asynchronously() {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("ab-inst");
        let bid = unique_id("ab-bind");
        let created = c
            .put(&instance_path(&id), &provision_body(ASYNC_BINDINGS, None))
            .await;
        created.expect(201);

        // bind: 202 with an operation and no credentials
        let path = format!("{}?accepts_incomplete=true", binding_path(&id, &bid));
        let body = bind_body(ASYNC_BINDINGS, None);
        let accepted = c.put(&path, &body).await;
        accepted.expect(202);
        let op = accepted.operation();
        assert!(
            accepted.json.get("credentials").is_none(),
            "202 must not carry credentials: {}",
            accepted.text
        );
        let again = c.put(&path, &body).await;
        again.expect(202);
        assert_eq!(again.operation(), op);
        assert!(again.json.get("credentials").is_none(), "{}", again.text);

        // fetch while being created: 404; last_operation: in progress with Retry-After
        c.get(&binding_path(&id, &bid)).await.expect(404);
        let lo_path = binding_last_op_path(&id, &bid);
        let lo = c.get(&lo_path).await;
        lo.expect(200);
        assert_eq!(lo.state(), "in progress", "{}", lo.text);
        assert!(lo.retry_after().is_some(), "{:?}", lo.headers);

        let done = c
            .poll_until_final(&format!("{lo_path}?operation={op}"))
            .await;
        done.expect(200);
        assert_eq!(done.state(), "succeeded", "{}", done.text);

        // fetch now returns the credentials of the async binding
        let got = c.get(&binding_path(&id, &bid)).await;
        got.expect(200);
        assert_realistic_credentials(&got.json);

        // the same PUT once done: 200 with the same credentials
        let same = c.put(&path, &body).await;
        same.expect(200);
        assert_eq!(credentials(&same.json), credentials(&got.json));

        // unbind: 202; again: 202 same operation; last_operation ends in 410
        let upath = unbind_path(&id, &bid, ASYNC_BINDINGS, true);
        let unbinding = c.delete(&upath).await;
        unbinding.expect(202);
        let uop = unbinding.operation();
        assert_ne!(uop, op);
        let again = c.delete(&upath).await;
        again.expect(202);
        assert_eq!(again.operation(), uop);
        let lo = c.get(&lo_path).await;
        lo.expect(200);
        assert_eq!(lo.state(), "in progress", "{}", lo.text);
        let gone = c.poll_until_final(&lo_path).await;
        gone.expect(410);
        c.get(&binding_path(&id, &bid)).await.expect(404);
        c.delete(&upath).await.expect(410);
    })
    .await;
}

#[tokio::test]
async fn given_an_async_plan_when_deprovisioning_then_202_and_last_operation_is_410_once_deleted() {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("del-inst");
        c.provision_ready(&id, &provision_body(STANDARD, Some(delay(1))))
            .await;

        // the standard plan deletes asynchronously (3 s): without accepts_incomplete, 422 AsyncRequired
        c.delete(&deprovision_path(&id, STANDARD, false))
            .await
            .expect_error(422, Some("AsyncRequired"));
        c.get(&instance_path(&id)).await.expect(200);

        let deleting = c.delete(&deprovision_path(&id, STANDARD, true)).await;
        deleting.expect(202);
        let op = deleting.operation();
        let again = c.delete(&deprovision_path(&id, STANDARD, true)).await;
        again.expect(202);
        assert_eq!(again.operation(), op);

        let lo = c.get(&instance_last_op_path(&id)).await;
        lo.expect(200);
        assert_eq!(lo.state(), "in progress", "{}", lo.text);
        assert!(lo.retry_after().is_some(), "{:?}", lo.headers);

        let gone = c
            .poll_until_final(&format!("{}?operation={op}", instance_last_op_path(&id)))
            .await;
        gone.expect(410);
        c.get(&instance_path(&id)).await.expect(404);
        c.delete(&deprovision_path(&id, STANDARD, true))
            .await
            .expect(410);
    })
    .await;
}

#[tokio::test]
async fn given_a_rotatable_plan_when_binding_with_a_predecessor_then_new_credentials_are_issued_and_bad_predecessors_are_400()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("rot-inst");
        let (b1, b2) = (unique_id("rot-b1"), unique_id("rot-b2"));
        c.put(&instance_path(&id), &provision_body(SMALL, None))
            .await
            .expect(201);
        let first = c
            .put(&binding_path(&id, &b1), &bind_body(SMALL, None))
            .await;
        first.expect(201);

        let mut rotate = bind_body(SMALL, None);
        rotate["predecessor_binding_id"] = json!(b1);
        let second = c.put(&binding_path(&id, &b2), &rotate).await;
        second.expect(201);
        assert_realistic_credentials(&second.json);
        assert_ne!(
            credentials(&second.json)["password"],
            credentials(&first.json)["password"]
        );
        assert_ne!(
            credentials(&second.json)["username"],
            credentials(&first.json)["username"]
        );
        // both bindings exist after the rotation; the rotation is idempotent
        let got1 = c.get(&binding_path(&id, &b1)).await;
        got1.expect(200);
        assert_eq!(credentials(&got1.json), credentials(&first.json));
        let again = c.put(&binding_path(&id, &b2), &rotate).await;
        again.expect(200);
        assert_eq!(credentials(&again.json), credentials(&second.json));

        // unknown predecessor: 400, nothing created
        let b3 = unique_id("rot-b3");
        let mut unknown = bind_body(SMALL, None);
        unknown["predecessor_binding_id"] = json!("no-such-binding");
        c.put(&binding_path(&id, &b3), &unknown)
            .await
            .expect_error(400, None);
        c.get(&binding_path(&id, &b3)).await.expect(404);

        // predecessor on a plan without binding_rotatable: 400, nothing created
        let qid = unique_id("rot-queue");
        let (q1, q2) = (unique_id("rot-q1"), unique_id("rot-q2"));
        c.put(&instance_path(&qid), &provision_body(APP_BOUND, None))
            .await
            .expect(201);
        c.put(&binding_path(&qid, &q1), &bind_body(APP_BOUND, None))
            .await
            .expect(201);
        let mut not_rotatable = bind_body(APP_BOUND, None);
        not_rotatable["predecessor_binding_id"] = json!(q1);
        c.put(&binding_path(&qid, &q2), &not_rotatable)
            .await
            .expect_error(400, None);
        c.get(&binding_path(&qid, &q2)).await.expect(404);
    })
    .await;
}

#[tokio::test]
async fn given_a_deleted_instance_when_its_id_is_provisioned_again_then_its_old_bindings_do_not_reappear()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("reuse-inst");
        let bid = unique_id("reuse-bind");
        c.put(&instance_path(&id), &provision_body(SMALL, None))
            .await
            .expect(201);
        c.put(&binding_path(&id, &bid), &bind_body(SMALL, None))
            .await
            .expect(201);
        c.delete(&deprovision_path(&id, SMALL, false))
            .await
            .expect(200);

        let recreated = c
            .put(
                &instance_path(&id),
                &provision_body(SMALL, Some(json!({"storage_gb": 3}))),
            )
            .await;
        recreated.expect(201);
        c.get(&binding_path(&id, &bid)).await.expect(404);
        c.delete(&unbind_path(&id, &bid, SMALL, false))
            .await
            .expect(410);
        let got = c.get(&instance_path(&id)).await;
        got.expect(200);
        assert_eq!(own_parameters(&got.json), json!({"storage_gb": 3}));
        // the id is free for a new binding
        c.put(&binding_path(&id, &bid), &bind_body(SMALL, None))
            .await
            .expect(201);
    })
    .await;
}

#[tokio::test]

async fn given_a_reprovisioned_instance_when_polling_a_binding_of_its_previous_life_then_404() {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("gen-inst");
        let bid = unique_id("gen-bind");
        c.put(&instance_path(&id), &provision_body(SMALL, None))
            .await
            .expect(201);
        c.put(&binding_path(&id, &bid), &bind_body(SMALL, None))
            .await
            .expect(201);
        c.delete(&deprovision_path(&id, SMALL, false))
            .await
            .expect(200);
        c.put(&instance_path(&id), &provision_body(SMALL, None))
            .await
            .expect(201);
        // GET binding says 404 and DELETE says 410 (checked above), so last_operation must agree.
        c.get(&binding_path(&id, &bid)).await.expect(404);
        let lo = c.get(&binding_last_op_path(&id, &bid)).await;
        lo.expect_error(404, None);
    })
    .await;
}
