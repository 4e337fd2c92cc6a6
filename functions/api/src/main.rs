//! The API Lambda: the OSB router behind API Gateway (HTTP API, payload 2.0), run by `lambda_http`.
//! With `OSB_TABLE_NAME` set it runs on DynamoDB + SQS (see `osb_broker::aws::config`); otherwise on
//! the embedded adapters, with the configuration file named by `OSB_CONFIG`.

use osb_api::app;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    osb_broker::aws::init_lambda_tracing();
    // After each request, its metrics as EMF lines (CloudWatch metrics, namespace OsbBroker).
    let router = app::from_env().await?.layer(axum::middleware::map_response(
        |resp: axum::response::Response| async move {
            osb_broker::metrics::global().flush_emf("api");
            resp
        },
    ));
    lambda_http::run(router).await
}
