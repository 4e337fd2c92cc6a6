//! PostgreSQL backend benchmark, on a loopback server only: provision → bind → unbind → deprovision
//! cycles through the broker (the embedded broker's router in-process: handlers, SQLite store commits
//! before and after each backend call, the PostgreSQL backend), beside the floor: the same SQL statements
//! the backend issues, sent directly by this program. Runs alternate in blocks so both see the same
//! server state. Prints cycles/s, p50 and p99 per cycle, and the broker's overhead over the floor.
//!
//! `scripts/postgres.sh run target/release/osb-bench-postgresql [--cycles N] [--blocks N]`
//! (needs the `OSB_PG_*` variables `scripts/postgres.sh` exports).

use anyhow::{Context, bail};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use osb_broker::backends::postgresql::{InstanceNames, ServerConfig};
use osb_broker::config::BrokerConfig;
use osb_broker::tenants::{Secret, TenantConfig};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};
use tower::ServiceExt;

const SERVICE: &str = "5e0c0000-0000-4000-8000-0000000000a1";
const PLAN: &str = "5e0c0000-0000-4000-8000-0000000000b1";
const ADMIN_LOCK_KEY: i64 = 0x6f73_622d_6272_6f6b;

struct Env {
    host: String,
    port: u16,
    user: String,
    password: String,
}

fn env() -> anyhow::Result<Env> {
    let var = |k: &str| {
        std::env::var(k)
            .with_context(|| format!("{k} is not set: run through scripts/postgres.sh run"))
    };
    let host = var("OSB_PG_HOST")?;
    if !(host.starts_with("127.") || host == "localhost") {
        bail!("only a loopback server is benchmarked, not {host}");
    }
    Ok(Env {
        host,
        port: var("OSB_PG_PORT")?.parse()?,
        user: var("OSB_PG_ADMIN_USER")?,
        password: var("OSB_PG_ADMIN_PASSWORD")?,
    })
}

async fn connect(e: &Env, db: &str) -> anyhow::Result<Client> {
    let (c, conn) = tokio_postgres::connect(
        &format!(
            "postgresql://{}:{}@{}:{}/{db}",
            e.user, e.password, e.host, e.port
        ),
        NoTls,
    )
    .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(c)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One cycle of the floor: the statements the backend sends for a provision, a bind, an unbind and a
/// deprovision of a plan without extensions, statement timeout or connection limit.
async fn raw_cycle(e: &Env, admin: &Client, prefix: &str, n: usize) -> anyhow::Result<()> {
    let names = InstanceNames::new(prefix, "bench", &format!("raw-{n}"), 1);
    let (db, owner) = (
        format!("\"{}\"", names.database),
        format!("\"{}\"", names.owner),
    );
    let role_name = names.binding_role("b", 1);
    let role = format!("\"{role_name}\"");
    let lock = || admin.execute("SELECT pg_advisory_lock($1)", &[&ADMIN_LOCK_KEY]);
    let unlock = || admin.execute("SELECT pg_advisory_unlock($1)", &[&ADMIN_LOCK_KEY]);
    let role_exists = "SELECT 1 FROM pg_roles WHERE rolname = $1";
    let db_exists = "SELECT 1 FROM pg_database WHERE datname = $1";
    // Provision.
    lock().await?;
    admin.query_opt(role_exists, &[&names.owner]).await?;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {owner} NOLOGIN; GRANT {owner} TO CURRENT_USER; COMMENT ON ROLE {owner} IS 'osb-broker instance';"
        ))
        .await?;
    admin.query_opt(db_exists, &[&names.database]).await?;
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {db} OWNER {owner} ALLOW_CONNECTIONS false"
        ))
        .await?;
    admin
        .batch_execute(&format!(
            "REVOKE ALL ON DATABASE {db} FROM PUBLIC; ALTER DATABASE {db} ALLOW_CONNECTIONS true;"
        ))
        .await?;
    let inst = connect(e, &names.database).await?;
    inst.batch_execute(&format!(
        "ALTER SCHEMA public OWNER TO {owner}; REVOKE CREATE ON SCHEMA public FROM PUBLIC;"
    ))
    .await?;
    drop(inst);
    unlock().await?;
    // Bind.
    lock().await?;
    admin.query_opt(db_exists, &[&names.database]).await?;
    admin
        .query_opt(
            "SELECT coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = $1",
            &[&role_name],
        )
        .await?;
    let verifier = postgres_protocol::password::scram_sha_256(b"0123456789abcdefghijklmnopqrstuv");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{verifier}' CONNECTION LIMIT -1 VALID UNTIL 'infinity' IN ROLE {owner};
             COMMENT ON ROLE {role} IS 'osb-broker binding';
             ALTER ROLE {role} IN DATABASE {db} SET role = '{}';
             GRANT {role} TO CURRENT_USER;",
            names.owner
        ))
        .await?;
    unlock().await?;
    // Unbind.
    lock().await?;
    admin.query_opt(role_exists, &[&role_name]).await?;
    admin
        .batch_execute(&format!(
            "ALTER ROLE {role} NOLOGIN; GRANT {role} TO CURRENT_USER;"
        ))
        .await?;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1",
            &[&role_name],
        )
        .await?;
    admin.query_opt(db_exists, &[&names.database]).await?;
    let inst = connect(e, &names.database).await?;
    inst.batch_execute(&format!(
        "REASSIGN OWNED BY {role} TO {owner}; DROP OWNED BY {role};"
    ))
    .await?;
    drop(inst);
    admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await?;
    unlock().await?;
    // Deprovision.
    lock().await?;
    admin
        .query(
            "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1",
            &[&names.binding_prefix],
        )
        .await?;
    admin.query_opt(db_exists, &[&names.database]).await?;
    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {owner}"))
        .await?;
    unlock().await?;
    Ok(())
}

