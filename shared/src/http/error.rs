//! The one place errors become HTTP: status code + OSB error body `{error?, description}`.
//! Internal failures are logged with their cause and answered with a generic description.

use crate::error::BrokerError;
use crate::model::responses::ErrorBody;
use crate::ports::{QueueError, StoreError};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than the {0} bytes allowed")]
    PayloadTooLarge(usize),
    #[error("no such endpoint")]
    NoRoute,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, Option<&'static str>, String) {
        use BrokerError as B;
        let desc = self.to_string();
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, None, desc),
            ApiError::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, None, desc),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, None, desc),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, None, desc),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, None, desc),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, None, desc),
            ApiError::Broker(e) => match e {
                B::BadRequest(_) => (StatusCode::BAD_REQUEST, None, desc),
                B::NotFound(_) => (StatusCode::NOT_FOUND, None, desc),
                B::Gone(_) => (StatusCode::GONE, None, desc),
                B::Conflict(_) => (StatusCode::CONFLICT, None, desc),
                B::AsyncRequired(_) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Some("AsyncRequired"),
                    desc,
                ),
                B::Concurrency(_) | B::Store(StoreError::Conflict) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Some("ConcurrencyError"),
                    if matches!(e, B::Store(_)) {
                        "another operation on this resource is in progress".into()
                    } else {
                        desc
                    },
                ),
                B::MaintenanceInfoConflict(_) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Some("MaintenanceInfoConflict"),
                    desc,
                ),
                B::RequiresApp(_) => (StatusCode::UNPROCESSABLE_ENTITY, Some("RequiresApp"), desc),
                B::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, None, desc),
                B::BackendFailed(_) => (StatusCode::BAD_GATEWAY, Some("BackendError"), desc),
                B::Store(StoreError::Unavailable(_)) | B::Queue(QueueError::Unavailable(_)) => {
                    tracing::error!(error = %e, "dependency unavailable");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        None,
                        "the broker's storage or queue is unavailable; retry later".into(),
                    )
                }
                B::Store(StoreError::Corrupt(_)) => {
                    tracing::error!(error = %e, "internal error");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        None,
                        "internal error".into(),
                    )
                }
            },
        }
    }
}

impl ApiError {
    /// The status code and OSB error body (also what a webhook of a failed operation carries).
    pub fn osb_parts(&self) -> (u16, ErrorBody) {
        let (status, error, description) = self.parts();
        (
            status.as_u16(),
            ErrorBody {
                error: error.map(str::to_owned),
                description,
                instance_usable: None,
                update_repeatable: None,
            },
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.osb_parts();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"osb-broker\""),
            );
        }
        resp
    }
}
