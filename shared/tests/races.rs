//! Races between requests on one instance, made deterministic with a gated backend (it blocks in `start`
//! until released) and `FaultyStore` holding a bind's commit: bind vs delete, delete vs bind, two
//! identical synchronous binds, and a sync provision whose creation a delete cancels while the backend works.
#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use common::*;
use osb_broker::contract::faults::FaultyStore;
use osb_broker::ids::InstanceId;
use osb_broker::ports::{Backend, BackendJob, BackendResult, Bindings, backend::BackendRejection};
use osb_broker::records::{InstanceState, OperationKind};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, Semaphore};

/// Blocks the first `start` of `kind` until released; counts every `start` per kind.
struct GatedBackend {
    inner: Arc<dyn Backend>,
    kind: OperationKind,
    armed: std::sync::atomic::AtomicBool,
    entered: Notify,
    release: Semaphore,
    calls: Mutex<Vec<OperationKind>>,
    /// The backend is unreachable for this many deprovision calls after the first (0: never).
    unreachable_deprovisions: std::sync::atomic::AtomicUsize,
}

impl GatedBackend {
    fn new(inner: Arc<dyn Backend>, kind: OperationKind) -> Arc<Self> {
        Arc::new(GatedBackend {
            inner,
            kind,
            armed: true.into(),
            entered: Notify::new(),
            release: Semaphore::new(0),
            calls: Mutex::new(Vec::new()),
            unreachable_deprovisions: 0.into(),
        })
    }
    fn calls(&self, kind: OperationKind) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|k| **k == kind)
            .count()
    }
}

#[async_trait]
impl Backend for GatedBackend {
    fn plan_job(&self, job: &BackendJob) -> Result<Option<u64>, BackendRejection> {
        self.inner.plan_job(job)
    }
    async fn start(&self, job: &BackendJob) -> BackendResult {
        self.calls.lock().unwrap().push(job.kind);
        if job.kind == OperationKind::Deprovision
            && self.calls(OperationKind::Deprovision) > 1
            && self
                .unreachable_deprovisions
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(osb_broker::ports::BackendError("unreachable".into()));
        }
        if job.kind == self.kind && self.armed.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.acquire().await.unwrap().forget();
        }
        self.inner.start(job).await
    }
    async fn poll(&self, job: &BackendJob, handle: &str) -> BackendResult {
        self.inner.poll(job, handle).await
    }
}

fn gated_backend(kind: OperationKind) -> (Harness, Arc<GatedBackend>) {
    let mut gate = None;
    let h = Harness::wrapped(
        |inner| {
            let g = GatedBackend::new(inner, kind);
            gate = Some(g.clone());
            g
        },
        |s| s,
    );
    (h, gate.unwrap())
}

async fn bind(h: &Harness, instance: &str, binding: &str) -> Resp {
    h.call(
        "cf1",
        Method::PUT,
        &format!("/v2/service_instances/{instance}/service_bindings/{binding}"),
        Some(json!({"service_id": PG, "plan_id": SMALL})),
    )
    .await
}

async fn delete(h: &Harness, instance: &str) -> Resp {
    h.call(
        "cf1",
        Method::DELETE,
        &format!("/v2/service_instances/{instance}?service_id={PG}&plan_id={SMALL}"),
        None,
    )
    .await
}

async fn instance_state(h: &Harness, id: &str) -> InstanceState {
    h.broker
        .store
        .get_instance("cf1", &InstanceId::parse(id).unwrap())
        .await
        .unwrap()
        .unwrap()
        .item
        .state
}

