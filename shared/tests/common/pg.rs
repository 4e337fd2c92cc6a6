//! The throw-away PostgreSQL server the tests run against (`scripts/postgres.sh run …` exports its
//! address and admin as `OSB_PG_*`), a catalog of PostgreSQL plans, and clients that connect with the
//! credentials the broker returned.
//!
//! Without `OSB_PG_HOST` a test prints why and passes without asserting anything — unless
//! `OSB_REQUIRE_POSTGRES=1` (set by `scripts/test.sh`, so the README's test command and CI always run
//! them), where it fails.

use osb_broker::backends::postgresql::ServerConfig;
use osb_broker::catalog::CatalogConfig;
use osb_broker::config::BrokerConfig;
use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls};

pub const PG_SERVICE: &str = "9a1c2b3d-0000-4000-8000-00000000a001";
/// Synchronous; connection limit 3, statement_timeout 5 s, pgcrypto/citext allowed, postgis listed but
/// not installed on the test server.
pub const PG_PLAN: &str = "9a1c2b3d-0000-4000-8000-00000000b001";
/// Asynchronous (run by the worker).
pub const PG_ASYNC: &str = "9a1c2b3d-0000-4000-8000-00000000b002";
/// Credentials valid for an hour, bindings rotatable.
pub const PG_TTL: &str = "9a1c2b3d-0000-4000-8000-00000000b003";
/// A simulated plan beside them (the dispatcher routes both).
pub const SIM_SERVICE: &str = "9a1c2b3d-0000-4000-8000-00000000a002";
pub const SIM_PLAN: &str = "9a1c2b3d-0000-4000-8000-00000000b004";

#[derive(Debug, Clone)]
pub struct PgEnv {
    pub host: String,
    pub port: u16,
    pub admin_user: String,
    pub admin_password: String,
    /// The server log (`log_statement = all`).
    pub log: Option<std::path::PathBuf>,
}

/// The test server, or `None` (after printing why) when the environment names none and does not
/// require one.
pub fn pg_env() -> Option<PgEnv> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let Some(host) = var("OSB_PG_HOST") else {
        if var("OSB_REQUIRE_POSTGRES").as_deref() == Some("1") {
            panic!(
                "OSB_REQUIRE_POSTGRES=1 but OSB_PG_HOST is not set: run the tests through `scripts/postgres.sh run cargo test …` (scripts/test.sh does)"
            );
        }
        eprintln!(
            "skipped: no PostgreSQL server (OSB_PG_HOST unset); run `scripts/postgres.sh run cargo test -p osb-broker --test postgresql` to run it"
        );
        return None;
    };
    assert!(
        host == "localhost" || host.starts_with("127.") || host == "::1",
        "the tests only ever talk to a loopback server, not {host}"
    );
    Some(PgEnv {
        host,
        port: var("OSB_PG_PORT")
            .expect("OSB_PG_PORT")
            .parse()
            .expect("OSB_PG_PORT is a port"),
        admin_user: var("OSB_PG_ADMIN_USER").expect("OSB_PG_ADMIN_USER"),
        admin_password: var("OSB_PG_ADMIN_PASSWORD").expect("OSB_PG_ADMIN_PASSWORD"),
        log: var("OSB_PG_LOG").map(Into::into),
    })
}

/// A prefix of its own for each test, so tests share the server without seeing each other's resources.
pub fn unique_prefix() -> String {
    let n: u32 = rand::random();
    format!("t{n:08x}_")
}

impl PgEnv {
    /// The `[postgresql_servers.test]` section for this server.
    pub fn server_config(&self, prefix: &str) -> ServerConfig {
        toml::from_str(&format!(
            "host = \"{}\"\nport = {}\nadmin_user = \"{}\"\npassword = \"{}\"\ndatabase_prefix = \"{prefix}\"\nlock_timeout_ms = 60000",
            self.host, self.port, self.admin_user, self.admin_password
        ))
        .unwrap()
    }

    pub async fn admin(&self) -> Client {
        connect(&format!(
            "postgresql://{}:{}@{}:{}/postgres",
            self.admin_user, self.admin_password, self.host, self.port
        ))
        .await
        .expect("the admin connects")
    }

    /// Databases and roles with `prefix` that exist on the server.
    pub async fn resources(&self, prefix: &str) -> (Vec<String>, Vec<String>) {
        let admin = self.admin().await;
        let dbs = admin
            .query(
                "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
                &[&prefix],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let roles = admin
            .query(
                "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1",
                &[&prefix],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        (dbs, roles)
    }

    /// The broker's configuration for this server with the test catalog.
    pub fn broker_config(&self, prefix: &str, cfg: &mut BrokerConfig) {
        cfg.catalog = Some(catalog("test"));
        // The harness's `limited` tenant names a service of the demo catalog only.
        cfg.tenants.retain(|t| t.name != "limited");
        cfg.postgresql_servers
            .insert("test".into(), self.server_config(prefix));
    }

    pub fn server_log(&self) -> String {
        let path = self.log.as_ref().expect("OSB_PG_LOG names the server log");
        std::fs::read_to_string(path).expect("the server log is readable")
    }
}

/// Connects like an application would, with a URI from the credentials.
pub async fn connect(uri: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(uri, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The SQLSTATE of a failed connect or statement.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

/// The uri of a bind answer.
pub fn uri(bind: &Value) -> String {
    bind["credentials"]["uri"]
        .as_str()
        .unwrap_or_else(|| panic!("no credentials in {bind}"))
        .to_owned()
}

/// A catalog with PostgreSQL plans on server `server` and one simulated plan.
pub fn catalog(server: &str) -> CatalogConfig {
    let pg = |id: &str, name: &str, backend: Value, extra: Value| {
        let mut p = json!({"id": id, "name": name, "description": "d", "backend": backend});
        if let Value::Object(m) = extra {
            p.as_object_mut().unwrap().extend(m);
        }
        p
    };
    serde_json::from_value(json!({"services": [
        {"id": PG_SERVICE, "name": "postgresql-real", "description": "PostgreSQL databases", "bindable": true,
         "instances_retrievable": true, "bindings_retrievable": true, "metadata": {"shareable": true},
         "plans": [
            pg(PG_PLAN, "small", json!({"type": "postgresql", "server": server, "connection_limit": 3,
                "statement_timeout_ms": 5000, "extensions": ["pgcrypto", "citext", "postgis"]}), json!({})),
            pg(PG_ASYNC, "async", json!({"type": "postgresql", "server": server, "asynchronous": true}), json!({})),
            pg(PG_TTL, "rotating", json!({"type": "postgresql", "server": server, "credential_ttl_seconds": 3600}),
               json!({"binding_rotatable": true})),
         ]},
        {"id": SIM_SERVICE, "name": "simulated", "description": "d", "bindable": true,
         "plans": [{"id": SIM_PLAN, "name": "sim", "description": "d"}]}
    ]}))
    .unwrap()
}
