//! [`UpstreamBackend`]: the `Backend` that forwards jobs to one upstream broker (see the module above).

use super::client::{Method, OsbClient, Sent};
use super::{Upstream, UpstreamPlan, ids, redact};
use crate::catalog::{BackendConfig, Catalog};
use crate::model::responses::BindingResult;
use crate::model::{Credentials, Object};
use crate::ports::backend::{BackendError, BackendRejection, BackendResult, Done, InstanceResult};
use crate::ports::{Backend, BackendJob, BackendOutcome};
use crate::records::OperationKind;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Seconds between polls when the upstream gives no `Retry-After`.
const DEFAULT_POLL_SECS: u64 = 2;
/// Longest pause between two polls or two orphan-mitigation attempts.
const MAX_RETRY_SECS: u64 = 300;
/// Orphan-mitigation deletes tried within the request before the worker takes over.
const INLINE_MITIGATION_ATTEMPTS: u32 = 3;

/// Parameter keys the broker itself reads (sharing): never forwarded.
const BROKER_KEYS: [&str; 2] = ["x_osb_cmdb", "sharing_token"];

/// What the broker keeps of a job in progress upstream (`Operation::backend_handle`, JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "h", rename_all = "snake_case")]
enum Handle {
    /// The upstream answered 202: its `operation` (if it gave one) and what the 202 body carried.
    Upstream {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operation: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dashboard_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<Object>,
    },
    /// Orphan mitigation: the upstream resource is being deleted; the job then fails with `reason`.
    Mitigating {
        reason: String,
        attempt: u32,
        /// The upstream's operation of an asynchronous delete.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operation: Option<String>,
    },
}

impl Handle {
    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn in_progress(handle: Handle, retry_after: Option<u64>) -> BackendOutcome {
    BackendOutcome::InProgress {
        handle: handle.encode(),
        retry_after_secs: retry_after
            .unwrap_or(DEFAULT_POLL_SECS)
            .clamp(1, MAX_RETRY_SECS),
    }
}

/// Seconds before mitigation attempt `attempt` (0-based): 2, 4, 8, … up to five minutes.
fn backoff(attempt: u32) -> u64 {
    2u64.saturating_pow(attempt.saturating_add(1))
        .min(MAX_RETRY_SECS)
}

/// The backend of one upstream broker.
pub struct UpstreamBackend {
    catalog: Arc<Catalog>,
    client: OsbClient,
}

impl UpstreamBackend {
    pub fn new(catalog: Arc<Catalog>, upstream: Upstream) -> Result<Self, BackendError> {
        Ok(UpstreamBackend {
            catalog,
            client: OsbClient::new(Arc::new(upstream))?,
        })
    }

    pub fn upstream(&self) -> &Upstream {
        &self.client.upstream
    }

    fn plan(&self, job: &BackendJob) -> Result<UpstreamPlan, BackendRejection> {
        match self
            .catalog
            .plan_by_id(&job.plan_id)
            .map(|p| &p.plan.backend)
        {
            Some(BackendConfig::Upstream(u)) if u.broker == self.upstream().name => Ok(u.clone()),
            _ => Err(BackendRejection(format!(
                "plan '{}' is not served by upstream broker '{}'",
                job.plan_id,
                self.upstream().name
            ))),
        }
    }

    fn instance_path(&self, job: &BackendJob) -> String {
        format!(
            "/v2/service_instances/{}",
            ids::instance_id(&self.upstream().name, job)
        )
    }

    /// The path of the job's resource: its binding, or its instance.
    fn resource_path(&self, job: &BackendJob) -> String {
        match ids::binding_id(&self.upstream().name, job) {
            Some(b) => format!("{}/service_bindings/{b}", self.instance_path(job)),
            None => self.instance_path(job),
        }
    }

