//! Refusals that depend on what exists (409, 410, 404, 422 with each OSB error code), backend
//! failures (sync 5xx, async `failed`) with the orphan-mitigation DELETE that follows, and the
//! `X-Broker-API-Request-Identity` echo.

use e2e::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn given_an_existing_instance_and_binding_when_put_again_with_different_attributes_then_409_and_nothing_changes()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("conf-inst");
        let bid = unique_id("conf-bind");
        c.put(
            &instance_path(&id),
            &provision_body(SMALL, Some(json!({"storage_gb": 10}))),
        )
        .await
        .expect(201);

        for other in [
            provision_body(SMALL, Some(json!({"storage_gb": 11}))),
            provision_body(SMALL, None),
            provision_body(ASYNC_BINDINGS, Some(json!({"storage_gb": 10}))),
        ] {
            let r = c.put(&instance_path(&id), &other).await;
            assert_eq!(r.status, 409, "{other}: {}", r.text);
            r.expect_error(409, None);
        }
        let mut other_space = provision_body(SMALL, Some(json!({"storage_gb": 10})));
        other_space["space_guid"] = json!("another-space");
        c.put(&instance_path(&id), &other_space)
            .await
            .expect_error(409, None);
        let got = c.get(&instance_path(&id)).await;
        got.expect(200);
        assert_eq!(own_parameters(&got.json), json!({"storage_gb": 10}));
        assert_eq!(got.json["plan_id"], SMALL);

        let first = c
            .put(
                &binding_path(&id, &bid),
                &bind_body(SMALL, Some(json!({"read_only": true}))),
            )
            .await;
        first.expect(201);
        for other in [
            bind_body(SMALL, Some(json!({"read_only": false}))),
            bind_body(SMALL, None),
        ] {
            let r = c.put(&binding_path(&id, &bid), &other).await;
            assert_eq!(r.status, 409, "{other}: {}", r.text);
            r.expect_error(409, None);
        }
        let mut other_app = bind_body(SMALL, Some(json!({"read_only": true})));
        other_app["bind_resource"]["app_guid"] = json!("another-app");
        c.put(&binding_path(&id, &bid), &other_app)
            .await
            .expect_error(409, None);
        let got = c.get(&binding_path(&id, &bid)).await;
        got.expect(200);
        assert_eq!(got.json["credentials"], first.json["credentials"]);
        assert_eq!(got.json["parameters"], json!({"read_only": true}));
    })
    .await;
}

#[tokio::test]
async fn given_an_async_only_plan_when_the_platform_does_not_accept_incomplete_then_422_async_required()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");

        // provision on the standard plan: without the flag, and with accepts_incomplete=false
        let id = unique_id("ar-inst");
        for path in [
            instance_path(&id),
            format!("{}?accepts_incomplete=false", instance_path(&id)),
        ] {
            c.put(&path, &provision_body(STANDARD, None))
                .await
                .expect_error(422, Some("AsyncRequired"));
        }
        c.get(&instance_path(&id)).await.expect(404);
        c.get(&instance_last_op_path(&id)).await.expect(404);

        // any plan made async by a requested delay
        c.put(&instance_path(&id), &provision_body(SMALL, Some(delay(1))))
            .await
            .expect_error(422, Some("AsyncRequired"));

        // update of a standard instance (3 s) without the flag
        c.provision_ready(&id, &provision_body(STANDARD, Some(delay(1))))
            .await;
        c.patch(
            &instance_path(&id),
            &json!({"service_id": PG_SERVICE, "parameters": {"x": 1}}),
        )
        .await
        .expect_error(422, Some("AsyncRequired"));
        assert_eq!(
            own_parameters(&c.get(&instance_path(&id)).await.json),
            delay(1),
            "a refused update changes nothing"
        );

        // bind and unbind on the async-bindings plan without the flag
        let ab = unique_id("ar-ab");
        let bid = unique_id("ar-bind");
        c.put(&instance_path(&ab), &provision_body(ASYNC_BINDINGS, None))
            .await
            .expect(201);
        c.put(&binding_path(&ab, &bid), &bind_body(ASYNC_BINDINGS, None))
            .await
            .expect_error(422, Some("AsyncRequired"));
        c.get(&binding_path(&ab, &bid)).await.expect(404);
        c.bind_ready(&ab, &bid, &bind_body(ASYNC_BINDINGS, Some(delay(1))))
            .await;
        c.delete(&unbind_path(&ab, &bid, ASYNC_BINDINGS, false))
            .await
            .expect_error(422, Some("AsyncRequired"));
        c.get(&binding_path(&ab, &bid)).await.expect(200);
    })
    .await;
}

