//! Wiring of the broker on its embedded adapters (SQLite store, in-process queue, simulated backend),
//! shared by the local runner and the API Lambda until the AWS adapters are configured.

use crate::adapters::{MemoryQueue, SqliteStore};
use crate::backends::Dispatcher;
use crate::backends::postgresql::PostgresBackend;
use crate::backends::simulated::{SimulatedBackend, SqliteLedger};
use crate::broker::Broker;
use crate::broker::webhooks::WebhookDelivery;
use crate::config::{BrokerConfig, ConfigError};
use crate::http::AppState;
use crate::ports::Backend;
use crate::ports::{Clock, StoreError, SystemClock, UlidGenerator};
use crate::tenants::{TenantError, Tenants};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid tenants: {0}")]
    Tenants(#[from] TenantError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::WebhookPolicyError),
    #[error("cannot build the webhook sender: {0}")]
    WebhookSender(#[from] crate::webhooks::SenderBuildError),
    #[error("cannot open the simulated backend's ledger: {0}")]
    Backend(#[from] crate::ports::BackendError),
    #[error(transparent)]
    UnknownServer(#[from] crate::backends::UnknownServer),
    #[error("postgresql backend: {0}")]
    Postgres(crate::ports::BackendError),
    #[error("upstream backend: {0}")]
    Upstream(crate::ports::BackendError),
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(std::path::PathBuf, std::io::Error),
    #[error(transparent)]
    SharingKeys(#[from] crate::sharing::token::KeySetError),
}

/// The assembled embedded broker.
pub struct Embedded {
    pub broker: Arc<Broker>,
    /// The webhook sender's side, consuming the broker's in-process webhook queue.
    pub webhooks: Arc<WebhookDelivery>,
    pub state: AppState,
    /// Whether the generated demo tenant is in use (its password is in the data directory).
    pub demo_tenant: Option<crate::tenants::TenantConfig>,
}

pub fn build(config: &BrokerConfig, clock: Arc<dyn Clock>) -> Result<Embedded, StartError> {
    let catalog = Arc::new(config.catalog()?);
    let (tenant_configs, demo) = config.tenants()?;
    let tenants = Arc::new(Tenants::new(tenant_configs.clone(), |s| {
        catalog.service(s).is_some()
    })?);
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::DataDir(config.data_dir.clone(), e))?;
    let db_file = config.data_dir.join("broker.db");
    // Sharing token keys are kept next to the database, never in it; a database without them is an
    // error, never a silent new key.
    let first_start = !db_file.exists();
    let token_keys =
        crate::sharing::TokenKeys::load(&config.data_dir.join("sharing-token-key"), first_start)?;
    let store = SqliteStore::open(db_file, config.synchronous)?;
    let policy = config
        .webhooks
        .clone()
        .validate_for(crate::webhooks::Deployment::Local)?;
    // The simulated backend's own world, beside the broker's database: what it created survives restarts,
    // and its credentials are derived with a key of its own.
    let ledger = SqliteLedger::open(&config.data_dir.join("simulated-backend.db"))?;
    let sim_key_file = config.data_dir.join("simulated-backend-key");
    let sim_key = crate::sharing::TokenKey::load_or_create(&sim_key_file)
        .map_err(|e| StartError::DataDir(sim_key_file.clone(), e))?;
    let simulated = Arc::new(SimulatedBackend::new(
        catalog.clone(),
        clock.clone(),
        Arc::new(ledger),
        sim_key.into_bytes(),
    ));
    // The PostgreSQL servers: binding passwords are derived with a key of their own in the data directory.
    let mut postgresql: BTreeMap<String, Arc<dyn Backend>> = BTreeMap::new();
    let servers = config.postgresql_servers()?;
    if !servers.is_empty() {
        let pg_key_file = config.data_dir.join("postgresql-backend-key");
        let pg_key = crate::sharing::TokenKey::load_or_create(&pg_key_file)
            .map_err(|e| StartError::DataDir(pg_key_file.clone(), e))?
            .into_bytes();
        for server in servers {
            let name = server.name.clone();
            let backend = PostgresBackend::new(catalog.clone(), server, pg_key)
                .map_err(StartError::Postgres)?;
            postgresql.insert(name, Arc::new(backend));
        }
    }
    // The upstream brokers: their offerings are in the catalog (last good imports, refreshed by the
    // runner before `build`); each gets its OSB client.
    let mut upstream: BTreeMap<String, Arc<dyn Backend>> = BTreeMap::new();
    for up in config.upstream_brokers()? {
        let name = up.name.clone();
        let backend = crate::backends::upstream::UpstreamBackend::new(catalog.clone(), up)
            .map_err(StartError::Upstream)?;
        upstream.insert(name, Arc::new(backend));
    }
    let backend = Dispatcher::new(catalog.clone(), simulated, postgresql, upstream)?;
    let broker = Arc::new(Broker {
        catalog: catalog.clone(),
        store: Arc::new(store),
        queue: Arc::new(MemoryQueue::new()),
        backend: Arc::new(backend),
        clock,
        ids: Arc::new(UlidGenerator),
        webhook_queue: Arc::new(MemoryQueue::new()),
        webhook_policy: Arc::new(policy.clone()),
        sharing: Arc::new(
            crate::sharing::SharingSettings::new(token_keys, config.sharing.token_lifetime_seconds)
                .with_tenants(tenants.names()),
        ),
    });
    let webhooks = Arc::new(WebhookDelivery::over_http(
        &broker,
        policy,
        &config.webhook_delivery,
        None,
    )?);
    let state = AppState::new(broker.clone(), tenants, config.body_limit_bytes);
    Ok(Embedded {
        broker,
        webhooks,
        state,
        demo_tenant: demo.then(|| tenant_configs.into_iter().next()).flatten(),
    })
}

/// `build` with the system clock.
pub fn build_default(config: &BrokerConfig) -> Result<Embedded, StartError> {
    build(config, Arc::new(SystemClock))
}

/// Fetches the upstream brokers' catalogs into the data directory (their last good catalogs, read by
/// [`build`]); an upstream that does not answer keeps the catalog it had. Returns how many failed.
pub async fn refresh_upstream_catalogs(config: &BrokerConfig) -> Result<usize, StartError> {
    let upstreams = config.upstream_brokers()?;
    if upstreams.is_empty() {
        return Ok(0);
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::DataDir(config.data_dir.clone(), e))?;
    Ok(
        crate::backends::upstream::import::refresh_cache(&upstreams, &config.data_dir)
            .await
            .len(),
    )
}

/// Fetches the upstream brokers' catalogs again and, when that changed the catalog, publishes the new one
/// (`Catalog::replace`; plans that vanished upstream are kept, their instances still need them). `true`
/// when the catalog changed.
pub async fn refresh_catalog(
    config: &BrokerConfig,
    catalog: &crate::catalog::Catalog,
) -> Result<bool, StartError> {
    refresh_upstream_catalogs(config).await?;
    let (mut next, _) = config.catalog_config()?;
    crate::backends::upstream::import::keep_vanished_plans(&mut next, catalog.config());
    if serde_json::to_value(&next).ok() == serde_json::to_value(catalog.config()).ok() {
        return Ok(false);
    }
    let next = crate::catalog::Catalog::new_possibly_empty(next).map_err(ConfigError::from)?;
    catalog.replace(next);
    Ok(true)
}
