//! The worker Lambda's handlers: an SQS batch of operation messages, processed concurrently (one span
//! each, by the domain's `process_message`), reporting only the failed message ids
//! (`ReportBatchItemFailures`) so SQS redelivers just those; and the scheduled sweep (an EventBridge
//! event) that re-drives operations whose message was lost.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use osb_broker::broker::Broker;
use osb_broker::broker::worker::process_message;
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
    let redriven = broker.sweep_stalled().await?;
    let callbacks = broker.sweep_callbacks().await?;
    tracing::info!(
        redriven,
        callbacks,
        "sweep of stalled operations and webhook callbacks done"
    );
    Ok(serde_json::json!({ "redriven": redriven, "callbacks_redriven": callbacks }))
}

pub async fn handle_batch(broker: Arc<Broker>, event: SqsEvent) -> SqsBatchResponse {
    osb_broker::aws::batch::handle_sqs_batch(event, |body| {
        let broker = broker.clone();
        async move { process_message(&broker, &body).await }
    })
    .await
}