#[tokio::test]
async fn given_a_maintenance_info_version_other_than_the_plans_when_provisioning_or_updating_then_422_maintenance_info_conflict()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("mi-inst");
        let mut body = provision_body(SMALL, None);
        body["maintenance_info"] = json!({"version": "9.9.9"});
        c.put(&instance_path(&id), &body)
            .await
            .expect_error(422, Some("MaintenanceInfoConflict"));
        c.get(&instance_path(&id)).await.expect(404);

        body["maintenance_info"] = json!({"version": "1.2.0"});
        c.put(&instance_path(&id), &body).await.expect(201);

        c.patch(
            &instance_path(&id),
            &json!({"service_id": PG_SERVICE, "maintenance_info": {"version": "9.9.9"}}),
        )
        .await
        .expect_error(422, Some("MaintenanceInfoConflict"));
        let got = c.get(&instance_path(&id)).await;
        got.expect(200);
        assert_eq!(got.json["maintenance_info"]["version"], "1.2.0");

        // a plan without maintenance_info refuses any requested version
        let ab = unique_id("mi-ab");
        let mut body = provision_body(ASYNC_BINDINGS, None);
        body["maintenance_info"] = json!({"version": "1.2.0"});
        c.put(&instance_path(&ab), &body)
            .await
            .expect_error(422, Some("MaintenanceInfoConflict"));
    })
    .await;
}

#[tokio::test]
async fn given_an_app_bound_plan_when_binding_without_an_app_then_422_requires_app_and_with_one_201()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("ra-inst");
        c.put(&instance_path(&id), &provision_body(APP_BOUND, None))
            .await
            .expect(201);
        let bid = unique_id("ra-bind");
        let mut no_app = bind_body(APP_BOUND, None);
        no_app
            .as_object_mut()
            .expect("object")
            .remove("bind_resource");
        c.put(&binding_path(&id, &bid), &no_app)
            .await
            .expect_error(422, Some("RequiresApp"));
        no_app["bind_resource"] = json!({"route": "example.org"});
        c.put(&binding_path(&id, &bid), &no_app)
            .await
            .expect_error(422, Some("RequiresApp"));
        c.get(&binding_path(&id, &bid)).await.expect(404);

        let bound = c
            .put(&binding_path(&id, &bid), &bind_body(APP_BOUND, None))
            .await;
        bound.expect(201);
        assert!(bound.json["credentials"].is_object(), "{}", bound.text);

        // the deprecated top-level app_guid is accepted too
        let bid2 = unique_id("ra-bind2");
        let mut legacy = bind_body(APP_BOUND, None);
        legacy
            .as_object_mut()
            .expect("object")
            .remove("bind_resource");
        legacy["app_guid"] = json!("legacy-app");
        c.put(&binding_path(&id, &bid2), &legacy).await.expect(201);
    })
    .await;
}

