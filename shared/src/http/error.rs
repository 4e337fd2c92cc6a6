//! The one place errors become HTTP: status code + OSB error body `{error?, description}`.
//! Internal failures are logged with their cause and answered with a generic description.

use crate::error::BrokerError;
use crate::model::responses::ErrorBody;
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
        let desc = self.to_string();
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, None, desc),
            ApiError::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, None, desc),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, None, desc),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, None, desc),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, None, desc),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, None, desc),
            ApiError::Broker(e) => {
                let osb = e.osb();
                if osb.internal {
                    tracing::error!(error = %e, "internal error or dependency unavailable");
                }
                (
                    StatusCode::from_u16(osb.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    osb.code,
                    osb.description,
                )
            }
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
