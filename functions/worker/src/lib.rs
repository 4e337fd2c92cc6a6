//! The worker Lambda's handlers: an SQS batch of operation messages, processed concurrently (one span
//! each, by the domain's `process_message`), reporting only the failed message ids
//! (`ReportBatchItemFailures`) so SQS redelivers just those; and the scheduled sweep (an EventBridge
//! event) that re-drives operations and webhook callbacks whose message was lost.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use osb_broker::broker::Broker;
use osb_broker::broker::worker::{SweepReport, process_message};
use std::sync::Arc;

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