#[tokio::test]
async fn given_an_operation_in_progress_when_another_mutation_arrives_then_422_concurrency_error() {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");

        // PATCH while an async provision is in progress
        let creating = unique_id("ce-creating");
        c.put(
            &format!("{}?accepts_incomplete=true", instance_path(&creating)),
            &provision_body(STANDARD, Some(delay(2))),
        )
        .await
        .expect(202);
        c.patch(
            &format!("{}?accepts_incomplete=true", instance_path(&creating)),
            &json!({"service_id": PG_SERVICE, "parameters": {"x": 1}}),
        )
        .await
        .expect_error(422, Some("ConcurrencyError"));

        // DELETE and another PATCH while an async update is in progress
        let updating = unique_id("ce-updating");
        c.put(
            &instance_path(&updating),
            &provision_body(SMALL, Some(json!({"storage_gb": 1}))),
        )
        .await
        .expect(201);
        let upd = c
            .patch(
                &format!("{}?accepts_incomplete=true", instance_path(&updating)),
                &json!({"service_id": PG_SERVICE,
                        "parameters": {"storage_gb": 2, "simulate": {"delay_seconds": 2}}}),
            )
            .await;
        upd.expect(202);
        c.delete(&deprovision_path(&updating, SMALL, true))
            .await
            .expect_error(422, Some("ConcurrencyError"));
        c.delete(&deprovision_path(&updating, SMALL, false))
            .await
            .expect_error(422, Some("ConcurrencyError"));
        c.patch(
            &format!("{}?accepts_incomplete=true", instance_path(&updating)),
            &json!({"service_id": PG_SERVICE, "parameters": {"storage_gb": 3}}),
        )
        .await
        .expect_error(422, Some("ConcurrencyError"));
        c.get(&instance_path(&updating))
            .await
            .expect_error(422, Some("ConcurrencyError"));

        // DELETE of the instance while one of its bindings is being created
        let ab = unique_id("ce-ab");
        let bid = unique_id("ce-bind");
        c.put(&instance_path(&ab), &provision_body(ASYNC_BINDINGS, None))
            .await
            .expect(201);
        c.put(
            &format!("{}?accepts_incomplete=true", binding_path(&ab, &bid)),
            &bind_body(ASYNC_BINDINGS, None),
        )
        .await
        .expect(202);
        c.delete(&deprovision_path(&ab, ASYNC_BINDINGS, true))
            .await
            .expect_error(422, Some("ConcurrencyError"));

        // all three finish as if nothing else had been asked
        let done = c.poll_until_final(&instance_last_op_path(&updating)).await;
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        let got = c.get(&instance_path(&updating)).await;
        got.expect(200);
        assert_eq!(got.json["parameters"]["storage_gb"], 2);
        let done = c.poll_until_final(&instance_last_op_path(&creating)).await;
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        let done = c.poll_until_final(&binding_last_op_path(&ab, &bid)).await;
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        c.get(&instance_path(&ab)).await.expect(200);
    })
    .await;
}

#[tokio::test]
async fn given_unknown_ids_when_deleting_then_410_and_when_fetching_then_404() {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("known-inst");
        c.put(&instance_path(&id), &provision_body(SMALL, None))
            .await
            .expect(201);

        c.delete(&deprovision_path("no-such-instance", SMALL, false))
            .await
            .expect_error(410, None);
        c.delete(&deprovision_path("no-such-instance", SMALL, true))
            .await
            .expect_error(410, None);
        c.delete(&unbind_path(
            "no-such-instance",
            "no-such-binding",
            SMALL,
            false,
        ))
        .await
        .expect_error(410, None);
        c.delete(&unbind_path(&id, "no-such-binding", SMALL, true))
            .await
            .expect_error(410, None);

        c.get(&instance_path("no-such-instance"))
            .await
            .expect_error(404, None);
        c.get(&instance_last_op_path("no-such-instance"))
            .await
            .expect_error(404, None);
        c.get(&binding_path(&id, "no-such-binding"))
            .await
            .expect_error(404, None);
        c.get(&binding_path("no-such-instance", "no-such-binding"))
            .await
            .expect_error(404, None);
        c.get(&binding_last_op_path(&id, "no-such-binding"))
            .await
            .expect_error(404, None);
        c.patch(
            &instance_path("no-such-instance"),
            &json!({"service_id": PG_SERVICE}),
        )
        .await
        .expect_error(404, None);
        // unknown endpoints are 404 too, with an OSB error body
        c.get("/v2/nothing-here").await.expect_error(404, None);
    })
    .await;
}

