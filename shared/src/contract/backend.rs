//! The Backend contract (`ports::backend`): what every backend must do, whatever it talks to. Cases panic
//! on violation (they are tests). A backend's test file runs them all with `backend_contract!`, giving a
//! [`BackendUnderTest`]: the backend, jobs of one of its plans, jobs that must fail, and a way to count
//! what exists on the backend's side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::ids::{BindingId, InstanceId, OperationId};
use crate::ports::backend::Done;
use crate::ports::{Backend, BackendJob, BackendOutcome};
use crate::records::OperationKind;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub type Probe = Box<dyn Fn() -> Pin<Box<dyn Future<Output = usize> + Send>> + Send + Sync>;

/// One backend, set up for the contract cases.
pub struct BackendUnderTest {
    pub backend: Arc<dyn Backend>,
    /// A provision of a plan the backend serves (its instance is the cases' starting point); binds and
    /// deletes are derived from it.
    pub provision: BackendJob,
    /// Scenarios that must end failed: every job but the last succeeds, the last answers `Failed`.
    pub failing: Vec<Vec<BackendJob>>,
    /// How many resources (instances and bindings) exist on the backend's side.
    pub resources: Probe,
    /// Moves the clock the backend reads by this much (jobs in progress finish in time).
    pub advance: Box<dyn Fn(Duration) + Send + Sync>,
}

fn op_id(s: &str) -> OperationId {
    OperationId::parse(s).unwrap()
}

impl BackendUnderTest {
    /// Starts the job and polls it until it is over; panics on an error or after many polls.
    pub async fn run(&self, job: &BackendJob) -> BackendOutcome {
        let mut outcome = self.backend.start(job).await.expect("backend error");
        for _ in 0..100 {
            let BackendOutcome::InProgress {
                handle,
                retry_after_secs,
            } = &outcome
            else {
                return outcome;
            };
            (self.advance)(Duration::from_secs((*retry_after_secs).max(1)));
            outcome = self.backend.poll(job, handle).await.expect("backend error");
        }
        panic!("job {job:?} still in progress after 100 polls");
    }

    pub fn with(&self, kind: OperationKind, op: &str) -> BackendJob {
        let mut j = self.provision.clone();
        j.kind = kind;
        j.operation_id = op_id(op);
        if !matches!(kind, OperationKind::Provision | OperationKind::Update) {
            j.parameters = None;
        }
        j
    }

    pub fn bind(&self, op: &str, binding: &str, generation: u64) -> BackendJob {
        let mut j = self.with(OperationKind::Bind, op);
        j.binding_id = Some(BindingId::parse(binding).unwrap());
        j.binding_generation = generation;
        j
    }

    pub async fn count(&self) -> usize {
        (self.resources)().await
    }
}

fn credentials(outcome: &BackendOutcome) -> serde_json::Value {
    match outcome {
        BackendOutcome::Done(Done::Binding(b)) => serde_json::to_value(b).unwrap(),
        other => panic!("expected a finished bind, got {other:?}"),
    }
}

fn assert_deleted(outcome: BackendOutcome, what: &str) {
    assert_eq!(outcome, BackendOutcome::Done(Done::Deleted), "{what}");
}

/// A provision run again with the same operation id creates nothing more and answers the same.
pub async fn provision_is_idempotent_per_operation_id(b: BackendUnderTest) {
    assert_eq!(b.count().await, 0);
    let first = b.run(&b.provision).await;
    assert!(
        matches!(first, BackendOutcome::Done(Done::Instance(_))),
        "{first:?}"
    );
    assert_eq!(b.run(&b.provision).await, first);
    assert_eq!(b.count().await, 1);
}

/// A bind run again answers the same credentials; another binding gets others.
pub async fn bind_returns_the_same_credentials_every_time(b: BackendUnderTest) {
    b.run(&b.provision).await;
    let bind = b.bind("01JB0000000000000000000001", "b1", 1);
    let first = credentials(&b.run(&bind).await);
    assert_eq!(credentials(&b.run(&bind).await), first);
    assert_eq!(b.count().await, 2);
    let other = credentials(&b.run(&b.bind("01JB0000000000000000000002", "b2", 1)).await);
    assert_ne!(other["credentials"], first["credentials"]);
    // The same binding id bound again in a later life is another binding.
    let again = credentials(&b.run(&b.bind("01JB0000000000000000000003", "b1", 2)).await);
    assert_ne!(again["credentials"], first["credentials"]);
    assert_eq!(b.count().await, 4);
}

/// Deletes of what does not exist succeed, and change nothing.
pub async fn deletes_of_what_is_not_there_succeed(b: BackendUnderTest) {
    let mut unbind = b.bind("01JB0000000000000000000004", "never", 1);
    unbind.kind = OperationKind::Unbind;
    assert_deleted(b.run(&unbind).await, "unbind of a binding never made");
    assert_deleted(
        b.run(&b.with(OperationKind::Deprovision, "01JB0000000000000000000005"))
            .await,
        "deprovision of an instance never made",
    );
    assert_eq!(b.count().await, 0);
}

