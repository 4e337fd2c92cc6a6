//! The broker's use cases: what each OSB request does to instances, bindings and operations, and how the
//! worker completes asynchronous operations. Handlers call these; these call the ports.

pub mod admin;
mod bindings;
mod decide;
mod instances;
pub mod last_operation;
mod pipeline;
mod sharing;
mod sweep;
pub mod webhooks;
pub mod worker;

use crate::catalog::{Catalog, PlanRef, SchemaKind};
use crate::error::{BrokerError, Result};
use crate::ids::{InstanceId, OperationId};
use crate::model::Object;
use crate::ports::{Backend, BackendJob, Clock, IdGenerator, Queue, Store};
use crate::records::{OperationKey, OperationKind};
use crate::tenants::Tenant;
use std::sync::Arc;
use std::time::Duration;

pub use worker::{WorkerStep, run_workers};

/// The parameter key the simulated backend reads its per-request overrides from; never schema-checked.
pub const SIMULATE_KEY: &str = "simulate";

/// How many times a request re-reads and retries after losing a race on a version check: enough for a
/// burst of concurrent binds of one instance (each rewrites the instance record, one wins per round).
const MAX_RACE_RETRIES: usize = 16;
/// The longest pause before a retry; pauses grow from 1 ms and are jittered, so losers spread out.
const MAX_RACE_PAUSE_MS: u64 = 16;

/// How one attempt of a use case (read → decide → commit) ended.
enum Attempt<T> {
    /// Decided: the answer (with its writes committed, or one that needs none).
    Done(T),
    /// Lost a race on a version check, nothing written: read again and decide again.
    Retry,
}

/// Runs `attempt` until it is done, at most `MAX_RACE_RETRIES` times; after as many lost races, 422
/// `ConcurrencyError` "`what` is being changed by another request".
///
/// A closure returning a future rather than an async closure: with `AsyncFnMut` the compiler (1.95) cannot
/// prove the request's future `Send` (rust-lang/rust#139475), which axum and Lambda need.
async fn race_retry<T, Fut>(what: &str, mut attempt: impl FnMut() -> Fut) -> Result<T>
where
    Fut: std::future::Future<Output = Result<Attempt<T>>>,
{
    for round in 0..MAX_RACE_RETRIES {
        if let Attempt::Done(answer) = attempt().await? {
            return Ok(answer);
        }
        if round > 0 {
            let cap = (1u64 << round.min(6)).min(MAX_RACE_PAUSE_MS);
            let pause = rand::Rng::random_range(&mut rand::rng(), 0..=cap);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
    Err(BrokerError::Concurrency(format!(
        "{what} is being changed by another request"
    )))
}

/// What a mutating request answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<T> {
    /// 200: the resource already exists as asked (or the change is done).
    Ok(T),
    /// 201: created now.
    Created(T),
    /// 202: accepted, in progress.
    Accepted { operation: OperationId, body: T },
}

/// The ports and the catalog the use cases run on.
#[derive(Clone)]
pub struct Broker {
    pub catalog: Arc<Catalog>,
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub backend: Arc<dyn Backend>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
    /// Where finished operations' webhook callbacks are queued for the sender.
    pub webhook_queue: Arc<dyn Queue>,
    /// What `webhook` URLs and secrets a request may register.
    pub webhook_policy: Arc<crate::webhooks::policy::WebhookPolicy>,
    /// Sharing: the server-side token key and the token lifetime.
    pub sharing: Arc<crate::sharing::SharingSettings>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("catalog", &self.catalog)
            .finish()
    }
}

fn required<'a>(value: Option<&'a str>, name: &str) -> Result<&'a str> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(BrokerError::BadRequest(format!("{name} is required"))),
    }
}

/// Most JSON bytes of platform-supplied fields (parameters, context, bind_resource) one record keeps: far
/// below DynamoDB's 400 KB item limit even with the operation that copies them, whatever body limit the
/// operator configured, and however often PATCH merges new parameter keys in.
pub const MAX_STORED_PLATFORM_BYTES: usize = 64 * 1024;

