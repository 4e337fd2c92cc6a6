//! The admin API (`/admin/v1/…`): the operator's inventory per tenant and the re-drive of one stuck
//! operation or callback. Its own credentials (HTTP Basic, `AdminCredentials`); a tenant's credentials
//! get 401 on every route, as does everything without the admin's. Errors use the OSB error body.
//!
//! Local mode serves it on its own listener (`[admin] listen`, loopback by default); the API function on
//! AWS serves it beside the OSB routes when `OSB_ADMIN_SECRET_ID` is set.

use super::error::ApiError;
use crate::broker::Broker;
use crate::broker::admin::{
    AdminCredentials, DEFAULT_ADMIN_PAGE, ListRequest, Listing, MAX_ADMIN_PAGE, operation_key,
};
use crate::error::BrokerError;
use crate::ports::InventoryCursor;
use crate::tenants::{AcceptLeases, Tenants};
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Clone)]
pub struct AdminState {
    pub broker: Arc<Broker>,
    pub tenants: Arc<Tenants>,
    pub credentials: Arc<AdminCredentials>,
}

/// The admin routes, behind the admin's credentials.
pub fn admin_router(state: AdminState) -> Router {
    // Nested, so that its fallback (404 with the OSB error body, behind the admin's credentials) covers
    // `/admin/…` only and the router merges with the OSB one (the API function serves both).
    let admin = Router::new()
        .route("/v1/tenants", get(list_tenants))
        .route("/v1/tenants/{tenant}/{listing}", get(list))
        .route(
            "/v1/tenants/{tenant}/instances/{instance}/operations/{operation}/redrive",
            post(redrive_operation),
        )
        .route(
            "/v1/tenants/{tenant}/instances/{instance}/callbacks/{operation}/redrive",
            post(redrive_callback),
        )
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(from_fn_with_state(state.clone(), authenticate))
        .layer(axum::middleware::from_fn(
            super::extract::echo_request_identity,
        ))
        .with_state(state);
    Router::new().nest("/admin", admin)
}

/// `GET /metrics`: the process's metrics in the Prometheus text format, behind the admin's credentials
/// (local mode adds it to the admin listener; on Lambda the functions print EMF lines instead).
pub fn metrics_router(state: AdminState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    crate::metrics::global().prometheus(),
                )
            }),
        )
        .layer(from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

async fn authenticate(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match super::extract::basic_credentials(&parts) {
        Some((u, p)) if state.credentials.verify(&u, &p) => {
            next.run(Request::from_parts(parts, body)).await
        }
        _ => ApiError::Unauthorized.into_response(),
    }
}

async fn list_tenants(State(state): State<AdminState>) -> Json<Value> {
    let tenants: Vec<Value> = state
        .tenants
        .iter()
        .map(|t| {
            let mut services: Option<Vec<&String>> =
                t.services.as_ref().map(|s| s.iter().collect());
            if let Some(s) = services.as_mut() {
                s.sort();
            }
            json!({
                "name": t.name,
                "profile": t.profile,
                "services": services,
                "accept_leases_from": match &t.accept_leases_from {
                    AcceptLeases::None => json!([]),
                    AcceptLeases::Any => json!("*"),
                    AcceptLeases::From(names) => json!(names),
                },
            })
        })
        .collect();
    Json(json!({ "tenants": tenants }))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// An RFC 3339 time (or unix milliseconds) of a query parameter, as unix ms.
fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            bad(format!(
                "{name} must be an RFC 3339 time or unix milliseconds"
            ))
        })
}

fn known_tenant(state: &AdminState, tenant: &str) -> Result<(), ApiError> {
    match state.tenants.get(tenant) {
        Some(_) => Ok(()),
        None => Err(ApiError::Broker(BrokerError::NotFound(format!(
            "no tenant '{tenant}'"
        )))),
    }
}

async fn list(
    State(state): State<AdminState>,
    Path((tenant, listing)): Path<(String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    known_tenant(&state, &tenant)?;
    let listing = Listing::parse(&listing).ok_or(ApiError::NoRoute)?;
    let states = params
        .state
        .as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let cursor = match params.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| InventoryCursor::parse(&s))
                .ok_or_else(|| bad("cursor is not one this listing returned"))?,
        ),
    };
    let limit = match params.limit.as_deref() {
        None => DEFAULT_ADMIN_PAGE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_ADMIN_PAGE).contains(n))
            .ok_or_else(|| bad(format!("limit must be 1 to {MAX_ADMIN_PAGE}")))?,
    };
    let req = ListRequest {
        tenant,
        listing,
        states,
        updated_since: params
            .since
            .as_deref()
            .map(|t| parse_time("since", t))
            .transpose()?,
        updated_before: params
            .before
            .as_deref()
            .map(|t| parse_time("before", t))
            .transpose()?,
        cursor,
        limit,
    };
    let page = state.broker.admin_list(&req).await?;
    Ok(Json(json!({
        "items": page.items,
        "next": page.next.map(|c| URL_SAFE_NO_PAD.encode(c.as_str())),
    })))
}

async fn redrive_operation(
    State(state): State<AdminState>,
    Path((tenant, instance, operation)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    known_tenant(&state, &tenant)?;
    let key = operation_key(&tenant, &instance, &operation)?;
    let done = state.broker.admin_redrive_operation(&key).await?;
    Ok(Json(json!({ "redriven": done })))
}

async fn redrive_callback(
    State(state): State<AdminState>,
    Path((tenant, instance, operation)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    known_tenant(&state, &tenant)?;
    let key = operation_key(&tenant, &instance, &operation)?;
    let done = state.broker.admin_redrive_callback(&key).await?;
    Ok(Json(json!({ "redriven": done })))
}
