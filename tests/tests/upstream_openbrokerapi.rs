//! The local broker in front of an upstream written by others: a fixture broker on the `openbrokerapi`
//! framework (Python, `scripts/upstream/openbrokerapi_broker.py`, pinned in `scripts/requirements-test.txt`
//! and installed into `.venv` by `scripts/test-tools.sh`, which the README's test command runs). Its
//! `/inventory` tells what exists there and what the mutating requests carried.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::*;
use osb_broker::backends::upstream::ids;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVICE: &str = "obk-service-0001";
const SYNC: &str = "obk-plan-sync";
const ASYNC: &str = "obk-plan-async";

/// The fixture broker process; killed on drop.
struct Fixture {
    child: Child,
    url: String,
    password: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fixture {
    async fn start() -> Fixture {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = root.join(".venv/bin/python");
        assert!(
            python.is_file(),
            "{} missing: run scripts/test-tools.sh (the README's test command does)",
            python.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let password = unique_id("obk-pw");
        let child = Command::new(python)
            .arg(root.join("scripts/upstream/openbrokerapi_broker.py"))
            .arg(port.to_string())
            .env("OBK_USER", "obk-user")
            .env("OBK_PASSWORD", &password)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start the openbrokerapi fixture");
        let f = Fixture {
            child,
            url: format!("http://127.0.0.1:{port}"),
            password,
        };
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{}/inventory", f.url)).send().await
                && r.status().is_success()
            {
                return f;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the fixture did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn inventory(&self) -> Value {
        reqwest::get(format!("{}/inventory", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn body(plan: &str) -> Value {
    let mut b = provision_body(SMALL, None);
    b["service_id"] = json!(ids::service_id("obk", SERVICE));
    b["plan_id"] = json!(ids::plan_id("obk", SERVICE, plan));
    b
}

fn q(plan: &str) -> String {
    format!(
        "service_id={}&plan_id={}",
        ids::service_id("obk", SERVICE),
        ids::plan_id("obk", SERVICE, plan)
    )
}

#[tokio::test]
async fn an_openbrokerapi_broker_behind_the_proxy_sync_and_async_with_its_inventory_checked() {
    bounded(async {
        let fx = Fixture::start().await;
        let proxy = Broker::start(&format!(
            "[upstream_brokers.obk]\nurl = \"{}\"\nusername = \"obk-user\"\npassword = \"{}\"\nsync_wait_seconds = 20\n",
            fx.url, fx.password
        ))
        .await;
        let c = proxy.client("cf1");
        // The catalog, imported from another implementation.
        let cat = c.get("/v2/catalog").await;
        let s = &cat.json["services"][0];
        assert_eq!(s["name"], "obk-db");
        assert_eq!(s["bindings_retrievable"], true);
        let async_plan = s["plans"].as_array().unwrap().iter().find(|p| p["name"] == "async").unwrap();
        assert_eq!(async_plan["maximum_polling_duration"], 120);
        assert_eq!(async_plan["maintenance_info"]["version"], "2.0.0");
        assert_eq!(async_plan["metadata"]["bullets"], json!(["slow"]));

        // Synchronous: provision with an originating identity, bind, unbind, deprovision.
        let identity = "cloudfoundry eyJ1c2VyX2lkIjoib2JrLXVzZXIifQ==";
        let r = send(
            c.request(reqwest::Method::PUT, &instance_path("obk-1"))
                .header("X-Broker-API-Originating-Identity", identity)
                .json(&body(SYNC)),
        )
        .await;
        r.expect(201);
        let inv = fx.inventory().await;
        assert_eq!(inv["instances"].as_object().unwrap().len(), 1);
        let seen = &inv["seen"][0];
        assert_eq!(seen["identity"], identity, "forwarded as the platform sent it");
        assert_eq!(seen["context"]["organization_guid"], "org-guid-e2e");
        let b = c.put(&binding_path("obk-1", "b1"), &{
            let mut b = bind_body(SMALL, None);
            b["service_id"] = body(SYNC)["service_id"].clone();
            b["plan_id"] = body(SYNC)["plan_id"].clone();
            b
        })
        .await;
        b.expect(201);
        assert!(b.json["credentials"]["password"].is_string(), "{}", b.text);
        assert_eq!(b.json["syslog_drain_url"], "syslog://fixture");
        let inv = fx.inventory().await;
        let bind_seen = inv["seen"].as_array().unwrap().iter().find(|s| s["call"] == "bind").unwrap();
        assert_eq!(bind_seen["bind_resource"]["app_guid"], "app-guid-e2e", "{bind_seen}");
        assert_eq!(bind_seen["context"]["space_guid"], "space-guid-e2e");
        assert_eq!(fx.inventory().await["bindings"].as_array().unwrap().len(), 1);
        c.delete(&format!("{}?{}", binding_path("obk-1", "b1"), q(SYNC))).await.expect(200);
        assert!(fx.inventory().await["bindings"].as_array().unwrap().is_empty());
        c.delete(&format!("{}?{}", instance_path("obk-1"), q(SYNC))).await.expect(200);
        assert!(fx.inventory().await["instances"].as_object().unwrap().is_empty());

        // Asynchronous: 202, the worker polls the fixture's operation, then an async deprovision whose
        // poll answers 410.
        c.put(&format!("{}?accepts_incomplete=true", instance_path("obk-2")), &body(ASYNC))
            .await
            .expect(202);
        let done = c.poll_until_final(&instance_last_op_path("obk-2")).await;
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        assert_eq!(fx.inventory().await["instances"]["obk-2"], Value::Null, "upstream ids are derived");
        let up = fx.inventory().await;
        assert_eq!(up["instances"].as_object().unwrap().values().next().unwrap(), "succeeded");
        c.delete(&format!("{}?{}&accepts_incomplete=true", instance_path("obk-2"), q(ASYNC)))
            .await
            .expect(202);
        let gone = c.poll_until_final(&instance_last_op_path("obk-2")).await;
        assert_eq!(gone.status, 410, "{}", gone.text);
        assert!(fx.inventory().await["instances"].as_object().unwrap().is_empty());

        // A platform that does not accept async answers, on an async upstream plan: the proxy waits for
        // the upstream within the request.
        c.put(&instance_path("obk-3"), &body(ASYNC)).await.expect(201);
        assert_eq!(fx.inventory().await["instances"].as_object().unwrap().len(), 1);
        assert!(!proxy.log().contains(&fx.password));
    })
    .await;
}
