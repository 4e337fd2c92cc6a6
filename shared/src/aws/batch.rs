//! SQS batches as the Lambda event source delivers them (`ReportBatchItemFailures`): every message handled
//! concurrently, only the failed ones reported so SQS redelivers just those. Shared by the worker and the
//! webhook sender functions.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use std::collections::HashSet;
use std::future::Future;

/// Runs `handle(body)` for every record of the batch at once; a record whose handler fails (or panics) is
/// reported as a batch item failure.
pub async fn handle_sqs_batch<F, Fut>(event: SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), crate::error::BrokerError>> + Send + 'static,
{
    let ids: Vec<String> = event
        .records
        .iter()
        .map(|r| r.message_id.clone().unwrap_or_default())
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for record in event.records {
        let id = record.message_id.unwrap_or_default();
        let work = handle(record.body.unwrap_or_default());
        tasks.spawn(async move {
            match work.await {
                Ok(()) => Some(id),
                Err(e) => {
                    tracing::error!(message_id = %id, error = %e, "message failed; SQS will redeliver it");
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
