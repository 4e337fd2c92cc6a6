//! The broker's configuration file (TOML) and the built-in demo defaults: catalog, tenants, listen
//! address, data directory. See the README for the format.

use crate::backends::postgresql::{ServerConfig as PostgresServerConfig, ServerConfigError};
use crate::backends::upstream::import::ImportError;
use crate::backends::upstream::{Upstream, UpstreamConfig, UpstreamConfigError};
use crate::catalog::{Catalog, CatalogConfig, CatalogError};
use crate::tenants::{Secret, TenantConfig};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// How hard the embedded store (SQLite) works to keep committed writes across power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// Survives process crashes (WAL, fsync at checkpoints).
    #[default]
    Normal,
    /// Also survives power loss (fsync on every commit).
    Full,
}

/// The demo catalog shipped with the broker.
pub const DEMO_CATALOG: &str = include_str!("../catalog/demo.json");

/// Name and username of the tenant created when the configuration names none.
pub const DEMO_TENANT: &str = "demo";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address to listen on (local mode).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Where the embedded store keeps its files.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// A catalog JSON file (OSB catalog plus each plan's `backend`); relative to the config file.
    #[serde(default)]
    pub catalog_file: Option<PathBuf>,
    /// The catalog inline, instead of `catalog_file`.
    #[serde(default)]
    pub catalog: Option<CatalogConfig>,
    /// The platforms allowed in. Empty: one demo tenant with a generated password.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Largest accepted request body.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Concurrent operations the local worker runs.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// SQLite durability: `normal` (survives process crashes) or `full` (also power loss).
    #[serde(default)]
    pub synchronous: Synchronous,
    /// Which webhook URLs a request may register (`[webhooks]`: `allow_http`, ports, `allow_loopback`).
    #[serde(default)]
    pub webhooks: crate::webhooks::WebhookPolicy,
    /// How callbacks are sent: timeouts, concurrency and the retry schedule (`[webhook_delivery]`).
    #[serde(default)]
    pub webhook_delivery: WebhookSettings,
    /// `[sharing]`: sharing token lifetime.
    #[serde(default)]
    pub sharing: crate::sharing::token::SharingConfig,
    /// `[postgresql_servers.NAME]`: the PostgreSQL servers plans of `"type": "postgresql"` name.
    #[serde(default)]
    pub postgresql_servers: std::collections::BTreeMap<String, PostgresServerConfig>,
    /// `[admin]`: the operator's admin API (its own listener and credentials).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Log lines as `text` (default) or `json` (one JSON object per line, as the Lambda functions log).
    #[serde(default)]
    pub log_format: LogFormat,
    /// `[upstream_brokers.NAME]`: existing OSB brokers whose catalogs are imported and whose plans'
    /// jobs are forwarded to them.
    #[serde(default)]
    pub upstream_brokers: std::collections::BTreeMap<String, UpstreamConfig>,
    /// How often the upstream brokers' catalogs are fetched again while the broker runs (0: only at
    /// start-up).
    #[serde(default = "default_upstream_refresh")]
    pub upstream_catalog_refresh_seconds: u64,
}

/// How local mode writes its log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The `[admin]` section: where the admin API (inventory, re-drive, metrics) listens and the operator's
/// credentials. Without a password (or `password_file`) one is generated on the first start and kept in
/// the data directory (`admin-password`, mode 0600).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `false` serves no admin API.
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    #[serde(default = "default_admin_username")]
    pub username: String,
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the password (relative to the configuration file).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: default_admin_listen(),
            username: default_admin_username(),
            password: None,
            password_file: None,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_admin_listen() -> String {
    "127.0.0.1:8081".into()
}
fn default_admin_username() -> String {
    "admin".into()
}

fn default_upstream_refresh() -> u64 {
    300
}

