//! The worker Lambda (SQS event source on the operations queue, and a schedule for the sweep of
//! stalled operations): completes asynchronous operations.
//! Wiring only: typed configuration from the environment, adapters built once per cold start.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use osb_broker::aws::{self, AwsConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    osb_broker::aws::init_lambda_tracing();
    let cfg = AwsConfig::from_env(false)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let broker = aws::with_postgres(aws::broker(&cfg, &sdk)?, &cfg, &sdk).await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let broker = broker.clone();
        async move {
            osb_worker::handle_event(broker, event.payload)
                .await
                .map_err(Error::from)
        }
    }))
    .await
}
