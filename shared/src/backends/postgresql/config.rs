//! A named PostgreSQL server as the operator configures it (`[postgresql_servers.NAME]` in the broker's
//! TOML) and its validated form. The admin password never appears in a `Debug`, a message or a log.

use super::names::MAX_PREFIX_BYTES;
use crate::tenants::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the broker's admin connections use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP (a server on loopback or in a private network the operator trusts).
    #[default]
    Disable,
    /// Encrypted, the server's certificate not checked (libpq's `sslmode=require`).
    Require,
    /// Encrypted, certificate checked against `ca_file` and the host name (libpq's `verify-full`).
    VerifyFull,
}

/// `[postgresql_servers.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// The admin role: `CREATEDB CREATEROLE` and a member of `pg_signal_backend` is enough.
    pub admin_user: String,
    /// The admin password inline (prefer `password_file`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the admin password (trailing newline ignored); relative to the config file.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The database the admin connects to for server-wide statements.
    #[serde(default = "default_admin_database")]
    pub admin_database: String,
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM file of the CA that signed the server's certificate (`tls = "verify-full"`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// What every database and role name made on this server starts with.
    #[serde(default = "default_prefix")]
    pub database_prefix: String,
    /// The host name applications are given in credentials (default: `host`).
    #[serde(default)]
    pub public_host: Option<String>,
    /// The port applications are given (default: `port`).
    #[serde(default)]
    pub public_port: Option<u16>,
    /// Idle admin connections kept open.
    #[serde(default = "default_pool")]
    pub admin_connections: usize,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long a job waits for the server's admin lock (and any other lock) before it is retried later.
    #[serde(default = "default_lock_timeout_ms")]
    pub lock_timeout_ms: u64,
}

fn default_port() -> u16 {
    5432
}
fn default_admin_database() -> String {
    "postgres".into()
}
fn default_prefix() -> String {
    "osb_".into()
}
fn default_pool() -> usize {
    4
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_lock_timeout_ms() -> u64 {
    30_000
}

/// A server configuration that cannot be used; names the server and the field.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("postgresql_servers.{server}.{field}: {reason}")]
pub struct ServerConfigError {
    pub server: String,
    pub field: &'static str,
    pub reason: String,
}

/// A validated server: what the backend connects with.
#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub admin_user: String,
    pub password: Secret,
    pub admin_database: String,
    pub tls: TlsMode,
    /// The CA certificates (DER) of `verify-full`.
    pub ca_certs: Vec<Vec<u8>>,
    pub prefix: String,
    pub public_host: String,
    pub public_port: u16,
    pub admin_connections: usize,
    pub connect_timeout: Duration,
    pub lock_timeout: Duration,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && !s.contains('\0')
}

