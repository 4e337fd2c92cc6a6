//! The backend port: whatever really provisions. Each call ends *done*, *failed* or *in progress*
//! (with a handle to poll and a hint of when to look again). Calls must be idempotent per operation id.

use crate::ids::{BindingId, InstanceId, OperationId};
use crate::model::Object;
use crate::model::responses::BindingResult;
use crate::records::OperationKind;
use async_trait::async_trait;

/// Everything a backend needs to act on one operation.
#[derive(Debug, Clone)]
pub struct BackendJob {
    pub kind: OperationKind,
    pub operation_id: OperationId,
    pub tenant: String,
    pub instance_id: InstanceId,
    pub binding_id: Option<BindingId>,
    pub service_id: String,
    pub plan_id: String,
    /// The parameters of the request (for an update: the new parameters).
    pub parameters: Option<Object>,
    /// When the operation was accepted, unix milliseconds.
    pub started_at: i64,
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

#[async_trait]
pub trait Backend: Send + Sync {
    /// Checks the job before it is accepted and tells whether it finishes at once (`None`) or
    /// asynchronously (`Some(estimated seconds)`), so the API can answer 422 `AsyncRequired` up front.
    fn plan_job(&self, job: &BackendJob) -> Result<Option<u64>, BackendRejection>;

    /// Starts (or, when called again for the same operation id, resumes) the job.
    async fn start(&self, job: &BackendJob) -> BackendOutcome;

    /// Looks at a job in progress.
    async fn poll(&self, job: &BackendJob, handle: &str) -> BackendOutcome;
}
