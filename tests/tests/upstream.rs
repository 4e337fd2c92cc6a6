//! The local broker binary in front of upstream brokers (issue 11), end to end: the upstream is a second
//! process of our own broker (the demo catalog), whose simulated backend's ledger is the upstream's
//! inventory, or a scripted broker in this test process (what each request carried, faults).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use e2e::*;
use osb_broker::backends::simulated::{Ledger, SqliteLedger};
use osb_broker::backends::upstream::ids;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// The proxy's configuration of an upstream `name` at `url` logging in as `user`/`password`.
fn upstream_toml(name: &str, url: &str, user: &str, password: &str, extra: &str) -> String {
    format!(
        "[upstream_brokers.{name}]\nurl = \"{url}\"\nusername = \"{user}\"\npassword = \"{password}\"\n{extra}\n"
    )
}

/// A proxy in front of a fresh upstream broker (tenant cf1 of the upstream), offerings named `up-…`.
async fn proxy_and_upstream() -> (Broker, Broker) {
    let upstream = Broker::start_default().await;
    let t = upstream.tenant("cf1");
    let proxy = Broker::start(&upstream_toml(
        "up",
        &upstream.base_url(),
        &t.username,
        &t.password,
        "name_prefix = \"up-\"",
    ))
    .await;
    (proxy, upstream)
}

/// What exists on the upstream's side (its simulated backend's ledger): instances and bindings.
fn inventory(upstream: &Broker) -> (usize, usize) {
    let entries = SqliteLedger::open(&upstream.data_dir().join("simulated-backend.db"))
        .unwrap()
        .list()
        .unwrap();
    let bindings = entries.iter().filter(|e| e.is_binding()).count();
    (entries.len() - bindings, bindings)
}

fn svc() -> String {
    ids::service_id("up", PG_SERVICE)
}

fn plan(up_plan: &str) -> String {
    ids::plan_id("up", PG_SERVICE, up_plan)
}

fn provision(up_plan: &str) -> Value {
    let mut b = provision_body(SMALL, None);
    b["service_id"] = json!(svc());
    b["plan_id"] = json!(plan(up_plan));
    b
}

fn bind(up_plan: &str) -> Value {
    let mut b = bind_body(SMALL, None);
    b["service_id"] = json!(svc());
    b["plan_id"] = json!(plan(up_plan));
    b
}

fn ids_q(up_plan: &str) -> String {
    format!("service_id={}&plan_id={}", svc(), plan(up_plan))
}

#[tokio::test]
async fn the_catalog_is_imported_faithfully_with_ids_stable_across_a_restart_while_the_upstream_is_down()
 {
    bounded(async {
        let upstream = Broker::start_default().await;
        let t = upstream.tenant("cf1");
        // A second upstream that never answers: the first one's offerings are served all the same.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let mut proxy = Broker::start(&format!(
            "{}{}",
            upstream_toml(
                "up",
                &upstream.base_url(),
                &t.username,
                &t.password,
                "name_prefix = \"up-\"\nexclude = [\"demo-queue\"]"
            ),
            upstream_toml("down", &dead, "u", "p", "connect_timeout_ms = 300")
        ))
        .await;
        let theirs = upstream.client("cf1").get("/v2/catalog").await;
        let ours = proxy.client("cf1").get("/v2/catalog").await;
        ours.expect(200);
        let services = ours.json["services"].as_array().unwrap().clone();
        assert_eq!(services.len(), 1, "demo-queue excluded: {}", ours.text);
        let mut expected = theirs.json["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == PG_SERVICE)
            .unwrap()
            .clone();
        expected["id"] = json!(svc());
        expected["name"] = json!("up-demo-postgres");
        for p in expected["plans"].as_array_mut().unwrap() {
            p["id"] = json!(ids::plan_id("up", PG_SERVICE, p["id"].as_str().unwrap()));
        }
        assert_eq!(services[0], expected, "every field copied, ids namespaced");
        // The upstream goes down; the proxy restarts and serves the last good catalog, same ids.
        drop(upstream);
        proxy.restart().await;
        let again = proxy.client("cf1").get("/v2/catalog").await;
        assert_eq!(again.json, ours.json);
        assert!(
            !proxy.log().contains(&t.password),
            "the upstream password is never logged"
        );
    })
    .await;
}

