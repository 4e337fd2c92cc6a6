//! Webhook callbacks (DESIGN §6): when an async operation with a registered webhook ends, the worker
//! serializes the body the synchronous call would have returned **once** and stores it with the
//! callback, in the same atomic write as the operation's final state; the callback's key then goes on
//! the webhook queue. `WebhookDelivery` consumes that queue: it takes a lease on the callback (so a
//! duplicate message sends nothing), signs and sends the stored bytes through the `WebhookSender` port,
//! records the attempt, and either finishes (delivered, gone, blocked, gave up — the secret and body are
//! removed) or schedules the next attempt (exponential backoff with jitter, `Retry-After` honoured).

use super::Broker;
use crate::error::{BrokerError, Result};
use crate::model::responses::ProvisionResponse;
use crate::ports::queue::MAX_DELAY;
use crate::ports::{
    AttemptOutcome, Clock, Queue, Record, Store, StoreError, Versioned, WebhookRequest,
    WebhookSender, Write, rfc3339_ms,
};
use crate::records::{
    AttemptRecord, Callback, CallbackState, Operation, OperationKey, OperationKind, OperationState,
};
use crate::webhooks::schedule::RetryPolicy;
use crate::webhooks::sign::{osb_signature, standard_signature};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Largest body a webhook carries; above it nothing is sent (`too_large`) and the platform polls.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Extra time a sender's lease lasts beyond the attempt's own deadline.
const LEASE_SLACK: Duration = Duration::from_secs(30);

/// Builds the callback of an operation that just finished, if a webhook was registered: takes the
/// registration off the operation (the secret then lives only on the callback) and serializes `body`.
/// Returns the write that creates it, to commit with the operation's final state.
pub(super) fn callback_on_finish<B: Serialize>(
    op: &mut Operation,
    status: u16,
    body: &B,
    now: i64,
) -> Result<Option<Write>> {
    let Some(reg) = op.webhook.take() else {
        return Ok(None);
    };
    let body = serde_json::to_string(body)
        .map_err(|e| BrokerError::Store(StoreError::Corrupt(format!("webhook body: {e}"))))?;
    // Over the cap nothing will be sent: record that at once, without the body or the secret (a body
    // near DynamoDB's 400 KB item limit would otherwise make the final commit itself fail).
    let too_large = body.len() > MAX_BODY_BYTES;
    if too_large {
        tracing::warn!(bytes = body.len(), "webhook body over the cap; not sent");
    }
    let (state, secret, body) = if too_large {
        (CallbackState::TooLarge, None, None)
    } else {
        (CallbackState::Pending, Some(reg.secret), Some(body))
    };
    Ok(Some(Write::create(Record::Callback(Callback {
        tenant: op.tenant.clone(),
        instance_id: op.instance_id.clone(),
        binding_id: op.binding_id.clone(),
        operation_id: op.id.clone(),
        kind: op.kind,
        url: reg.url,
        secret,
        body,
        status,
        outcome: op.state,
        completed_at: now,
        api_version: reg.api_version,
        request_identity: op.request_identity.clone(),
        state,
        next_attempt_at: now,
        lease_until: None,
        attempts: Vec::new(),
        created_at: now,
        updated_at: now,
    }))))
}

/// The status and OSB error body the synchronous call would have answered for a failed operation.
pub(super) fn failure_body(op: &Operation) -> (u16, crate::model::responses::ErrorBody) {
    let description = op
        .description
        .clone()
        .unwrap_or_else(|| format!("{} failed", op.kind.as_str()));
    let osb = BrokerError::BackendFailed(description).osb();
    let body = crate::model::responses::ErrorBody {
        error: osb.code.map(str::to_owned),
        description: osb.description,
        instance_usable: op.instance_usable,
        update_repeatable: op.update_repeatable,
    };
    (osb.status, body)
}

/// The body a synchronous call of `kind` returns on success, from the final records about to be written:
/// provision `{dashboard_url, metadata}`, update `{dashboard_url}`, bind the binding's result, else `{}`.
pub(super) fn success_body(kind: OperationKind, writes: &[Write]) -> serde_json::Value {
    let body = writes.iter().find_map(|w| match (&w.record, kind) {
        (Record::Instance(i), OperationKind::Provision) => {
            serde_json::to_value(ProvisionResponse {
                dashboard_url: i.dashboard_url.clone(),
                operation: None,
                metadata: i.metadata.clone(),
            })
            .ok()
        }
        (Record::Instance(i), OperationKind::Update) => serde_json::to_value(ProvisionResponse {
            dashboard_url: i.dashboard_url.clone(),
            ..Default::default()
        })
        .ok(),
        (Record::Binding(b), OperationKind::Bind) => {
            serde_json::to_value(b.result.clone().unwrap_or_default()).ok()
        }
        _ => None,
    });
    body.unwrap_or_else(|| serde_json::json!({}))
}

