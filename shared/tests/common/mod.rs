//! Test harness: the router on the embedded adapters with a manual clock, driven with `oneshot`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use http_body_util::BodyExt;
use osb_broker::broker::{Broker, WorkerStep};
use osb_broker::config::BrokerConfig;
use osb_broker::ids::{InstanceId, OperationId};
use osb_broker::ports::{Backend, Clock, ManualClock, Store};
use osb_broker::records::OperationKey;
use osb_broker::tenants::{Secret, TenantConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

pub mod pg;

pub const PG: &str = "6d3a9a9e-6c2f-4c55-9d0e-3b1f2f6c1a01";
pub const SMALL: &str = "0a7f4a34-5b0b-4b8e-8d4e-1f0d3c9a2b11";
pub const STANDARD: &str = "1b8e5b45-6c1c-4c9f-9e5f-2a1e4d0b3c22";
pub const ASYNC_BIND: &str = "2c9f6c56-7d2d-4daf-8f60-3b2f5e1c4d33";
pub const QUEUE: &str = "7e4b0baf-7d30-4d66-8e1f-4c2a3a7d2b02";
pub const APP_BOUND: &str = "3da07d67-8e3e-4eb0-9071-4c3f6f2d5e44";

#[derive(Clone)]
pub struct Harness {
    pub router: Router,
    pub state: osb_broker::http::AppState,
    pub broker: Arc<Broker>,
    pub clock: Arc<ManualClock>,
    _dir: Arc<tempfile::TempDir>,
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

fn tenant(name: &str, services: Option<Vec<&str>>) -> TenantConfig {
    TenantConfig {
        name: name.into(),
        profile: None,
        username: format!("user-{name}"),
        password: Secret::new(format!("pass-{name}")),
        services: services.map(|s| s.into_iter().map(String::from).collect()),
        // The harness's tenants accept each other's sharing rules; tests of consent build their own.
        accept_leases_from: osb_broker::tenants::AcceptLeases::Any,
    }
}

impl Resp {
    /// Asserts the status, showing the body when it differs.
    #[allow(dead_code)]
    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "{}", self.body);
        self
    }
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(|_| {})
    }

    /// The harness on a configuration changed by `edit` (another catalog, PostgreSQL servers, …).
    pub fn with_config(edit: impl FnOnce(&mut BrokerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            tenants: vec![
                tenant("cf1", None),
                tenant("cf2", None),
                tenant("limited", Some(vec![QUEUE])),
            ],
            ..BrokerConfig::default()
        };
        edit(&mut cfg);
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let e = osb_broker::embedded::build(&cfg, clock.clone() as Arc<dyn Clock>).unwrap();
        Harness {
            router: osb_broker::http::router(e.state.clone()),
            state: e.state,
            broker: e.broker,
            clock,
            _dir: Arc::new(dir),
        }
    }

    /// The harness with its backend and store wrapped (fault injection: gates, counters).
    pub fn wrapped(
        backend: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>,
        store: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> Self {
        let h = Harness::new();
        let mut broker = (*h.broker).clone();
        broker.backend = backend(broker.backend.clone());
        broker.store = store(broker.store.clone());
        let broker = Arc::new(broker);
        let tenants = h.state.tenants.clone();
        let state = osb_broker::http::AppState::new(broker.clone(), tenants, h.state.body_limit);
        Harness {
            router: osb_broker::http::router(state.clone()),
            state,
            broker,
            clock: h.clock,
            _dir: h._dir,
        }
    }

    /// Another front end (another process's router) on the same broker data as `h`.
    #[allow(dead_code)]
    pub fn with_state(h: &Harness, state: osb_broker::http::AppState) -> Self {
        Harness {
            router: osb_broker::http::router(state.clone()),
            broker: state.broker.clone(),
            state,
            clock: h.clock.clone(),
            _dir: h._dir.clone(),
        }
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// What exists on the simulated backend's side (its ledger in the data directory).
    pub fn ledger(&self) -> Vec<String> {
        let ledger = osb_broker::backends::simulated::SqliteLedger::open(
            &self._dir.path().join("simulated-backend.db"),
        )
        .unwrap();
        use osb_broker::backends::simulated::Ledger;
        ledger.list().unwrap().into_iter().map(|e| e.key).collect()
    }

    pub fn auth(tenant: &str) -> String {
        let raw = format!("user-{tenant}:pass-{tenant}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    pub async fn raw(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("non-JSON body: {}", String::from_utf8_lossy(&bytes)))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn call(&self, tenant: &str, method: Method, uri: &str, body: Option<Value>) -> Resp {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", Self::auth(tenant))
            .header("x-broker-api-version", "2.17");
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        self.raw(b.body(body).unwrap()).await
    }

    pub async fn provision(
        &self,
        tenant: &str,
        id: &str,
        plan: &str,
        params: Value,
        accepts: bool,
    ) -> Resp {
        self.call(
            tenant,
            Method::PUT,
            &format!("/v2/service_instances/{id}?accepts_incomplete={accepts}"),
            Some(json!({"service_id": PG, "plan_id": plan, "organization_guid": "org", "space_guid": "space", "parameters": params})),
        )
        .await
    }

    pub async fn last_op(&self, tenant: &str, id: &str) -> Resp {
        self.call(
            tenant,
            Method::GET,
            &format!("/v2/service_instances/{id}/last_operation"),
            None,
        )
        .await
    }

    pub fn key(&self, tenant: &str, id: &str, op: &Value) -> OperationKey {
        OperationKey {
            tenant: tenant.into(),
            instance_id: InstanceId::parse(id).unwrap(),
            operation_id: OperationId::parse(op.as_str().unwrap()).unwrap(),
        }
    }

    /// Runs the worker on the operation, advancing the manual clock by the backend's estimate,
    /// until the operation is final (at most `max_steps` steps).
    pub async fn complete(&self, key: &OperationKey, max_steps: usize) -> usize {
        for step in 1..=max_steps {
            match self.broker.process_operation(key).await.unwrap() {
                WorkerStep::Finished => return step,
                WorkerStep::Again(d) => self.clock.advance(d.max(Duration::from_secs(1))),
            }
        }
        panic!("operation not final after {max_steps} steps");
    }
}