    /// The upstream's error description, redacted, with what we did about it.
    fn describe(&self, what: &str, status: u16, body: Option<&Value>) -> String {
        let upstream_says = body
            .and_then(|b| b.get("description"))
            .and_then(|d| d.as_str())
            .filter(|d| !d.trim().is_empty())
            .map(|d| redact::redact(d, &self.upstream().host));
        let code = body
            .and_then(|b| b.get("error"))
            .and_then(|d| d.as_str())
            .map(|e| redact::redact(e, &self.upstream().host));
        let mut s = format!("the upstream broker answered the {what} with {status}");
        if let Some(c) = code {
            s.push_str(&format!(" {c}"));
        }
        if let Some(d) = upstream_says {
            s.push_str(&format!(": {d}"));
        }
        s
    }

    fn body(&self, job: &BackendJob, plan: &UpstreamPlan) -> Value {
        let mut b = json!({"service_id": plan.service_id, "plan_id": plan.plan_id});
        if job.kind == OperationKind::Provision {
            // The deprecated top-level fields, still required by the spec: as the platform sent them,
            // else from a Cloud Foundry context (below).
            if let Some(o) = &job.organization_guid {
                b["organization_guid"] = json!(o);
            }
            if let Some(s) = &job.space_guid {
                b["space_guid"] = json!(s);
            }
        }
        if let Some(ctx) = &job.context {
            b["context"] = Value::Object(ctx.clone());
            if job.kind == OperationKind::Provision {
                for k in ["organization_guid", "space_guid"] {
                    if let (Some(v), None) = (ctx.get(k), b.get(k)) {
                        b[k] = v.clone();
                    }
                }
            }
        }
        if job.kind == OperationKind::Bind
            && let Some(r) = &job.bind_resource
        {
            b["bind_resource"] = Value::Object(r.clone());
            // The deprecated top-level field, which older brokers read.
            if let Some(app) = r.get("app_guid") {
                b["app_guid"] = app.clone();
            }
        }
        if let Some(p) = &job.parameters {
            let mut p = p.clone();
            for k in BROKER_KEYS {
                p.remove(k);
            }
            if !p.is_empty() {
                b["parameters"] = Value::Object(p);
            }
        }
        b
    }