#[tokio::test]
async fn sync_and_async_lifecycles_through_the_proxy_match_the_upstream_inventory() {
    bounded(async {
        let (proxy, upstream) = proxy_and_upstream().await;
        let c = proxy.client("cf1");
        // Synchronous: provision, bind, unbind, deprovision; the upstream has what we have.
        c.put(&instance_path("sync-1"), &provision(SMALL))
            .await
            .expect(201);
        assert_eq!(inventory(&upstream), (1, 0));
        let b = c.put(&binding_path("sync-1", "b1"), &bind(SMALL)).await;
        b.expect(201);
        assert!(b.json["credentials"]["uri"].is_string(), "{}", b.text);
        assert_eq!(inventory(&upstream), (1, 1));
        let got = c.get(&binding_path("sync-1", "b1")).await;
        assert_eq!(got.json["credentials"], b.json["credentials"]);
        c.delete(&format!(
            "{}?{}",
            binding_path("sync-1", "b1"),
            ids_q(SMALL)
        ))
        .await
        .expect(200);
        assert_eq!(inventory(&upstream), (1, 0));
        c.delete(&format!("{}?{}", instance_path("sync-1"), ids_q(SMALL)))
            .await
            .expect(200);
        assert_eq!(inventory(&upstream), (0, 0));
        // Asynchronous: the proxy answers 202 and its worker follows the upstream's operation.
        let r = c
            .put(
                &format!("{}?accepts_incomplete=true", instance_path("async-1")),
                &provision(STANDARD),
            )
            .await;
        r.expect(202);
        let done = c.poll_until_final(&instance_last_op_path("async-1")).await;
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        assert_eq!(inventory(&upstream), (1, 0));
        // An asynchronous upstream bind: polled, then fetched.
        c.provision_ready("async-2", &provision(ASYNC_BINDINGS))
            .await;
        let r = c
            .put(
                &format!("{}?accepts_incomplete=true", binding_path("async-2", "b1")),
                &bind(ASYNC_BINDINGS),
            )
            .await;
        r.expect(202);
        let done = c
            .poll_until_final(&binding_last_op_path("async-2", "b1"))
            .await;
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        let got = c.get(&binding_path("async-2", "b1")).await;
        assert!(got.json["credentials"]["uri"].is_string(), "{}", got.text);
        assert_eq!(inventory(&upstream), (2, 1));
        // Deprovision asynchronously: gone upstream too.
        for (id, p) in [("async-1", STANDARD), ("async-2", ASYNC_BINDINGS)] {
            if id == "async-2" {
                c.delete(&format!(
                    "{}?{}&accepts_incomplete=true",
                    binding_path(id, "b1"),
                    ids_q(p)
                ))
                .await;
                c.poll_until_final(&binding_last_op_path(id, "b1")).await;
            }
            let r = c
                .delete(&format!(
                    "{}?{}&accepts_incomplete=true",
                    instance_path(id),
                    ids_q(p)
                ))
                .await;
            assert!(r.status == 202 || r.status == 200, "{}", r.text);
            let done = c.poll_until_final(&instance_last_op_path(id)).await;
            assert_eq!(done.status, 410, "{}", done.text);
        }
        assert_eq!(inventory(&upstream), (0, 0));
    })
    .await;
}

#[tokio::test]
async fn two_tenants_with_the_same_instance_id_are_two_upstream_instances() {
    bounded(async {
        let (proxy, upstream) = proxy_and_upstream().await;
        for t in ["cf1", "cf2"] {
            proxy
                .client(t)
                .put(&instance_path("same-id"), &provision(SMALL))
                .await
                .expect(201);
        }
        assert_eq!(inventory(&upstream), (2, 0));
        proxy
            .client("cf1")
            .delete(&format!("{}?{}", instance_path("same-id"), ids_q(SMALL)))
            .await
            .expect(200);
        assert_eq!(inventory(&upstream), (1, 0));
        proxy
            .client("cf2")
            .get(&instance_path("same-id"))
            .await
            .expect(200);
    })
    .await;
}