/// The status of the synchronous call's success: 201 for creations, 200 otherwise.
pub(super) fn success_status(kind: OperationKind) -> u16 {
    match kind {
        OperationKind::Provision | OperationKind::Bind => 201,
        _ => 200,
    }
}

/// The keys of the callbacks a batch of writes creates.
pub(super) fn created_callbacks(writes: &[Write]) -> Vec<OperationKey> {
    writes
        .iter()
        .filter_map(|w| match (&w.record, w.expected) {
            (Record::Callback(c), crate::ports::Expected::Absent) if !c.state.is_final() => {
                Some(c.key())
            }
            _ => None,
        })
        .collect()
}

impl Broker {
    /// After a commit: sends these callbacks' keys to the webhook queue.
    pub(super) async fn enqueue_callbacks(&self, keys: &[OperationKey]) -> Result<()> {
        for k in keys {
            self.enqueue_callback(k, Duration::ZERO).await?;
        }
        Ok(())
    }

    pub(super) async fn enqueue_callback(&self, key: &OperationKey, delay: Duration) -> Result<()> {
        super::send_key(self.webhook_queue.as_ref(), key, delay).await
    }
}

/// What to do with a webhook-queue message after processing it.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryStep {
    /// Delivery is final (now or before): acknowledge.
    Finished,
    /// Not yet: send the message again with this delay (capped at the queue's maximum), then acknowledge.
    Again(Duration),
}

/// The webhook sender's side: store, webhook queue, the HTTP sender and the retry policy.
#[derive(Clone)]
pub struct WebhookDelivery {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    /// Where a callback's message goes when delivery gives up (the DLQ on AWS); `None` locally.
    pub dead_letters: Option<Arc<dyn Queue>>,
    pub sender: Arc<dyn WebhookSender>,
    pub clock: Arc<dyn Clock>,
    pub retry: RetryPolicy,
    /// The sender's per-attempt deadline (the lease lasts longer).
    pub attempt_timeout: Duration,
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn final_state(outcome: &AttemptOutcome) -> Option<CallbackState> {
    match outcome {
        AttemptOutcome::Delivered { .. } => Some(CallbackState::Delivered),
        AttemptOutcome::Gone => Some(CallbackState::Gone),
        AttemptOutcome::BlockedDestination | AttemptOutcome::InvalidUrl => {
            Some(CallbackState::Blocked)
        }
        _ => None,
    }
}

impl WebhookDelivery {
    /// The delivery side of a broker: its store, webhook queue and clock, a guarded HTTP sender with this
    /// policy and the configured timeouts, and the retry schedule.
    #[cfg(feature = "webhook-sender")]
    pub fn over_http(
        broker: &Broker,
        policy: crate::webhooks::WebhookPolicy,
        settings: &crate::config::WebhookSettings,
        dead_letters: Option<Arc<dyn Queue>>,
    ) -> std::result::Result<Self, crate::webhooks::SenderBuildError> {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let sender = crate::webhooks::HttpSender::new(
            policy,
            crate::webhooks::SenderConfig {
                connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
                timeout,
                ..Default::default()
            },
        )?;
        Ok(WebhookDelivery {
            store: broker.store.clone(),
            queue: broker.webhook_queue.clone(),
            dead_letters,
            sender: Arc::new(sender),
            clock: broker.clock.clone(),
            retry: settings.retry.clone(),
            attempt_timeout: timeout,
        })
    }

    /// One step of a callback's delivery: at most one attempt.
    pub async fn deliver(&self, key: &OperationKey) -> Result<DeliveryStep> {
        for _ in 0..4 {
            let Some(Versioned {
                item: cb,
                mut version,
            }) = self.store.get_callback(key).await?
            else {
                tracing::warn!("message for an unknown callback; dropped");
                return Ok(DeliveryStep::Finished);
            };
            if cb.state.is_final() {
                return Ok(DeliveryStep::Finished);
            }
            let now = self.clock.now_ms();
            if cb.next_attempt_at > now {
                return Ok(DeliveryStep::Again(Duration::from_millis(
                    (cb.next_attempt_at - now) as u64,
                )));
            }
            if cb.state == CallbackState::Sending
                && let Some(until) = cb.lease_until
                && until > now
            {
                // Another sender is attempting right now: look again once its lease is over.
                return Ok(DeliveryStep::Again(Duration::from_millis(
                    (until - now) as u64,
                )));
            }
            let body = cb.body.clone().unwrap_or_default();
            if body.len() > MAX_BODY_BYTES {
                let mut done = cb.clone();
                self.finish(&mut done, CallbackState::TooLarge, now);
                match self.commit(done, version).await {
                    Err(BrokerError::Store(StoreError::Conflict)) => continue,
                    r => r?,
                }
                tracing::warn!(bytes = body.len(), "webhook body over the cap; not sent");
                return Ok(DeliveryStep::Finished);
            }
            // The lease: one sender per attempt, whatever the queue delivers twice.
            let mut cb = cb;
            cb.state = CallbackState::Sending;
            cb.lease_until = Some(now + ms(self.attempt_timeout + LEASE_SLACK));
            cb.updated_at = now;
            match self.commit(cb.clone(), version).await {
                Err(BrokerError::Store(StoreError::Conflict)) => continue,
                r => r?,
            }
            version += 1;
            return self.attempt(cb, version, body).await;
        }
        Err(BrokerError::Store(StoreError::Conflict))
    }