    fn delete_query(plan: &UpstreamPlan) -> [(&'static str, &str); 3] {
        [
            ("service_id", plan.service_id.as_str()),
            ("plan_id", plan.plan_id.as_str()),
            ("accepts_incomplete", "true"),
        ]
    }

    /// Provision or bind: PUT, with orphan mitigation when the outcome is unknown or broken.
    async fn create(&self, job: &BackendJob, plan: &UpstreamPlan) -> BackendResult {
        let what = job.kind.as_str();
        let sent = self
            .client
            .send(
                Method::Put,
                &self.resource_path(job),
                &[("accepts_incomplete", "true")],
                Some(&self.body(job, plan)),
                job.originating_identity.as_ref(),
                Some(job.operation_id.as_str()),
            )
            .await;
        let mitigate = |reason: String| self.mitigate(job, plan, reason, 0);
        match sent {
            Sent::NotSent(e) => Err(BackendError(e)),
            Sent::Lost(why) => {
                mitigate(format!(
                    "the upstream broker did not answer the {what}: {why}"
                ))
                .await
            }
            Sent::Answer {
                status: 200 | 201,
                body,
                ..
            } => match parse_done(job.kind, body.as_ref()) {
                Ok(done) => Ok(BackendOutcome::Done(done)),
                Err(m) => {
                    mitigate(format!(
                        "the upstream broker answered the {what} with a malformed body ({m})"
                    ))
                    .await
                }
            },
            Sent::Answer {
                status: 202,
                body,
                retry_after,
            } => match parse_accepted(body.as_ref()) {
                Ok(h) => Ok(in_progress(h, retry_after)),
                Err(m) => {
                    mitigate(format!(
                        "the upstream broker accepted the {what} with a malformed body ({m})"
                    ))
                    .await
                }
            },
            Sent::Answer { status, body, .. } if (200..300).contains(&status) || status >= 500 => {
                mitigate(self.describe(what, status, body.as_ref())).await
            }
            // 4xx (400, 409, 422, 408, …): the upstream changed nothing; no mitigation.
            Sent::Answer { status, body, .. } => Ok(BackendOutcome::Failed(self.describe(
                what,
                status,
                body.as_ref(),
            ))),
        }
    }

    /// Orphan mitigation: DELETE the upstream resource; once it is gone (200, 410, or an asynchronous
    /// delete that succeeded) the job fails with `reason`. A delete that does not succeed is tried again
    /// with backoff: the attempt is recorded in the returned handle (the operation's), so a restart
    /// continues it.
    async fn mitigate(
        &self,
        job: &BackendJob,
        plan: &UpstreamPlan,
        reason: String,
        attempt: u32,
    ) -> BackendResult {
        tracing::warn!(upstream = %self.upstream().name, operation = %job.operation_id, kind = job.kind.as_str(), attempt, "orphan mitigation: deleting the upstream resource");
        let sent = self
            .client
            .send(
                Method::Delete,
                &self.resource_path(job),
                &Self::delete_query(plan),
                None,
                None,
                Some(job.operation_id.as_str()),
            )
            .await;
        let again = |attempt: u32| {
            Ok(BackendOutcome::InProgress {
                handle: Handle::Mitigating {
                    reason: reason.clone(),
                    attempt: attempt.saturating_add(1),
                    operation: None,
                }
                .encode(),
                retry_after_secs: backoff(attempt),
            })
        };
        match sent {
            Sent::Answer {
                status: 200 | 410, ..
            } => Ok(mitigated(&reason)),
            Sent::Answer {
                status: 202,
                body,
                retry_after,
            } => {
                let operation = body
                    .as_ref()
                    .and_then(|b| b.get("operation"))
                    .and_then(|o| o.as_str())
                    .map(str::to_owned);
                Ok(in_progress(
                    Handle::Mitigating {
                        reason,
                        attempt,
                        operation,
                    },
                    retry_after,
                ))
            }
            Sent::Answer { status, .. } => {
                tracing::warn!(upstream = %self.upstream().name, operation = %job.operation_id, status, "orphan mitigation delete refused; tried again later");
                again(attempt)
            }
            Sent::NotSent(_) | Sent::Lost(_) => {
                tracing::warn!(upstream = %self.upstream().name, operation = %job.operation_id, "orphan mitigation delete got no answer; tried again later");
                again(attempt)
            }
        }
    }

    /// Update: PATCH. Nothing to mitigate (the spec has no orphan mitigation for updates).
    async fn update(&self, job: &BackendJob, plan: &UpstreamPlan) -> BackendResult {
        let sent = self
            .client
            .send(
                Method::Patch,
                &self.instance_path(job),
                &[("accepts_incomplete", "true")],
                Some(&self.body(job, plan)),
                job.originating_identity.as_ref(),
                Some(job.operation_id.as_str()),
            )
            .await;
        match sent {
            Sent::NotSent(e) | Sent::Lost(e) => Err(BackendError(e)),
            Sent::Answer {
                status: 200, body, ..
            } => Ok(match parse_done(job.kind, body.as_ref()) {
                Ok(d) => BackendOutcome::Done(d),
                Err(_) => BackendOutcome::Done(Done::Instance(InstanceResult::default())),
            }),
            Sent::Answer {
                status: 202,
                body,
                retry_after,
            } => Ok(in_progress(
                parse_accepted(body.as_ref()).unwrap_or(Handle::Upstream {
                    operation: None,
                    dashboard_url: None,
                    metadata: None,
                }),
                retry_after,
            )),
            Sent::Answer { status, body, .. } => Ok(BackendOutcome::Failed(self.describe(
                "update",
                status,
                body.as_ref(),
            ))),
        }
    }

    /// Deprovision or unbind: DELETE; 410 means it is gone already.
    async fn delete(&self, job: &BackendJob, plan: &UpstreamPlan) -> BackendResult {
        let sent = self
            .client
            .send(
                Method::Delete,
                &self.resource_path(job),
                &Self::delete_query(plan),
                None,
                job.originating_identity.as_ref(),
                Some(job.operation_id.as_str()),
            )
            .await;
        match sent {
            Sent::NotSent(e) | Sent::Lost(e) => Err(BackendError(e)),
            Sent::Answer {
                status: 200 | 410, ..
            } => Ok(BackendOutcome::Done(Done::Deleted)),
            Sent::Answer {
                status: 202,
                body,
                retry_after,
            } => Ok(in_progress(
                parse_accepted(body.as_ref()).unwrap_or(Handle::Upstream {
                    operation: None,
                    dashboard_url: None,
                    metadata: None,
                }),
                retry_after,
            )),
            Sent::Answer { status, body, .. } => Ok(BackendOutcome::Failed(self.describe(
                job.kind.as_str(),
                status,
                body.as_ref(),
            ))),
        }
    }

    /// GET `last_operation` of the job's resource (no context, no identity: a read).
    async fn last_operation(
        &self,
        job: &BackendJob,
        plan: &UpstreamPlan,
        operation: Option<&str>,
    ) -> Sent {
        self.read(
            &format!("{}/last_operation", self.resource_path(job)),
            plan,
            operation.map(|op| ("operation", op)),
        )
        .await
    }

    /// A read of the upstream: GET `path` with the plan's ids (and `extra`), never a context or an
    /// originating identity.
    async fn read(&self, path: &str, plan: &UpstreamPlan, extra: Option<(&str, &str)>) -> Sent {
        let mut query = vec![
            ("service_id", plan.service_id.as_str()),
            ("plan_id", plan.plan_id.as_str()),
        ];
        query.extend(extra);
        self.client
            .send(Method::Get, path, &query, None, None, None)
            .await
    }

    async fn poll_upstream(
        &self,
        job: &BackendJob,
        plan: &UpstreamPlan,
        handle: Handle,
    ) -> BackendResult {
        let Handle::Upstream {
            operation,
            dashboard_url,
            metadata,
        } = &handle
        else {
            return Err(BackendError("not an upstream operation handle".into()));
        };
        let deleting = matches!(job.kind, OperationKind::Deprovision | OperationKind::Unbind);
        match self.last_operation(job, plan, operation.as_deref()).await {
            Sent::NotSent(e) | Sent::Lost(e) => Err(BackendError(e)),
            Sent::Answer { status: 410, .. } if deleting => Ok(BackendOutcome::Done(Done::Deleted)),
            Sent::Answer {
                status: 200,
                body,
                retry_after,
            } => {
                let state = body
                    .as_ref()
                    .and_then(|b| b.get("state"))
                    .and_then(|s| s.as_str())
                    .unwrap_or_default();
                match state {
                    "succeeded" => match job.kind {
                        OperationKind::Provision | OperationKind::Update => {
                            let accepted = InstanceResult {
                                dashboard_url: dashboard_url.clone(),
                                metadata: metadata.clone(),
                            };
                            self.fetch_instance(job, plan, accepted).await
                        }
                        OperationKind::Bind => self.fetch_binding(job, plan).await,
                        OperationKind::Deprovision | OperationKind::Unbind => {
                            Ok(BackendOutcome::Done(Done::Deleted))
                        }
                    },
                    "failed" => {
                        let what = job.kind.as_str();
                        let d = body
                            .as_ref()
                            .and_then(|b| b.get("description"))
                            .and_then(|d| d.as_str())
                            .map(|d| redact::redact(d, &self.upstream().host));
                        let reason = match d {
                            Some(d) => format!("the upstream broker's {what} failed: {d}"),
                            None => format!("the upstream broker's {what} failed"),
                        };
                        if matches!(job.kind, OperationKind::Provision | OperationKind::Bind) {
                            self.mitigate(job, plan, reason, 0).await
                        } else {
                            Ok(BackendOutcome::Failed(reason))
                        }
                    }
                    // "in progress", or anything else: look again (our deadline ends it).
                    _ => Ok(in_progress(handle.clone(), retry_after)),
                }
            }
            // Invalid while creating (410 included): keep polling until the deadline, as a platform does.
            Sent::Answer { retry_after, .. } => Ok(in_progress(handle.clone(), retry_after)),
        }
    }

    /// After an asynchronous provision or update succeeded: what the instance is now (`dashboard_url`,
    /// `metadata`), from GET instance when the offering is retrievable (the same answer a repeated PUT
    /// would give), else what the 202 said.
    async fn fetch_instance(
        &self,
        job: &BackendJob,
        plan: &UpstreamPlan,
        accepted: InstanceResult,
    ) -> BackendResult {
        let retrievable = self
            .catalog
            .plan_by_id(&job.plan_id)
            .is_some_and(|p| p.instances_retrievable());
        if !retrievable {
            return Ok(BackendOutcome::Done(Done::Instance(accepted)));
        }
        let sent = self.read(&self.instance_path(job), plan, None).await;
        match sent {
            Sent::Answer {
                status: 200, body, ..
            } => Ok(BackendOutcome::Done(
                match parse_done(OperationKind::Provision, body.as_ref()) {
                    Ok(Done::Instance(r)) => Done::Instance(InstanceResult {
                        dashboard_url: r.dashboard_url.or(accepted.dashboard_url),
                        metadata: r.metadata.or(accepted.metadata),
                    }),
                    _ => Done::Instance(accepted),
                },
            )),
            Sent::Answer { .. } => Ok(BackendOutcome::Done(Done::Instance(accepted))),
            Sent::NotSent(e) | Sent::Lost(e) => Err(BackendError(e)),
        }
    }

    /// After an asynchronous bind succeeded: GET the binding for its credentials.
    async fn fetch_binding(&self, job: &BackendJob, plan: &UpstreamPlan) -> BackendResult {
        let sent = self.read(&self.resource_path(job), plan, None).await;
        match sent {
            Sent::Answer {
                status: 200, body, ..
            } => match parse_done(OperationKind::Bind, body.as_ref()) {
                Ok(d) => Ok(BackendOutcome::Done(d)),
                Err(m) => {
                    self.mitigate(
                        job,
                        plan,
                        format!("the upstream broker returned a malformed binding ({m})"),
                        0,
                    )
                    .await
                }
            },
            Sent::Answer { status, .. } => Err(BackendError(format!(
                "the upstream broker answered {status} when the binding was fetched"
            ))),
            Sent::NotSent(e) | Sent::Lost(e) => Err(BackendError(e)),
        }
    }

    async fn poll_mitigation(
        &self,
        job: &BackendJob,
        plan: &UpstreamPlan,
        reason: String,
        attempt: u32,
        operation: Option<String>,
    ) -> BackendResult {
        let Some(op) = operation else {
            return self.mitigate(job, plan, reason, attempt).await;
        };
        match self.last_operation(job, plan, Some(&op)).await {
            Sent::Answer { status: 410, .. } => Ok(mitigated(&reason)),
            Sent::Answer {
                status: 200,
                body,
                retry_after,
            } => match body
                .as_ref()
                .and_then(|b| b.get("state"))
                .and_then(|s| s.as_str())
            {
                Some("succeeded") => Ok(mitigated(&reason)),
                Some("failed") => {
                    self.mitigate(job, plan, reason, attempt.saturating_add(1))
                        .await
                }
                _ => Ok(in_progress(
                    Handle::Mitigating {
                        reason,
                        attempt,
                        operation: Some(op),
                    },
                    retry_after,
                )),
            },
            _ => Ok(in_progress(
                Handle::Mitigating {
                    reason,
                    attempt,
                    operation: Some(op),
                },
                Some(backoff(attempt)),
            )),
        }
    }

    async fn step(
        &self,
        job: &BackendJob,
        plan: &UpstreamPlan,
        handle: Option<&str>,
    ) -> BackendResult {
        let Some(handle) = handle else {
            return match job.kind {
                OperationKind::Provision | OperationKind::Bind => self.create(job, plan).await,
                OperationKind::Update => self.update(job, plan).await,
                OperationKind::Deprovision | OperationKind::Unbind => self.delete(job, plan).await,
            };
        };
        let handle: Handle = serde_json::from_str(handle)
            .map_err(|_| BackendError("the operation's upstream handle is unreadable".into()))?;
        match handle {
            h @ Handle::Upstream { .. } => self.poll_upstream(job, plan, h).await,
            Handle::Mitigating {
                reason,
                attempt,
                operation,
            } => {
                self.poll_mitigation(job, plan, reason, attempt, operation)
                    .await
            }
        }
    }

    /// A request that does not accept an asynchronous answer: an upstream that went asynchronous is
    /// polled here, up to `sync_wait` (below the platform's timeout); orphan mitigation is tried a few
    /// times. What is still in progress then is left to the worker (the pipeline records the handle).
    async fn run_synchronously(
        &self,
        job: &BackendJob,
        plan: &UpstreamPlan,
        mut outcome: BackendResult,
    ) -> BackendResult {
        let until = Instant::now() + self.upstream().sync_wait;
        let mut mitigation_attempts = 0;
        loop {
            let Ok(BackendOutcome::InProgress {
                handle,
                retry_after_secs,
            }) = &outcome
            else {
                return outcome;
            };
            let mitigating = handle.contains("\"h\":\"mitigating\"");
            if mitigating {
                mitigation_attempts += 1;
                if mitigation_attempts > INLINE_MITIGATION_ATTEMPTS {
                    return outcome;
                }
            }
            let pause = Duration::from_secs(*retry_after_secs).min(if mitigating {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(*retry_after_secs)
            });
            if Instant::now() + pause > until {
                return outcome;
            }
            tokio::time::sleep(pause).await;
            let handle = handle.clone();
            outcome = self.step(job, plan, Some(&handle)).await;
        }
    }
}

fn mitigated(reason: &str) -> BackendOutcome {
    BackendOutcome::Failed(format!(
        "{reason}; the upstream resource was deleted (orphan mitigation)"
    ))
}

/// The 202 body: a JSON object, `operation` a string when present.
fn parse_accepted(body: Option<&Value>) -> Result<Handle, String> {
    let b = body
        .and_then(|b| b.as_object())
        .ok_or("the body is not a JSON object")?;
    let operation = match b.get("operation") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 10_000 => Some(s.clone()),
        Some(_) => return Err("operation is not a string".into()),
    };
    let dashboard_url = opt_string(b, "dashboard_url")?;
    let metadata = opt_object(b, "metadata")?;
    Ok(Handle::Upstream {
        operation,
        dashboard_url,
        metadata,
    })
}

fn opt_string(b: &Object, key: &str) -> Result<Option<String>, String> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key} is not a string")),
    }
}

