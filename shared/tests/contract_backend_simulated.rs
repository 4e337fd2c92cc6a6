//! The Backend contract suite on the simulated backend: synchronous and asynchronous plans, with its
//! in-memory ledger and with its SQLite ledger (local mode), plus what only the simulated backend does
//! (its ledger survives a restart).
#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use osb_broker::backends::simulated::{Ledger, MemoryLedger, SimulatedBackend, SqliteLedger};
use osb_broker::contract::backend::BackendUnderTest;
use osb_broker::ids::{InstanceId, OperationId};
use osb_broker::ports::{BackendJob, Clock, ManualClock};
use osb_broker::records::OperationKind;
use serde_json::json;
use std::sync::Arc;

const SMALL: &str = "0a7f4a34-5b0b-4b8e-8d4e-1f0d3c9a2b11";
const STANDARD: &str = "1b8e5b45-6c1c-4c9f-9e5f-2a1e4d0b3c22";
const ASYNC_BIND: &str = "2c9f6c56-7d2d-4daf-8f60-3b2f5e1c4d33";
const PG: &str = "6d3a9a9e-6c2f-4c55-9d0e-3b1f2f6c1a01";

fn job(kind: OperationKind, op: &str, plan: &str, params: serde_json::Value) -> BackendJob {
    BackendJob {
        kind,
        operation_id: OperationId::parse(op).unwrap(),
        tenant: "cf1".into(),
        instance_id: InstanceId::parse("inst-1").unwrap(),
        generation: 7,
        binding_id: None,
        binding_generation: 0,
        lease: None,
        service_id: PG.into(),
        plan_id: plan.into(),
        parameters: params.as_object().cloned(),
        started_at: 1_800_000_000_000,
        context: None,
        originating_identity: None,
        accepts_incomplete: false,
        bind_resource: None,
        organization_guid: None,
        space_guid: None,
    }
}

fn under_test(plan: &'static str, ledger: Arc<dyn Ledger>) -> BackendUnderTest {
    let catalog = Arc::new(osb_broker::config::load_catalog(None).unwrap());
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let backend = Arc::new(SimulatedBackend::new(
        catalog,
        clock.clone() as Arc<dyn Clock>,
        ledger.clone(),
        [7u8; 32],
    ));
    let provision = job(
        OperationKind::Provision,
        "01JC0000000000000000000001",
        plan,
        json!({}),
    );
    let mut fail_delete = job(
        OperationKind::Provision,
        "01JC0000000000000000000002",
        plan,
        json!({"simulate": {"fail_delete": 1}}),
    );
    fail_delete.instance_id = InstanceId::parse("inst-2").unwrap();
    let mut deprovision = fail_delete.clone();
    deprovision.kind = OperationKind::Deprovision;
    deprovision.operation_id = OperationId::parse("01JC0000000000000000000003").unwrap();
    deprovision.parameters = None;
    let mut bind_fail_unbind = fail_delete.clone();
    bind_fail_unbind.kind = OperationKind::Bind;
    bind_fail_unbind.operation_id = OperationId::parse("01JC0000000000000000000004").unwrap();
    bind_fail_unbind.binding_id = Some(osb_broker::ids::BindingId::parse("bf").unwrap());
    bind_fail_unbind.binding_generation = 1;
    let mut unbind = bind_fail_unbind.clone();
    unbind.kind = OperationKind::Unbind;
    unbind.operation_id = OperationId::parse("01JC0000000000000000000005").unwrap();
    unbind.parameters = None;
    let mut failing_bind = bind_fail_unbind.clone();
    failing_bind.operation_id = OperationId::parse("01JC0000000000000000000006").unwrap();
    failing_bind.binding_id = Some(osb_broker::ids::BindingId::parse("bx").unwrap());
    failing_bind.parameters = json!({"simulate": {"fail": true}}).as_object().cloned();
    let mut failing_update = fail_delete.clone();
    failing_update.kind = OperationKind::Update;
    failing_update.operation_id = OperationId::parse("01JC0000000000000000000007").unwrap();
    failing_update.parameters = json!({"simulate": {"fail": true}}).as_object().cloned();
    BackendUnderTest {
        backend,
        failing: vec![
            vec![job(
                OperationKind::Provision,
                "01JC0000000000000000000008",
                plan,
                json!({"simulate": {"fail": true, "failure_description": "no capacity"}}),
            )],
            vec![fail_delete.clone(), deprovision],
            vec![
                bind_fail_unbind.json_params(json!({"simulate": {"fail_delete": true}})),
                unbind,
            ],
            vec![failing_bind],
            vec![failing_update],
        ],
        provision,
        resources: Box::new(move || {
            let ledger = ledger.clone();
            Box::pin(async move { ledger.list().unwrap().len() })
        }),
        advance: Box::new(move |d| clock.advance(d)),
    }
}

