//! Wiring of the broker on its embedded adapters (SQLite store, in-process queue, simulated backend),
//! shared by the local runner and the API Lambda until the AWS adapters are configured.

use crate::adapters::local_key::LocalKeyring;
use crate::adapters::sqlite::META_RECORD_KEY_ID;
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
    #[error(transparent)]
    Admin(#[from] crate::broker::admin::AdminConfigError),
    #[error(transparent)]
    RecordKey(#[from] crate::adapters::local_key::KeyFileError),
}

/// The file (in the data directory) holding the keys that seal the stored secrets.
pub const RECORD_KEY_FILE: &str = "record-key";
/// The database file in the data directory.
pub const DATABASE_FILE: &str = "broker.db";

/// The store of a data directory with its record keyring: the key file must hold the key the database
/// was last sealed with (a missing or wrong file is an error naming it); a database without a key yet
/// (new, or written before encryption) gets the file's key, created on first start.
pub fn open_store(config: &BrokerConfig) -> Result<(SqliteStore, LocalKeyring), StartError> {
    open_store_rotating(config, false)
}

/// `open_store`; with `rotate`, a new sealing key is added to the key file first (the old ones stay
/// until `reencrypt` retires them).
fn open_store_rotating(
    config: &BrokerConfig,
    rotate: bool,
) -> Result<(SqliteStore, LocalKeyring), StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::DataDir(config.data_dir.clone(), e))?;
    let db = config.data_dir.join(DATABASE_FILE);
    let expected = SqliteStore::read_meta(&db, META_RECORD_KEY_ID)?;
    let mut keyring =
        LocalKeyring::open_or_create(&config.data_dir.join(RECORD_KEY_FILE), expected.as_deref())?;
    if rotate {
        keyring.rotate()?;
    }
    let store = SqliteStore::open(db, config.synchronous, Arc::new(keyring.clone()))?;
    // From here on the database expects the sealing key (the file still holds the older ones).
    if expected.as_deref() != Some(keyring.active_id()) {
        store.write_meta(META_RECORD_KEY_ID, keyring.active_id())?;
    }
    Ok((store, keyring))
}

/// What `reencrypt` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReencryptReport {
    pub rewritten: u64,
    pub skipped: u64,
    /// The id of the key everything is sealed with now.
    pub key_id: String,
    /// Whether older keys were removed from the key file.
    pub retired_old_keys: bool,
}

/// The one-off re-encryption of a data directory (`osb-broker reencrypt`; the broker must be stopped):
/// every item with secret fields is written again, sealed with the key file's first key, so items written
/// before encryption get sealed. With `rotate`, a new key is made first and, once every item is sealed
/// with it, the old keys are removed from the file.
pub async fn reencrypt(config: &BrokerConfig, rotate: bool) -> Result<ReencryptReport, StartError> {
    let (store, mut keyring) = open_store_rotating(config, rotate)?;
    let report = crate::sealing::reseal(&store, &store, None, None).await?;
    // Replaced bodies may linger in free pages and the WAL: rewrite the file without them.
    store.vacuum()?;
    let retire = rotate && report.skipped == 0;
    if retire {
        keyring.retire_old_keys()?;
    }
    Ok(ReencryptReport {
        rewritten: report.rewritten,
        skipped: report.skipped,
        key_id: keyring.active_id().to_owned(),
        retired_old_keys: retire,
    })
}

/// The assembled embedded broker.
pub struct Embedded {
    pub broker: Arc<Broker>,
    /// The webhook sender's side, consuming the broker's in-process webhook queue.
    pub webhooks: Arc<WebhookDelivery>,
    pub state: AppState,
    /// Whether the generated demo tenant is in use (its password is in the data directory).
    pub demo_tenant: Option<crate::tenants::TenantConfig>,
    /// The admin API, unless `[admin] enabled = false`.
    pub admin: Option<AdminApi>,
}

/// The admin API of the embedded broker: its router's state, where it listens, who logs in.
pub struct AdminApi {
    pub state: crate::http::admin::AdminState,
    pub listen: String,
    pub username: String,
    /// The password when it was generated (kept in the data directory), to print at start.
    pub generated_password: Option<crate::tenants::Secret>,
}

pub fn build(config: &BrokerConfig, clock: Arc<dyn Clock>) -> Result<Embedded, StartError> {
    let catalog = Arc::new(config.catalog()?);
    let (tenant_configs, demo) = config.tenants()?;
    let tenants = Arc::new(Tenants::new(tenant_configs.clone(), |s| {
        catalog.service(s).is_some()
    })?);
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::DataDir(config.data_dir.clone(), e))?;
    // Sharing token keys are kept next to the database, never in it; a database without them is an
    // error, never a silent new key.
    let first_start = !config.data_dir.join(DATABASE_FILE).exists();
    let token_keys =
        crate::sharing::TokenKeys::load(&config.data_dir.join("sharing-token-key"), first_start)?;
    // Secrets in the store are sealed with the data directory's record key (never in the database).
    let (store, _) = open_store(config)?;
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
    let admin = match config.admin_credentials()? {
        Some((username, password, generated)) => {
            let credentials =
                crate::broker::admin::AdminCredentials::new(&username, &password, &tenants)?;
            Some(AdminApi {
                state: crate::http::admin::AdminState {
                    broker: broker.clone(),
                    tenants: tenants.clone(),
                    credentials: Arc::new(credentials),
                },
                listen: config.admin.listen.clone(),
                username,
                generated_password: generated.then_some(password),
            })
        }
        None => None,
    };
    let state = AppState::new(broker.clone(), tenants, config.body_limit_bytes);
    Ok(Embedded {
        broker,
        webhooks,
        state,
        demo_tenant: demo.then(|| tenant_configs.into_iter().next()).flatten(),
        admin,
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