    async fn attempt(&self, mut cb: Callback, version: u64, body: String) -> Result<DeliveryStep> {
        let number = cb.attempts.len() as u32 + 1;
        let started = self.clock.now_ms();
        let request = self.request(&cb, number, started, body);
        let report = self.sender.send(&request).await;
        let now = self.clock.now_ms();
        let outcome = &report.outcome;
        crate::metrics::global().webhook_attempt(outcome.as_str());
        let retry_after = match outcome {
            AttemptOutcome::HttpStatus { retry_after, .. } => *retry_after,
            _ => None,
        };
        let first = cb.attempts.first().map_or(started, |a| a.started_at);
        let elapsed = Duration::from_millis((now - first).max(0) as u64);
        let (state, next) = match final_state(outcome) {
            Some(s) => (s, None),
            None => {
                let delay = self
                    .retry
                    .next_delay(number, retry_after, elapsed, &mut rand::rng());
                match delay {
                    Some(d) => (CallbackState::Retrying, Some(d)),
                    None => (CallbackState::GaveUp, None),
                }
            }
        };
        cb.attempts.push(AttemptRecord {
            number,
            started_at: started,
            duration_ms: report.duration.as_millis() as u64,
            outcome: outcome.as_str().to_owned(),
            status: outcome.status(),
            remote_ip: report.remote_ip.map(|ip| ip.to_string()),
            retry_after_secs: retry_after.map(|d| d.as_secs()),
            next_attempt_at: next.map(|d| now + ms(d)),
        });
        tracing::info!(
            attempt = number,
            outcome = outcome.as_str(),
            status = outcome.status(),
            duration_ms = report.duration.as_millis() as u64,
            state = state.as_str(),
            destination = %crate::webhooks::policy::redacted(&cb.url),
            "webhook attempt"
        );
        let step = match next {
            Some(d) => {
                cb.state = CallbackState::Retrying;
                cb.lease_until = None;
                cb.next_attempt_at = now + ms(d);
                cb.updated_at = now;
                DeliveryStep::Again(d)
            }
            None => {
                self.finish(&mut cb, state, now);
                DeliveryStep::Finished
            }
        };
        let gave_up = cb.state == CallbackState::GaveUp;
        let key = cb.key();
        self.commit(cb, version).await?;
        if gave_up {
            tracing::warn!("webhook delivery gave up; the platform must poll last_operation");
            if let Some(dlq) = &self.dead_letters {
                super::send_key(dlq.as_ref(), &key, Duration::ZERO).await?;
            }
        }
        Ok(step)
    }

    /// The exact request of one attempt: the stored bytes, both signatures, the identification headers.
    fn request(&self, cb: &Callback, attempt: u32, now_ms: i64, body: String) -> WebhookRequest {
        let secret = cb.secret.as_deref().unwrap_or_default().as_bytes();
        let ts = now_ms / 1000;
        let id = cb.operation_id.as_str();
        let mut headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            (
                "x-osb-signature".to_owned(),
                osb_signature(secret, body.as_bytes()),
            ),
            ("webhook-id".to_owned(), id.to_owned()),
            ("webhook-timestamp".to_owned(), ts.to_string()),
            (
                "webhook-signature".to_owned(),
                standard_signature(secret, id, ts, body.as_bytes()),
            ),
            ("x-osb-operation".to_owned(), id.to_owned()),
            (
                "x-osb-operation-type".to_owned(),
                cb.kind.as_str().to_owned(),
            ),
            ("x-osb-instance-id".to_owned(), cb.instance_id.to_string()),
            (
                "x-osb-state".to_owned(),
                match cb.outcome {
                    OperationState::Succeeded => "succeeded",
                    _ => "failed",
                }
                .to_owned(),
            ),
            ("x-osb-status".to_owned(), cb.status.to_string()),
            ("x-osb-completed-at".to_owned(), rfc3339_ms(cb.completed_at)),
            ("x-osb-attempt".to_owned(), attempt.to_string()),
        ];
        if let Some(b) = &cb.binding_id {
            headers.push(("x-osb-binding-id".to_owned(), b.to_string()));
        }
        if let Some(v) = &cb.api_version {
            headers.push(("x-broker-api-version".to_owned(), v.clone()));
        }
        if let Some(r) = &cb.request_identity {
            headers.push(("x-broker-api-request-identity".to_owned(), r.clone()));
        }
        WebhookRequest {
            url: cb.url.clone(),
            headers,
            body: bytes::Bytes::from(body),
        }
    }