#[tokio::test]
async fn given_a_request_identity_when_calling_then_it_is_echoed_on_success_and_error_responses() {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("rid-inst");
        let rid = "e6a0bd4c-6dc4-4b7e-a3b0-1a2b3c4d5e6f";
        let cf1 = broker.tenant("cf1");
        let with_rid =
            |rb: reqwest::RequestBuilder| rb.header("X-Broker-API-Request-Identity", rid);
        let responses = [
            (
                200,
                send(with_rid(c.request(Method::GET, "/v2/catalog"))).await,
            ),
            (
                201,
                send(with_rid(
                    c.request(Method::PUT, &instance_path(&id))
                        .json(&provision_body(SMALL, None)),
                ))
                .await,
            ),
            (
                200,
                send(with_rid(c.request(Method::GET, &instance_path(&id)))).await,
            ),
            (
                400,
                send(with_rid(
                    c.request(Method::PUT, &instance_path("other"))
                        .json(&json!({"plan_id": SMALL})),
                ))
                .await,
            ),
            (
                404,
                send(with_rid(c.request(Method::GET, &instance_path("nope")))).await,
            ),
            (401, send(with_rid(c.raw(Method::GET, "/v2/catalog"))).await),
            (
                412,
                send(with_rid(
                    broker
                        .client("cf1")
                        .raw(Method::GET, "/v2/catalog")
                        .basic_auth(&cf1.username, Some(&cf1.password)),
                ))
                .await,
            ),
            (
                200,
                send(with_rid(c.request(
                    Method::DELETE,
                    &deprovision_path(&id, SMALL, false),
                )))
                .await,
            ),
        ];
        for (status, r) in &responses {
            r.expect(*status);
            assert_eq!(
                r.header("x-broker-api-request-identity"),
                Some(rid),
                "HTTP {status} without the request identity: {:?}",
                r.headers
            );
        }
        // without the header, none is invented
        let r = c.get("/v2/catalog").await;
        assert!(r.header("x-broker-api-request-identity").is_none());
    })
    .await;
}

#[tokio::test]
async fn given_a_simulated_async_provision_failure_when_polling_then_failed_with_description_and_delete_cleans_up()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("fail-inst");
        let params = json!({"simulate": {"delay_seconds": 1, "fail": true,
                                         "failure_description": "disk on fire"}});
        let r = c
            .put(
                &format!("{}?accepts_incomplete=true", instance_path(&id)),
                &provision_body(SMALL, Some(params)),
            )
            .await;
        r.expect(202);
        let op = r.operation();
        let done = c
            .poll_until_final(&format!("{}?operation={op}", instance_last_op_path(&id)))
            .await;
        done.expect(200);
        assert_eq!(done.state(), "failed", "{}", done.text);
        assert_eq!(done.json["description"], "disk on fire");
        assert!(
            done.json.get("update_repeatable").is_none(),
            "update_repeatable only for updates: {}",
            done.text
        );
        c.get(&instance_path(&id)).await.expect(404);

        // orphan mitigation: the platform deletes the failed instance
        let deleted = c.delete(&deprovision_path(&id, SMALL, false)).await;
        deleted.expect(200);
        assert_eq!(deleted.json, json!({}));
        c.delete(&deprovision_path(&id, SMALL, false))
            .await
            .expect(410);
        c.get(&instance_last_op_path(&id)).await.expect(410);
        c.get(&instance_path(&id)).await.expect(404);

        // and the id can be provisioned again
        c.put(&instance_path(&id), &provision_body(SMALL, None))
            .await
            .expect(201);
    })
    .await;
}

