//! The webhook Lambda's handler: an SQS batch of callback messages (each the key of a finished
//! operation's callback), delivered concurrently by the domain's `WebhookDelivery` — one attempt per
//! message at most, the next one re-sent with its backoff delay — reporting only failed message ids.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use osb_broker::aws::{self, AwsConfig, AwsStartError};
use osb_broker::broker::webhooks::WebhookDelivery;
use osb_broker::config::WebhookSettings;
use std::sync::Arc;

/// The delivery side on DynamoDB + SQS: the broker's store and webhook queue, the guarded HTTP sender
/// with the AWS policy (https, public addresses; never loopback), and the dead-letter queue that
/// receives a callback's message when delivery gives up.
pub fn delivery(
    cfg: &AwsConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<Arc<WebhookDelivery>, AwsStartError> {
    let broker = aws::broker(cfg, sdk)?;
    let dlq = cfg.webhook_dlq_url.as_ref().map(|url| {
        Arc::new(aws::SqsQueue::new(aws::SqsClient::new(sdk), url.clone()))
            as Arc<dyn osb_broker::ports::Queue>
    });
    let policy = aws::webhook_policy(cfg)?;
    WebhookDelivery::over_http(&broker, policy, &WebhookSettings::default(), dlq)
        .map(Arc::new)
        .map_err(|e| AwsStartError::Sender(e.to_string()))
}

pub async fn handle_batch(delivery: Arc<WebhookDelivery>, event: SqsEvent) -> SqsBatchResponse {
    aws::batch::handle_sqs_batch(event, |body| {
        let delivery = delivery.clone();
        async move { delivery.process_message(&body).await }
    })
    .await
}
