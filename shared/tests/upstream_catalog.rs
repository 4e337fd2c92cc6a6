//! The imported catalog as the embedded wiring builds it, without any network: the last good catalog of an
//! upstream that is down is served, per-tenant visibility applies to imported offerings, a name collision
//! and a bad upstream entry stop start-up with messages naming what is wrong.
#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use osb_broker::backends::upstream::{ids, import};
use osb_broker::config::BrokerConfig;
use osb_broker::embedded::{StartError, build_default};
use serde_json::{Value, json};

fn upstream_catalog() -> Value {
    json!({"services": [
        {"id": "svc-a", "name": "alpha", "description": "a", "bindable": true,
         "plans": [{"id": "pa", "name": "p", "description": "d"}]},
        {"id": "svc-b", "name": "beta", "description": "b", "bindable": false,
         "plans": [{"id": "pb", "name": "p", "description": "d"}]}
    ]})
}

/// A configuration file in `dir` whose upstream `up` listens nowhere, with its last good catalog cached.
fn setup(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let cache = import::cache_path(&dir.join("data"), "up");
    std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
    std::fs::write(&cache, upstream_catalog().to_string()).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let cfg = dir.join("broker.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"data_dir = "{data}"
{extra}
[upstream_brokers.up]
url = "{url}"
username = "u"
password = "upstream-secret"

[[tenants]]
name = "narrow"
username = "narrow"
password = "narrow-password"
services = ["{alpha}"]

[[tenants]]
name = "wide"
username = "wide"
password = "wide-password"
"#,
            data = dir.join("data").display(),
            alpha = ids::service_id("up", "svc-a"),
        ),
    )
    .unwrap();
    cfg
}

fn names(bytes: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(bytes).unwrap();
    v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_last_good_catalog_is_served_and_visibility_applies_to_imported_offerings() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig::load(&setup(dir.path(), "")).unwrap();
    let embedded = build_default(&config).unwrap();
    assert_eq!(names(&embedded.state.catalog_of("wide")), ["alpha", "beta"]);
    assert_eq!(names(&embedded.state.catalog_of("narrow")), ["alpha"]);
    // The routing knows the imported plans.
    let plan = embedded
        .broker
        .catalog
        .plan_by_id(&ids::plan_id("up", "svc-a", "pa"))
        .unwrap();
    assert_eq!(plan.plan.backend.upstream_broker(), Some("up"));
}

#[test]
fn a_name_collision_with_the_static_catalog_stops_start_up_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let extra = r#"
[[catalog.services]]
id = "static-1"
name = "alpha"
description = "d"
bindable = true
plans = [{id = "sp", name = "p", description = "d"}]
"#;
    let config = BrokerConfig::load(&setup(dir.path(), extra)).unwrap();
    let err = match build_default(&config) {
        Err(e) => e,
        Ok(_) => panic!("a collision must stop start-up"),
    };
    assert!(matches!(err, StartError::Config(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("'alpha'")
            && msg.contains("upstream broker 'up'")
            && msg.contains("static catalog"),
        "{msg}"
    );
}

#[test]
fn a_bad_upstream_entry_stops_start_up_naming_the_field_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("url = \"http://", "url = \"gopher://");
    std::fs::write(&cfg, text).unwrap();
    let config = BrokerConfig::load(&cfg).unwrap();
    let msg = match build_default(&config) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a bad url must stop start-up"),
    };
    assert!(msg.contains("upstream_brokers.up.url"), "{msg}");
    assert!(!msg.contains("upstream-secret"), "{msg}");
}