impl ServerConfig {
    /// Resolves relative file paths against `dir` (the config file's folder).
    pub fn resolve_paths(&mut self, dir: &Path) {
        for p in [&mut self.password_file, &mut self.ca_file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }

    /// Checks every field, reads the password file and the CA file.
    pub fn validate(&self, name: &str) -> Result<Server, ServerConfigError> {
        let err = |field: &'static str, reason: String| ServerConfigError {
            server: name.to_owned(),
            field,
            reason,
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err(
                "name",
                "a server name is letters, digits, '-' and '_'".into(),
            ));
        }
        if self.host.trim().is_empty() {
            return Err(err("host", "must not be empty".into()));
        }
        if self.port == 0 {
            return Err(err("port", "must be 1-65535".into()));
        }
        if !valid_name(&self.admin_user) {
            return Err(err(
                "admin_user",
                "must be a role name of 1-63 bytes".into(),
            ));
        }
        if !valid_name(&self.admin_database) {
            return Err(err(
                "admin_database",
                "must be a database name of 1-63 bytes".into(),
            ));
        }
        let password = match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "password",
                    "give password or password_file, not both".into(),
                ));
            }
            (None, None) => {
                return Err(err(
                    "password_file",
                    "missing: give password_file (or password)".into(),
                ));
            }
            (Some(p), None) => p.clone(),
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f).map_err(|e| {
                    err("password_file", format!("cannot read {}: {e}", f.display()))
                })?;
                Secret::new(text.trim_end_matches(['\n', '\r']).to_owned())
            }
        };
        if password.expose().is_empty() {
            return Err(err("password", "must not be empty".into()));
        }
        let p = &self.database_prefix;
        if p.is_empty()
            || p.len() > MAX_PREFIX_BYTES
            || !p.as_bytes()[0].is_ascii_lowercase()
            || !p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(err(
                "database_prefix",
                format!(
                    "must be 1-{MAX_PREFIX_BYTES} bytes of lowercase letters, digits and '_', starting with a letter"
                ),
            ));
        }
        let ca_certs = match (self.tls, &self.ca_file) {
            (TlsMode::VerifyFull, None) => {
                return Err(err("ca_file", "tls = \"verify-full\" needs ca_file".into()));
            }
            (TlsMode::VerifyFull, Some(f)) => read_pem_certs(f).map_err(|r| err("ca_file", r))?,
            (_, Some(_)) => {
                return Err(err(
                    "ca_file",
                    "is only used with tls = \"verify-full\"".into(),
                ));
            }
            (_, None) => Vec::new(),
        };
        if self.admin_connections == 0 {
            return Err(err("admin_connections", "must be at least 1".into()));
        }
        if self.connect_timeout_ms == 0 || self.lock_timeout_ms == 0 {
            return Err(err(
                "connect_timeout_ms",
                "timeouts must be positive".into(),
            ));
        }
        Ok(Server {
            name: name.to_owned(),
            host: self.host.clone(),
            port: self.port,
            admin_user: self.admin_user.clone(),
            password,
            admin_database: self.admin_database.clone(),
            tls: self.tls,
            ca_certs,
            prefix: p.clone(),
            public_host: self
                .public_host
                .clone()
                .unwrap_or_else(|| self.host.clone()),
            public_port: self.public_port.unwrap_or(self.port),
            admin_connections: self.admin_connections,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            lock_timeout: Duration::from_millis(self.lock_timeout_ms),
        })
    }
}

/// The certificates of a PEM file (DER bytes).
fn read_pem_certs(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> ServerConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn a_minimal_server_is_valid_and_its_password_never_shows() {
        let s = parse(
            "host = \"127.0.0.1\"\nadmin_user = \"osb_admin\"\npassword = \"hunter2-secret\"",
        )
        .validate("main")
        .unwrap();
        assert_eq!(
            (s.port, s.prefix.as_str(), s.tls),
            (5432, "osb_", TlsMode::Disable)
        );
        assert_eq!(s.public_host, "127.0.0.1");
        assert!(!format!("{s:?}").contains("hunter2-secret"));
    }

    #[test]
    fn bad_fields_are_named() {
        let base = "host = \"h\"\nadmin_user = \"a\"\n";
        let field = |extra: &str| {
            parse(&format!("{base}{extra}"))
                .validate("main")
                .unwrap_err()
                .field
        };
        assert_eq!(field(""), "password_file");
        assert_eq!(
            field("password = \"p\"\npassword_file = \"/x\""),
            "password"
        );
        assert_eq!(
            field("password_file = \"/nonexistent/pw\""),
            "password_file"
        );
        assert_eq!(
            field("password = \"p\"\ndatabase_prefix = \"Bad-\""),
            "database_prefix"
        );
        assert_eq!(
            field("password = \"p\"\ndatabase_prefix = \"abcdefghijklmnopqrstuvwxyz\""),
            "database_prefix"
        );
        assert_eq!(field("password = \"p\"\ntls = \"verify-full\""), "ca_file");
        assert_eq!(field("password = \"p\"\nport = 0"), "port");
        let e = parse(&format!("{base}password = \"p\"\ntls = \"verify-full\""))
            .validate("main")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("postgresql_servers.main.ca_file:"),
            "{e}"
        );
        assert!(toml::from_str::<ServerConfig>(&format!("{base}tls = \"sometimes\"")).is_err());
        assert!(toml::from_str::<ServerConfig>(&format!("{base}colour = 1")).is_err());
    }
}