#[tokio::test]
async fn a_delete_while_a_sync_bind_is_in_the_backend_is_refused() {
    let (h, gate) = gated_backend(OperationKind::Bind);
    assert_eq!(
        h.provision("cf1", "i1", SMALL, json!({}), false)
            .await
            .status,
        StatusCode::CREATED
    );
    let binding = tokio::spawn({
        let h = h.clone();
        async move { bind(&h, "i1", "b1").await }
    });
    gate.entered.notified().await;
    // The bind is committed (Creating) before the backend was called: the delete sees it.
    let r = delete(&h, "i1").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["error"], "ConcurrencyError");
    assert_eq!(gate.calls(OperationKind::Deprovision), 0);
    gate.release.add_permits(1);
    let b = binding.await.unwrap();
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.body);
    assert_eq!(instance_state(&h, "i1").await, InstanceState::Ready);
    assert_eq!(h.ledger().len(), 2, "the instance and its binding");
}

#[tokio::test]
async fn a_bind_while_a_sync_delete_is_in_the_backend_is_refused() {
    let (h, gate) = gated_backend(OperationKind::Deprovision);
    assert_eq!(
        h.provision("cf1", "i1", SMALL, json!({}), false)
            .await
            .status,
        StatusCode::CREATED
    );
    let deleting = tokio::spawn({
        let h = h.clone();
        async move { delete(&h, "i1").await }
    });
    gate.entered.notified().await;
    assert_eq!(instance_state(&h, "i1").await, InstanceState::Deleting);
    let r = bind(&h, "i1", "b1").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["error"], "ConcurrencyError");
    gate.release.add_permits(1);
    assert_eq!(deleting.await.unwrap().status, StatusCode::OK);
    assert_eq!(
        gate.calls(OperationKind::Bind),
        0,
        "no bind reached the backend"
    );
    assert_eq!(bind(&h, "i1", "b1").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn two_identical_sync_binds_make_one_set_of_credentials() {
    let (h, gate) = gated_backend(OperationKind::Bind);
    assert_eq!(
        h.provision("cf1", "i1", SMALL, json!({}), false)
            .await
            .status,
        StatusCode::CREATED
    );
    let first = tokio::spawn({
        let h = h.clone();
        async move { bind(&h, "i1", "b1").await }
    });
    gate.entered.notified().await;
    let second = bind(&h, "i1", "b1").await;
    assert_eq!(
        second.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        second.body
    );
    assert_eq!(second.body["error"], "ConcurrencyError");
    gate.release.add_permits(1);
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    let again = bind(&h, "i1", "b1").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["credentials"], first.body["credentials"]);
    assert_eq!(gate.calls(OperationKind::Bind), 1, "one backend bind");
}

#[tokio::test]
async fn a_bind_that_read_the_instance_before_a_delete_committed_cannot_commit_after_it() {
    let mut gate = None;
    let h = Harness::wrapped(
        |b| b,
        |inner| {
            let g = FaultyStore::new(inner);
            gate = Some(g.clone());
            g
        },
    );
    let gate = gate.unwrap();
    assert_eq!(
        h.provision("cf1", "i1", SMALL, json!({}), false)
            .await
            .status,
        StatusCode::CREATED
    );
    gate.hold_binding_commit.store(true, Ordering::SeqCst);
    let binding = tokio::spawn({
        let h = h.clone();
        async move { bind(&h, "i1", "b1").await }
    });
    // The bind has read the instance (Ready, no bindings) and is about to commit.
    gate.held.notified().await;
    assert_eq!(delete(&h, "i1").await.status, StatusCode::OK);
    gate.release.add_permits(1);
    // The bind's commit carries the instance at the version it read: it loses, re-reads, finds it gone.
    let b = binding.await.unwrap();
    assert_eq!(b.status, StatusCode::NOT_FOUND, "{}", b.body);
    let read = h
        .broker
        .store
        .get_instance_with_bindings("cf1", &InstanceId::parse("i1").unwrap(), Bindings::All)
        .await
        .unwrap();
    assert_eq!(read.instance.unwrap().item.state, InstanceState::Gone);
    assert!(
        read.bindings.is_empty(),
        "no binding under the deleted instance"
    );
}