trait WithParams {
    fn json_params(self, v: serde_json::Value) -> Self;
}

impl WithParams for BackendJob {
    fn json_params(mut self, v: serde_json::Value) -> Self {
        self.parameters = v.as_object().cloned();
        self
    }
}

mod synchronous_plan {
    use super::*;
    osb_broker::backend_contract!(async { under_test(SMALL, Arc::new(MemoryLedger::default())) });
}

mod asynchronous_plan {
    use super::*;
    osb_broker::backend_contract!(async {
        under_test(STANDARD, Arc::new(MemoryLedger::default()))
    });
}

mod asynchronous_bindings {
    use super::*;
    osb_broker::backend_contract!(async {
        under_test(ASYNC_BIND, Arc::new(MemoryLedger::default()))
    });
}

mod sqlite_ledger {
    use super::*;
    osb_broker::backend_contract!(async {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(&dir.path().join("ledger.db")).unwrap();
        // The directory must outlive the case: leak it (a test process).
        std::mem::forget(dir);
        under_test(STANDARD, Arc::new(ledger))
    });
}

#[tokio::test]
async fn the_sqlite_ledger_survives_a_restart_and_credentials_stay_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let first = under_test(SMALL, Arc::new(SqliteLedger::open(&path).unwrap()));
    first.run(&first.provision).await;
    let bind = first.bind("01JC0000000000000000000009", "b1", 1);
    let creds = first.run(&bind).await;
    drop(first);
    let second = under_test(SMALL, Arc::new(SqliteLedger::open(&path).unwrap()));
    assert_eq!(second.count().await, 2, "the ledger was kept");
    assert_eq!(
        second.run(&bind).await,
        creds,
        "the same credentials after a restart"
    );
    assert_eq!(second.count().await, 2);
}

#[tokio::test]
async fn fail_delete_counts_failures_per_operation() {
    let b = under_test(SMALL, Arc::new(MemoryLedger::default()));
    let provision = b
        .provision
        .clone()
        .json_params(json!({"simulate": {"fail_delete": 2}}));
    b.run(&provision).await;
    let d1 = b.with(OperationKind::Deprovision, "01JC000000000000000000000A");
    let d2 = b.with(OperationKind::Deprovision, "01JC000000000000000000000B");
    let d3 = b.with(OperationKind::Deprovision, "01JC000000000000000000000C");
    use osb_broker::ports::BackendOutcome::{Done, Failed};
    assert!(matches!(b.run(&d1).await, Failed(_)));
    // The same operation asked again fails again without using up a failure.
    assert!(matches!(b.run(&d1).await, Failed(_)));
    assert!(matches!(b.run(&d2).await, Failed(_)));
    assert!(matches!(b.run(&d3).await, Done(_)));
    assert_eq!(b.count().await, 0);
}

#[tokio::test]
async fn binding_expiry_is_counted_from_the_bind_with_milliseconds() {
    let b = under_test(SMALL, Arc::new(MemoryLedger::default()));
    b.run(&b.provision).await;
    let mut bind = b.bind("01JC000000000000000000000D", "b1", 1);
    bind.started_at = 1_800_000_000_250;
    let out = serde_json::to_value(match b.run(&bind).await {
        osb_broker::ports::BackendOutcome::Done(osb_broker::ports::backend::Done::Binding(r)) => r,
        other => panic!("{other:?}"),
    })
    .unwrap();
    // The small plan's credentials live 86400 s; the spec's form is yyyy-mm-ddThh:mm:ss.sZ.
    assert_eq!(out["metadata"]["expires_at"], "2027-01-16T08:00:00.250Z");
    assert_eq!(out["metadata"]["renew_before"], "2027-01-16T03:12:00.250Z");
}