fn opt_object(b: &Object, key: &str) -> Result<Option<Object>, String> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o.clone())),
        Some(_) => Err(format!("{key} is not an object")),
    }
}

fn opt_array(b: &Object, key: &str) -> Result<Option<Vec<Value>>, String> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a.clone())),
        Some(_) => Err(format!("{key} is not an array")),
    }
}

/// The 200/201 body of a provision, update or bind, checked field by field; bindings pass `credentials`,
/// `metadata`, `endpoints`, `volume_mounts`, `syslog_drain_url` and `route_service_url` through.
fn parse_done(kind: OperationKind, body: Option<&Value>) -> Result<Done, String> {
    let b = body
        .and_then(|b| b.as_object())
        .ok_or("the body is not a JSON object")?;
    Ok(match kind {
        OperationKind::Bind => Done::Binding(BindingResult {
            credentials: opt_object(b, "credentials")?.map(Credentials),
            metadata: opt_object(b, "metadata")?,
            syslog_drain_url: opt_string(b, "syslog_drain_url")?,
            route_service_url: opt_string(b, "route_service_url")?,
            volume_mounts: opt_array(b, "volume_mounts")?,
            endpoints: opt_array(b, "endpoints")?,
        }),
        _ => Done::Instance(InstanceResult {
            dashboard_url: opt_string(b, "dashboard_url")?,
            metadata: opt_object(b, "metadata")?,
        }),
    })
}

