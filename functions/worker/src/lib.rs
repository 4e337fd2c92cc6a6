//! The worker Lambda's handlers: an SQS batch of operation messages, processed concurrently (one span
//! each, by the domain's `process_message`), reporting only the failed message ids
//! (`ReportBatchItemFailures`) so SQS redelivers just those; and the scheduled sweep (an EventBridge
//! event) that re-drives operations and webhook callbacks whose message was lost; and the operator's
//! one-off `{"osb_reseal": …}` invocation that re-encrypts every stored secret (docs/deploy.md).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use osb_broker::broker::Broker;
use osb_broker::broker::worker::{SweepReport, process_message};
use osb_broker::ports::RecordKey;
use osb_broker::sealing::{RecordScan, reseal};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The key of an invocation that re-encrypts: `{"osb_reseal": {}}`, or `{"osb_reseal": {"from": {"pk":
/// …, "sk": …}}}` to go on from the `next` an earlier invocation answered.
pub const RESEAL_EVENT: &str = "osb_reseal";

/// How long one re-encryption invocation works before it answers `next` (the function's timeout is 30 s).
pub const RESEAL_BUDGET: Duration = Duration::from_secs(20);

/// Re-encrypts (writes again, sealed with the current KMS key) every item with secret fields, from the
/// event's `from` on, for at most `budget`; answers `{"rewritten", "skipped", "next"}` (`next` is null
/// once every item is done, else the `from` of the next invocation).
pub async fn handle_reseal<S>(
    store: &S,
    event: &serde_json::Value,
    budget: Duration,
) -> Result<serde_json::Value, osb_broker::error::BrokerError>
where
    S: osb_broker::ports::Store + RecordScan,
{
    let from = event[RESEAL_EVENT]
        .get("from")
        .filter(|f| !f.is_null())
        .map(|f| match (f["pk"].as_str(), f["sk"].as_str()) {
            (Some(pk), Some(sk)) => Ok(RecordKey {
                pk: pk.to_owned(),
                sk: sk.to_owned(),
            }),
            _ => Err(osb_broker::error::BrokerError::BadRequest(
                "osb_reseal.from must be {\"pk\": …, \"sk\": …}".into(),
            )),
        })
        .transpose()?;
    let report = reseal(store, store, from, Some(Instant::now() + budget)).await?;
    tracing::info!(
        rewritten = report.rewritten,
        skipped = report.skipped,
        done = report.next.is_none(),
        "re-encryption of stored secrets"
    );
    Ok(serde_json::json!({
        "rewritten": report.rewritten,
        "skipped": report.skipped,
        "next": report.next.map(|k| serde_json::json!({"pk": k.pk, "sk": k.sk})),
    }))
}

/// Dispatches an invocation: an SQS event (has `Records`) or the scheduled sweep (anything else, e.g. an
/// EventBridge `Scheduled Event`).
pub async fn handle_event(
    broker: Arc<Broker>,
    event: serde_json::Value,
) -> Result<serde_json::Value, osb_broker::error::BrokerError> {
    if event.get("Records").is_some() {
        let sqs: SqsEvent = serde_json::from_value(event).map_err(|e| {
            osb_broker::error::BrokerError::BadRequest(format!("not an SQS event: {e}"))
        })?;
        let response = handle_batch(broker, sqs).await;
        return serde_json::to_value(response)
            .map_err(|e| osb_broker::error::BrokerError::BadRequest(e.to_string()));
    }
    sweep_response(broker.sweep().await)
}

/// The scheduled sweep's answer: both counts once both sweeps ran; an error (the invocation fails, for
/// the errors alarm) when either index listing could not be read. Skipped items are logged by the sweep.
fn sweep_response(
    report: SweepReport,
) -> Result<serde_json::Value, osb_broker::error::BrokerError> {
    let (operations, callbacks) = match (report.operations, report.callbacks) {
        (Ok(o), Ok(c)) => (o, c),
        (Err(e), Ok(c)) | (Ok(c), Err(e)) => {
            // Which one failed is logged by the sweep; what the other did is logged here.
            tracing::error!(
                error = %e,
                redriven = c.redriven,
                failed = c.failed,
                "sweep incomplete: an index could not be read"
            );
            return Err(e);
        }
        (Err(e), Err(_)) => return Err(e),
    };
    tracing::info!(
        redriven = operations.redriven,
        failed = operations.failed,
        callbacks_redriven = callbacks.redriven,
        callbacks_failed = callbacks.failed,
        "sweep of stalled operations and webhook callbacks done"
    );
    Ok(serde_json::json!({
        "redriven": operations.redriven,
        "failed": operations.failed,
        "callbacks_redriven": callbacks.redriven,
        "callbacks_failed": callbacks.failed,
    }))
}

pub async fn handle_batch(broker: Arc<Broker>, event: SqsEvent) -> SqsBatchResponse {
    osb_broker::aws::batch::handle_sqs_batch(event, |body| {
        let broker = broker.clone();
        async move { process_message(&broker, &body).await }
    })
    .await
}
