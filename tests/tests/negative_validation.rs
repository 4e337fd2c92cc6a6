//! Requests the broker must refuse before touching anything (osb-checker list): authentication (401),
//! the version header (412), malformed or incomplete bodies, queries and ids (400), oversized bodies
//! (413). Every refusal carries an OSB error body and leaves no resource behind.

use e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

const JSON: &str = "application/json";

/// PUT with a raw body and content type.
async fn put_raw(c: &Client, path: &str, content_type: &str, body: &str) -> Resp {
    send(
        c.request(Method::PUT, path)
            .header("Content-Type", content_type)
            .body(body.to_owned()),
    )
    .await
}

fn without(mut body: Value, key: &str) -> Value {
    body.as_object_mut()
        .expect("object body")
        .remove(key)
        .unwrap_or_else(|| panic!("no '{key}' to remove"));
    body
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

#[tokio::test]
async fn given_missing_or_wrong_credentials_when_calling_any_endpoint_then_401_with_an_osb_error_body()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let good = broker.client("cf1");
        let id = unique_id("auth-inst");
        good.put(&instance_path(&id), &provision_body(SMALL, None))
            .await
            .expect(201);

        let cf1 = broker.tenant("cf1");
        let cf2 = broker.tenant("cf2");
        let wrong = [
            broker.client_with(&cf1.username, "not-the-password"),
            broker.client_with("nobody", &cf1.password),
            broker.client_with(&cf1.username, &cf2.password),
            broker.client_with("", ""),
        ];
        let new_id = unique_id("auth-new");
        for c in &wrong {
            for r in [
                c.get("/v2/catalog").await,
                c.put(&instance_path(&new_id), &provision_body(SMALL, None))
                    .await,
                c.get(&instance_path(&id)).await,
                c.get(&instance_last_op_path(&id)).await,
                c.delete(&deprovision_path(&id, SMALL, false)).await,
                c.put(&binding_path(&id, "b"), &bind_body(SMALL, None))
                    .await,
            ] {
                r.expect_error(401, None);
                assert!(
                    r.header("www-authenticate")
                        .is_some_and(|h| h.to_ascii_lowercase().starts_with("basic")),
                    "WWW-Authenticate: {:?}",
                    r.headers
                );
            }
        }

        // no Authorization header at all, with and without the version header
        let anon = broker.client("cf1");
        for rb in [
            anon.raw(Method::GET, "/v2/catalog"),
            anon.raw(Method::GET, "/v2/catalog")
                .header("X-Broker-API-Version", API_VERSION),
            anon.raw(Method::PUT, &instance_path(&new_id))
                .header("X-Broker-API-Version", API_VERSION)
                .json(&provision_body(SMALL, None)),
            anon.raw(Method::GET, "/v2/catalog")
                .header("X-Broker-API-Version", API_VERSION)
                .header("Authorization", "Bearer abc"),
            anon.raw(Method::GET, "/v2/catalog")
                .header("X-Broker-API-Version", API_VERSION)
                .header("Authorization", "Basic !!!not-base64"),
        ] {
            send(rb).await.expect_error(401, None);
        }

        // nothing was created or deleted by the refused requests
        good.get(&instance_path(&new_id)).await.expect(404);
        good.get(&instance_path(&id)).await.expect(200);
    })
    .await;
}

#[tokio::test]
async fn given_a_missing_or_unsupported_api_version_when_calling_then_412_with_an_osb_error_body() {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let t = broker.tenant("cf1");
        let id = unique_id("ver-inst");
        let versions: [Option<&str>; 5] =
            [None, Some("2.12"), Some("1.17"), Some("3.0"), Some("abc")];
        for v in versions {
            for method in [Method::GET, Method::PUT] {
                let path = if method == Method::GET {
                    "/v2/catalog".to_owned()
                } else {
                    instance_path(&id)
                };
                let mut rb = c
                    .raw(method.clone(), &path)
                    .basic_auth(&t.username, Some(&t.password))
                    .json(&provision_body(SMALL, None));
                if let Some(v) = v {
                    rb = rb.header("X-Broker-API-Version", v);
                }
                let r = send(rb).await;
                assert_eq!(r.status, 412, "version {v:?} on {method}: {}", r.text);
                r.expect_error(412, None);
            }
        }
        c.get(&instance_path(&id)).await.expect(404);
        // the supported version works
        c.get("/v2/catalog").await.expect(200);
    })
    .await;
}

