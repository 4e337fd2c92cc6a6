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
    let store = aws::store(&cfg, &sdk);
    let broker = aws::with_postgres(aws::broker_on(&cfg, &sdk, store.clone())?, &cfg, &sdk).await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let (broker, store) = (broker.clone(), store.clone());
        async move {
            if event.payload.get(osb_worker::RESEAL_EVENT).is_some() {
                return osb_worker::handle_reseal(
                    store.as_ref(),
                    &event.payload,
                    osb_worker::RESEAL_BUDGET,
                )
                .await
                .map_err(Error::from);
            }
            let result = osb_worker::handle_event(broker, event.payload).await;
            // The invocation's metrics as EMF lines (CloudWatch metrics, namespace OsbBroker).
            osb_broker::metrics::global().flush_emf("worker");
            result.map_err(Error::from)
        }
    }))
    .await
}