/// The JSON size of the platform-supplied fields a record would keep; an error naming the bound above it.
fn check_stored_size(
    fields: &[Option<&Object>],
    too_big: impl FnOnce(usize) -> BrokerError,
) -> Result<()> {
    let size: usize = fields
        .iter()
        .flatten()
        .map(|o| serde_json::to_vec(o).map_or(usize::MAX, |v| v.len()))
        .fold(0, usize::saturating_add);
    if size > MAX_STORED_PLATFORM_BYTES {
        return Err(too_big(size));
    }
    Ok(())
}

/// Parameters as the comparison for idempotency sees them: absent and `{}` are the same.
fn same_parameters(a: &Option<Object>, b: &Option<Object>) -> bool {
    let empty = Object::new();
    a.as_ref().unwrap_or(&empty) == b.as_ref().unwrap_or(&empty)
}

/// Sends an operation's key — all a message of the operations or webhook queue carries.
pub(crate) async fn send_key(queue: &dyn Queue, key: &OperationKey, delay: Duration) -> Result<()> {
    let body = serde_json::to_string(key)
        .map_err(|e| BrokerError::BadRequest(format!("cannot encode operation key: {e}")))?;
    queue.send(body, delay).await?;
    Ok(())
}

impl Broker {
    /// The plan of a request: both ids given, the offering visible to the tenant, the plan one of its plans.
    fn resolve_plan(
        &self,
        tenant: &Tenant,
        service_id: Option<&str>,
        plan_id: Option<&str>,
    ) -> Result<PlanRef<'_>> {
        let service_id = required(service_id, "service_id")?;
        let plan_id = required(plan_id, "plan_id")?;
        let service = self.resolve_service(tenant, service_id)?;
        match self.catalog.plan_by_id(plan_id) {
            Some(p) if p.service.id == service.id => Ok(p),
            _ => Err(BrokerError::BadRequest(format!(
                "plan_id '{plan_id}' is not a plan of service '{service_id}'"
            ))),
        }
    }

    fn resolve_service(
        &self,
        tenant: &Tenant,
        service_id: &str,
    ) -> Result<&crate::catalog::ServiceOffering> {
        match self.catalog.service(service_id) {
            Some(s) if tenant.can_use(&s.id) => Ok(s),
            _ => Err(BrokerError::BadRequest(format!(
                "service_id '{service_id}' is not in the catalog"
            ))),
        }
    }

    /// Checks parameters against the plan's schema (the simulated backend's `simulate` key aside).
    fn validate_parameters(
        &self,
        plan: &PlanRef<'_>,
        kind: SchemaKind,
        parameters: &Option<Object>,
    ) -> Result<()> {
        let Some(params) = parameters else {
            return Ok(());
        };
        let mut params = params.clone();
        params.remove(SIMULATE_KEY);
        self.catalog
            .validate_parameters(&plan.plan.id, kind, &serde_json::Value::Object(params))
            .map_err(|errors| {
                BrokerError::BadRequest(format!(
                    "parameters do not match the plan's schema: {}",
                    errors.join("; ")
                ))
            })
    }

    /// Asks the backend whether the job finishes at once (`None`) or asynchronously (`Some(seconds)`),
    /// and refuses an async job when the platform does not accept incomplete answers.
    fn plan_job(&self, job: &BackendJob, accepts_incomplete: bool) -> Result<Option<u64>> {
        let mut job = job.clone();
        job.accepts_incomplete = accepts_incomplete;
        let estimate = self
            .backend
            .plan_job(&job)
            .map_err(|e| BrokerError::BadRequest(e.0))?;
        if estimate.is_some() && !accepts_incomplete {
            return Err(BrokerError::AsyncRequired(format!(
                "this {} can only be done asynchronously; send accepts_incomplete=true",
                job.kind.as_str()
            )));
        }
        Ok(estimate)
    }

    /// The unix-ms deadline of an operation on the plan, from its `maximum_polling_duration`.
    fn deadline(&self, plan: &PlanRef<'_>, now: i64) -> Option<i64> {
        plan.plan
            .maximum_polling_duration
            .map(|s| now.saturating_add((s as i64).saturating_mul(1000)))
    }

    /// Commits a request's writes and, for an async operation, then sends its message. `false` when the
    /// commit lost a race (nothing written): the caller re-reads and decides again.
    async fn commit_then_enqueue(
        &self,
        writes: Vec<crate::ports::Write>,
        operation: Option<&OperationKey>,
    ) -> Result<bool> {
        // A delete that cancelled a creation with a webhook: its callback goes out after the commit.
        let callbacks = webhooks::created_callbacks(&writes);
        match self.store.commit(writes).await {
            Err(crate::ports::StoreError::Conflict) => return Ok(false),
            r => r?,
        }
        self.enqueue_callbacks(&callbacks).await?;
        if let Some(key) = operation {
            self.enqueue(key, Duration::ZERO).await?;
        }
        Ok(true)
    }

    /// Puts the operation on the operations queue for the worker.
    async fn enqueue(&self, key: &OperationKey, delay: Duration) -> Result<()> {
        send_key(self.queue.as_ref(), key, delay).await
    }

    #[allow(clippy::too_many_arguments)]
    fn job(
        &self,
        kind: OperationKind,
        operation_id: &OperationId,
        target: &Target<'_>,
        service_id: &str,
        plan_id: &str,
        parameters: Option<Object>,
        started_at: i64,
    ) -> BackendJob {
        BackendJob {
            kind,
            operation_id: operation_id.clone(),
            tenant: target.tenant.to_owned(),
            instance_id: target.instance_id.clone(),
            generation: target.generation,
            binding_id: target.binding.map(|(b, _)| b.clone()),
            binding_generation: target.binding.map_or(0, |(_, g)| g),
            lease: None,
            service_id: service_id.to_owned(),
            plan_id: plan_id.to_owned(),
            parameters,
            started_at,
            context: None,
            originating_identity: None,
            accepts_incomplete: false,
            bind_resource: None,
            organization_guid: None,
            space_guid: None,
        }
    }

    /// The answer to a request that repeats an operation still in progress (same attributes): 202 with
    /// its operation when the platform accepts incomplete answers; otherwise 422, `AsyncRequired` when the
    /// operation is asynchronous, `ConcurrencyError` when another request is running it synchronously.
    async fn repeated_in_progress<T>(
        &self,
        tenant: &str,
        instance_id: &InstanceId,
        operation: Option<&OperationId>,
        accepts_incomplete: bool,
        body: T,
    ) -> Result<Reply<T>> {
        let operation = operation.cloned().ok_or_else(|| {
            BrokerError::Store(crate::ports::StoreError::Corrupt(
                "resource in progress without operation".into(),
            ))
        })?;
        if accepts_incomplete {
            return Ok(Reply::Accepted { operation, body });
        }
        let key = OperationKey {
            tenant: tenant.to_owned(),
            instance_id: instance_id.clone(),
            operation_id: operation,
        };
        match self.store.get_operation(&key).await? {
            Some(op) if op.item.asynchronous => Err(BrokerError::AsyncRequired(format!(
                "this {} is in progress asynchronously; send accepts_incomplete=true to follow it",
                op.item.kind.as_str()
            ))),
            _ => Err(BrokerError::Concurrency(
                "the same request is being processed; retry when it is over".into(),
            )),
        }
    }
}

/// What an operation acts on, as the backend identifies it (see `ports::backend`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Target<'a> {
    pub tenant: &'a str,
    pub instance_id: &'a InstanceId,
    pub generation: u64,
    pub binding: Option<(&'a crate::ids::BindingId, u64)>,
}