struct BrokerUnderTest {
    router: axum::Router,
    auth: String,
}

impl BrokerUnderTest {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<StatusCode> {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", &self.auth)
            .header("x-broker-api-version", "2.17");
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v)?)
            }
            None => Body::empty(),
        };
        let resp = self.router.clone().oneshot(b.body(body)?).await?;
        Ok(resp.status())
    }

    async fn cycle(&self, n: usize) -> anyhow::Result<()> {
        let i = format!("/v2/service_instances/brk-{n}");
        let want = |what: &str, got: StatusCode, want: StatusCode| {
            if got == want {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{what}: {got}, expected {want}"))
            }
        };
        let s = self
            .call(Method::PUT, &i, Some(json!({"service_id": SERVICE, "plan_id": PLAN, "organization_guid": "o", "space_guid": "s"})))
            .await?;
        want("provision", s, StatusCode::CREATED)?;
        let s = self
            .call(
                Method::PUT,
                &format!("{i}/service_bindings/b"),
                Some(json!({"service_id": SERVICE, "plan_id": PLAN})),
            )
            .await?;
        want("bind", s, StatusCode::CREATED)?;
        let q = format!("service_id={SERVICE}&plan_id={PLAN}");
        let s = self
            .call(Method::DELETE, &format!("{i}/service_bindings/b?{q}"), None)
            .await?;
        want("unbind", s, StatusCode::OK)?;
        let s = self.call(Method::DELETE, &format!("{i}?{q}"), None).await?;
        want("deprovision", s, StatusCode::OK)
    }
}

struct Stats {
    samples: Vec<Duration>,
    total: Duration,
}