#[tokio::test]
async fn given_malformed_or_incomplete_provision_requests_when_provisioning_then_400_and_nothing_is_created()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let ok = provision_body(SMALL, Some(json!({"storage_gb": 10})));
        let as_json = |v: &Value| v.to_string();

        let cases: Vec<(&str, String, &str)> = vec![
            ("malformed JSON", r#"{"service_id": "#.into(), JSON),
            ("trailing garbage", format!("{} x", as_json(&ok)), JSON),
            ("empty body", String::new(), JSON),
            ("JSON string", r#""provision me""#.into(), JSON),
            ("JSON number", "42".into(), JSON),
            ("JSON null", "null".into(), JSON),
            ("JSON true", "true".into(), JSON),
            ("empty array", "[]".into(), JSON),
            ("not JSON content type", as_json(&ok), "text/plain"),
            (
                "missing service_id",
                as_json(&without(ok.clone(), "service_id")),
                JSON,
            ),
            (
                "missing plan_id",
                as_json(&without(ok.clone(), "plan_id")),
                JSON,
            ),
            (
                "missing organization_guid",
                as_json(&without(ok.clone(), "organization_guid")),
                JSON,
            ),
            (
                "missing space_guid",
                as_json(&without(ok.clone(), "space_guid")),
                JSON,
            ),
            (
                "empty service_id",
                as_json(&with(ok.clone(), "service_id", json!(""))),
                JSON,
            ),
            (
                "unknown service_id",
                as_json(&with(ok.clone(), "service_id", json!("no-such-service"))),
                JSON,
            ),
            (
                "unknown plan_id",
                as_json(&with(ok.clone(), "plan_id", json!("no-such-plan"))),
                JSON,
            ),
            (
                "plan of another service",
                as_json(&with(ok.clone(), "plan_id", json!(APP_BOUND))),
                JSON,
            ),
            (
                "service_id is a number",
                as_json(&with(ok.clone(), "service_id", json!(5))),
                JSON,
            ),
            (
                "plan_id is a boolean",
                as_json(&with(ok.clone(), "plan_id", json!(true))),
                JSON,
            ),
            (
                "organization_guid is a number",
                as_json(&with(ok.clone(), "organization_guid", json!(7))),
                JSON,
            ),
            (
                "parameters is a string",
                as_json(&with(ok.clone(), "parameters", json!("x"))),
                JSON,
            ),
            (
                "parameters is an array",
                as_json(&with(ok.clone(), "parameters", json!([1]))),
                JSON,
            ),
            (
                "context is a string",
                as_json(&with(ok.clone(), "context", json!("x"))),
                JSON,
            ),
            (
                "maintenance_info is a string",
                as_json(&with(ok.clone(), "maintenance_info", json!("1.2.0"))),
                JSON,
            ),
            (
                "storage_gb above the schema maximum",
                as_json(&with(ok.clone(), "parameters", json!({"storage_gb": 1000}))),
                JSON,
            ),
            (
                "storage_gb of the wrong type",
                as_json(&with(
                    ok.clone(),
                    "parameters",
                    json!({"storage_gb": "ten"}),
                )),
                JSON,
            ),
            (
                "parameter unknown to the schema",
                as_json(&with(ok.clone(), "parameters", json!({"colour": "blue"}))),
                JSON,
            ),
            (
                "malformed simulate parameter",
                as_json(&with(
                    ok.clone(),
                    "parameters",
                    json!({"simulate": {"bogus": 1}}),
                )),
                JSON,
            ),
        ];
        for (i, (label, body, content_type)) in cases.iter().enumerate() {
            let id = format!("bad-{i}");
            let r = put_raw(&c, &instance_path(&id), content_type, body).await;
            assert_eq!(r.status, 400, "{label}: {} {}", r.status, r.text);
            r.expect_error(400, None);
            c.get(&instance_path(&id)).await.expect(404);
            c.get(&instance_last_op_path(&id)).await.expect(404);
        }

        // invalid accepts_incomplete values
        for v in ["maybe", "yes", "2"] {
            let id = unique_id("bad-ai");
            let r = c
                .put(
                    &format!("{}?accepts_incomplete={v}", instance_path(&id)),
                    &ok,
                )
                .await;
            assert_eq!(r.status, 400, "accepts_incomplete={v}: {}", r.text);
            r.expect_error(400, None);
            c.get(&instance_path(&id)).await.expect(404);
        }

        // ids with characters outside the RFC 3986 unreserved set, or too long
        let long = "a".repeat(256);
        for bad in [
            "bad%20id",
            "a%2Fb",
            "caf%C3%A9",
            "semi%3Bcolon",
            "a!b",
            long.as_str(),
        ] {
            let r = c.put(&instance_path(bad), &ok).await;
            assert_eq!(r.status, 400, "instance id {bad}: {}", r.text);
            r.expect_error(400, None);
        }
        // the same body with a good id works
        c.put(&instance_path("good-id_1.2~3"), &ok)
            .await
            .expect(201);
    })
    .await;
}

