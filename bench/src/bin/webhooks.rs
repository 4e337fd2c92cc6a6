//! Webhook benchmark of the local mode, on loopback only. Prints a Markdown table.
//!
//! 1. **Completion → POST latency**: the embedded broker (SQLite store, in-process queues, the worker and
//!    the webhook sender tasks, as `osb-broker` runs them) provisions `--ops` async instances with a
//!    webhook (simulated 1 s jobs, started in waves); a receiver on 127.0.0.1 records when each POST
//!    arrives. Latency = arrival − the callback's `x-osb-completed-at` (the commit of the final state).
//! 2. **Attempts per second of one sender**: `--deliveries` pending callbacks delivered by one
//!    `WebhookDelivery` (lease write, signing, POST, attempt record) with `--concurrency` in flight; and
//!    the bare guarded HTTP sender alone.
//!
//! `cargo build --release -p osb-bench && target/release/osb-bench-webhooks [--ops N] [--deliveries N]`

use anyhow::{Context, bail};
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use osb_broker::broker::webhooks::{DeliveryStep, WebhookDelivery};
use osb_broker::config::BrokerConfig;
use osb_broker::ids::InstanceId;
use osb_broker::model::requests::ProvisionRequest;
use osb_broker::ports::{Record, WebhookRequest, WebhookSender, Write};
use osb_broker::records::{Callback, CallbackState, OperationKind, OperationState, RequestMeta};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const STANDARD: &str = "1b8e5b45-6c1c-4c9f-9e5f-2a1e4d0b3c22";
const PG: &str = "6d3a9a9e-6c2f-4c55-9d0e-3b1f2f6c1a01";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Arrival latencies (ms after `x-osb-completed-at`) recorded by the receiver.
type Arrivals = Arc<Mutex<Vec<f64>>>;

