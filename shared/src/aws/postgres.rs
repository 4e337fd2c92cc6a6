//! The PostgreSQL server of the Lambda functions: its admin credentials and address from one Secrets Manager
//! secret (`OSB_POSTGRES_SECRET_ID`, the template's `PostgresAdminSecretArn`), read once at cold start.
//!
//! The secret is JSON. The shape RDS and Aurora write for a managed master or a rotated user works as is
//! (`username`, `password`, `host`, `port`, `dbname`; other keys ignored); the broker's own keys may be added:
//! `name` (the server plans name, default `main`), `tls` (`disable`, `require` — the default here —, or
//! `verify-full` with `ca_file`, a path in the package), `database_prefix`, `public_host`, `public_port`,
//! `admin_database` (instead of `dbname`).

use crate::backends::postgresql::config::Server;
use crate::backends::postgresql::{ServerConfig, TlsMode};
use crate::tenants::Secret;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct AdminSecret {
    #[serde(alias = "username")]
    admin_user: String,
    password: Secret,
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default, alias = "dbname")]
    admin_database: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tls: Option<TlsMode>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    database_prefix: Option<String>,
    #[serde(default)]
    public_host: Option<String>,
    #[serde(default)]
    public_port: Option<u16>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PostgresSecretError {
    #[error(
        "the postgresql admin secret is not JSON with username (or admin_user), password and host (optional: port, dbname, name, tls, ca_file, database_prefix, public_host, public_port)"
    )]
    Shape,
    #[error("the postgresql admin secret: {0}")]
    Invalid(#[from] crate::backends::postgresql::ServerConfigError),
}

/// The validated server of the secret's text. No error includes the text.
pub fn parse(text: &str) -> Result<Server, PostgresSecretError> {
    let s: AdminSecret = serde_json::from_str(text).map_err(|_| PostgresSecretError::Shape)?;
    let name = s.name.unwrap_or_else(|| "main".into());
    // The defaults of a server section, TLS required.
    let mut cfg: ServerConfig =
        toml::from_str("host = \"\"\nadmin_user = \"\"\npassword = \"\"\ntls = \"require\"")
            .map_err(|_| PostgresSecretError::Shape)?;
    cfg.host = s.host;
    cfg.admin_user = s.admin_user;
    cfg.password = Some(s.password);
    if let Some(p) = s.port {
        cfg.port = p;
    }
    if let Some(d) = s.admin_database {
        cfg.admin_database = d;
    }
    if let Some(t) = s.tls {
        cfg.tls = t;
    }
    cfg.ca_file = s.ca_file;
    if let Some(p) = s.database_prefix {
        cfg.database_prefix = p;
    }
    cfg.public_host = s.public_host;
    cfg.public_port = s.public_port;
    Ok(cfg.validate(&name)?)
}

/// The key binding passwords are derived with: from the secret's text (server-side, never in the table).
/// A rotated admin password gives binds in progress at that moment a new password, which they set on their
/// role again when started; finished binds keep theirs.
pub fn password_key(text: &str) -> [u8; 32] {
    crate::sharing::TokenKey::derive_from(
        format!("osb-broker postgresql binding passwords\0{text}").as_bytes(),
    )
    .into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_rds_secret_and_never_echoes_the_password() {
        let s = parse(r#"{"username":"osb_admin","password":"hunter2-xyz","engine":"postgres","host":"db.cluster-x.us-east-1.rds.amazonaws.com","port":5432,"dbname":"postgres","dbInstanceIdentifier":"db"}"#).unwrap();
        assert_eq!(
            (s.name.as_str(), s.tls, s.port),
            ("main", TlsMode::Require, 5432)
        );
        assert_eq!(s.admin_database, "postgres");
        assert!(!format!("{s:?}").contains("hunter2-xyz"));
        let s = parse(r#"{"admin_user":"a","password":"p","host":"h","name":"pg2","tls":"disable","database_prefix":"cf_"}"#).unwrap();
        assert_eq!((s.name.as_str(), s.prefix.as_str()), ("pg2", "cf_"));
        let e = parse(r#"{"username":"a","password":"hunter2-xyz"}"#).unwrap_err();
        assert_eq!(e, PostgresSecretError::Shape);
        let e = parse(
            r#"{"username":"a","password":"hunter2-xyz","host":"h","database_prefix":"BAD"}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("database_prefix") && !e.to_string().contains("hunter2"),
            "{e}"
        );
        assert!(!password_key("a").iter().eq(password_key("b").iter()));
    }
}
