//! The backend port: whatever really provisions (the simulated backend, an upstream OSB broker, a
//! PostgreSQL server). Every backend passes `contract::backend`.
//!
//! # The contract
//!
//! The broker commits every operation in its in-progress state (with its operation record) before it calls
//! the backend, and commits the final state after. A process may die between any two steps, a queue may
//! deliver a message twice, and a request that lost a race compensates what it did. So a backend must hold
//! to the following:
//!
//! - **Idempotent per operation id.** [`Backend::start`] may be called again for the same operation (same
//!   [`BackendJob::operation_id`]) any number of times, before or after it finished, also from another
//!   process after a restart: it never creates a second resource, and once done it returns the same result
//!   (the same credentials for a bind). [`Backend::poll`] with a handle it returned likewise.
//! - **Identity of a resource.** An instance is `(tenant, instance_id, generation)`, a binding
//!   `(tenant, instance_id, generation, lease, binding_id, binding_generation)` (`lease`: the lease a
//!   binding made on its owner's instance belongs to, none for the instance's own bindings). Generations grow each time an id
//!   is used again after a delete or a failed creation, so a late call of an earlier life never touches the
//!   current one. Names a backend derives for its resources (upstream ids, database and role names) come
//!   from this identity only, never from user input.
//! - **Deletes of what is not there succeed.** Deprovision or unbind of a resource that does not exist (never
//!   created, already deleted) answers `Done(Deleted)`. Deprovision removes the instance's bindings with it.
//!   A deprovision or unbind may carry the operation id of the provision or bind it compensates.
//! - **`Failed` is final, an error is not.** `Ok(BackendOutcome::Failed(description))` means the backend
//!   tried and the operation failed for good: the broker records it failed (a provision → `CreateFailed`,
//!   a failed delete leaves the resource as it was) and shows `description` to the platform, so it must
//!   hold no secret. `Err(BackendError)` means the backend could not be asked (unreachable, throttled, its
//!   own store down): nothing is decided, the operation stays in progress and the same step is tried again
//!   later with the same operation id.
//! - **Nothing secret in errors.** Neither `Failed` descriptions nor errors carry credentials.

use crate::identity::OriginatingIdentity;
use crate::ids::{BindingId, InstanceId, OperationId};
use crate::model::Object;
use crate::model::responses::BindingResult;
use crate::records::OperationKind;
use async_trait::async_trait;

/// Everything a backend needs to act on one operation.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendJob {
    pub kind: OperationKind,
    pub operation_id: OperationId,
    pub tenant: String,
    pub instance_id: InstanceId,
    /// The life of `instance_id` the job acts on (see the contract: identity of a resource).
    pub generation: u64,
    pub binding_id: Option<BindingId>,
    /// The life of `binding_id` (0 for instance jobs).
    pub binding_generation: u64,
    /// A lease's binding: the lease (tenant, instance id) the binding belongs to, when the job acts on the
    /// lease's owner instance. Part of the binding's identity, so that a lease's binding and one of the
    /// owner's own with the same id and generation are different resources.
    pub lease: Option<(String, InstanceId)>,
    pub service_id: String,
    pub plan_id: String,
    /// The parameters of the request (for an update: the new parameters; none for deletes).
    pub parameters: Option<Object>,
    /// When the operation was accepted, unix milliseconds.
    pub started_at: i64,
    /// The request's `context` (provision, update, bind), forwarded by a backend that speaks OSB.
    pub context: Option<Object>,
    /// Who asked (`X-Broker-API-Originating-Identity`), forwarded by a backend that speaks OSB.
    pub originating_identity: Option<OriginatingIdentity>,
    /// Whether the platform accepts an asynchronous answer (`accepts_incomplete=true`; for a job read back
    /// from its operation: whether the broker answered 202; always true in the worker, which holds no
    /// platform request). A backend may finish synchronously when it is false and go asynchronous when it
    /// is true (`plan_job`).
    pub accepts_incomplete: bool,
    /// A bind's `bind_resource` (with the deprecated top-level `app_guid` folded in as `app_guid`),
    /// forwarded by a backend that speaks OSB.
    pub bind_resource: Option<Object>,
    /// A provision's deprecated top-level `organization_guid` and `space_guid` (still required by the
    /// spec), forwarded by a backend that speaks OSB.
    pub organization_guid: Option<String>,
    pub space_guid: Option<String>,
}

impl BackendJob {
    /// The job that undoes this provision or bind (same operation id, same resource).
    pub fn compensation(&self) -> BackendJob {
        let mut undo = self.clone();
        undo.kind = match self.kind {
            OperationKind::Bind | OperationKind::Unbind => OperationKind::Unbind,
            _ => OperationKind::Deprovision,
        };
        undo.parameters = None;
        undo
    }
}

/// What a finished provision or update yields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceResult {
    pub dashboard_url: Option<String>,
    pub metadata: Option<Object>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    Instance(InstanceResult),
    Binding(BindingResult),
    /// Deprovision and unbind.
    Deleted,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BackendOutcome {
    Done(Done),
    /// The operation failed for good; the description is shown to the platform.
    Failed(String),
    InProgress {
        handle: String,
        retry_after_secs: u64,
    },
}

/// A request the backend refuses before anything starts (bad `simulate` parameters, …): a 400.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct BackendRejection(pub String);

/// The backend could not be asked; nothing was decided and the step is tried again (a 503 for a
/// synchronous request, a redelivery for the worker).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("backend unavailable: {0}")]
pub struct BackendError(pub String);

pub type BackendResult = Result<BackendOutcome, BackendError>;

#[async_trait]
pub trait Backend: Send + Sync {
    /// Checks the job before it is accepted and tells whether it finishes at once (`None`) or
    /// asynchronously (`Some(estimated seconds)`), so the API can answer 422 `AsyncRequired` up front.
    /// Pure: no side effect, no I/O.
    fn plan_job(&self, job: &BackendJob) -> Result<Option<u64>, BackendRejection>;

    /// Starts (or, when called again for the same operation id, resumes) the job.
    async fn start(&self, job: &BackendJob) -> BackendResult;

    /// Looks at a job in progress.
    async fn poll(&self, job: &BackendJob, handle: &str) -> BackendResult;
}
