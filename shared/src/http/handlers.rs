//! The OSB route handlers: extract, call the broker, map the reply to a status and body.

use super::AppState;
use super::error::ApiError;
use super::extract::{AuthTenant, BindingPath, InstancePath, Meta, OsbJson, OsbQuery};
use crate::broker::Reply;
use crate::broker::last_operation::LastOperation;
use crate::model::requests::{
    AsyncQuery, BindRequest, DeleteQuery, FetchQuery, LastOperationQuery, ProvisionRequest,
    UpdateRequest,
};
use crate::model::responses::AsyncOperationResponse;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

type HandlerResult = Result<Response, ApiError>;

fn reply<T: Serialize>(r: Reply<T>) -> Response {
    match r {
        Reply::Ok(b) => (StatusCode::OK, Json(b)).into_response(),
        Reply::Created(b) => (StatusCode::CREATED, Json(b)).into_response(),
        Reply::Accepted { operation, .. } => (
            StatusCode::ACCEPTED,
            Json(AsyncOperationResponse {
                operation: operation.to_string(),
            }),
        )
            .into_response(),
    }
}

fn empty_reply(r: Reply<()>) -> Response {
    match r {
        Reply::Ok(()) | Reply::Created(()) => (StatusCode::OK, Json(json!({}))).into_response(),
        accepted => reply(accepted),
    }
}

fn last_operation(lo: LastOperation) -> Response {
    let mut resp = (StatusCode::OK, Json(lo.body)).into_response();
    if let Some(secs) = lo.retry_after_secs
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

pub async fn catalog(State(state): State<AppState>, AuthTenant(tenant): AuthTenant) -> Response {
    let body = state.catalog_of(&tenant.name);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

pub async fn provision(
    State(state): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    InstancePath(id): InstancePath,
    OsbQuery(q): OsbQuery<AsyncQuery>,
    Meta(meta): Meta,
    OsbJson(body): OsbJson<ProvisionRequest>,
) -> HandlerResult {
    let r = state
        .broker
        .provision(&tenant, &id, body, q.accepts_incomplete, &meta)
        .await?;
    Ok(match r {
        // 202 of a provision may carry the dashboard URL with the operation.
        Reply::Accepted { body, .. } => (StatusCode::ACCEPTED, Json(body)).into_response(),
        other => reply(other),
    })
}

pub async fn update(
    State(state): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    InstancePath(id): InstancePath,
    OsbQuery(q): OsbQuery<AsyncQuery>,
    Meta(meta): Meta,
    OsbJson(body): OsbJson<UpdateRequest>,
) -> HandlerResult {
    let r = state
        .broker
        .update(&tenant, &id, body, q.accepts_incomplete, &meta)
        .await?;
    Ok(reply(r))
}

pub async fn deprovision(
    State(state): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    InstancePath(id): InstancePath,
    OsbQuery(q): OsbQuery<DeleteQuery>,
    Meta(meta): Meta,
) -> HandlerResult {
    let r = state.broker.deprovision(&tenant, &id, q, &meta).await?;
    Ok(empty_reply(r))
}

pub async fn fetch_instance(
    State(state): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    InstancePath(id): InstancePath,
    OsbQuery(_hints): OsbQuery<FetchQuery>,
) -> HandlerResult {
    let r = state.broker.fetch_instance(&tenant, &id).await?;
    Ok((StatusCode::OK, Json(r)).into_response())
}

pub async fn instance_last_operation(
    State(state): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    InstancePath(id): InstancePath,
    OsbQuery(q): OsbQuery<LastOperationQuery>,
) -> HandlerResult {
    let lo = state
        .broker
        .instance_last_operation(&tenant, &id, q.operation.as_deref())
        .await?;
    Ok(last_operation(lo))
}

pub async fn bind(
    State(state): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    BindingPath(instance_id, binding_id): BindingPath,
    OsbQuery(q): OsbQuery<AsyncQuery>,
    Meta(meta): Meta,
    OsbJson(body): OsbJson<BindRequest>,
) -> HandlerResult {
    let r = state
        .broker
        .bind(
            &tenant,
            &instance_id,
            &binding_id,
            body,
            q.accepts_incomplete,
            &meta,
        )
        .await?;
    Ok(reply(r))
}

pub async fn unbind(
    State(state): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    BindingPath(instance_id, binding_id): BindingPath,
    OsbQuery(q): OsbQuery<DeleteQuery>,
    Meta(meta): Meta,
) -> HandlerResult {
    let r = state
        .broker
        .unbind(&tenant, &instance_id, &binding_id, q, &meta)
        .await?;
    Ok(empty_reply(r))
}

pub async fn fetch_binding(
    State(state): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    BindingPath(instance_id, binding_id): BindingPath,
    OsbQuery(_hints): OsbQuery<FetchQuery>,
) -> HandlerResult {
    let r = state
        .broker
        .fetch_binding(&tenant, &instance_id, &binding_id)
        .await?;
    Ok((StatusCode::OK, Json(r)).into_response())
}

pub async fn binding_last_operation(
    State(state): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    BindingPath(instance_id, binding_id): BindingPath,
    OsbQuery(q): OsbQuery<LastOperationQuery>,
) -> HandlerResult {
    let lo = state
        .broker
        .binding_last_operation(&tenant, &instance_id, &binding_id, q.operation.as_deref())
        .await?;
    Ok(last_operation(lo))
}

pub async fn not_found() -> ApiError {
    ApiError::NoRoute
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