/// The `[webhook_delivery]` section: the sender's timeouts and concurrency, and the retry schedule
/// (`[webhook_delivery.retry]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    #[serde(default)]
    pub retry: crate::webhooks::schedule::RetryPolicy,
    /// Connect timeout of one attempt.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Whole-attempt deadline: connect, TLS, upload and response headers.
    #[serde(default = "default_attempt_timeout_ms")]
    pub timeout_ms: u64,
    /// Concurrent deliveries the local sender runs.
    #[serde(default = "default_senders")]
    pub senders: usize,
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_attempt_timeout_ms() -> u64 {
    15_000
}
fn default_senders() -> usize {
    16
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            retry: Default::default(),
            connect_timeout_ms: default_connect_timeout_ms(),
            timeout_ms: default_attempt_timeout_ms(),
            senders: default_senders(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(".broker-data")
}
fn default_body_limit() -> usize {
    crate::http::DEFAULT_BODY_LIMIT
}
fn default_workers() -> usize {
    16
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: default_listen(),
            data_dir: default_data_dir(),
            catalog_file: None,
            catalog: None,
            tenants: Vec::new(),
            body_limit_bytes: default_body_limit(),
            workers: default_workers(),
            synchronous: Synchronous::default(),
            webhooks: Default::default(),
            webhook_delivery: WebhookSettings::default(),
            sharing: Default::default(),
            postgresql_servers: Default::default(),
            admin: AdminConfig::default(),
            log_format: LogFormat::default(),
            upstream_brokers: Default::default(),
            upstream_catalog_refresh_seconds: default_upstream_refresh(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid configuration: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("give either catalog_file or an inline catalog, not both")]
    TwoCatalogs,
    #[error("invalid catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("invalid configuration: {0}")]
    PostgresServer(#[from] ServerConfigError),
    #[error("invalid configuration: {0}")]
    Upstream(#[from] UpstreamConfigError),
    #[error("catalog import: {0}")]
    Import(#[from] ImportError),
    #[error("cannot keep the demo tenant's password in {path}: {source}")]
    DemoPassword {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin: cannot read or keep the password in {path}: {source}")]
    AdminPassword {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin: set either password or password_file, not both")]
    AdminPasswordTwice,
}

impl BrokerConfig {
    /// Reads a TOML configuration file; a relative `catalog_file` is resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg: BrokerConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if let (Some(f), Some(dir)) = (&cfg.catalog_file, path.parent())
            && f.is_relative()
        {
            cfg.catalog_file = Some(dir.join(f));
        }
        if let (Some(f), Some(dir)) = (&cfg.admin.password_file, path.parent())
            && f.is_relative()
        {
            cfg.admin.password_file = Some(dir.join(f));
        }
        if let Some(dir) = path.parent() {
            for server in cfg.postgresql_servers.values_mut() {
                server.resolve_paths(dir);
            }
            for up in cfg.upstream_brokers.values_mut() {
                up.resolve_paths(dir);
            }
        }
        Ok(cfg)
    }

    /// The validated catalog: inline, from `catalog_file`, or the demo catalog; with upstream brokers,
    /// their offerings (last good catalogs in the data directory, see `backends::upstream::import`) are
    /// merged in, and without a static catalog there is no demo catalog.
    pub fn catalog(&self) -> Result<Catalog, ConfigError> {
        let (config, imports) = self.catalog_config()?;
        Ok(if imports {
            // Every upstream down on the very first start: an empty catalog until one answers.
            Catalog::new_possibly_empty(config)?
        } else {
            Catalog::new(config)?
        })
    }

    /// The catalog's configuration (not validated yet) and whether it imports upstream offerings.
    pub fn catalog_config(&self) -> Result<(CatalogConfig, bool), ConfigError> {
        let upstreams = self.upstream_brokers()?;
        let mut config = match (&self.catalog, &self.catalog_file) {
            (Some(_), Some(_)) => return Err(ConfigError::TwoCatalogs),
            (Some(c), None) => c.clone(),
            (None, Some(file)) => read_catalog_config(file)?,
            (None, None) if upstreams.is_empty() => {
                serde_json::from_str(DEMO_CATALOG).map_err(|e| ConfigError::Parse {
                    path: PathBuf::from("<demo catalog>"),
                    message: e.to_string(),
                })?
            }
            (None, None) => CatalogConfig {
                services: Vec::new(),
            },
        };
        if upstreams.is_empty() {
            return Ok((config, false));
        }
        crate::backends::upstream::import::merge_cached(&mut config, &upstreams, &self.data_dir)?;
        Ok((config, true))
    }

    /// The validated upstream brokers (password files read).
    pub fn upstream_brokers(&self) -> Result<Vec<Upstream>, ConfigError> {
        self.upstream_brokers
            .iter()
            .map(|(name, u)| u.validate(name).map_err(ConfigError::from))
            .collect()
    }

    /// The configured tenants, or the demo tenant whose password is generated once and kept in the
    /// data directory (mode 0600). The flag tells whether the demo tenant is used.
    pub fn tenants(&self) -> Result<(Vec<TenantConfig>, bool), ConfigError> {
        if !self.tenants.is_empty() {
            return Ok((self.tenants.clone(), false));
        }
        let path = self.data_dir.join("demo-tenant-password");
        let err = |source| ConfigError::DemoPassword {
            path: path.clone(),
            source,
        };
        let password = generated_password(&self.data_dir, &path).map_err(err)?;
        Ok((
            vec![TenantConfig {
                name: DEMO_TENANT.into(),
                profile: None,
                username: DEMO_TENANT.into(),
                password: Secret::new(password),
                services: None,
                accept_leases_from: Default::default(),
            }],
            true,
        ))
    }
}

impl BrokerConfig {
    /// The admin API's username and password, and whether the password was generated (kept in the data
    /// directory); `None` when `[admin] enabled = false`.
    pub fn admin_credentials(&self) -> Result<Option<(String, Secret, bool)>, ConfigError> {
        let a = &self.admin;
        if !a.enabled {
            return Ok(None);
        }
        let read_err = |path: &Path| {
            let path = path.to_owned();
            move |source| ConfigError::AdminPassword { path, source }
        };
        let (password, generated) = match (&a.password, &a.password_file) {
            (Some(_), Some(_)) => return Err(ConfigError::AdminPasswordTwice),
            (Some(p), None) => (p.clone(), false),
            (None, Some(f)) => (
                Secret::new(
                    std::fs::read_to_string(f)
                        .map_err(read_err(f))?
                        .trim()
                        .to_owned(),
                ),
                false,
            ),
            (None, None) => {
                let path = self.data_dir.join("admin-password");
                (
                    Secret::new(
                        generated_password(&self.data_dir, &path).map_err(read_err(&path))?,
                    ),
                    true,
                )
            }
        };
        Ok(Some((a.username.clone(), password, generated)))
    }

    /// The validated PostgreSQL servers (password files read).
    pub fn postgresql_servers(
        &self,
    ) -> Result<Vec<crate::backends::postgresql::config::Server>, ConfigError> {
        self.postgresql_servers
            .iter()
            .map(|(name, s)| s.validate(name).map_err(ConfigError::from))
            .collect()
    }
}

fn read_catalog_config(path: &Path) -> Result<CatalogConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The catalog of a JSON file, or the demo catalog when no file is named; validated.
pub fn load_catalog(file: Option<&Path>) -> Result<Catalog, ConfigError> {
    let (text, path) = match file {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
            path.to_owned(),
        ),
        None => (DEMO_CATALOG.to_owned(), PathBuf::from("<demo catalog>")),
    };
    let config: CatalogConfig = serde_json::from_str(&text).map_err(|e| ConfigError::Parse {
        path,
        message: e.to_string(),
    })?;
    Ok(Catalog::new(config)?)
}

/// A password generated once and kept in `path` (mode 0600), read back on later starts.
fn generated_password(data_dir: &Path, path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(p) if !p.trim().is_empty() => Ok(p.trim().to_owned()),
        _ => {
            std::fs::create_dir_all(data_dir)?;
            let p: String = rand::rng()
                .sample_iter(&Alphanumeric)
                .take(24)
                .map(char::from)
                .collect();
            write_private(path, &p)?;
            Ok(p)
        }
    }
}

pub(crate) fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(content.as_bytes())
}

/// The demo catalog, validated.
pub fn demo_catalog() -> Result<Catalog, ConfigError> {
    BrokerConfig::default().catalog()
}
