//! The admin API of the local binary (its own listener and credentials): isolation from tenant
//! credentials, the inventory per tenant (paged, filtered by state and time, never a credential), and
//! the re-drive of a stuck operation and of a webhook callback whose delivery gave up.

#![allow(clippy::unwrap_used)]

use e2e::receiver::{Receiver, Reply};
use e2e::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const ADMIN: &str = "operator";

fn items(body: &Value) -> Vec<Value> {
    body["items"].as_array().cloned().unwrap_or_default()
}

fn ids(body: &Value, field: &str) -> Vec<String> {
    items(body)
        .iter()
        .map(|i| i[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn tenant_credentials_get_401_on_every_admin_route_and_admin_credentials_on_osb_routes() {
    bounded(async {
        let broker = Broker::start_default().await;
        let admin_pw = broker.admin_password();
        let routes = [
            (Method::GET, "/admin/v1/tenants".to_owned()),
            (Method::GET, "/admin/v1/tenants/cf1/instances".to_owned()),
            (
                Method::GET,
                "/admin/v1/tenants/cf1/callbacks?state=gave_up".to_owned(),
            ),
            (
                Method::POST,
                "/admin/v1/tenants/cf1/instances/i1/operations/01ARZ3NDEKTSV4RRFFQ69G5FAV/redrive"
                    .to_owned(),
            ),
            (
                Method::POST,
                "/admin/v1/tenants/cf1/instances/i1/callbacks/01ARZ3NDEKTSV4RRFFQ69G5FAV/redrive"
                    .to_owned(),
            ),
            (Method::GET, "/admin/v1/no-such-route".to_owned()),
        ];
        for (method, path) in &routes {
            for t in broker.tenants() {
                let (s, b) = broker
                    .admin_request(method.clone(), path, Some((&t.username, &t.password)))
                    .await;
                assert_eq!(s, 401, "{method} {path} as tenant {}: {b}", t.name);
            }
            let (s, _) = broker.admin_request(method.clone(), path, None).await;
            assert_eq!(s, 401, "{method} {path} without credentials");
            let (s, _) = broker
                .admin_request(method.clone(), path, Some((ADMIN, "wrong-password-123456")))
                .await;
            assert_eq!(s, 401, "{method} {path} with a wrong password");
        }
        // The operator is not a platform: the OSB API refuses the admin's credentials.
        broker
            .client_with(ADMIN, &admin_pw)
            .get("/v2/catalog")
            .await
            .expect(401);
        // And the admin API is not on the OSB listener.
        let on_osb = broker.client("cf1").get("/admin/v1/tenants").await;
        assert_eq!(on_osb.status, 404, "{}", on_osb.text);
        let (s, body) = broker
            .admin_get("/admin/v1/tenants", Some((ADMIN, &admin_pw)))
            .await;
        assert_eq!(s, 200, "{body}");
        let names: Vec<&str> = body["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["cf1", "cf2", "ks2"]);
        assert_eq!(body["tenants"][2]["accept_leases_from"], json!(["cf1"]));
        let text = body.to_string();
        for t in broker.tenants() {
            assert!(!text.contains(&t.password), "a tenant password in {text}");
        }
    })
    .await;
}

#[tokio::test]
async fn the_inventory_lists_a_tenants_records_newest_first_without_credentials() {
    bounded(async {
        let broker = Broker::start_default().await;
        let pw = broker.admin_password();
        let auth = Some((ADMIN, pw.as_str()));
        let cf1 = broker.client("cf1");
        for id in ["inv-a", "inv-b", "inv-c"] {
            cf1.put(&instance_path(id), &provision_body(SMALL, None))
                .await
                .expect(201);
            // Distinct update times (ms) for a stable order.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let bound = cf1
            .put(&binding_path("inv-a", "b1"), &bind_body(SMALL, None))
            .await;
        bound.expect(201);
        // A synchronous failure: its operation is failed, the instance is not there.
        let failed = cf1
            .put(
                &instance_path("inv-failed"),
                &provision_body(
                    SMALL,
                    Some(json!({"simulate": {"fail": true, "failure_description": "no capacity"}})),
                ),
            )
            .await;
        assert!(failed.status >= 500, "{}", failed.text);
        broker
            .client("cf2")
            .put(&instance_path("inv-a"), &provision_body(SMALL, None))
            .await
            .expect(201);

        let (s, body) = broker
            .admin_get("/admin/v1/tenants/cf1/instances?state=ready", auth)
            .await;
        assert_eq!(s, 200, "{body}");
        // inv-a last: its bind wrote it again (the bind checks the instance at the version it read).
        assert_eq!(ids(&body, "instance_id"), vec!["inv-a", "inv-c", "inv-b"]);
        assert_eq!(items(&body)[0]["plan_id"], SMALL);
        assert_eq!(items(&body)[0]["state"], "ready");
        assert!(body["next"].is_null());
        // Pages of one, following `next`.
        let mut seen = Vec::new();
        let mut path = "/admin/v1/tenants/cf1/instances?state=ready&limit=1".to_owned();
        for _ in 0..10 {
            let (s, page) = broker.admin_get(&path, auth).await;
            assert_eq!(s, 200, "{page}");
            assert!(items(&page).len() <= 1);
            seen.extend(ids(&page, "instance_id"));
            match page["next"].as_str() {
                Some(c) => {
                    path = format!(
                        "/admin/v1/tenants/cf1/instances?state=ready&limit=1&cursor={c}"
                    )
                }
                None => break,
            }
        }
        assert_eq!(seen, vec!["inv-a", "inv-c", "inv-b"]);
        // Another tenant's records stay its own.
        let (_, other) = broker
            .admin_get("/admin/v1/tenants/cf2/instances", auth)
            .await;
        assert_eq!(ids(&other, "instance_id"), vec!["inv-a"]);
        assert_eq!(items(&other)[0]["tenant"], "cf2");
        // A window in the future holds nothing; one from the epoch everything.
        let (_, none) = broker
            .admin_get(
                "/admin/v1/tenants/cf1/instances?since=2999-01-01T00:00:00Z",
                auth,
            )
            .await;
        assert!(items(&none).is_empty(), "{none}");
        let (_, all) = broker
            .admin_get(
                "/admin/v1/tenants/cf1/instances?since=1970-01-01T00:00:00Z&before=2999-01-01T00:00:00Z",
                auth,
            )
            .await;
        assert!(items(&all).len() >= 3, "{all}");

        // Bindings: never their credentials.
        let (s, bindings) = broker
            .admin_get("/admin/v1/tenants/cf1/bindings", auth)
            .await;
        assert_eq!(s, 200, "{bindings}");
        assert_eq!(ids(&bindings, "binding_id"), vec!["b1"]);
        let text = bindings.to_string();
        assert!(!text.contains("credentials"), "{text}");
        for (_, v) in bound.json["credentials"].as_object().unwrap() {
            if let Some(v) = v.as_str().filter(|v| v.len() > 6) {
                assert!(!text.contains(v), "a credential value in {text}");
            }
        }
        // Failed operations, with the backend's description.
        let (s, ops) = broker
            .admin_get("/admin/v1/tenants/cf1/operations?state=failed", auth)
            .await;
        assert_eq!(s, 200, "{ops}");
        assert_eq!(ids(&ops, "instance_id"), vec!["inv-failed"]);
        assert_eq!(items(&ops)[0]["kind"], "provision");
        assert!(
            items(&ops)[0]["description"]
                .as_str()
                .is_some_and(|d| d.contains("no capacity")),
            "{ops}"
        );

        // Bad requests: 400 with the OSB error body, an unknown tenant 404.
        for bad in [
            "/admin/v1/tenants/cf1/instances?state=sleeping",
            "/admin/v1/tenants/cf1/instances?limit=0",
            "/admin/v1/tenants/cf1/instances?limit=100000",
            "/admin/v1/tenants/cf1/instances?cursor=bm90LWEtY3Vyc29y",
            "/admin/v1/tenants/cf1/instances?since=yesterday",
        ] {
            let (s, b) = broker.admin_get(bad, auth).await;
            assert_eq!(s, 400, "{bad}: {b}");
            assert!(b["description"].is_string(), "{b}");
        }
        let (s, _) = broker
            .admin_get("/admin/v1/tenants/nobody/instances", auth)
            .await;
        assert_eq!(s, 404);
        let (s, _) = broker
            .admin_get("/admin/v1/tenants/cf1/gadgets", auth)
            .await;
        assert_eq!(s, 404);
    })
    .await;
}

#[tokio::test]
async fn the_operator_redrives_a_running_operation_and_a_callback_that_gave_up() {
    bounded(async {
        // Retries 1 s apart, twice, then the delivery gives up.
        let broker = Broker::start(&loopback_webhooks_config(&[1])).await;
        let pw = broker.admin_password();
        let auth = Some((ADMIN, pw.as_str()));
        let cf1 = broker.client("cf1");

        // An operation in progress: re-driven (its message sent again), the worker finishes it once.
        let r = cf1
            .put(
                &format!("{}?accepts_incomplete=true", instance_path("rd-slow")),
                &provision_body(SMALL, Some(delay(2))),
            )
            .await;
        r.expect(202);
        let (_, ops) = broker
            .admin_get("/admin/v1/tenants/cf1/operations?state=in_progress", auth)
            .await;
        let op = ids(&ops, "operation_id")
            .into_iter()
            .next()
            .expect("the running operation");
        let redrive = format!("/admin/v1/tenants/cf1/instances/rd-slow/operations/{op}/redrive");
        let (s, b) = broker
            .admin_request(Method::POST, &redrive, auth)
            .await;
        assert_eq!((s, &b["redriven"]), (200, &json!("operation")), "{b}");
        let done = cf1
            .poll_until_final(&format!("{}?operation={op}", instance_last_op_path("rd-slow")))
            .await;
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        // Finished: nothing to re-drive.
        let (s, b) = broker
            .admin_request(Method::POST, &redrive, auth)
            .await;
        assert_eq!(s, 409, "{b}");
        let (s, _) = broker
            .admin_request(
                Method::POST,
                "/admin/v1/tenants/cf1/instances/rd-slow/operations/01ARZ3NDEKTSV4RRFFQ69G5FAV/redrive",
                auth,
            )
            .await;
        assert_eq!(s, 404);

        // A callback whose receiver fails until delivery gives up; after the re-drive it is delivered.
        let secret = "admin-redrive-secret-0001";
        let rx = Receiver::start(vec![
            Reply::Status(500),
            Reply::Status(500),
            Reply::Status(200),
        ])
        .await;
        let r = cf1
            .put(
                &format!(
                    "{}?accepts_incomplete=true&{}",
                    instance_path("rd-hook"),
                    webhook_query(&rx.url("/private/receiver-token"), secret)
                ),
                &provision_body(SMALL, Some(delay(1))),
            )
            .await;
        r.expect(202);
        let hook_op = r.operation();
        let mut gave_up = Value::Null;
        for _ in 0..300 {
            let (_, cbs) = broker
                .admin_get("/admin/v1/tenants/cf1/callbacks?state=gave_up", auth)
                .await;
            if let Some(cb) = items(&cbs).into_iter().next() {
                gave_up = cb;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(gave_up["operation_id"], hook_op.as_str(), "{gave_up}");
        assert_eq!(gave_up["attempts"].as_array().map(Vec::len), Some(2));
        assert_eq!(gave_up["attempts"][0]["status"], 500);
        let text = gave_up.to_string();
        assert!(!text.contains(secret), "the secret in {text}");
        assert!(!text.contains("receiver-token"), "the URL's path in {text}");
        let (s, b) = broker
            .admin_request(
                Method::POST,
                &format!("/admin/v1/tenants/cf1/instances/rd-hook/callbacks/{hook_op}/redrive"),
                auth,
            )
            .await;
        assert_eq!((s, &b["redriven"]), (200, &json!("callback")), "{b}");
        let got = rx.wait_for(3, Duration::from_secs(30)).await;
        assert_eq!(got[2].header("webhook-id"), Some(hook_op.as_str()));
        let mut delivered = false;
        for _ in 0..100 {
            let (_, cbs) = broker
                .admin_get("/admin/v1/tenants/cf1/callbacks?state=delivered", auth)
                .await;
            if ids(&cbs, "operation_id").contains(&hook_op) {
                delivered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(delivered, "the re-driven callback is delivered");
        // Delivered: nothing to re-drive.
        let (s, _) = broker
            .admin_request(
                Method::POST,
                &format!("/admin/v1/tenants/cf1/instances/rd-hook/callbacks/{hook_op}/redrive"),
                auth,
            )
            .await;
        assert_eq!(s, 409);
    })
    .await;
}

#[tokio::test]
async fn the_admin_listener_serves_prometheus_metrics_with_bounded_labels() {
    bounded(async {
        let broker = Broker::start_default().await;
        let cf1 = broker.client("cf1");
        cf1.put(&instance_path("met-1"), &provision_body(SMALL, None))
            .await
            .expect(201);
        let r = cf1
            .put(
                &format!("{}?accepts_incomplete=true", instance_path("met-2")),
                &provision_body(SMALL, Some(delay(1))),
            )
            .await;
        r.expect(202);
        let done = cf1
            .poll_until_final(&format!(
                "{}?operation={}",
                instance_last_op_path("met-2"),
                r.operation()
            ))
            .await;
        assert_eq!(done.state(), "succeeded");
        let http = reqwest::Client::new();
        let url = format!("{}/metrics", broker.admin_url());
        let t = broker.tenant("cf1");
        let as_tenant = http
            .get(&url)
            .basic_auth(&t.username, Some(&t.password))
            .send()
            .await
            .unwrap();
        assert_eq!(as_tenant.status().as_u16(), 401);
        let resp = http
            .get(&url)
            .basic_auth(ADMIN, Some(broker.admin_password()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert!(
            resp.headers()[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        let text = resp.text().await.unwrap();
        assert!(
            text.contains(
                "osb_requests_total{endpoint=\"/v2/service_instances/{instance_id}\",method=\"PUT\",status=\"2xx\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "osb_operation_duration_seconds_count{{kind=\"provision\",plan_id=\"{SMALL}\",outcome=\"succeeded\"}} 2"
            )),
            "{text}"
        );
        assert!(text.contains("# TYPE osb_webhook_attempts_total counter"));
        for id in ["met-1", "met-2", r.operation().as_str()] {
            assert!(!text.contains(id), "an id as a label: {id}");
        }
    })
    .await;
}

#[tokio::test]
async fn local_mode_logs_json_lines_when_configured() {
    bounded(async {
        let broker = Broker::start("log_format = \"json\"\n").await;
        broker
            .client("cf1")
            .put(&instance_path("log-1"), &provision_body(SMALL, None))
            .await
            .expect(201);
        let log = broker.log();
        let json_lines: Vec<Value> = log
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("a JSON log line"))
            .collect();
        // Only the start-up banner (where it listens, how to log in) is plain text.
        assert!(
            log.lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('{'))
                .all(|l| !l.contains(" INFO ") && !l.contains(" WARN ")),
            "{log}"
        );
        let request = json_lines
            .iter()
            .find(|l| l["fields"]["message"] == "request" && l["fields"]["method"] == "PUT")
            .unwrap_or_else(|| panic!("no JSON request line in {log}"));
        assert_eq!(request["level"], "INFO");
        assert_eq!(request["fields"]["status"], 201);
    })
    .await;
}

#[tokio::test]
async fn the_admin_command_line_lists_and_redrives_through_the_admin_api() {
    bounded(async {
        let broker = Broker::start_default().await;
        let cf1 = broker.client("cf1");
        for id in ["cli-1", "cli-2"] {
            cf1.put(&instance_path(id), &provision_body(SMALL, None))
                .await
                .expect(201);
        }
        let limit = Duration::from_secs(30);
        // The configuration names the admin listener and password: nothing else to give.
        let (status, out) =
            broker.run_binary(&["admin", "list", "cf1", "instances", "--json"], limit);
        assert!(status.is_some_and(|s| s.success()), "{out}");
        let listed: Value = serde_json::from_str(&out).expect("--json prints JSON");
        assert_eq!(ids(&listed, "instance_id"), vec!["cli-2", "cli-1"]);
        // A table for people; one page of one, with the hint that there is more.
        let (status, out) = broker.run_binary(
            &[
                "admin",
                "list",
                "cf1",
                "instances",
                "--limit",
                "1",
                "--state",
                "ready",
            ],
            limit,
        );
        assert!(status.is_some_and(|s| s.success()), "{out}");
        let mut lines = out.lines();
        let header = lines.next().unwrap_or_default();
        assert!(
            header.starts_with("INSTANCE") && header.contains("STATE"),
            "{out}"
        );
        assert!(
            lines
                .next()
                .is_some_and(|l| l.starts_with("cli-2") && l.contains("ready")),
            "{out}"
        );
        assert!(out.contains("more: add --all"), "{out}");
        let (status, out) = broker.run_binary(
            &[
                "admin",
                "list",
                "cf1",
                "instances",
                "--limit",
                "1",
                "--all",
                "--json",
            ],
            limit,
        );
        assert!(status.is_some_and(|s| s.success()), "{out}");
        let all: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(ids(&all, "instance_id"), vec!["cli-2", "cli-1"]);
        let (status, out) = broker.run_binary(&["admin", "tenants"], limit);
        assert!(status.is_some_and(|s| s.success()), "{out}");
        assert!(
            out.contains("cf1") && out.contains("ks2") && out.starts_with("NAME"),
            "{out}"
        );
        // Errors of the API reach the person with their description and a failing exit status.
        let (status, out) = broker.run_binary(
            &[
                "admin",
                "redrive-operation",
                "cf1",
                "cli-1",
                "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            ],
            limit,
        );
        assert!(status.is_some_and(|s| !s.success()), "{out}");
        assert!(out.contains("404"), "{out}");
        let (status, out) =
            broker.run_binary(&["admin", "--user", "cf1-platform", "tenants"], limit);
        assert!(status.is_some_and(|s| !s.success()), "{out}");
        assert!(out.contains("401"), "{out}");
    })
    .await;
}