impl Stats {
    fn line(&mut self, what: &str) -> (f64, Duration) {
        self.samples.sort();
        let rate = self.samples.len() as f64 / self.total.as_secs_f64();
        let p50 = pct(&self.samples, 0.5);
        println!(
            "| {what} | {} | {rate:.1} | {:.1} | {:.1} |",
            self.samples.len(),
            p50.as_secs_f64() * 1e3,
            pct(&self.samples, 0.99).as_secs_f64() * 1e3
        );
        (rate, p50)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut cycles, mut blocks) = (200usize, 4usize);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> anyhow::Result<usize> {
            args.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} must be a number"))
        };
        match a.as_str() {
            "--cycles" => cycles = num("--cycles")?,
            "--blocks" => blocks = num("--blocks")?,
            _ => bail!("usage: osb-bench-postgresql [--cycles N] [--blocks N]"),
        }
    }
    if cycles == 0 || blocks == 0 || cycles > 100_000 || blocks > 100 {
        bail!("--cycles 1-100000 and --blocks 1-100");
    }
    let e = env()?;
    let dir = tempfile::tempdir()?;
    let prefix = format!("bench{:06x}_", std::process::id() & 0xff_ffff);
    let server: ServerConfig = toml::from_str(&format!(
        "host = \"{}\"\nport = {}\nadmin_user = \"{}\"\npassword = \"{}\"\ndatabase_prefix = \"{prefix}b\"",
        e.host, e.port, e.user, e.password
    ))?;
    let catalog = serde_json::from_value(
        json!({"services": [{"id": SERVICE, "name": "pg", "description": "d",
        "bindable": true, "plans": [{"id": PLAN, "name": "p", "description": "d",
        "backend": {"type": "postgresql", "server": "bench"}}]}]}),
    )?;
    let mut cfg = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        catalog: Some(catalog),
        tenants: vec![TenantConfig {
            name: "bench".into(),
            profile: None,
            username: "bench".into(),
            password: Secret::new("bench-password"),
            services: None,
            accept_leases_from: Default::default(),
        }],
        ..BrokerConfig::default()
    };
    cfg.postgresql_servers.insert("bench".into(), server);
    let embedded = osb_broker::embedded::build_default(&cfg)?;
    let broker = BrokerUnderTest {
        router: osb_broker::http::router(embedded.state.clone()),
        auth: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("bench:bench-password")
        ),
    };
    let admin = connect(&e, "postgres").await?;
    let raw_prefix = format!("{prefix}r");
    // Warm-up: one cycle of each.
    broker.cycle(usize::MAX).await?;
    raw_cycle(&e, &admin, &raw_prefix, usize::MAX).await?;
    let per_block = cycles.div_ceil(blocks);
    let mut b = Stats {
        samples: Vec::new(),
        total: Duration::ZERO,
    };
    let mut r = Stats {
        samples: Vec::new(),
        total: Duration::ZERO,
    };
    let mut n = 0;
    for _ in 0..blocks {
        for (stats, broker_side) in [(&mut b, true), (&mut r, false)] {
            let start = Instant::now();
            for _ in 0..per_block {
                let t = Instant::now();
                if broker_side {
                    broker.cycle(n).await?;
                } else {
                    raw_cycle(&e, &admin, &raw_prefix, n).await?;
                }
                stats.samples.push(t.elapsed());
                n += 1;
            }
            stats.total += start.elapsed();
        }
    }
    let version: String = admin.query_one("SHOW server_version", &[]).await?.get(0);
    println!(
        "PostgreSQL {version} on {}:{}, {} cycles each in {blocks} alternating blocks",
        e.host,
        e.port,
        per_block * blocks
    );
    println!();
    println!("| path | cycles | cycles/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    let (br, bp50) = b.line("broker (router + SQLite store + PostgreSQL backend)");
    let (rr, rp50) = r.line("raw SQL floor (same statements, one admin connection)");
    println!();
    println!(
        "broker overhead: {:+.1} % cycles/s, {:+.1} % p50",
        (rr / br - 1.0) * 100.0,
        (bp50.as_secs_f64() / rp50.as_secs_f64() - 1.0) * 100.0
    );
    Ok(())
}
