//! The API Lambda handler fed API Gateway HTTP API (payload 2.0) events from fixtures, through the
//! same `lambda_http` adapter `lambda_http::run` uses, answering API Gateway v2 responses.
#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Context, LambdaEvent, Service};
use osb_broker::config::BrokerConfig;
use osb_broker::tenants::{Secret, TenantConfig};
use serde_json::Value;

struct Api {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        tenants: vec![TenantConfig {
            name: "lambda".into(),
            profile: Some("cloudfoundry".into()),
            username: "lambda-user".into(),
            password: Secret::new("lambda-pass"),
            services: None,
            accept_leases_from: Default::default(),
        }],
        ..BrokerConfig::default()
    };
    Api {
        router: osb_api::app::build(&cfg).unwrap(),
        _dir: dir,
    }
}

fn fixture(name: &str) -> LambdaRequest {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Invokes the handler as the Lambda runtime would and returns the API Gateway v2 response as JSON.
async fn invoke(api: &Api, name: &str) -> (u16, Value, Value) {
    let mut adapter = Adapter::from(api.router.clone());
    let resp = adapter
        .call(LambdaEvent::new(fixture(name), Context::default()))
        .await
        .unwrap();
    let json = serde_json::to_value(&resp).unwrap();
    let status = json["statusCode"].as_u64().unwrap() as u16;
    let body: Value = serde_json::from_str(json["body"].as_str().unwrap_or("null")).unwrap();
    (status, json["headers"].clone(), body)
}

#[tokio::test]
async fn catalog_event_returns_the_catalog() {
    let api = api();
    let (status, headers, body) = invoke(&api, "apigw-v2-catalog.json").await;
    assert_eq!(status, 200);
    assert_eq!(body["services"][0]["name"], "demo-postgres");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        headers["x-broker-api-request-identity"],
        "e2f1c1a0-7f2b-4c1d-9a63-3d2d4e6f7a81"
    );
}

#[tokio::test]
async fn unauthenticated_event_gets_401() {
    let api = api();
    let (status, headers, body) = invoke(&api, "apigw-v2-catalog-unauthenticated.json").await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"].is_string());
    assert!(body["description"].is_string());
}

#[tokio::test]
async fn provision_events_create_instances_sync_and_async() {
    let api = api();
    let (status, _, body) = invoke(&api, "apigw-v2-provision-sync.json").await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body["dashboard_url"]
            .as_str()
            .unwrap()
            .contains("lambda-i1")
    );
    let (status, _, body) = invoke(&api, "apigw-v2-provision-sync.json").await;
    assert_eq!(status, 200, "same PUT again: {body}");

    let (status, _, body) = invoke(&api, "apigw-v2-provision-async.json").await;
    assert_eq!(status, 202, "{body}");
    assert!(body["operation"].as_str().is_some_and(|o| !o.is_empty()));
    let (status, headers, body) = invoke(&api, "apigw-v2-last-operation.json").await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "in progress");
    assert_eq!(headers["retry-after"], "3");
}

#[tokio::test]
async fn malformed_body_event_gets_400_with_an_osb_error() {
    let api = api();
    let (status, _, body) = invoke(&api, "apigw-v2-provision-malformed.json").await;
    assert_eq!(status, 400);
    assert!(body["description"].as_str().unwrap().contains("not valid"));
}