#[tokio::test]
async fn given_malformed_update_and_bind_requests_when_sent_then_400_and_nothing_changes() {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("v-inst");
        c.put(
            &instance_path(&id),
            &provision_body(SMALL, Some(json!({"storage_gb": 10}))),
        )
        .await
        .expect(201);

        // update
        let patch_ok = json!({"service_id": PG_SERVICE, "parameters": {"storage_gb": 11}});
        let patch_cases: Vec<(&str, Value)> = vec![
            (
                "missing service_id",
                without(patch_ok.clone(), "service_id"),
            ),
            (
                "unknown service_id",
                with(patch_ok.clone(), "service_id", json!("nope")),
            ),
            (
                "service_id is a number",
                with(patch_ok.clone(), "service_id", json!(5)),
            ),
            (
                "unknown plan_id",
                with(patch_ok.clone(), "plan_id", json!("no-such-plan")),
            ),
            (
                "plan of another service",
                with(patch_ok.clone(), "plan_id", json!(APP_BOUND)),
            ),
            (
                "parameters is a string",
                with(patch_ok.clone(), "parameters", json!("x")),
            ),
            (
                "storage_gb above the schema maximum",
                with(patch_ok.clone(), "parameters", json!({"storage_gb": 1000})),
            ),
            (
                "parameter unknown to the schema",
                with(patch_ok.clone(), "parameters", json!({"colour": "blue"})),
            ),
        ];
        for (label, body) in &patch_cases {
            let r = c.patch(&instance_path(&id), body).await;
            assert_eq!(r.status, 400, "PATCH {label}: {}", r.text);
            r.expect_error(400, None);
        }
        let r = send(
            c.request(Method::PATCH, &instance_path(&id))
                .header("Content-Type", JSON)
                .body("{not json"),
        )
        .await;
        r.expect_error(400, None);
        let r = c
            .patch(
                &format!("{}?accepts_incomplete=maybe", instance_path(&id)),
                &patch_ok,
            )
            .await;
        r.expect_error(400, None);
        let got = c.get(&instance_path(&id)).await;
        got.expect(200);
        assert_eq!(own_parameters(&got.json), json!({"storage_gb": 10}));
        assert_eq!(got.json["plan_id"], SMALL);

        // bind
        let bid = unique_id("v-bind");
        let bind_ok = bind_body(SMALL, Some(json!({"read_only": true})));
        let bind_cases: Vec<(&str, Value)> = vec![
            ("missing service_id", without(bind_ok.clone(), "service_id")),
            ("missing plan_id", without(bind_ok.clone(), "plan_id")),
            (
                "unknown service_id",
                with(bind_ok.clone(), "service_id", json!("nope")),
            ),
            (
                "unknown plan_id",
                with(bind_ok.clone(), "plan_id", json!("nope")),
            ),
            (
                "another plan than the instance's",
                with(bind_ok.clone(), "plan_id", json!(STANDARD)),
            ),
            (
                "service_id is a number",
                with(bind_ok.clone(), "service_id", json!(5)),
            ),
            (
                "parameters is a string",
                with(bind_ok.clone(), "parameters", json!("x")),
            ),
            (
                "bind_resource is a string",
                with(bind_ok.clone(), "bind_resource", json!("x")),
            ),
            (
                "read_only of the wrong type",
                with(bind_ok.clone(), "parameters", json!({"read_only": "yes"})),
            ),
            (
                "parameter unknown to the schema",
                with(bind_ok.clone(), "parameters", json!({"admin": true})),
            ),
        ];
        for (label, body) in &bind_cases {
            let r = c.put(&binding_path(&id, &bid), body).await;
            assert_eq!(r.status, 400, "bind {label}: {}", r.text);
            r.expect_error(400, None);
        }
        let r = put_raw(&c, &binding_path(&id, &bid), JSON, "[1, 2").await;
        r.expect_error(400, None);
        for bad in ["bad%20id", "a%2Fb", "a!b"] {
            let r = c.put(&binding_path(&id, bad), &bind_ok).await;
            assert_eq!(r.status, 400, "binding id {bad}: {}", r.text);
            r.expect_error(400, None);
        }
        c.get(&binding_path(&id, &bid)).await.expect(404);
        c.put(&binding_path(&id, &bid), &bind_ok).await.expect(201);

        // last_operation with an operation id that cannot be one: 400
        let r = c
            .get(&format!(
                "{}?operation=not%20an%20op",
                instance_last_op_path(&id)
            ))
            .await;
        r.expect_error(400, None);
    })
    .await;
}

