//! The worker Lambda's handler: an SQS batch of operation messages, processed concurrently (one span
//! each, by the domain's `process_message`); only the failed message ids are reported
//! (`ReportBatchItemFailures`), so SQS redelivers just those.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use osb_broker::broker::Broker;
use osb_broker::broker::worker::process_message;
use std::collections::HashSet;
use std::sync::Arc;

pub async fn handle_batch(broker: Arc<Broker>, event: SqsEvent) -> SqsBatchResponse {
    let ids: Vec<String> = event
        .records
        .iter()
        .map(|r| r.message_id.clone().unwrap_or_default())
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for record in event.records {
        let broker = broker.clone();
        tasks.spawn(async move {
            let id = record.message_id.unwrap_or_default();
            let body = record.body.unwrap_or_default();
            match process_message(&broker, &body).await {
                Ok(()) => Some(id),
                Err(e) => {
                    tracing::error!(message_id = %id, error = %e, "operation step failed; SQS will redeliver it");
                    None
                }
            }
        });
    }
    let mut succeeded = HashSet::new();
    while let Some(done) = tasks.join_next().await {
        // A panicked task leaves its id out of `succeeded`: it is reported as failed.
        if let Ok(Some(id)) = done {
            succeeded.insert(id);
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = ids
        .into_iter()
        .filter(|id| !succeeded.contains(id))
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}