#[tokio::test]
async fn a_sync_provision_cancelled_by_a_delete_while_in_the_backend_is_compensated() {
    let (h, gate) = gated_backend(OperationKind::Provision);
    let provision = tokio::spawn({
        let h = h.clone();
        async move { h.provision("cf1", "i1", SMALL, json!({}), false).await }
    });
    gate.entered.notified().await;
    // Orphan mitigation: the platform gave up and deletes; the delete cancels the creation.
    let d = delete(&h, "i1").await;
    assert!(
        d.status.is_success() || d.status == StatusCode::GONE,
        "{} {}",
        d.status,
        d.body
    );
    gate.release.add_permits(1);
    let p = provision.await.unwrap();
    assert!(
        p.status.is_client_error() || p.status.is_server_error(),
        "{} {}",
        p.status,
        p.body
    );
    // The backend created the instance after the delete's deprovision: the provision undid it.
    assert_eq!(
        gate.calls(OperationKind::Deprovision),
        2,
        "the delete's and the compensation"
    );
    assert_eq!(instance_state(&h, "i1").await, InstanceState::Gone);
    assert!(
        h.ledger().is_empty(),
        "left on the backend: {:?}",
        h.ledger()
    );
}

#[tokio::test]
async fn a_compensation_that_fails_is_recorded_and_the_sweep_finishes_it() {
    let (h, gate) = gated_backend(OperationKind::Provision);
    gate.unreachable_deprovisions.store(1, Ordering::SeqCst);
    let provision = tokio::spawn({
        let h = h.clone();
        async move { h.provision("cf1", "i1", SMALL, json!({}), false).await }
    });
    gate.entered.notified().await;
    let d = delete(&h, "i1").await;
    assert!(d.status.is_success(), "{} {}", d.status, d.body);
    gate.release.add_permits(1);
    let p = provision.await.unwrap();
    assert!(!p.status.is_success(), "{} {}", p.status, p.body);
    // The undo could not reach the backend: the resource is still there, and the record says so.
    assert_eq!(h.ledger().len(), 1, "{:?}", h.ledger());
    let listed = h
        .broker
        .store
        .unfinished_operations(None, 100)
        .await
        .unwrap();
    let pending: Vec<_> = {
        let mut out = Vec::new();
        for k in &listed.keys {
            if let Some(op) = h.broker.store.get_operation(k).await.unwrap()
                && op.item.compensation_pending
            {
                out.push(k.clone());
            }
        }
        out
    };
    assert_eq!(
        pending.len(),
        1,
        "the cancelled provision is listed for the sweep"
    );
    // The sweep re-drives it once it is stalled; the worker runs the undo with the same operation id.
    h.clock.advance(std::time::Duration::from_secs(3600));
    assert_eq!(h.broker.sweep_stalled().await.unwrap().redriven, 1);
    h.complete(&pending[0], 3).await;
    assert!(
        h.ledger().is_empty(),
        "left on the backend: {:?}",
        h.ledger()
    );
    let op = h
        .broker
        .store
        .get_operation(&pending[0])
        .await
        .unwrap()
        .unwrap();
    assert!(!op.item.compensation_pending);
    assert!(
        h.broker
            .store
            .unfinished_operations(None, 100)
            .await
            .unwrap()
            .keys
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_sync_binds_of_one_instance_are_all_created() {
    let h = Harness::new();
    h.provision("cf1", "i1", SMALL, json!({}), false).await;
    let binds: Vec<_> = (0..10)
        .map(|n| {
            let h = h.clone();
            tokio::spawn(async move { bind(&h, "i1", &format!("b{n}")).await })
        })
        .collect();
    let mut users = std::collections::BTreeSet::new();
    for b in binds {
        let r = b.await.unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        users.insert(r.body["credentials"]["username"].to_string());
    }
    assert_eq!(users.len(), 10, "ten sets of credentials");
    assert_eq!(h.ledger().len(), 11, "the instance and ten bindings");
}