/// A deprovision removes the instance with its bindings; repeated, it still succeeds.
pub async fn deprovision_removes_the_instance_and_its_bindings(b: BackendUnderTest) {
    b.run(&b.provision).await;
    b.run(&b.bind("01JB0000000000000000000006", "b1", 1)).await;
    let mut unbind = b.bind("01JB0000000000000000000007", "b1", 1);
    unbind.kind = OperationKind::Unbind;
    assert_deleted(b.run(&unbind).await, "unbind");
    assert_eq!(b.count().await, 1);
    b.run(&b.bind("01JB0000000000000000000008", "b2", 1)).await;
    let deprovision = b.with(OperationKind::Deprovision, "01JB0000000000000000000009");
    assert_deleted(b.run(&deprovision).await, "deprovision");
    assert_eq!(b.count().await, 0);
    assert_deleted(b.run(&deprovision).await, "deprovision repeated");
}

/// The compensation of a provision or bind (same operation id) removes what it made.
pub async fn compensation_undoes_a_provision_or_a_bind(b: BackendUnderTest) {
    b.run(&b.provision).await;
    let bind = b.bind("01JB000000000000000000000A", "b1", 1);
    b.run(&bind).await;
    assert_deleted(b.run(&bind.compensation()).await, "bind compensated");
    assert_eq!(b.count().await, 1);
    assert_deleted(
        b.run(&b.provision.compensation()).await,
        "provision compensated",
    );
    assert_eq!(b.count().await, 0);
}

/// A late call for an earlier life of an id never touches the current one.
pub async fn generations_are_separate_resources(b: BackendUnderTest) {
    b.run(&b.provision).await;
    assert_deleted(
        b.run(&b.with(OperationKind::Deprovision, "01JB000000000000000000000B"))
            .await,
        "deprovision",
    );
    let mut second = b.with(OperationKind::Provision, "01JB000000000000000000000C");
    second.generation = b.provision.generation + 1;
    b.run(&second).await;
    // The first life's provision compensated late: the second life stays.
    assert_deleted(
        b.run(&b.provision.compensation()).await,
        "late compensation",
    );
    assert_eq!(b.count().await, 1);
}

/// A lease's binding is made on its owner's instance (`BackendJob::lease`); one of the owner's own bindings
/// with the same id and generation is another resource, with other credentials, and unbinding one leaves
/// the other.
pub async fn a_leases_binding_is_not_the_owners_binding_of_the_same_id(b: BackendUnderTest) {
    b.run(&b.provision).await;
    let own = b.bind("01JB000000000000000000000L", "b1", 7);
    let mut leased = b.bind("01JB000000000000000000000M", "b1", 7);
    leased.lease = Some((
        "other-tenant".into(),
        InstanceId::parse("the-lease").unwrap(),
    ));
    let before = b.count().await;
    let own_creds = credentials(&b.run(&own).await);
    let lease_creds = credentials(&b.run(&leased).await);
    assert_ne!(
        own_creds, lease_creds,
        "two bindings, two sets of credentials"
    );
    assert_eq!(b.count().await, before + 2);
    let mut unbind = leased.clone();
    unbind.kind = OperationKind::Unbind;
    unbind.operation_id = op_id("01JB000000000000000000000N");
    assert_deleted(b.run(&unbind).await, "the lease's unbind");
    assert_eq!(b.count().await, before + 1, "the owner's binding stays");
    assert_eq!(credentials(&b.run(&own).await), own_creds);
}

/// Failures are reported as `Failed` (never swallowed), the same when asked again, and a failed
/// provision or bind leaves nothing behind.
pub async fn failures_are_reported_and_repeatable(b: BackendUnderTest) {
    assert!(!b.failing.is_empty(), "give at least one failing scenario");
    for scenario in &b.failing {
        let (last, setup) = scenario.split_last().unwrap();
        for job in setup {
            let out = b.run(job).await;
            assert!(matches!(out, BackendOutcome::Done(_)), "{job:?}: {out:?}");
        }
        let before = b.count().await;
        let first = b.run(last).await;
        let BackendOutcome::Failed(description) = &first else {
            panic!("{last:?} should fail, got {first:?}");
        };
        assert!(!description.is_empty());
        assert_eq!(b.run(last).await, first, "a failed job asked again");
        assert_eq!(b.count().await, before, "a failure changed what exists");
    }
}

/// `plan_job` has no side effect.
pub async fn planning_a_job_creates_nothing(b: BackendUnderTest) {
    for _ in 0..3 {
        b.backend.plan_job(&b.provision).unwrap();
    }
    assert_eq!(b.count().await, 0);
}

/// Expands to one `#[tokio::test]` per Backend contract case; `$factory` is an expression giving a future
/// of a fresh [`BackendUnderTest`] with nothing created yet. With `if $cond;` first, a case whose `$cond`
/// is false returns at once (a backend whose server the environment does not provide; `$cond` prints why).
#[macro_export]
macro_rules! backend_contract {
    (if $cond:expr; $factory:expr) => {
        $crate::backend_contract!(@cases $cond; $factory;
            provision_is_idempotent_per_operation_id,
            bind_returns_the_same_credentials_every_time,
            deletes_of_what_is_not_there_succeed,
            deprovision_removes_the_instance_and_its_bindings,
            compensation_undoes_a_provision_or_a_bind,
            generations_are_separate_resources,
            a_leases_binding_is_not_the_owners_binding_of_the_same_id,
            failures_are_reported_and_repeatable,
            planning_a_job_creates_nothing,
        );
    };
    ($factory:expr) => {
        $crate::backend_contract!(if true; $factory);
    };
    (@cases $cond:expr; $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                if !$cond {
                    return;
                }
                $crate::contract::backend::$case($factory.await).await;
            }
        )*
    };
}
