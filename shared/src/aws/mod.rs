//! AWS adapters of the ports: DynamoDB store (single table), SQS queue, tenants from Secrets Manager,
//! and the typed configuration of the Lambda functions, read once from the environment.

pub mod batch;
pub mod config;
pub mod dynamodb;
pub mod kms;
pub mod maintenance;
pub mod postgres;
pub mod secrets;
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
    let mut filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Never the PostgreSQL client's statement texts (a CREATE ROLE carries a password verifier).
    if let Ok(d) = crate::backends::postgresql::SQL_LOG_DIRECTIVE.parse() {
        filter = filter.add_directive(d);
    }
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .without_time()
        .init();
}

/// The error code of an SDK error, for classification and logs; never the whole error (which may
/// carry request details).
pub(crate) fn error_code<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("unknown").to_owned()
}

use crate::backends::Dispatcher;
use crate::backends::postgresql::PostgresBackend;
use crate::backends::simulated::{MemoryLedger, SimulatedBackend};
use crate::broker::Broker;
use crate::ports::Backend;
use crate::ports::{SystemClock, UlidGenerator};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum AwsStartError {
    #[error(transparent)]
    Env(#[from] config::EnvError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Secret(#[from] tenants::TenantSecretError),
    #[error(transparent)]
    SecretRead(#[from] secrets::SecretReadError),
    #[error(transparent)]
    AdminSecret(#[from] AdminSecretShape),
    #[error(transparent)]
    Admin(#[from] crate::broker::admin::AdminConfigError),
    #[error("invalid tenants: {0}")]
    Tenants(#[from] crate::tenants::TenantError),
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::WebhookPolicyError),
    #[error("cannot build the webhook sender: {0}")]
    Sender(String),
    #[error(transparent)]
    SharingKeys(#[from] crate::sharing::token::KeySetError),
    #[error(transparent)]
    PostgresSecret(#[from] postgres::PostgresSecretError),
    #[error(transparent)]
    UnknownServer(#[from] crate::backends::UnknownServer),
    #[error("postgresql backend: {0}")]
    Postgres(crate::ports::BackendError),
}

/// The simulated backend on Lambda is a demo: its ledger lives in each function instance's memory, its
/// credentials are derived (the same in every instance) from a key tied to the table.
fn simulated(
    cfg: &AwsConfig,
    catalog: &Arc<crate::catalog::Catalog>,
    clock: &Arc<SystemClock>,
) -> Arc<dyn Backend> {
    Arc::new(SimulatedBackend::new(
        catalog.clone(),
        clock.clone(),
        Arc::new(MemoryLedger::default()),
        crate::sharing::TokenKey::derive_from(
            format!("simulated-backend credentials\0{}", cfg.table).as_bytes(),
        )
        .into_bytes(),
    ))
}

/// The broker with the PostgreSQL server of `OSB_POSTGRES_SECRET_ID` (read from Secrets Manager) beside the
/// simulated backend. Without the variable, a catalog with PostgreSQL plans stops the cold start.
pub async fn with_postgres(
    broker: Arc<Broker>,
    cfg: &AwsConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<Arc<Broker>, AwsStartError> {
    let clock = Arc::new(SystemClock);
    let mut servers: BTreeMap<String, Arc<dyn Backend>> = BTreeMap::new();
    if let Some(id) = &cfg.postgres_secret_id {
        let text = secrets::load_text(
            &aws_sdk_secretsmanager::Client::new(sdk),
            id,
            "postgresql admin",
        )
        .await?;
        let server = postgres::parse(&text)?;
        let name = server.name.clone();
        let backend = PostgresBackend::new(
            broker.catalog.clone(),
            server,
            postgres::password_key(&text),
        )
        .map_err(AwsStartError::Postgres)?;
        servers.insert(name, Arc::new(backend));
    }
    let mut b = (*broker).clone();
    b.backend = Arc::new(Dispatcher::new(
        b.catalog.clone(),
        simulated(cfg, &b.catalog, &clock),
        servers,
        // Upstream brokers are not wired on AWS yet (issue 11: credentials from Secrets Manager).
        Default::default(),
    )?);
    Ok(Arc::new(b))
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
        // Simulated plans only: `with_postgres` (the API and the worker) puts the dispatcher with the
        // PostgreSQL server in place; the webhook sender never calls a backend.
        backend: simulated(cfg, &catalog, &clock),
        clock,
        ids: Arc::new(UlidGenerator),
        webhook_queue: Arc::new(SqsQueue::new(sqs, cfg.webhook_queue_url.clone())),
        webhook_policy: Arc::new(webhook_policy(cfg)?),
        // Replaced by the API (`api_state`) with the key derived from the tenants' secret; the worker
        // never derives tokens.
        sharing: Arc::new(crate::sharing::SharingSettings::new(
            crate::sharing::TokenKeys::random(),
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
    let mut broker = (*with_postgres(broker(cfg, sdk)?, cfg, sdk).await?).clone();
    let secret_id = cfg.tenants_secret_id.clone().unwrap_or_default();
    let text = secrets::load_text(
        &aws_sdk_secretsmanager::Client::new(sdk),
        &secret_id,
        "tenants",
    )
    .await?;
    let configs = tenants::parse(&text)?;
    // Sharing tokens: keys of their own (server-side, never in the table, apart from tenant credentials).
    let keys_id = cfg.sharing_keys_secret_id.clone().unwrap_or_default();
    let keys_text = secrets::load_text(
        &aws_sdk_secretsmanager::Client::new(sdk),
        &keys_id,
        "sharing keys",
    )
    .await?;
    let keys = crate::sharing::TokenKeys::parse(&keys_text, &format!("secret {keys_id}"))?;
    let tenants = Arc::new(crate::tenants::Tenants::new(configs, |s| {
        broker.catalog.service(s).is_some()
    })?);
    broker.sharing = Arc::new(
        crate::sharing::SharingSettings::new(
            keys,
            crate::sharing::token::DEFAULT_TOKEN_LIFETIME_SECS,
        )
        .with_tenants(tenants.names()),
    );
    let broker = Arc::new(broker);
    Ok(crate::http::AppState::new(broker, tenants, body_limit))
}

/// The admin secret is not `{"username": …, "password": …}`.
#[derive(Debug, thiserror::Error)]
#[error("the admin secret is not JSON with username and password")]
pub struct AdminSecretShape;

/// The API function's router: the OSB routes, and the admin routes (`/admin/v1/…`) when
/// `OSB_ADMIN_SECRET_ID` names the operator's credentials.
pub async fn api_router(
    cfg: &AwsConfig,
    sdk: &aws_config::SdkConfig,
    body_limit: usize,
) -> Result<axum::Router, AwsStartError> {
    let state = api_state(cfg, sdk, body_limit).await?;
    let Some(id) = &cfg.admin_secret_id else {
        return Ok(crate::http::router(state));
    };
    #[derive(serde::Deserialize)]
    struct AdminSecret {
        username: String,
        password: crate::tenants::Secret,
    }
    let text = secrets::load_text(&aws_sdk_secretsmanager::Client::new(sdk), id, "admin").await?;
    let secret: AdminSecret = serde_json::from_str(&text).map_err(|_| AdminSecretShape)?;
    let credentials = crate::broker::admin::AdminCredentials::new(
        &secret.username,
        &secret.password,
        &state.tenants,
    )?;
    let admin = crate::http::admin::admin_router(crate::http::admin::AdminState {
        broker: state.broker.clone(),
        tenants: state.tenants.clone(),
        credentials: Arc::new(credentials),
    });
    Ok(crate::http::router(state).merge(admin))
}
