//! AWS adapters of the ports: DynamoDB store (single table), SQS queue, tenants from Secrets Manager,
//! and the typed configuration of the Lambda functions, read once from the environment.

pub mod batch;
pub mod config;
pub mod dynamodb;
pub mod kms;
pub mod maintenance;
pub mod sqs;
pub mod tenants;
pub mod testing;

pub use aws_sdk_sqs::Client as SqsClient;
pub use config::AwsConfig;
pub use dynamodb::DynamoStore;
pub use kms::KmsSealer;
pub use sqs::SqsQueue;

/// The logging of every Lambda function: JSON lines (CloudWatch Logs Insights reads their fields), level
/// from `RUST_LOG` (default `info`), no timestamp (Lambda adds its own).
pub fn init_lambda_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .without_time()
        .init();
}

/// The error code of an SDK error, for classification and logs; never the whole error (which may
/// carry request details).
pub(crate) fn error_code<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("unknown").to_owned()
}

use crate::backends::simulated::{MemoryLedger, SimulatedBackend};
use crate::broker::Broker;
use crate::ports::{SystemClock, UlidGenerator};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum AwsStartError {
    #[error(transparent)]
    Env(#[from] config::EnvError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Secret(#[from] tenants::TenantSecretError),
    #[error("invalid tenants: {0}")]
    Tenants(#[from] crate::tenants::TenantError),
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::WebhookPolicyError),
    #[error("cannot build the webhook sender: {0}")]
    Sender(String),
}

/// The DynamoDB store of the broker's table, sealing secrets with KMS data keys (cached per cold start).
pub fn store(cfg: &AwsConfig, sdk: &aws_config::SdkConfig) -> Arc<DynamoStore> {
    Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(sdk),
        cfg.table.clone(),
        sealer(cfg, sdk),
    ))
}

/// The broker on DynamoDB + SQS with the simulated backend, built once per cold start.
pub fn broker(cfg: &AwsConfig, sdk: &aws_config::SdkConfig) -> Result<Arc<Broker>, AwsStartError> {
    broker_on(cfg, sdk, store(cfg, sdk))
}

/// `broker` on a given store (the worker shares its store with the re-encryption command).
pub fn broker_on(
    cfg: &AwsConfig,
    sdk: &aws_config::SdkConfig,
    store: Arc<DynamoStore>,
) -> Result<Arc<Broker>, AwsStartError> {
    let catalog = Arc::new(crate::config::load_catalog(cfg.catalog_file.as_deref())?);
    let clock = Arc::new(SystemClock);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    Ok(Arc::new(Broker {
        catalog: catalog.clone(),
        store,
        queue: Arc::new(SqsQueue::new(sqs.clone(), cfg.operations_queue_url.clone())),
        // The simulated backend on Lambda is a demo: its ledger lives in each function instance's memory,
        // its credentials are derived (the same in every instance) from a key tied to the table.
        backend: Arc::new(SimulatedBackend::new(
            catalog,
            clock.clone(),
            Arc::new(MemoryLedger::default()),
            crate::sharing::TokenKey::derive_from(
                format!("simulated-backend credentials\0{}", cfg.table).as_bytes(),
            )
            .into_bytes(),
        )),
        clock,
        ids: Arc::new(UlidGenerator),
        webhook_queue: Arc::new(SqsQueue::new(sqs, cfg.webhook_queue_url.clone())),
        webhook_policy: Arc::new(webhook_policy(cfg)?),
        // Replaced by the API (`api_state`) with the key derived from the tenants' secret; the worker
        // never derives tokens.
        sharing: Arc::new(crate::sharing::SharingSettings::new(
            crate::sharing::TokenKey::random(),
            crate::sharing::token::DEFAULT_TOKEN_LIFETIME_SECS,
        )),
    }))
}

/// The sealer of the stored secrets on AWS: KMS envelope encryption under `OSB_KMS_KEY_ID`.
pub fn sealer(cfg: &AwsConfig, sdk: &aws_config::SdkConfig) -> Arc<KmsSealer> {
    Arc::new(KmsSealer::new(
        aws_sdk_kms::Client::new(sdk),
        cfg.kms_key_id.clone(),
    ))
}

/// The webhook URL policy on AWS: the defaults (https, public addresses, ports 443/8443), plain http
/// only when `OSB_WEBHOOK_ALLOW_HTTP=true`. Loopback is never allowed here.
pub fn webhook_policy(
    cfg: &AwsConfig,
) -> Result<crate::webhooks::WebhookPolicy, crate::webhooks::WebhookPolicyError> {
    let mut policy = crate::webhooks::WebhookPolicy::default();
    policy.allow_http = cfg.webhook_allow_http;
    policy.validate_for(crate::webhooks::Deployment::Aws)
}

/// The API's state: the broker plus the tenants read from Secrets Manager.
pub async fn api_state(
    cfg: &AwsConfig,
    sdk: &aws_config::SdkConfig,
    body_limit: usize,
) -> Result<crate::http::AppState, AwsStartError> {
    let mut broker = (*broker(cfg, sdk)?).clone();
    let secret_id = cfg.tenants_secret_id.clone().unwrap_or_default();
    let text = tenants::load_text(&aws_sdk_secretsmanager::Client::new(sdk), &secret_id).await?;
    let configs = tenants::parse(&text)?;
    // Sharing tokens: the key is derived from the tenants' secret (server-side, never in the table).
    broker.sharing = Arc::new(crate::sharing::SharingSettings::new(
        crate::sharing::TokenKey::derive_from(text.as_bytes()),
        crate::sharing::token::DEFAULT_TOKEN_LIFETIME_SECS,
    ));
    let broker = Arc::new(broker);
    let tenants = Arc::new(crate::tenants::Tenants::new(configs, |s| {
        broker.catalog.service(s).is_some()
    })?);
    Ok(crate::http::AppState::new(broker, tenants, body_limit))
}