async fn receiver(arrivals: Arrivals) -> anyhow::Result<u16> {
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let arrivals = arrivals.clone();
            async move {
                let at = now_ms() as f64
                    + (SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.subsec_micros() % 1000)
                        .unwrap_or_default() as f64)
                        / 1000.0;
                if let Some(done) = headers
                    .get("x-osb-completed-at")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| {
                        time::OffsetDateTime::parse(
                            s,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()
                    })
                {
                    let done_ms = done.unix_timestamp_nanos() as f64 / 1e6;
                    if let Ok(mut a) = arrivals.lock() {
                        a.push(at - done_ms);
                    }
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}

struct Args {
    ops: usize,
    waves: usize,
    deliveries: usize,
    concurrency: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        ops: 500,
        waves: 10,
        deliveries: 5000,
        concurrency: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || -> anyhow::Result<usize> {
            it.next()
                .with_context(|| format!("{k} needs a value"))?
                .parse()
                .with_context(|| format!("{k} needs a number"))
        };
        match k.as_str() {
            "--ops" => a.ops = v()?,
            "--waves" => a.waves = v()?,
            "--deliveries" => a.deliveries = v()?,
            "--concurrency" => a.concurrency = v()?,
            "--help" | "-h" => {
                println!(
                    "usage: osb-bench-webhooks [--ops N] [--waves N] [--deliveries N] [--concurrency N]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument '{other}'"),
        }
    }
    if a.ops == 0 || a.waves == 0 || a.deliveries == 0 || a.concurrency == 0 {
        bail!("every count must be positive");
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let arrivals: Arrivals = Arc::default();
    let port = receiver(arrivals.clone()).await?;
    let hook = format!("http://127.0.0.1:{port}/hook");
    let mut cfg: BrokerConfig =
        toml::from_str("[webhooks]\nallow_http = true\nallow_loopback = true\n")?;
    cfg.data_dir = dir.path().to_path_buf();
    let e = osb_broker::embedded::build_default(&cfg)?;
    let broker = e.broker.clone();
    tokio::spawn(osb_broker::broker::run_workers(
        broker.clone(),
        cfg.workers,
        Duration::from_secs(60),
    ));
    tokio::spawn(e.webhooks.clone().run(cfg.webhook_delivery.senders));
    let tenant = e
        .state
        .tenants
        .iter()
        .next()
        .cloned()
        .context("the demo tenant")?;

    // 1. Completion → POST latency, `ops` async provisions in `waves` waves.
    let meta = RequestMeta {
        webhook: Some(osb_broker::records::WebhookRegistration {
            url: hook.clone(),
            secret: "bench-secret-0123456789abcdef".into(),
            api_version: Some("2.17".into()),
        }),
        ..Default::default()
    };
    let per_wave = args.ops.div_ceil(args.waves);
    let started = Instant::now();
    for wave in 0..args.waves {
        for n in 0..per_wave {
            let id = InstanceId::parse(&format!("bench-{wave}-{n}"))?;
            let req = ProvisionRequest {
                service_id: Some(PG.into()),
                plan_id: Some(STANDARD.into()),
                organization_guid: Some("org".into()),
                space_guid: Some("space".into()),
                parameters: serde_json::from_value(
                    serde_json::json!({"simulate": {"delay_seconds": 1}}),
                )?,
                ..Default::default()
            };
            broker.provision(&tenant, &id, req, true, &meta).await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let expected = per_wave * args.waves;
    while arrivals.lock().map(|a| a.len()).unwrap_or(0) < expected {
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "only {:?} of {expected} callbacks arrived",
                arrivals.lock().map(|a| a.len())
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut lat = arrivals.lock().map(|a| a.clone()).unwrap_or_default();
    lat.sort_by(f64::total_cmp);

    // 2a. One WebhookDelivery: pending callbacks delivered with `concurrency` in flight.
    let delivery = e.webhooks.clone();
    let body = r#"{"dashboard_url":"https://dashboard.simulated.invalid/instances/x"}"#;
    let mut keys = Vec::with_capacity(args.deliveries);
    let now = now_ms();
    for n in 0..args.deliveries {
        let cb = Callback {
            tenant: tenant.name.clone(),
            instance_id: InstanceId::parse(&format!("deliver-{n}"))?,
            binding_id: None,
            operation_id: osb_broker::ports::IdGenerator::operation_id(
                &osb_broker::ports::UlidGenerator,
            ),
            kind: OperationKind::Provision,
            url: hook.clone(),
            secret: Some("bench-secret-0123456789abcdef".into()),
            body: Some(body.into()),
            status: 201,
            outcome: OperationState::Succeeded,
            completed_at: now,
            api_version: Some("2.17".into()),
            request_identity: None,
            state: CallbackState::Pending,
            next_attempt_at: now,
            lease_until: None,
            attempts: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        keys.push(cb.key());
        broker
            .store
            .commit(vec![Write::create(Record::Callback(cb))])
            .await?;
    }
    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for key in keys {
        let permit = sem.clone().acquire_owned().await?;
        let d: Arc<WebhookDelivery> = delivery.clone();
        tasks.spawn(async move {
            let r = d.deliver(&key).await;
            drop(permit);
            matches!(r, Ok(DeliveryStep::Finished))
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        ok += usize::from(r.unwrap_or(false));
    }
    let pipeline_rate = ok as f64 / t.elapsed().as_secs_f64();

    // 2b. The guarded HTTP sender alone.
    let policy = osb_broker::webhooks::WebhookPolicy::default()
        .allowing_http()
        .allowing_loopback_for_local_mode();
    let sender = Arc::new(osb_broker::webhooks::HttpSender::new(
        policy,
        Default::default(),
    )?);
    let req = WebhookRequest {
        url: hook.clone(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: bytes::Bytes::from_static(body.as_bytes()),
    };
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = args.deliveries / args.concurrency;
    for _ in 0..args.concurrency {
        let (sender, req) = (sender.clone(), req.clone());
        tasks.spawn(async move {
            let mut ok = 0usize;
            for _ in 0..per_task {
                let r = sender.send(&req).await;
                ok += usize::from(matches!(
                    r.outcome,
                    osb_broker::ports::AttemptOutcome::Delivered { .. }
                ));
            }
            ok
        });
    }
    let mut sent = 0;
    while let Some(r) = tasks.join_next().await {
        sent += r.unwrap_or(0);
    }
    let sender_rate = sent as f64 / t.elapsed().as_secs_f64();

    println!("| webhook scenario | result | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| completion → POST (local mode, {expected} async provisions in {} waves) | {}/{expected} delivered | {:.1} ms | {:.1} ms | {:.1} ms |",
        args.waves,
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| one WebhookDelivery (lease + sign + POST + record, SQLite), {} in flight | {pipeline_rate:.0} attempts/s ({ok}/{}) | | | |",
        args.concurrency, args.deliveries
    );
    println!(
        "| guarded HTTP sender alone, {} in flight | {sender_rate:.0} attempts/s ({sent}) | | | |",
        args.concurrency
    );
    Ok(())
}