#[tokio::test]
async fn a_proxy_killed_mid_provision_completes_it_after_restart_with_one_upstream_instance() {
    bounded(async {
        let (mut proxy, mut upstream) = proxy_and_upstream().await;
        // Killed before the upstream could be reached (it is down): after both restart, the provision is
        // sent and completes.
        upstream.kill();
        let c = proxy.client("cf1");
        c.put(
            &format!("{}?accepts_incomplete=true", instance_path("crash-1")),
            &provision(STANDARD),
        )
        .await
        .expect(202);
        proxy.kill();
        upstream.restart().await;
        proxy.restart().await;
        let c = proxy.client("cf1");
        let done = c.poll_until_final(&instance_last_op_path("crash-1")).await;
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        assert_eq!(
            inventory(&upstream),
            (1, 0),
            "exactly one upstream instance"
        );
        // Killed after the upstream finished but (most likely) before the proxy's poll saw it: the
        // restarted proxy re-sends or polls the same upstream instance.
        c.put(
            &format!("{}?accepts_incomplete=true", instance_path("crash-2")),
            &provision(STANDARD),
        )
        .await
        .expect(202);
        let started = std::time::Instant::now();
        while inventory(&upstream).0 < 2 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "the upstream never provisioned"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        proxy.kill();
        proxy.restart().await;
        let c = proxy.client("cf1");
        let done = c.poll_until_final(&instance_last_op_path("crash-2")).await;
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        assert_eq!(
            inventory(&upstream),
            (2, 0),
            "still exactly one upstream instance each"
        );
    })
    .await;
}

/// One request the scripted upstream received: method, path and query, headers, JSON body.
type Seen = (Method, String, HeaderMap, Option<Value>);

/// A scripted upstream in this process: its catalog, and what each request carried.
struct Scripted {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The catalog it serves (a test may change it).
    catalog: Arc<Mutex<String>>,
}

const SCRIPTED_CATALOG: &str = r#"{"services": [{"id": "s-1", "name": "scripted", "description": "d", "bindable": true,
    "plans": [{"id": "ok", "name": "ok", "description": "answers 202, then succeeded"},
              {"id": "broken", "name": "broken", "description": "answers 500 to provisions"}]}]}"#;