#[tokio::test]
async fn given_a_delete_without_service_id_or_plan_id_when_deprovisioning_or_unbinding_then_400_and_nothing_is_deleted()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("dq-inst");
        let bid = unique_id("dq-bind");
        c.put(&instance_path(&id), &provision_body(SMALL, None))
            .await
            .expect(201);
        c.put(&binding_path(&id, &bid), &bind_body(SMALL, None))
            .await
            .expect(201);
        let queries = [
            String::new(),
            format!("?service_id={PG_SERVICE}"),
            format!("?plan_id={SMALL}"),
            format!("?service_id=&plan_id={SMALL}"),
            "?accepts_incomplete=true".to_owned(),
        ];
        for q in &queries {
            let r = c.delete(&format!("{}{q}", binding_path(&id, &bid))).await;
            assert_eq!(r.status, 400, "unbind with '{q}': {}", r.text);
            r.expect_error(400, None);
            let r = c.delete(&format!("{}{q}", instance_path(&id))).await;
            assert_eq!(r.status, 400, "deprovision with '{q}': {}", r.text);
            r.expect_error(400, None);
        }
        let r = c
            .delete(&format!(
                "{}?{}&accepts_incomplete=maybe",
                instance_path(&id),
                ids_query(SMALL)
            ))
            .await;
        r.expect_error(400, None);
        c.get(&binding_path(&id, &bid)).await.expect(200);
        c.get(&instance_path(&id)).await.expect(200);
    })
    .await;
}

#[tokio::test]
async fn given_a_body_over_64_kib_when_provisioning_or_binding_then_413_and_nothing_is_created() {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let big = "x".repeat(70 * 1024);
        let id = unique_id("big-inst");
        let r = c
            .put(
                &instance_path(&id),
                &provision_body(SMALL, Some(json!({"extensions": [big]}))),
            )
            .await;
        r.expect_error(413, None);
        c.get(&instance_path(&id)).await.expect(404);

        c.put(&instance_path(&id), &provision_body(SMALL, None))
            .await
            .expect(201);
        let bid = unique_id("big-bind");
        let mut body = bind_body(SMALL, None);
        body["context"]["padding"] = json!(big);
        c.put(&binding_path(&id, &bid), &body)
            .await
            .expect_error(413, None);
        c.get(&binding_path(&id, &bid)).await.expect(404);
    })
    .await;
}

#[tokio::test]

async fn given_a_json_array_body_that_matches_the_field_order_when_provisioning_then_400() {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("array-inst");
        // [service_id, plan_id, context, organization_guid, space_guid, parameters, maintenance_info]
        let body = json!([PG_SERVICE, SMALL, null, "org", "space", null, null]);
        let r = c.put(&instance_path(&id), &body).await;
        r.expect_error(400, None);
        c.get(&instance_path(&id)).await.expect(404);
    })
    .await;
}
