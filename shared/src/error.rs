//! The domain's typed errors. The HTTP edge (`http::error`) maps each variant, once, to an OSB status code
//! and `{error, description}` body.

use crate::ports::{QueueError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Malformed or missing mandatory data: 400.
    #[error("{0}")]
    BadRequest(String),
    /// The resource does not exist (or belongs to another tenant): 404.
    #[error("{0}")]
    NotFound(String),
    /// The resource does not exist on delete, or was deleted by the polled operation: 410.
    #[error("{0}")]
    Gone(String),
    /// The id exists with different attributes: 409.
    #[error("{0}")]
    Conflict(String),
    /// The plan needs `accepts_incomplete=true`: 422 `AsyncRequired`.
    #[error("{0}")]
    AsyncRequired(String),
    /// Another operation is in progress on the resource: 422 `ConcurrencyError`.
    #[error("{0}")]
    Concurrency(String),
    /// `maintenance_info.version` differs from the plan's: 422 `MaintenanceInfoConflict`.
    #[error("{0}")]
    MaintenanceInfoConflict(String),
    /// The plan needs an `app_guid` to bind: 422 `RequiresApp`.
    #[error("{0}")]
    RequiresApp(String),
    /// The request is understood but not possible (plan change not allowed, …): 422 without error code.
    #[error("{0}")]
    Unprocessable(String),
    /// The backend reported a failure of a synchronous operation: 502.
    #[error("{0}")]
    BackendFailed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