async fn scripted() -> Scripted {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let catalog = Arc::new(Mutex::new(SCRIPTED_CATALOG.to_owned()));
    let log = seen.clone();
    let served = catalog.clone();
    let app = axum::Router::new().fallback(move |m: Method, uri: Uri, h: HeaderMap, body: Bytes| {
        let log = log.clone();
        let served = served.clone();
        async move {
            let body: Option<Value> = serde_json::from_slice(&body).ok();
            let broken = body.as_ref().is_some_and(|b| b["plan_id"] == "broken");
            log.lock().unwrap().push((m.clone(), uri.to_string(), h, body));
            let (status, text) = match (m, uri.path()) {
                (_, "/v2/catalog") => (200, served.lock().unwrap().clone()),
                (Method::PUT, _) if broken => (
                    500,
                    json!({"description": "backend db-7.corp.internal failed, see https://wiki.corp/x"}).to_string(),
                ),
                (Method::PUT, _) => (202, json!({"operation": "up-op-1"}).to_string()),
                (Method::GET, p) if p.ends_with("/last_operation") => (200, json!({"state": "succeeded"}).to_string()),
                (Method::DELETE, _) => (410, "{}".to_owned()),
                _ => (404, "{}".to_owned()),
            };
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                text,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Scripted { url, seen, catalog }
}

#[tokio::test]
async fn identity_and_context_are_forwarded_on_mutations_and_an_upstream_500_is_mitigated() {
    bounded(async {
        let up = scripted().await;
        let proxy =
            Broker::start(&upstream_toml("sc", &up.url, "proxy-user", "proxy-pw", "")).await;
        let sid = ids::service_id("sc", "s-1");
        let c = proxy.client("cf1");
        let identity = "cloudfoundry eyJ1c2VyX2lkIjoidXNlci00MiJ9";
        let mut body = provision_body(SMALL, Some(json!({"size": 1})));
        body["service_id"] = json!(sid);
        body["plan_id"] = json!(ids::plan_id("sc", "s-1", "ok"));
        let r = send(
            c.request(
                reqwest::Method::PUT,
                &format!("{}?accepts_incomplete=true", instance_path("fw-1")),
            )
            .header("X-Broker-API-Originating-Identity", identity)
            .json(&body),
        )
        .await;
        r.expect(202);
        let done = c.poll_until_final(&instance_last_op_path("fw-1")).await;
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        let seen = up.seen.lock().unwrap().clone();
        let put = seen.iter().find(|(m, ..)| m == Method::PUT).unwrap();
        assert_eq!(
            put.2
                .get("x-broker-api-originating-identity")
                .unwrap()
                .to_str()
                .unwrap()
                .split(' ')
                .next(),
            Some("cloudfoundry")
        );
        let fwd = osb_broker::identity::OriginatingIdentity::parse(
            put.2
                .get("x-broker-api-originating-identity")
                .unwrap()
                .to_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(fwd.user(), Some("user-42"));
        let sent = put.3.as_ref().unwrap();
        assert_eq!(sent["context"], body["context"]);
        assert_eq!(sent["parameters"], json!({"size": 1}));
        assert_eq!(sent["organization_guid"], "org-guid-e2e");
        assert_eq!(sent["space_guid"], "space-guid-e2e");
        assert_eq!(sent["plan_id"], "ok");
        assert!(put.1.contains("accepts_incomplete=true"));
        assert!(
            !put.1.contains("fw-1"),
            "the upstream id is derived: {}",
            put.1
        );
        for (m, uri, h, _) in &seen {
            if *m == Method::GET {
                assert!(
                    !h.contains_key("x-broker-api-originating-identity"),
                    "{uri}"
                );
            }
            assert!(h.contains_key("authorization"));
        }
        let polls: Vec<_> = seen
            .iter()
            .filter(|(m, u, ..)| m == Method::GET && u.contains("last_operation"))
            .collect();
        assert!(
            polls
                .iter()
                .all(|(_, u, ..)| u.contains("operation=up-op-1")),
            "{polls:?}"
        );

        // An operation the platform makes up is refused here, never forwarded.
        let before = up.seen.lock().unwrap().len();
        c.get(&format!(
            "{}?operation=not-ours",
            instance_last_op_path("fw-1")
        ))
        .await
        .expect_error(400, None);
        assert_eq!(
            up.seen.lock().unwrap().len(),
            before,
            "nothing sent upstream"
        );

        // An upstream 500 on a synchronous provision: DELETE sent upstream, the platform gets a clear,
        // redacted error.
        body["plan_id"] = json!(ids::plan_id("sc", "s-1", "broken"));
        let r = c.put(&instance_path("fw-2"), &body).await;
        r.expect_error(502, None);
        let d = r.description();
        assert!(d.contains("500") && d.contains("orphan mitigation"), "{d}");
        assert!(!d.contains("corp") && !d.contains("127.0.0.1"), "{d}");
        let seen = up.seen.lock().unwrap().clone();
        let puts: Vec<_> = seen.iter().filter(|(m, ..)| m == Method::PUT).collect();
        let deletes: Vec<_> = seen.iter().filter(|(m, ..)| m == Method::DELETE).collect();
        assert_eq!(deletes.len(), 1);
        assert_eq!(
            deletes[0].1.split('?').next(),
            puts.last().unwrap().1.split('?').next(),
            "the DELETE is for the instance the failed PUT named"
        );
        c.get(&instance_path("fw-2")).await.expect(404);
        assert!(!proxy.log().contains("proxy-pw"));
    })
    .await;
}

#[tokio::test]
async fn a_lease_on_a_proxied_instance_binds_the_owners_upstream_instance_and_a_purge_unbinds_it_upstream()
 {
    bounded(async {
        let (proxy, upstream) = proxy_and_upstream().await;
        let (owner, leaser) = (proxy.client("cf1"), proxy.client("cf2"));
        owner
            .put(&instance_path("own-1"), &provision(SMALL))
            .await
            .expect(201);
        let view = owner.get(&instance_path("own-1")).await;
        view.expect(200);
        let token = view.json["parameters"]["x_osb_cmdb"]["sharing_token"]["token"]
            .as_str()
            .expect("the imported offering is shareable (its metadata.shareable is copied)")
            .to_owned();
        let mut body = provision(SMALL);
        body["parameters"] = json!({"sharing_token": token});
        leaser
            .put(&instance_path("lease-1"), &body)
            .await
            .expect(201);
        assert_eq!(
            inventory(&upstream),
            (1, 0),
            "a lease makes no upstream call"
        );
        let b = leaser
            .put(&binding_path("lease-1", "lb"), &bind(SMALL))
            .await;
        b.expect(201);
        assert!(b.json["credentials"]["uri"].is_string(), "{}", b.text);
        assert_eq!(
            inventory(&upstream),
            (1, 1),
            "the lease's binding is on the owner's upstream instance"
        );
        let own_bind = owner.put(&binding_path("own-1", "lb"), &bind(SMALL)).await;
        own_bind.expect(201);
        assert_ne!(
            own_bind.json["credentials"], b.json["credentials"],
            "same binding id, another binding"
        );
        assert_eq!(inventory(&upstream), (1, 2));
        owner
            .delete(&format!("{}?{}", instance_path("own-1"), ids_q(SMALL)))
            .await
            .expect_error(422, None);
        // The owner purges the lease: the worker unbinds the lease's binding upstream.
        owner
            .patch(
                &instance_path("own-1"),
                &json!({"service_id": svc(), "parameters": {"x_osb_cmdb": {"leases": []}}}),
            )
            .await
            .expect(200);
        let done = leaser
            .poll_until_final(&binding_last_op_path("lease-1", "lb"))
            .await;
        assert_eq!(
            done.status, 410,
            "the purge's unbind finished: {}",
            done.text
        );
        assert_eq!(
            inventory(&upstream),
            (1, 1),
            "only the owner's own binding is left upstream"
        );
        leaser
            .delete(&format!("{}?{}", instance_path("lease-1"), ids_q(SMALL)))
            .await
            .expect(200);
        assert_eq!(inventory(&upstream), (1, 1));
        owner
            .delete(&format!("{}?{}", binding_path("own-1", "lb"), ids_q(SMALL)))
            .await
            .expect(200);
        owner
            .delete(&format!("{}?{}", instance_path("own-1"), ids_q(SMALL)))
            .await
            .expect(200);
        assert_eq!(inventory(&upstream), (0, 0));
    })
    .await;
}

#[tokio::test]
async fn a_webhook_fires_when_a_proxied_async_provision_ends() {
    bounded(async {
        let upstream = Broker::start_default().await;
        let t = upstream.tenant("cf1");
        let proxy = Broker::start(&format!(
            "[webhooks]\nallow_http = true\nallow_loopback = true\n\n{}",
            upstream_toml("up", &upstream.base_url(), &t.username, &t.password, "")
        ))
        .await;
        let receiver =
            e2e::receiver::Receiver::start(vec![e2e::receiver::Reply::Status(200)]).await;
        let hook: String =
            url::form_urlencoded::byte_serialize(receiver.url("/hook").as_bytes()).collect();
        let c = proxy.client("cf1");
        let r = c
            .put(
                &format!(
                    "{}?accepts_incomplete=true&webhook={hook}&secret=s3cr3t",
                    instance_path("wh-1")
                ),
                &provision(STANDARD),
            )
            .await;
        r.expect(202);
        let got = receiver
            .wait_for(1, std::time::Duration::from_secs(30))
            .await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].header("x-osb-state"), Some("succeeded"));
        assert_eq!(
            got[0].header("x-osb-operation"),
            Some(r.operation().as_str())
        );
        assert!(got[0].json().is_object());
        assert_eq!(inventory(&upstream), (1, 0));
    })
    .await;
}

#[tokio::test]
async fn the_catalog_is_refreshed_while_running_and_a_vanished_plan_still_reaches_its_upstream() {
    bounded(async {
        let up = scripted().await;
        let proxy = Broker::start(&format!(
            "upstream_catalog_refresh_seconds = 1\n{}",
            upstream_toml("sc", &up.url, "proxy-user", "proxy-pw", "")
        ))
        .await;
        let c = proxy.client("cf1");
        let mut body = provision_body(SMALL, None);
        body["service_id"] = json!(ids::service_id("sc", "s-1"));
        body["plan_id"] = json!(ids::plan_id("sc", "s-1", "ok"));
        c.put(
            &format!("{}?accepts_incomplete=true", instance_path("rf-1")),
            &body,
        )
        .await
        .expect(202);
        c.poll_until_final(&instance_last_op_path("rf-1")).await;
        // The upstream drops plan "ok" and adds an offering.
        *up.catalog.lock().unwrap() = json!({"services": [
            {"id": "s-1", "name": "scripted", "description": "d", "bindable": true,
             "plans": [{"id": "broken", "name": "broken", "description": "d"}]},
            {"id": "s-2", "name": "added", "description": "new", "bindable": false,
             "plans": [{"id": "p", "name": "p", "description": "d"}]}]})
        .to_string();
        let started = std::time::Instant::now();
        let served = loop {
            let cat = c.get("/v2/catalog").await;
            if cat.text.contains("\"added\"") {
                break cat.json;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "no refresh: {}",
                cat.text
            );
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        };
        let names: Vec<&str> = served["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let plans = served["services"][0]["plans"].as_array().unwrap();
        assert!(
            plans.iter().any(|p| p["id"] == body["plan_id"]),
            "the vanished plan is kept: {plans:?}"
        );
        // Its instance's deprovision still goes to the upstream.
        let before = up
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, ..)| m == Method::DELETE)
            .count();
        c.delete(&format!(
            "{}?service_id={}&plan_id={}",
            instance_path("rf-1"),
            body["service_id"].as_str().unwrap(),
            body["plan_id"].as_str().unwrap()
        ))
        .await
        .expect(200);
        let after = up
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, ..)| m == Method::DELETE)
            .count();
        assert_eq!(after, before + 1);
    })
    .await;
}
