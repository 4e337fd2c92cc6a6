//! Extractors and middleware: authentication and the version header (middleware), ids in the path,
//! query strings, JSON bodies and the identity headers — each failure an OSB error, never a panic.

use super::AppState;
use super::error::ApiError;
use crate::identity::OriginatingIdentity;
use crate::ids::{BindingId, InstanceId};
use crate::records::RequestMeta;
use crate::tenants::Tenant;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::sync::Arc;

pub const API_VERSION: &str = "x-broker-api-version";
pub const ORIGINATING_IDENTITY: &str = "x-broker-api-originating-identity";
pub const REQUEST_IDENTITY: &str = "x-broker-api-request-identity";

/// Oldest `X-Broker-API-Version` accepted.
pub const MIN_MINOR_VERSION: u32 = 13;

pub(crate) fn basic_credentials(parts: &Parts) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

fn check_version(parts: &Parts) -> Result<(), ApiError> {
    let fail = || {
        ApiError::PreconditionFailed(format!(
            "X-Broker-API-Version 2.{MIN_MINOR_VERSION} or later is required; this broker implements 2.17"
        ))
    };
    let value = parts
        .headers
        .get(API_VERSION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(fail)?;
    let (major, minor) = value.trim().split_once('.').ok_or_else(fail)?;
    match (major.parse::<u32>(), minor.parse::<u32>()) {
        (Ok(2), Ok(m)) if m >= MIN_MINOR_VERSION => Ok(()),
        _ => Err(fail()),
    }
}

/// Authenticates the tenant (401) and checks `X-Broker-API-Version` (412) before any handler runs.
pub async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let tenant = basic_credentials(&parts).and_then(|(u, p)| state.tenants.authenticate(&u, &p));
    let Some(tenant) = tenant else {
        return ApiError::Unauthorized.into_response();
    };
    if let Err(e) = check_version(&parts) {
        return e.into_response();
    }
    parts.extensions.insert(tenant);
    next.run(Request::from_parts(parts, body)).await
}

/// Echoes `X-Broker-API-Request-Identity` on every response and writes the access log line: method,
/// path (never the query string, which may carry secrets), status, duration, request identity.
/// Changes are logged at `info`, reads (catalog, fetches, polling) at `debug`.
pub async fn echo_request_identity(req: Request, next: Next) -> Response {
    let id = req.headers().get(REQUEST_IDENTITY).cloned();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // The route template, never the path (it holds ids): a bounded metrics label.
    let endpoint = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let started = std::time::Instant::now();
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    let micros = started.elapsed().as_micros() as u64;
    crate::metrics::global().request(&endpoint, method.as_str(), status);
    let request_id = id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        tracing::debug!(%method, %path, status, micros, request_id, "request");
    } else {
        tracing::info!(%method, %path, status, micros, request_id, "request");
    }
    if let Some(id) = id {
        resp.headers_mut()
            .insert(HeaderName::from_static(REQUEST_IDENTITY), id);
    }
    resp
}

/// The authenticated tenant (inserted by `authenticate`).
pub struct AuthTenant(pub Arc<Tenant>);

impl<S: Send + Sync> FromRequestParts<S> for AuthTenant {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Arc<Tenant>>()
            .cloned()
            .map(AuthTenant)
            .ok_or(ApiError::Unauthorized)
    }
}

/// `{instance_id}` of the path.
pub struct InstancePath(pub InstanceId);

impl<S: Send + Sync> FromRequestParts<S> for InstancePath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadRequest("the instance id in the path is not valid".into()))?;
        InstanceId::parse(&id)
            .map(InstancePath)
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }
}

/// `{instance_id}` and `{binding_id}` of the path.
pub struct BindingPath(pub InstanceId, pub BindingId);

impl<S: Send + Sync> FromRequestParts<S> for BindingPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((i, b)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadRequest("the ids in the path are not valid".into()))?;
        let i = InstanceId::parse(&i).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let b = BindingId::parse(&b).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(BindingPath(i, b))
    }
}

/// A query string, 400 when it does not parse (e.g. `accepts_incomplete=maybe`).
pub struct OsbQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for OsbQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| OsbQuery(q))
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {}", e.body_text())))
    }
}

/// The `webhook` and `secret` query parameters, each at most once (their values are never echoed).
fn webhook_query(parts: &Parts) -> Result<(Option<String>, Option<String>), ApiError> {
    let (mut webhook, mut secret) = (None, None);
    for (k, v) in url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        let slot = match k.as_ref() {
            "webhook" => &mut webhook,
            "secret" => &mut secret,
            _ => continue,
        };
        if slot.replace(v.into_owned()).is_some() {
            return Err(ApiError::BadRequest(format!(
                "the query parameter '{k}' must be given at most once"
            )));
        }
    }
    Ok((webhook, secret))
}

/// The identity headers, kept with each operation, and the validated webhook registration.
pub struct Meta(pub RequestMeta);

impl FromRequestParts<AppState> for Meta {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (webhook, secret) = webhook_query(parts)?;
        let webhook = state
            .broker
            .webhook_policy
            .check_registration(webhook.as_deref(), secret.as_deref())
            .map_err(|e| ApiError::BadRequest(e.to_string()))?
            .map(|target| crate::records::WebhookRegistration {
                url: target.url,
                secret: target.secret,
                api_version: parts
                    .headers
                    .get(API_VERSION)
                    .and_then(|v| v.to_str().ok())
                    .map(|s| s.trim().chars().take(16).collect()),
            });
        let originating_identity = match parts.headers.get(ORIGINATING_IDENTITY) {
            None => None,
            Some(v) => {
                let s = v.to_str().map_err(|_| {
                    ApiError::BadRequest("X-Broker-API-Originating-Identity is not text".into())
                })?;
                Some(
                    OriginatingIdentity::parse(s)
                        .map_err(|e| ApiError::BadRequest(e.to_string()))?,
                )
            }
        };
        let request_identity = parts
            .headers
            .get(REQUEST_IDENTITY)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect());
        Ok(Meta(RequestMeta {
            originating_identity,
            request_identity,
            webhook,
        }))
    }
}

/// A JSON request body: size-limited (413), `application/json` when a type is given, a JSON object
/// that fits the request type (400 naming the problem otherwise).
pub struct OsbJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for OsbJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or("").trim();
            if !(essence == "application/json" || essence.ends_with("+json")) {
                return Err(ApiError::BadRequest(
                    "Content-Type must be application/json".into(),
                ));
            }
        }
        let limit = state.body_limit;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::BadRequest("the request body could not be read".into())
            }
        })?;
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None => {
                return Err(ApiError::BadRequest(
                    "a JSON request body is required".into(),
                ));
            }
            // serde would map an array onto the request's fields by position: refuse anything but an
            // object up front.
            Some(b'{') => {}
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "the request body is not valid: it must be a JSON object".into(),
                ));
            }
        }
        serde_json::from_slice(&bytes)
            .map(OsbJson)
            .map_err(|e| ApiError::BadRequest(format!("the request body is not valid: {e}")))
    }
}
