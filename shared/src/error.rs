//! The domain's typed errors. Each variant knows its OSB status code and `error` code ([`BrokerError::osb`]);
//! the HTTP edge (`http::error`) turns that into a response, and a failed operation's webhook carries the
//! same body.

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
    /// The backend could not be asked; the operation stays in progress and is finished later: 503.
    #[error("{0}")]
    BackendUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// How an error is answered: status code, OSB `error` code, and the description the platform sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsbError {
    pub status: u16,
    pub code: Option<&'static str>,
    pub description: String,
    /// An internal failure whose cause is logged, not shown.
    pub internal: bool,
}

impl BrokerError {
    /// The OSB status, error code and description of this error.
    pub fn osb(&self) -> OsbError {
        use BrokerError as B;
        let (status, code, internal, description) = match self {
            B::BadRequest(_) => (400, None, false, None),
            B::NotFound(_) => (404, None, false, None),
            B::Gone(_) => (410, None, false, None),
            B::Conflict(_) => (409, None, false, None),
            B::AsyncRequired(_) => (422, Some("AsyncRequired"), false, None),
            B::Concurrency(_) => (422, Some("ConcurrencyError"), false, None),
            B::Store(StoreError::Conflict) => (
                422,
                Some("ConcurrencyError"),
                false,
                Some("another operation on this resource is in progress"),
            ),
            B::MaintenanceInfoConflict(_) => (422, Some("MaintenanceInfoConflict"), false, None),
            B::RequiresApp(_) => (422, Some("RequiresApp"), false, None),
            B::Unprocessable(_) => (422, None, false, None),
            B::BackendFailed(_) => (502, Some("BackendError"), false, None),
            B::BackendUnavailable(_) => (503, None, false, None),
            B::Store(StoreError::Unavailable(_)) | B::Queue(QueueError::Unavailable(_)) => (
                503,
                None,
                true,
                Some("the broker's storage or queue is unavailable; retry later"),
            ),
            B::Store(StoreError::Corrupt(_)) => (500, None, true, Some("internal error")),
        };
        OsbError {
            status,
            code,
            description: description.map_or_else(|| self.to_string(), str::to_owned),
            internal,
        }
    }
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