#[tokio::test]
async fn given_simulated_sync_failures_when_provisioning_updating_or_binding_then_5xx_and_nothing_is_left_behind()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let fail = json!({"simulate": {"fail": true}});

        let id = unique_id("sfail-inst");
        let r = c
            .put(
                &instance_path(&id),
                &provision_body(SMALL, Some(fail.clone())),
            )
            .await;
        assert!(
            r.status >= 500,
            "provision failure: {} {}",
            r.status,
            r.text
        );
        r.expect_error(r.status, None);
        c.get(&instance_path(&id)).await.expect(404);
        // the orphan-mitigation DELETE finds nothing
        c.delete(&deprovision_path(&id, SMALL, false))
            .await
            .expect(410);

        c.put(
            &instance_path(&id),
            &provision_body(SMALL, Some(json!({"storage_gb": 4}))),
        )
        .await
        .expect(201);

        // a failed sync update changes nothing
        let r = c
            .patch(
                &instance_path(&id),
                &json!({"service_id": PG_SERVICE,
                        "parameters": {"storage_gb": 8, "simulate": {"fail": true}}}),
            )
            .await;
        assert!(r.status >= 500, "update failure: {} {}", r.status, r.text);
        let got = c.get(&instance_path(&id)).await;
        got.expect(200);
        assert_eq!(own_parameters(&got.json), json!({"storage_gb": 4}));

        // a failed sync bind leaves no binding
        let bid = unique_id("sfail-bind");
        let r = c
            .put(
                &binding_path(&id, &bid),
                &bind_body(SMALL, Some(fail.clone())),
            )
            .await;
        assert!(r.status >= 500, "bind failure: {} {}", r.status, r.text);
        r.expect_error(r.status, None);
        c.get(&binding_path(&id, &bid)).await.expect(404);
        c.delete(&unbind_path(&id, &bid, SMALL, false))
            .await
            .expect(410);
        c.put(&binding_path(&id, &bid), &bind_body(SMALL, None))
            .await
            .expect(201);
    })
    .await;
}

#[tokio::test]
async fn given_simulated_async_update_and_bind_failures_when_polling_then_failed_and_state_is_kept()
{
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("afail-inst");
        c.put(
            &instance_path(&id),
            &provision_body(SMALL, Some(json!({"storage_gb": 4}))),
        )
        .await
        .expect(201);

        // async update failure: failed, instance_usable and update_repeatable, instance unchanged
        let r = c
            .patch(
                &format!("{}?accepts_incomplete=true", instance_path(&id)),
                &json!({"service_id": PG_SERVICE,
                        "parameters": {"storage_gb": 8,
                                       "simulate": {"delay_seconds": 1, "fail": true}}}),
            )
            .await;
        r.expect(202);
        let done = c.poll_until_final(&instance_last_op_path(&id)).await;
        done.expect(200);
        assert_eq!(done.state(), "failed", "{}", done.text);
        assert!(!done.description().is_empty(), "{}", done.text);
        assert_eq!(done.json["instance_usable"], true, "{}", done.text);
        assert_eq!(done.json["update_repeatable"], true, "{}", done.text);
        let got = c.get(&instance_path(&id)).await;
        got.expect(200);
        assert_eq!(own_parameters(&got.json), json!({"storage_gb": 4}));

        // async bind failure: failed, no binding; the orphan-mitigation unbind works
        let bid = unique_id("afail-bind");
        let r = c
            .put(
                &format!("{}?accepts_incomplete=true", binding_path(&id, &bid)),
                &bind_body(
                    SMALL,
                    Some(json!({"simulate": {"delay_seconds": 1, "fail": true}})),
                ),
            )
            .await;
        r.expect(202);
        let done = c.poll_until_final(&binding_last_op_path(&id, &bid)).await;
        done.expect(200);
        assert_eq!(done.state(), "failed", "{}", done.text);
        assert!(!done.description().is_empty(), "{}", done.text);
        c.get(&binding_path(&id, &bid)).await.expect(404);
        c.delete(&unbind_path(&id, &bid, SMALL, false))
            .await
            .expect(200);
        c.get(&binding_last_op_path(&id, &bid)).await.expect(410);
    })
    .await;
}
