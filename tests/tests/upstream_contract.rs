//! The Backend contract suite on the upstream backend, with a second process of our own broker (the demo
//! catalog's simulated plans) as the upstream: a fresh upstream per case, whose catalog is imported as the
//! broker would import it, and whose simulated backend's ledger (its SQLite file) counts what exists
//! upstream. With a synchronous plan and jobs that do not accept incomplete answers, with asynchronous
//! bindings, and with asynchronous instances (polled through the upstream's `last_operation`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::Broker;
use osb_broker::backends::simulated::{Ledger, SqliteLedger};
use osb_broker::backends::upstream::client::OsbClient;
use osb_broker::backends::upstream::{UpstreamBackend, UpstreamConfig, ids, import};
use osb_broker::catalog::{Catalog, CatalogConfig};
use osb_broker::contract::backend::BackendUnderTest;
use osb_broker::ids::{InstanceId, OperationId};
use osb_broker::ports::BackendJob;
use osb_broker::records::OperationKind;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The demo catalog's offering and plans, at the upstream.
const UP_SERVICE: &str = "6d3a9a9e-6c2f-4c55-9d0e-3b1f2f6c1a01";
const UP_SMALL: &str = "0a7f4a34-5b0b-4b8e-8d4e-1f0d3c9a2b11";
const UP_ASYNC_BIND: &str = "2c9f6c56-7d2d-4daf-8f60-3b2f5e1c4d33";
const UP_STANDARD: &str = "1b8e5b45-6c1c-4c9f-9e5f-2a1e4d0b3c22";

/// Our backend of a fresh upstream broker process, and the upstream itself.
pub async fn proxy_of_a_fresh_upstream() -> (Arc<UpstreamBackend>, Broker) {
    let upstream = Broker::start_default().await;
    let t = upstream.tenant("cf1");
    let cfg: UpstreamConfig = toml::from_str(&format!(
        "url = '{}'\nusername = '{}'\npassword = '{}'\nsync_wait_seconds = 20",
        upstream.base_url(),
        t.username,
        t.password
    ))
    .unwrap();
    let up = cfg.validate("up").unwrap();
    let raw = import::fetch(&OsbClient::new(Arc::new(up.clone())).unwrap())
        .await
        .unwrap();
    let services = import::translate(&up, &raw).unwrap();
    let catalog = Arc::new(Catalog::new(CatalogConfig { services }).unwrap());
    (
        Arc::new(UpstreamBackend::new(catalog, up).unwrap()),
        upstream,
    )
}

fn job(kind: OperationKind, op: &str, up_plan: &str, accepts_incomplete: bool) -> BackendJob {
    BackendJob {
        kind,
        operation_id: OperationId::parse(op).unwrap(),
        tenant: "cf1".into(),
        instance_id: InstanceId::parse("inst-1").unwrap(),
        generation: 7,
        binding_id: None,
        binding_generation: 0,
        lease: None,
        service_id: ids::service_id("up", UP_SERVICE),
        plan_id: ids::plan_id("up", UP_SERVICE, up_plan),
        parameters: None,
        started_at: 1_800_000_000_000,
        context: json!({"platform": "cloudfoundry", "organization_guid": "o", "space_guid": "s"})
            .as_object()
            .cloned(),
        originating_identity: None,
        accepts_incomplete,
        bind_resource: None,
        organization_guid: None,
        space_guid: None,
    }
}

async fn under_test(up_plan: &'static str, accepts_incomplete: bool) -> BackendUnderTest {
    let (backend, upstream) = proxy_of_a_fresh_upstream().await;
    let provision = job(
        OperationKind::Provision,
        "01JE0000000000000000000001",
        up_plan,
        accepts_incomplete,
    );
    let mut failing = job(
        OperationKind::Provision,
        "01JE0000000000000000000002",
        up_plan,
        accepts_incomplete,
    );
    failing.instance_id = InstanceId::parse("inst-fails").unwrap();
    failing.parameters =
        json!({"simulate": {"fail": true, "failure_description": "no capacity left"}})
            .as_object()
            .cloned();
    let mut failing_bind = job(
        OperationKind::Bind,
        "01JE0000000000000000000003",
        up_plan,
        accepts_incomplete,
    );
    failing_bind.binding_id = Some(osb_broker::ids::BindingId::parse("b-fails").unwrap());
    failing_bind.binding_generation = 1;
    failing_bind.parameters = failing.parameters.clone();
    let mut setup = provision.clone();
    setup.instance_id = InstanceId::parse("inst-2").unwrap();
    setup.operation_id = OperationId::parse("01JE0000000000000000000004").unwrap();
    failing_bind.instance_id = setup.instance_id.clone();
    let ledger = upstream.data_dir().join("simulated-backend.db");
    let upstream = Arc::new(upstream);
    BackendUnderTest {
        backend,
        provision,
        failing: vec![vec![failing], vec![setup, failing_bind]],
        resources: Box::new(move || {
            let (ledger, _keep_alive) = (ledger.clone(), upstream.clone());
            Box::pin(async move { SqliteLedger::open(&ledger).unwrap().list().unwrap().len() })
        }),
        // The upstream runs on real time: waiting is the only way to let its jobs finish.
        advance: Box::new(|d| std::thread::sleep(d.min(Duration::from_secs(2)))),
    }
}

mod synchronous {
    use super::*;
    osb_broker::backend_contract!(under_test(UP_SMALL, false));
}

mod asynchronous_bindings {
    use super::*;
    osb_broker::backend_contract!(under_test(UP_ASYNC_BIND, true));
}

mod asynchronous_instances {
    use super::*;
    osb_broker::backend_contract!(under_test(UP_STANDARD, true));
}
