//! The Backend contract suite on the PostgreSQL backend, against the real server `scripts/postgres.sh`
//! starts (see tests/common/pg.rs for what happens without one). Its `resources` probe counts what
//! exists on the server: instances (databases, or owner roles left without one) and binding roles.
#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::pg::*;
use osb_broker::backends::postgresql::PostgresBackend;
use osb_broker::catalog::Catalog;
use osb_broker::contract::backend::BackendUnderTest;
use osb_broker::ids::{BindingId, InstanceId, OperationId};
use osb_broker::ports::BackendJob;
use osb_broker::records::OperationKind;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;

fn job(kind: OperationKind, op: &str, instance: &str, params: serde_json::Value) -> BackendJob {
    BackendJob {
        kind,
        operation_id: OperationId::parse(op).unwrap(),
        tenant: "cf1".into(),
        instance_id: InstanceId::parse(instance).unwrap(),
        generation: 7,
        binding_id: None,
        binding_generation: 0,
        lease: None,
        service_id: PG_SERVICE.into(),
        plan_id: PG_PLAN.into(),
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

fn bind(mut j: BackendJob, op: &str, binding: &str) -> BackendJob {
    j.kind = OperationKind::Bind;
    j.operation_id = OperationId::parse(op).unwrap();
    j.binding_id = Some(BindingId::parse(binding).unwrap());
    j.binding_generation = 1;
    j.parameters = None;
    j
}

/// Instances (a database, or an owner role without its database) and binding roles under `prefix`.
async fn count(env: &PgEnv, prefix: &str) -> usize {
    let (dbs, roles) = env.resources(prefix).await;
    let instance_of = |name: &str| name[..prefix.len() + 24].to_owned();
    let mut instances: BTreeSet<String> = dbs.iter().map(|d| instance_of(d)).collect();
    let mut bindings = 0;
    for r in &roles {
        if r.ends_with("_owner") {
            instances.insert(instance_of(r));
        } else {
            bindings += 1;
        }
    }
    instances.len() + bindings
}

async fn under_test() -> BackendUnderTest {
    let env = pg_env().expect("checked by the macro's condition");
    let prefix = unique_prefix();
    let catalog = Arc::new(Catalog::new(catalog("test")).unwrap());
    let server = env.server_config(&prefix).validate("test").unwrap();
    let backend = Arc::new(PostgresBackend::new(catalog, server, [9u8; 32]).unwrap());
    let provision = job(
        OperationKind::Provision,
        "01JD0000000000000000000001",
        "inst-1",
        json!({"extensions": ["citext"]}),
    );
    let other = job(
        OperationKind::Provision,
        "01JD0000000000000000000002",
        "inst-f",
        json!({}),
    );
    BackendUnderTest {
        backend,
        failing: vec![
            // On the plan's list, not installed on the server: refused before anything is created.
            vec![job(
                OperationKind::Provision,
                "01JD0000000000000000000003",
                "inst-g",
                json!({"extensions": ["postgis"]}),
            )],
            // Not on the plan's list (start re-checks what plan_job checked).
            vec![job(
                OperationKind::Provision,
                "01JD0000000000000000000004",
                "inst-h",
                json!({"extensions": ["plpython3u"]}),
            )],
            // A bind on an instance that has no database.
            vec![bind(other.clone(), "01JD0000000000000000000005", "b0")],
            // The same binding identity bound by another operation (an owner and a lease using one
            // binding id): refused, the first binding's role untouched.
            vec![
                other.clone(),
                bind(other.clone(), "01JD0000000000000000000006", "bc"),
                bind(other, "01JD0000000000000000000007", "bc"),
            ],
        ],
        provision,
        resources: Box::new(move || {
            let env = env.clone();
            let prefix = prefix.clone();
            Box::pin(async move { count(&env, &prefix).await })
        }),
        advance: Box::new(|_| {}),
    }
}

osb_broker::backend_contract!(if pg_env().is_some(); under_test());