    /// A final outcome: nothing more to send, so the secret and the body go.
    fn finish(&self, cb: &mut Callback, state: CallbackState, now: i64) {
        cb.state = state;
        // A delivery that gave up keeps its (sealed) secret and body until the record expires, so the
        // operator can re-drive it (admin API); every other final state drops them.
        if state != CallbackState::GaveUp {
            cb.secret = None;
            cb.body = None;
        }
        cb.lease_until = None;
        cb.updated_at = now;
    }

    async fn commit(&self, cb: Callback, version: u64) -> Result<()> {
        self.store
            .commit(vec![Write::replace(Record::Callback(cb), version)])
            .await?;
        Ok(())
    }

    /// Processes one webhook-queue message (the same contract as `worker::process_message`).
    pub async fn process_message(&self, body: &str) -> Result<()> {
        let key: OperationKey = match serde_json::from_str(body) {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "undecodable webhook message; dropped");
                return Ok(());
            }
        };
        let span =
            tracing::info_span!("webhook", operation = %key.operation_id, tenant = %key.tenant);
        async {
            match self.deliver(&key).await? {
                DeliveryStep::Finished => Ok(()),
                DeliveryStep::Again(delay) => Ok(self
                    .queue
                    .send(body.to_owned(), delay.min(MAX_DELAY))
                    .await?),
            }
        }
        .instrument(span)
        .await
    }

    /// Runs `concurrency` consumers of the webhook queue until the task is dropped (local mode).
    pub async fn run(self: Arc<Self>, concurrency: usize) {
        let visibility = self.attempt_timeout + LEASE_SLACK;
        let queue = self.queue.clone();
        super::worker::consume(queue, "webhooks", concurrency, visibility, move |body| {
            let this = self.clone();
            async move { this.process_message(&body).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ports::BackendJob;
    use crate::records::{RequestMeta, WebhookRegistration};

    fn op_with_webhook() -> Operation {
        let job = BackendJob {
            kind: OperationKind::Bind,
            operation_id: crate::ids::OperationId::parse("01JD0000000000000000000000").unwrap(),
            tenant: "cf1".into(),
            instance_id: crate::ids::InstanceId::parse("i1").unwrap(),
            generation: 1,
            binding_id: Some(crate::ids::BindingId::parse("b1").unwrap()),
            binding_generation: 1,
            lease: None,
            service_id: "s".into(),
            plan_id: "p".into(),
            parameters: None,
            started_at: 1,
            context: None,
            originating_identity: None,
            accepts_incomplete: false,
            bind_resource: None,
            organization_guid: None,
            space_guid: None,
        };
        let meta = RequestMeta {
            webhook: Some(WebhookRegistration {
                url: "https://platform.example.com/cb".into(),
                secret: "s3cret".into(),
                api_version: None,
            }),
            ..Default::default()
        };
        Operation::start(&job, true, &meta)
    }

    #[test]
    fn a_body_over_the_cap_is_recorded_too_large_without_body_or_secret_and_not_queued() {
        let mut op = op_with_webhook();
        let big = serde_json::json!({"credentials": {"blob": "\"".repeat(MAX_BODY_BYTES)}});
        let w = callback_on_finish(&mut op, 201, &big, 5).unwrap().unwrap();
        assert!(
            op.webhook.is_none(),
            "the registration moved off the operation"
        );
        let Record::Callback(cb) = &w.record else {
            panic!("a callback")
        };
        assert_eq!(cb.state, CallbackState::TooLarge);
        assert_eq!((cb.secret.clone(), cb.body.clone()), (None, None));
        assert!(created_callbacks(std::slice::from_ref(&w)).is_empty());

        let mut op = op_with_webhook();
        let w = callback_on_finish(&mut op, 201, &serde_json::json!({}), 5)
            .unwrap()
            .unwrap();
        assert_eq!(created_callbacks(std::slice::from_ref(&w)).len(), 1);
        let mut op = op_with_webhook();
        op.webhook = None;
        assert!(
            callback_on_finish(&mut op, 201, &serde_json::json!({}), 5)
                .unwrap()
                .is_none()
        );
    }
}