#[async_trait]
impl Backend for UpstreamBackend {
    fn plan_job(&self, job: &BackendJob) -> Result<Option<u64>, BackendRejection> {
        self.plan(job)?;
        // Asynchronous whenever the platform allows it: the upstream may take any time, and a platform
        // request must not wait longer than its timeout.
        Ok(job.accepts_incomplete.then_some(DEFAULT_POLL_SECS))
    }

    async fn start(&self, job: &BackendJob) -> BackendResult {
        let plan = match self.plan(job) {
            Ok(p) => p,
            Err(e) => return Ok(BackendOutcome::Failed(e.0)),
        };
        let outcome = self.step(job, &plan, None).await;
        if job.accepts_incomplete {
            outcome
        } else {
            self.run_synchronously(job, &plan, outcome).await
        }
    }

    async fn poll(&self, job: &BackendJob, handle: &str) -> BackendResult {
        let plan = match self.plan(job) {
            Ok(p) => p,
            Err(e) => return Ok(BackendOutcome::Failed(e.0)),
        };
        let outcome = self.step(job, &plan, Some(handle)).await;
        if job.accepts_incomplete {
            outcome
        } else {
            self.run_synchronously(job, &plan, outcome).await
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_field_by_field() {
        let ok = json!({"credentials": {"u": "x"}, "endpoints": [{"host": "h", "ports": ["1"]}], "syslog_drain_url": "s"});
        let Done::Binding(b) = parse_done(OperationKind::Bind, Some(&ok)).unwrap() else {
            panic!()
        };
        assert_eq!(b.endpoints.unwrap().len(), 1);
        assert!(parse_done(OperationKind::Bind, Some(&json!({"credentials": "x"}))).is_err());
        assert!(parse_done(OperationKind::Bind, None).is_err());
        assert!(parse_done(OperationKind::Provision, Some(&json!([1]))).is_err());
        assert!(parse_done(OperationKind::Provision, Some(&json!({"dashboard_url": 3}))).is_err());
        assert!(parse_done(OperationKind::Provision, Some(&json!({}))).is_ok());
        assert!(parse_accepted(Some(&json!({"operation": 7}))).is_err());
        assert_eq!(
            parse_accepted(Some(&json!({"operation": "op-1"}))).unwrap(),
            Handle::Upstream {
                operation: Some("op-1".into()),
                dashboard_url: None,
                metadata: None
            }
        );
    }

    #[test]
    fn handles_round_trip_and_backoff_grows_to_a_bound() {
        let h = Handle::Mitigating {
            reason: "r".into(),
            attempt: 2,
            operation: None,
        };
        assert_eq!(serde_json::from_str::<Handle>(&h.encode()).unwrap(), h);
        assert!(h.encode().contains("\"h\":\"mitigating\""));
        assert_eq!(backoff(0), 2);
        assert_eq!(backoff(1), 4);
        assert_eq!(backoff(30), MAX_RETRY_SECS);
    }
}
