//! The local broker: every role (API, operations worker, webhook sender) in one process on the embedded store and the
//! in-process queue. `osb-broker [--config FILE] [--listen ADDR] [--data-dir DIR]`;
//! `osb-broker reencrypt [--rotate-key] [--config FILE] [--data-dir DIR]` re-encrypts the stored secrets.

mod admin_cli;

use anyhow::{Context, bail};
use osb_broker::broker::run_workers;
use osb_broker::config::BrokerConfig;
use std::path::PathBuf;
use std::time::Duration;

const USAGE: &str = "usage: osb-broker [--config FILE] [--listen ADDR] [--data-dir DIR]\n       \
osb-broker reencrypt [--rotate-key] [--config FILE] [--data-dir DIR]   (with the broker stopped)\n       \
osb-broker admin --help   (a client of the admin API)";

/// What the command line asks for.
struct Args {
    config: BrokerConfig,
    /// `reencrypt`: Some(rotate the key).
    reencrypt: Option<bool>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1).peekable();
    let reencrypt = args.peek().is_some_and(|a| a == "reencrypt");
    if reencrypt {
        args.next();
    }
    let (mut config, mut listen, mut data_dir, mut rotate) = (None, None, None, false);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--rotate-key" if reencrypt => rotate = true,
            "--config" | "-c" => config = Some(PathBuf::from(value("--config")?)),
            "--listen" | "-l" => listen = Some(value("--listen")?),
            "--data-dir" | "-d" => data_dir = Some(PathBuf::from(value("--data-dir")?)),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument '{other}' (see --help)"),
        }
    }
    let mut cfg = match config {
        Some(p) => BrokerConfig::load(&p)?,
        None => BrokerConfig::default(),
    };
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    Ok(Args {
        config: cfg,
        reencrypt: reencrypt.then_some(rotate),
    })
}

/// `osb-broker reencrypt`: every stored secret sealed again with the current (with `--rotate-key`: a
/// new) record key.
async fn reencrypt(cfg: &BrokerConfig, rotate: bool) -> anyhow::Result<()> {
    let report = osb_broker::embedded::reencrypt(cfg, rotate).await?;
    println!(
        "re-encrypted {} items with record key {} ({} changed meanwhile and were left as written){}",
        report.rewritten,
        report.key_id,
        report.skipped,
        if report.retired_old_keys {
            "; older keys removed from the key file"
        } else if rotate {
            "; older keys kept in the key file (run again to retire them)"
        } else {
            ""
        }
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("admin") {
        return admin_cli::run(std::env::args().skip(2).collect()).await;
    }
    let Args {
        config: cfg,
        reencrypt: rotate,
    } = parse_args()?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        .add_directive(osb_broker::backends::postgresql::SQL_LOG_DIRECTIVE.parse()?);
    match cfg.log_format {
        osb_broker::config::LogFormat::Text => {
            tracing_subscriber::fmt().with_env_filter(filter).init()
        }
        osb_broker::config::LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    if let Some(rotate) = rotate {
        return reencrypt(&cfg, rotate).await;
    }
    let failed = osb_broker::embedded::refresh_upstream_catalogs(&cfg).await?;
    if failed > 0 {
        tracing::warn!(
            failed,
            "some upstream brokers did not give their catalog; their last good catalogs are served"
        );
    }
    let embedded = osb_broker::embedded::build_default(&cfg)?;
    let resumed = embedded.broker.resume_unfinished().await?;
    if resumed.redriven + resumed.failed > 0 {
        tracing::info!(
            resumed = resumed.redriven,
            failed = resumed.failed,
            "resumed unfinished operations"
        );
    }
    let callbacks = embedded.broker.resume_callbacks().await?;
    if callbacks.redriven + callbacks.failed > 0 {
        tracing::info!(
            callbacks = callbacks.redriven,
            failed = callbacks.failed,
            "resumed pending webhook callbacks"
        );
    }
    tokio::spawn(embedded.webhooks.clone().run(cfg.webhook_delivery.senders));
    tokio::spawn(run_workers(
        embedded.broker.clone(),
        cfg.workers,
        Duration::from_secs(60),
    ));
    if !cfg.upstream_brokers.is_empty() && cfg.upstream_catalog_refresh_seconds > 0 {
        let (broker, cfg) = (embedded.broker.clone(), cfg.clone());
        tokio::spawn(async move {
            let mut every =
                tokio::time::interval(Duration::from_secs(cfg.upstream_catalog_refresh_seconds));
            every.tick().await;
            loop {
                every.tick().await;
                match osb_broker::embedded::refresh_catalog(&cfg, &broker.catalog).await {
                    Ok(true) => tracing::info!("upstream catalogs changed: new catalog served"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "upstream catalog refresh failed; the current catalog stays")
                    }
                }
            }
        });
    }
    let sweeper = embedded.broker.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            // Both sweeps run every time; a listing that fails is logged and tried a minute later.
            let report = sweeper.sweep().await;
            for (what, result) in [
                ("operations", report.operations),
                ("webhook callbacks", report.callbacks),
            ] {
                match result {
                    Ok(c) if c.redriven + c.failed == 0 => {}
                    Ok(c) => tracing::warn!(
                        redriven = c.redriven,
                        failed = c.failed,
                        "sweep of stalled {what} done"
                    ),
                    Err(e) => tracing::error!(error = %e, "sweep of stalled {what} failed"),
                }
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    println!("OSB broker (API 2.17) listening on http://{addr}");
    println!("data directory: {}", cfg.data_dir.display());
    match &embedded.demo_tenant {
        Some(t) => println!(
            "log in as tenant '{}': username '{}', password '{}'\n  curl -u '{}:{}' -H 'X-Broker-API-Version: 2.17' http://{addr}/v2/catalog",
            t.name,
            t.username,
            t.password.expose(),
            t.username,
            t.password.expose()
        ),
        None => println!("log in with the credentials of a tenant of the configuration file"),
    }
    if let Some(admin) = embedded.admin {
        let admin_listener = tokio::net::TcpListener::bind(&admin.listen)
            .await
            .with_context(|| format!("cannot listen on {} ([admin] listen)", admin.listen))?;
        let admin_addr = admin_listener.local_addr()?;
        match &admin.generated_password {
            Some(p) => println!(
                "admin API on http://{admin_addr}/admin/v1/tenants: username '{}', password '{}' (kept in {})",
                admin.username,
                p.expose(),
                cfg.data_dir.join("admin-password").display()
            ),
            None => println!(
                "admin API on http://{admin_addr}/admin/v1/tenants: username '{}', password from the configuration",
                admin.username
            ),
        }
        let admin_app = osb_broker::http::admin::admin_router(admin.state.clone())
            .merge(osb_broker::http::admin::metrics_router(admin.state));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(admin_listener, admin_app).await {
                tracing::error!(error = %e, "admin listener stopped");
            }
        });
    }
    let app = osb_broker::http::router(embedded.state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
