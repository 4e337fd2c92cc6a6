//! The webhook Lambda (SQS event source on the webhook queue): sends signed callbacks when async
//! operations end. No VPC, and a role that can only read/update the table's items and use its queues.
//! Wiring only: typed configuration from the environment, adapters built once per cold start.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use osb_broker::aws::AwsConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    osb_broker::aws::init_lambda_tracing();
    let cfg = AwsConfig::from_env(false)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let delivery = osb_webhooks::delivery(&cfg, &sdk)?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let delivery = delivery.clone();
        async move {
            let response = osb_webhooks::handle_batch(delivery, event.payload).await;
            // The invocation's metrics as EMF lines (CloudWatch metrics, namespace OsbBroker).
            osb_broker::metrics::global().flush_emf("webhooks");
            Ok::<_, Error>(response)
        }
    }))
    .await
}
