//! `osb-bench`: a load generator for the local broker on loopback.
//!
//! It starts `osb-broker` itself (release binary next to this one, a free 127.0.0.1 port, a temporary
//! data directory, one tenant), waits until it answers, runs the scenarios and prints a Markdown table
//! (or JSON with `--json`), then kills the broker. `--url http://127.0.0.1:PORT --user U --password P`
//! targets a broker that is already running instead. It only ever connects to 127.0.0.1.
//!
//! Scenarios (each bounded in time):
//! - `catalog`: GET /v2/catalog, closed loop, as fast as the connections allow.
//! - `last_operation`: GET last_operation of one asynchronously provisioned instance, closed loop.
//! - `provision_cycle`: synchronous provision + deprovision of unique instances, closed loop.
//! - `full_cycle`: provision → bind → unbind → deprovision, closed loop.
//! - `fixed_rate`: open loop at a fixed rate (default 1,000 req/s) of catalog (optionally mixed with
//!   last_operation); latency is measured from each request's scheduled send time, so a stalled broker
//!   cannot hide queued requests (no coordinated omission).
//! - `async_e2e`: N asynchronous provisions with a simulated delay of 1 s, each polled every 20 ms
//!   until it succeeded: end-to-end latency, and the same minus the simulated delay.

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Semaphore;

const DEMO_SERVICE_ID: &str = "6d3a9a9e-6c2f-4c55-9d0e-3b1f2f6c1a01";
const DEMO_PLAN_SMALL: &str = "0a7f4a34-5b0b-4b8e-8d4e-1f0d3c9a2b11";
const DEMO_PLAN_STANDARD: &str = "1b8e5b45-6c1c-4c9f-9e5f-2a1e4d0b3c22";

/// The ids requests use: the demo catalog's, or, with `--via-upstream NAME`, the ids a broker fronting a
/// demo-catalog broker as upstream `NAME` gives them (`backends::upstream::ids`).
static IDS: std::sync::OnceLock<[String; 3]> = std::sync::OnceLock::new();

fn ids() -> &'static [String; 3] {
    IDS.get_or_init(|| {
        [
            DEMO_SERVICE_ID.to_owned(),
            DEMO_PLAN_SMALL.to_owned(),
            DEMO_PLAN_STANDARD.to_owned(),
        ]
    })
}

fn service_id() -> &'static str {
    &ids()[0]
}
fn plan_small() -> &'static str {
    &ids()[1]
}
fn plan_standard() -> &'static str {
    &ids()[2]
}
const API_VERSION: &str = "2.17";
/// No single request may take longer than this; a hung broker ends as timeouts, not as a hung bench.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the broker may take to start answering.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one asynchronous provision of `async_e2e` may take before it counts as an error.
const ASYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Error bodies kept per scenario, to show what went wrong.
const MAX_ERROR_SAMPLES: usize = 3;
/// The simulated delay of the `async_e2e` provisions.
const ASYNC_DELAY_SECS: u64 = 1;

const USAGE: &str = "\
usage: osb-bench [options]

Starts the release broker (osb-broker next to this binary) on a free 127.0.0.1 port with a temporary
data directory, runs the scenarios, prints a Markdown table and kills the broker.

options:
  --seconds N           duration of each scenario (default 10)
  --connections N       concurrent keep-alive connections (default 64)
  --scenarios LIST      comma-separated, from: catalog,last_operation,provision_cycle,full_cycle,
                        fixed_rate,async_e2e (default: all, in that order)
  --warmup SECS         unmeasured warm-up before each closed-loop scenario (default 1)
  --rate N              requests per second of fixed_rate (default 1000)
  --mix PCT             percentage of last_operation requests in fixed_rate (default 0: catalog only)
  --async-n N           asynchronous provisions of async_e2e (default 50)
  --poll-ms N           last_operation polling interval of async_e2e (default 20)
  --threads N           worker threads of the generator's runtime (default: one per core)
  --json                print JSON on stdout (the table then goes to stderr)
  --broker-bin PATH     broker binary to start (default: osb-broker next to osb-bench)
  --synchronous MODE    SQLite durability of the started broker: normal (default) or full
  --url URL             use the broker already running at URL (http://127.0.0.1:PORT) instead
  --user U --password P its tenant credentials (or OSB_BENCH_USER / OSB_BENCH_PASSWORD)
  --via-upstream NAME   the --url broker fronts a demo-catalog broker as [upstream_brokers.NAME]: use the
                        ids it imported the demo plans under (scripts/bench-proxy.sh)
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Catalog,
    LastOperation,
    ProvisionCycle,
    FullCycle,
    FixedRate,
    AsyncE2e,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::Catalog,
        Scenario::LastOperation,
        Scenario::ProvisionCycle,
        Scenario::FullCycle,
        Scenario::FixedRate,
        Scenario::AsyncE2e,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Catalog => "catalog",
            Scenario::LastOperation => "last_operation",
            Scenario::ProvisionCycle => "provision_cycle",
            Scenario::FullCycle => "full_cycle",
            Scenario::FixedRate => "fixed_rate",
            Scenario::AsyncE2e => "async_e2e",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Self> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| anyhow!("unknown scenario '{s}'"))
    }
}

#[derive(Debug, Clone)]
struct Args {
    seconds: u64,
    connections: usize,
    scenarios: Vec<Scenario>,
    warmup: Duration,
    rate: u64,
    mix: u64,
    async_n: usize,
    poll: Duration,
    threads: Option<usize>,
    json: bool,
    broker_bin: Option<PathBuf>,
    synchronous: String,
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
    via_upstream: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        seconds: 10,
        connections: 64,
        scenarios: Scenario::ALL.to_vec(),
        warmup: Duration::from_secs(1),
        rate: 1000,
        mix: 0,
        async_n: 50,
        poll: Duration::from_millis(20),
        threads: None,
        json: false,
        broker_bin: None,
        synchronous: "normal".into(),
        url: None,
        user: std::env::var("OSB_BENCH_USER").ok(),
        password: std::env::var("OSB_BENCH_PASSWORD").ok(),
        via_upstream: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        fn num<T: std::str::FromStr>(name: &str, v: String) -> anyhow::Result<T> {
            v.parse()
                .map_err(|_| anyhow!("{name}: '{v}' is not a valid number"))
        }
        match arg.as_str() {
            "--seconds" => a.seconds = num("--seconds", value("--seconds")?)?,
            "--connections" => a.connections = num("--connections", value("--connections")?)?,
            "--scenarios" => {
                a.scenarios = value("--scenarios")?
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| Scenario::parse(s.trim()))
                    .collect::<anyhow::Result<_>>()?;
            }
            "--warmup" => {
                let secs: f64 = num("--warmup", value("--warmup")?)?;
                if !(0.0..=600.0).contains(&secs) {
                    bail!("--warmup must be between 0 and 600 seconds");
                }
                a.warmup = Duration::from_secs_f64(secs);
            }
            "--rate" => a.rate = num("--rate", value("--rate")?)?,
            "--mix" => a.mix = num("--mix", value("--mix")?)?,
            "--async-n" => a.async_n = num("--async-n", value("--async-n")?)?,
            "--poll-ms" => a.poll = Duration::from_millis(num("--poll-ms", value("--poll-ms")?)?),
            "--threads" => a.threads = Some(num("--threads", value("--threads")?)?),
            "--json" => a.json = true,
            "--broker-bin" => a.broker_bin = Some(PathBuf::from(value("--broker-bin")?)),
            "--synchronous" => a.synchronous = value("--synchronous")?,
            "--url" => a.url = Some(value("--url")?),
            "--user" => a.user = Some(value("--user")?),
            "--password" => a.password = Some(value("--password")?),
            "--via-upstream" => a.via_upstream = Some(value("--via-upstream")?),
            "--help" | "-h" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument '{other}' (see --help)"),
        }
    }
    if !(1..=3600).contains(&a.seconds) {
        bail!("--seconds must be between 1 and 3600");
    }
    if !(1..=4096).contains(&a.connections) {
        bail!("--connections must be between 1 and 4096");
    }
    if !(1..=1_000_000).contains(&a.rate) {
        bail!("--rate must be between 1 and 1000000");
    }
    if a.mix > 100 {
        bail!("--mix is a percentage (0-100)");
    }
    if !(1..=100_000).contains(&a.async_n) {
        bail!("--async-n must be between 1 and 100000");
    }
    if a.poll.is_zero() {
        bail!("--poll-ms must be positive");
    }
    if !matches!(a.synchronous.as_str(), "normal" | "full") {
        bail!("--synchronous must be 'normal' or 'full'");
    }
    if a.threads == Some(0) {
        bail!("--threads must be positive");
    }
    if a.scenarios.is_empty() {
        bail!("--scenarios names no scenario");
    }
    Ok(a)
}

/// `http://127.0.0.1:PORT` from a `--url`; anything not on 127.0.0.1 is refused.
fn loopback_base(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .ok_or_else(|| anyhow!("--url must be http://127.0.0.1:PORT (only loopback is allowed)"))?;
    let port = rest.trim_end_matches('/');
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("--url must be http://127.0.0.1:PORT, not '{url}'"))?;
    if port == 0 {
        bail!("--url needs a port");
    }
    Ok(format!("http://127.0.0.1:{port}"))
}

// ---------------------------------------------------------------------------------------------------
// HTTP client

#[derive(Clone)]
struct Target {
    client: Client<HttpConnector, Full<Bytes>>,
    base: Arc<str>,
    auth: HeaderValue,
}

type Answer = Result<(StatusCode, Bytes), String>;

impl Target {
    fn new(base: &str, user: &str, password: &str, connections: usize) -> anyhow::Result<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(connections)
            .retry_canceled_requests(false)
            .build(connector);
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut auth = HeaderValue::from_str(&format!("Basic {token}"))?;
        auth.set_sensitive(true);
        Ok(Target {
            client,
            base: base.into(),
            auth,
        })
    }

    async fn send(&self, method: Method, path: &str, body: Option<Bytes>) -> Answer {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(AUTHORIZATION, self.auth.clone())
            .header("x-broker-api-version", API_VERSION);
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let req = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| format!("request: {e}"))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("transport: {e}"))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok((status, bytes))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err("timeout".into()),
        }
    }

    /// One checked request: its latency is recorded under `op` when `record`; an answer other than
    /// `expected` is an error. Returns the body of an expected answer.
    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        rec: &mut Rec,
        op: &'static str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        expected: StatusCode,
        record: bool,
    ) -> Option<Bytes> {
        let t0 = Instant::now();
        let answer = self.send(method, path, body).await;
        rec.observe(op, expected, answer, t0.elapsed(), record)
    }
}

// ---------------------------------------------------------------------------------------------------
// Recording

/// What one worker saw.
#[derive(Default)]
struct Rec {
    /// Latencies in nanoseconds, per request kind.
    lat: BTreeMap<&'static str, Vec<u64>>,
    /// Expected answers (all, warm-up included).
    ok: u64,
    /// Expected answers of the measured period.
    measured: u64,
    /// Complete cycles of the measured period.
    cycles: u64,
    /// Unexpected answers by kind: "422", "200 (expected 201)", "timeout", "transport".
    errors: BTreeMap<String, u64>,
    samples: Vec<String>,
}

impl Rec {
    fn observe(
        &mut self,
        op: &'static str,
        expected: StatusCode,
        answer: Answer,
        latency: Duration,
        record: bool,
    ) -> Option<Bytes> {
        match answer {
            Ok((status, body)) if status == expected => {
                self.ok += 1;
                if record {
                    self.measured += 1;
                    self.record(op, latency);
                }
                Some(body)
            }
            Ok((status, body)) => {
                let key = if status.is_success() {
                    format!("{} (expected {})", status.as_u16(), expected.as_u16())
                } else {
                    status.as_u16().to_string()
                };
                let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                self.error(key, format!("{op}: {} {text}", status.as_u16()));
                None
            }
            Err(e) => {
                let key = e.split(':').next().unwrap_or("error").to_owned();
                self.error(key, format!("{op}: {e}"));
                None
            }
        }
    }

    fn record(&mut self, op: &'static str, latency: Duration) {
        self.lat
            .entry(op)
            .or_default()
            .push(latency.as_nanos().min(u128::from(u64::MAX)) as u64);
    }

    fn error(&mut self, key: String, sample: String) {
        *self.errors.entry(key).or_default() += 1;
        if self.samples.len() < MAX_ERROR_SAMPLES {
            self.samples.push(sample);
        }
    }

    fn merge(&mut self, other: Rec) {
        for (op, mut v) in other.lat {
            self.lat.entry(op).or_default().append(&mut v);
        }
        self.ok += other.ok;
        self.measured += other.measured;
        self.cycles += other.cycles;
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        for s in other.samples {
            if self.samples.len() < MAX_ERROR_SAMPLES {
                self.samples.push(s);
            }
        }
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Every recorded latency, sorted.
    fn all_sorted(&self) -> Vec<u64> {
        let mut all: Vec<u64> = self.lat.values().flatten().copied().collect();
        all.sort_unstable();
        all
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Percentiles {
    count: usize,
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles of sorted nanoseconds.
    fn of(sorted: &[u64]) -> Self {
        let rank = |p: f64| -> u64 {
            if sorted.is_empty() {
                return 0;
            }
            let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[i]
        };
        Percentiles {
            count: sorted.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: sorted.last().copied().unwrap_or(0),
        }
    }

    fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_ms": ms(self.p50),
            "p90_ms": ms(self.p90),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
        })
    }
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e6 * 1000.0).round() / 1000.0
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3} s", ns as f64 / 1e9)
    } else if ns >= 10_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

fn fmt_rate(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// CPU accounting (Linux /proc): how the two cores are split between the generator and the broker.

/// User + system CPU time of a process, from /proc/PID/stat (USER_HZ = 100 on Linux).
fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of the file; `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Busy CPU time of the whole machine (every core), from /proc/stat: the rest of the user, nice,
/// system, irq, softirq and steal columns, which is what the two processes do not explain (loopback
/// networking in softirq, and anything else running on the machine).
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?;
    Some(Duration::from_millis(busy * 10))
}

#[derive(Clone, Copy)]
struct CpuMark {
    at: Instant,
    bench: Option<Duration>,
    broker: Option<Duration>,
    machine: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Default)]
struct CpuSplit {
    /// Percent of one core.
    bench: Option<f64>,
    broker: Option<f64>,
    /// Every core of the machine together (200% is all of two cores).
    machine: Option<f64>,
}

impl CpuMark {
    fn now(broker_pid: Option<u32>) -> Self {
        CpuMark {
            at: Instant::now(),
            bench: cpu_time(None),
            broker: broker_pid.and_then(|p| cpu_time(Some(p))),
            machine: machine_busy(),
        }
    }

    fn since(&self, broker_pid: Option<u32>) -> CpuSplit {
        let end = CpuMark::now(broker_pid);
        let wall = end.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let pct = |a: Option<Duration>, b: Option<Duration>| {
            Some(b?.saturating_sub(a?).as_secs_f64() / wall * 100.0)
        };
        CpuSplit {
            bench: pct(self.bench, end.bench),
            broker: pct(self.broker, end.broker),
            machine: pct(self.machine, end.machine),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Scenario results

struct Outcome {
    scenario: Scenario,
    /// Main figure (req/s, cycles/s, or the achieved rate).
    value: f64,
    unit: &'static str,
    /// The "result" cell.
    result: String,
    /// Percentiles of every measured request of the scenario.
    latency: Percentiles,
    /// The p50 and p99 cells when they are not simply `latency` (async_e2e).
    p50_cell: Option<String>,
    p99_cell: Option<String>,
    rec: Rec,
    elapsed: Duration,
    cpu: CpuSplit,
    extra: Value,
}

impl Outcome {
    fn new(scenario: Scenario, rec: Rec, elapsed: Duration, cpu: CpuSplit) -> Self {
        let latency = Percentiles::of(&rec.all_sorted());
        Outcome {
            scenario,
            value: 0.0,
            unit: "",
            result: String::new(),
            latency,
            p50_cell: None,
            p99_cell: None,
            rec,
            elapsed,
            cpu,
            extra: json!({}),
        }
    }

    fn errors_cell(&self) -> String {
        let n = self.rec.error_count();
        if n == 0 {
            return "0".into();
        }
        let kinds: Vec<String> = self
            .rec
            .errors
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        format!("**{n}** ⚠ ({})", kinds.join(", "))
    }

    fn cpu_cell(&self) -> String {
        let f = |x: Option<f64>| x.map_or("?".to_owned(), |v| format!("{v:.0}%"));
        format!(
            "{} / {} / {}",
            f(self.cpu.broker),
            f(self.cpu.bench),
            f(self.cpu.machine)
        )
    }

    fn json(&self) -> Value {
        let per_op: serde_json::Map<String, Value> = self
            .rec
            .lat
            .iter()
            .map(|(op, v)| {
                let mut v = v.clone();
                v.sort_unstable();
                ((*op).to_owned(), Percentiles::of(&v).json())
            })
            .collect();
        json!({
            "scenario": self.scenario.name(),
            "value": (self.value * 10.0).round() / 10.0,
            "unit": self.unit,
            "result": self.result,
            "latency": self.latency.json(),
            "latency_by_request": per_op,
            "ok": self.rec.ok,
            "errors": self.rec.error_count(),
            "errors_by_kind": self.rec.errors,
            "error_samples": self.rec.samples,
            "flagged": self.rec.error_count() > 0,
            "elapsed_s": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "cpu_percent_of_one_core": {
                "broker": self.cpu.broker,
                "bench": self.cpu.bench,
                "machine": self.cpu.machine,
            },
            "extra": self.extra,
        })
    }
}

fn markdown(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    s.push_str(
        "| scenario | result | p50 | p99 | errors | p90 / max | CPU broker / bench / machine |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|\n");
    for o in outcomes {
        let flag = if o.rec.error_count() > 0 { " ⚠" } else { "" };
        let _ = writeln!(
            s,
            "| {}{flag} | {} | {} | {} | {} | {} / {} | {} |",
            o.scenario.name(),
            o.result,
            o.p50_cell.clone().unwrap_or_else(|| fmt_ns(o.latency.p50)),
            o.p99_cell.clone().unwrap_or_else(|| fmt_ns(o.latency.p99)),
            o.errors_cell(),
            fmt_ns(o.latency.p90),
            fmt_ns(o.latency.max),
            o.cpu_cell(),
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------------
// Request bodies and paths

fn provision_body(plan: &str, parameters: Option<Value>) -> Bytes {
    let mut body = json!({
        "service_id": service_id(),
        "plan_id": plan,
        "organization_guid": "bench-org",
        "space_guid": "bench-space",
        "context": {"platform": "cloudfoundry", "organization_guid": "bench-org", "space_guid": "bench-space"},
    });
    if let (Some(p), Some(obj)) = (parameters, body.as_object_mut()) {
        obj.insert("parameters".into(), p);
    }
    Bytes::from(body.to_string())
}

fn bind_body() -> Bytes {
    Bytes::from(
        json!({
            "service_id": service_id(),
            "plan_id": plan_small(),
            "bind_resource": {"app_guid": "bench-app"},
        })
        .to_string(),
    )
}

fn instance_path(id: &str) -> String {
    format!("/v2/service_instances/{id}")
}

fn delete_query(plan: &str) -> String {
    format!("service_id={}&plan_id={plan}", service_id())
}

/// A short random tag so ids of two runs against the same broker never collide.
fn run_tag() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    format!("{:010x}", h.finish() & 0xff_ffff_ffff)
}

// ---------------------------------------------------------------------------------------------------
// Closed-loop scenarios

#[derive(Clone)]
enum Work {
    Catalog,
    LastOperation { path: Arc<str> },
    ProvisionCycle,
    FullCycle,
}

struct Ctx {
    target: Target,
    args: Args,
    tag: String,
    broker_pid: Option<u32>,
    /// Instances left behind (asynchronous ones), deleted at the end against an external broker.
    leftovers: std::sync::Mutex<Vec<(String, &'static str)>>,
}

async fn closed_worker(
    ctx: Arc<Ctx>,
    work: Work,
    worker: usize,
    measure_from: Instant,
    until: Instant,
) -> Rec {
    let t = &ctx.target;
    let mut rec = Rec::default();
    let mut seq: u64 = 0;
    // Bounded: stops at `until`, and every request times out after REQUEST_TIMEOUT.
    while Instant::now() < until {
        let record = Instant::now() >= measure_from;
        match &work {
            Work::Catalog => {
                t.step(
                    &mut rec,
                    "catalog",
                    Method::GET,
                    "/v2/catalog",
                    None,
                    StatusCode::OK,
                    record,
                )
                .await;
            }
            Work::LastOperation { path } => {
                t.step(
                    &mut rec,
                    "last_operation",
                    Method::GET,
                    path,
                    None,
                    StatusCode::OK,
                    record,
                )
                .await;
            }
            Work::ProvisionCycle | Work::FullCycle => {
                seq += 1;
                let id = format!("bench-{}-{worker}-{seq}", ctx.tag);
                let path = instance_path(&id);
                let full = matches!(work, Work::FullCycle);
                let mut ok = t
                    .step(
                        &mut rec,
                        "provision",
                        Method::PUT,
                        &path,
                        Some(provision_body(plan_small(), None)),
                        StatusCode::CREATED,
                        record,
                    )
                    .await
                    .is_some();
                if !ok {
                    continue;
                }
                if full {
                    let bpath = format!("{path}/service_bindings/{id}-b");
                    ok = t
                        .step(
                            &mut rec,
                            "bind",
                            Method::PUT,
                            &bpath,
                            Some(bind_body()),
                            StatusCode::CREATED,
                            record,
                        )
                        .await
                        .is_some();
                    if ok {
                        ok = t
                            .step(
                                &mut rec,
                                "unbind",
                                Method::DELETE,
                                &format!("{bpath}?{}", delete_query(plan_small())),
                                None,
                                StatusCode::OK,
                                record,
                            )
                            .await
                            .is_some();
                    }
                }
                // Deprovision even after a failed bind/unbind, so the instance does not linger.
                let deleted = t
                    .step(
                        &mut rec,
                        "deprovision",
                        Method::DELETE,
                        &format!("{path}?{}", delete_query(plan_small())),
                        None,
                        StatusCode::OK,
                        record,
                    )
                    .await
                    .is_some();
                if ok && deleted && record {
                    rec.cycles += 1;
                }
            }
        }
    }
    rec
}

async fn run_closed(ctx: &Arc<Ctx>, scenario: Scenario, work: Work) -> anyhow::Result<Outcome> {
    let args = &ctx.args;
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let until = measure_from + Duration::from_secs(args.seconds);
    let mut handles = Vec::with_capacity(args.connections);
    for w in 0..args.connections {
        handles.push(tokio::spawn(closed_worker(
            ctx.clone(),
            work.clone(),
            w,
            measure_from,
            until,
        )));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu = CpuMark::now(ctx.broker_pid);
    let mut rec = Rec::default();
    for h in handles {
        rec.merge(h.await.context("a load worker panicked")?);
    }
    let elapsed = Instant::now().duration_since(measure_from);
    let split = cpu.since(ctx.broker_pid);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut o = Outcome::new(scenario, rec, elapsed, split);
    let requests_per_s = o.rec.measured as f64 / secs;
    match work {
        Work::Catalog | Work::LastOperation { .. } => {
            o.value = requests_per_s;
            o.unit = "req/s";
            o.result = format!("{} req/s", fmt_rate(o.value));
        }
        Work::ProvisionCycle | Work::FullCycle => {
            o.value = o.rec.cycles as f64 / secs;
            o.unit = "cycles/s";
            o.result = format!(
                "{} cycles/s ({} req/s)",
                fmt_rate(o.value),
                fmt_rate(requests_per_s)
            );
        }
    }
    o.extra = json!({
        "connections": args.connections,
        "warmup_s": args.warmup.as_secs_f64(),
        "requests_per_s": (requests_per_s * 10.0).round() / 10.0,
    });
    Ok(o)
}

/// Provisions one instance of the asynchronous plan (202) for last_operation to read.
async fn async_instance(ctx: &Arc<Ctx>, rec: &mut Rec) -> anyhow::Result<String> {
    let id = format!("bench-{}-lastop", ctx.tag);
    let path = format!("{}?accepts_incomplete=true", instance_path(&id));
    let ok = ctx
        .target
        .step(
            rec,
            "provision_async",
            Method::PUT,
            &path,
            Some(provision_body(plan_standard(), None)),
            StatusCode::ACCEPTED,
            false,
        )
        .await;
    if ok.is_none() {
        bail!(
            "the asynchronous provision for last_operation failed: {:?}",
            rec.samples
        );
    }
    if let Ok(mut l) = ctx.leftovers.lock() {
        l.push((id.clone(), plan_standard()));
    }
    Ok(id)
}

// ---------------------------------------------------------------------------------------------------
// Open loop at a fixed rate

async fn run_fixed_rate(ctx: &Arc<Ctx>, lastop_path: Option<Arc<str>>) -> anyhow::Result<Outcome> {
    let args = &ctx.args;
    let rate = args.rate;
    let total = rate.saturating_mul(args.seconds);
    let mix = if lastop_path.is_some() { args.mix } else { 0 };
    let sem = Arc::new(Semaphore::new(args.connections));
    let handle = tokio::runtime::Handle::current();
    let cpu = CpuMark::now(ctx.broker_pid);
    let start = Instant::now() + Duration::from_millis(20);
    let dispatched = Arc::new(AtomicU64::new(0));
    // A plain thread schedules the sends: std::thread::sleep is precise to tens of microseconds, the
    // async timer only to a millisecond. Each request is a task that waits for a free connection, its
    // latency counted from its scheduled time.
    let dispatcher = {
        let ctx = ctx.clone();
        let sem = sem.clone();
        let dispatched = dispatched.clone();
        std::thread::Builder::new()
            .name("fixed-rate".into())
            .spawn(move || {
                let mut tasks = Vec::with_capacity(total as usize);
                for i in 0..total {
                    let scheduled = start + Duration::from_nanos(i * 1_000_000_000 / rate);
                    let now = Instant::now();
                    if scheduled > now {
                        std::thread::sleep(scheduled - now);
                    }
                    let ctx = ctx.clone();
                    let sem = sem.clone();
                    let path = lastop_path.clone();
                    dispatched.fetch_add(1, Ordering::Relaxed);
                    tasks.push(handle.spawn(async move {
                        let mut rec = Rec::default();
                        let Ok(_permit) = sem.acquire().await else {
                            return rec;
                        };
                        let (op, path): (&'static str, &str) = match &path {
                            Some(p) if i % 100 < mix => ("last_operation", p),
                            _ => ("catalog", "/v2/catalog"),
                        };
                        let answer = ctx.target.send(Method::GET, path, None).await;
                        let latency = Instant::now().duration_since(scheduled);
                        rec.observe(op, StatusCode::OK, answer, latency, true);
                        rec
                    }));
                }
                tasks
            })
            .context("cannot start the fixed-rate dispatcher")?
    };
    let tasks = tokio::task::spawn_blocking(move || dispatcher.join())
        .await
        .context("the fixed-rate dispatcher failed")?
        .map_err(|_| anyhow!("the fixed-rate dispatcher panicked"))?;
    let mut rec = Rec::default();
    for t in tasks {
        rec.merge(t.await.context("a fixed-rate request panicked")?);
    }
    let elapsed = Instant::now().duration_since(start);
    let split = cpu.since(ctx.broker_pid);
    let mut o = Outcome::new(Scenario::FixedRate, rec, elapsed, split);
    let achieved = o.rec.measured as f64 / (args.seconds as f64);
    o.value = achieved;
    o.unit = "req/s";
    let what = if mix > 0 {
        format!("catalog + {mix}% last_operation")
    } else {
        "catalog".into()
    };
    o.result = format!(
        "{} req/s offered ({what}), {} ok",
        fmt_rate(rate as f64),
        o.rec.ok
    );
    o.extra = json!({
        "offered_rate": rate,
        "scheduled": total,
        "dispatched": dispatched.load(Ordering::Relaxed),
        "last_operation_percent": mix,
        "max_in_flight": args.connections,
        "latency_from": "scheduled send time",
    });
    Ok(o)
}

// ---------------------------------------------------------------------------------------------------
// Asynchronous provisions end to end

async fn one_async(ctx: Arc<Ctx>, sem: Arc<Semaphore>, n: usize) -> (Rec, Option<Duration>) {
    let mut rec = Rec::default();
    let Ok(_permit) = sem.acquire().await else {
        return (rec, None);
    };
    let t = &ctx.target;
    let id = format!("bench-{}-async-{n}", ctx.tag);
    let path = instance_path(&id);
    let params = json!({"simulate": {"delay_seconds": ASYNC_DELAY_SECS}});
    let t0 = Instant::now();
    let accepted = t
        .step(
            &mut rec,
            "provision_async",
            Method::PUT,
            &format!("{path}?accepts_incomplete=true"),
            Some(provision_body(plan_standard(), Some(params))),
            StatusCode::ACCEPTED,
            true,
        )
        .await;
    if accepted.is_none() {
        return (rec, None);
    }
    if let Ok(mut l) = ctx.leftovers.lock() {
        l.push((id.clone(), plan_standard()));
    }
    let poll_path = format!("{path}/last_operation");
    let deadline = t0 + ASYNC_TIMEOUT;
    let mut next = Instant::now() + ctx.args.poll;
    while Instant::now() < deadline {
        tokio::time::sleep_until(next.into()).await;
        next += ctx.args.poll;
        let Some(body) = t
            .step(
                &mut rec,
                "last_operation",
                Method::GET,
                &poll_path,
                None,
                StatusCode::OK,
                true,
            )
            .await
        else {
            return (rec, None);
        };
        let state = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("state").and_then(|s| s.as_str()).map(str::to_owned));
        match state.as_deref() {
            Some("succeeded") => return (rec, Some(t0.elapsed())),
            Some("in progress") => {}
            other => {
                rec.error(
                    format!("state {}", other.unwrap_or("missing")),
                    format!("last_operation: {}", String::from_utf8_lossy(&body)),
                );
                return (rec, None);
            }
        }
    }
    rec.error(
        "async timeout".into(),
        format!("{id} not succeeded after {} s", ASYNC_TIMEOUT.as_secs()),
    );
    (rec, None)
}

async fn run_async_e2e(ctx: &Arc<Ctx>) -> anyhow::Result<Outcome> {
    let args = &ctx.args;
    let sem = Arc::new(Semaphore::new(args.connections.min(args.async_n)));
    let cpu = CpuMark::now(ctx.broker_pid);
    let start = Instant::now();
    let handles: Vec<_> = (0..args.async_n)
        .map(|n| tokio::spawn(one_async(ctx.clone(), sem.clone(), n)))
        .collect();
    let mut rec = Rec::default();
    let mut e2e = Vec::new();
    for h in handles {
        let (r, d) = h.await.context("an async provision panicked")?;
        rec.merge(r);
        if let Some(d) = d {
            e2e.push(d.as_nanos().min(u128::from(u64::MAX)) as u64);
        }
    }
    let elapsed = start.elapsed();
    let split = cpu.since(ctx.broker_pid);
    e2e.sort_unstable();
    let delay_ns = ASYNC_DELAY_SECS * 1_000_000_000;
    let overhead: Vec<u64> = e2e.iter().map(|x| x.saturating_sub(delay_ns)).collect();
    let p = Percentiles::of(&e2e);
    let q = Percentiles::of(&overhead);
    let mut o = Outcome::new(Scenario::AsyncE2e, rec, elapsed, split);
    o.value = e2e.len() as f64;
    o.unit = "completed";
    o.result = format!(
        "{}/{} succeeded, e2e minus {ASYNC_DELAY_SECS} s delay",
        e2e.len(),
        args.async_n
    );
    o.p50_cell = Some(format!("{} ({})", fmt_ns(q.p50), fmt_ns(p.p50)));
    o.p99_cell = Some(format!("{} ({})", fmt_ns(q.p99), fmt_ns(p.p99)));
    // p90/max cells show the end-to-end figures without the delay too.
    o.latency = Percentiles {
        count: q.count,
        p50: q.p50,
        p90: q.p90,
        p99: q.p99,
        max: q.max,
    };
    o.extra = json!({
        "provisions": args.async_n,
        "simulated_delay_s": ASYNC_DELAY_SECS,
        "poll_interval_ms": args.poll.as_millis() as u64,
        "end_to_end": p.json(),
        "end_to_end_minus_delay": q.json(),
    });
    Ok(o)
}

// ---------------------------------------------------------------------------------------------------
// The broker under test

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("osb-bench-{}-{}", std::process::id(), run_tag()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Broker {
    child: tokio::process::Child,
    pid: Option<u32>,
    base: String,
    password: String,
    log: PathBuf,
    _dir: TempDir,
}

fn default_broker_bin() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("osb-broker")));
    match beside {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("target/release/osb-broker"),
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

async fn start_broker(args: &Args) -> anyhow::Result<Broker> {
    let bin = args.broker_bin.clone().unwrap_or_else(default_broker_bin);
    if !bin.exists() {
        bail!(
            "broker binary {} not found: build it with `cargo build --release -p osb-local -p osb-bench`",
            bin.display()
        );
    }
    let dir = TempDir::new()?;
    let password = format!("{}{}", run_tag(), run_tag());
    let config = dir.0.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "synchronous = \"{}\"\n\n[[tenants]]\nname = \"bench\"\nusername = \"bench\"\npassword = \"{password}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            args.synchronous
        ),
    )
    .context("cannot write the broker configuration")?;
    let log = dir.0.join("broker.log");
    let log_file = std::fs::File::create(&log).context("cannot create the broker log")?;
    let mut child = tokio::process::Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let pid = child.id();
    let stdout = child.stdout.take().context("no stdout of the broker")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(STARTUP_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some((_, a)) = line.split_once("listening on http://") {
                return Ok(Some(a.trim().to_owned()));
            }
        }
        Ok::<_, std::io::Error>(None)
    })
    .await;
    let addr = match addr {
        Ok(Ok(Some(a))) => a,
        _ => bail!(
            "the broker did not report its address; its log:\n{}",
            tail(&log, 20)
        ),
    };
    // Keep draining its standard output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = loopback_base(&format!("http://{addr}"))?;
    eprintln!(
        "started {} (pid {}) on {base}, data in {}",
        bin.display(),
        pid.map_or("?".into(), |p| p.to_string()),
        dir.0.display()
    );
    Ok(Broker {
        child,
        pid,
        base,
        password,
        log,
        _dir: dir,
    })
}

async fn wait_ready(t: &Target) -> anyhow::Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match t.send(Method::GET, "/v2/catalog", None).await {
            Ok((StatusCode::OK, _)) => return Ok(()),
            // Waiting longer does not fix credentials or the API version.
            Ok((s @ (StatusCode::UNAUTHORIZED | StatusCode::PRECONDITION_FAILED), b)) => {
                bail!(
                    "the broker refused the bench: {s}: {}",
                    String::from_utf8_lossy(&b)
                )
            }
            Ok((s, b)) => last = format!("{s}: {}", String::from_utf8_lossy(&b)),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the broker is not ready after {STARTUP_TIMEOUT:?}: {last}")
}

// ---------------------------------------------------------------------------------------------------

async fn run(args: Args) -> anyhow::Result<()> {
    let mut broker = None;
    let (base, user, password) = match &args.url {
        Some(url) => {
            let base = loopback_base(url)?;
            let user = args
                .user
                .clone()
                .context("--url needs --user (or OSB_BENCH_USER)")?;
            let password = args
                .password
                .clone()
                .context("--url needs --password (or OSB_BENCH_PASSWORD)")?;
            (base, user, password)
        }
        None => {
            let b = start_broker(&args).await?;
            let r = (b.base.clone(), "bench".to_owned(), b.password.clone());
            broker = Some(b);
            r
        }
    };
    let target = Target::new(&base, &user, &password, args.connections)?;
    wait_ready(&target).await?;
    let broker_pid = broker.as_ref().and_then(|b| b.pid);
    let ctx = Arc::new(Ctx {
        target,
        args: args.clone(),
        tag: run_tag(),
        broker_pid,
        leftovers: std::sync::Mutex::new(Vec::new()),
    });
    eprintln!(
        "{} s per scenario, {} connections, generator threads: {}, cores: {}",
        args.seconds,
        args.connections,
        args.threads
            .map_or("one per core".into(), |n: usize| n.to_string()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    let mut outcomes = Vec::new();
    let mut lastop_path: Option<Arc<str>> = None;
    let mut setup = Rec::default();
    let result: anyhow::Result<()> = async {
        for &s in &args.scenarios {
            eprintln!("running {} …", s.name());
            let needs_instance =
                s == Scenario::LastOperation || (s == Scenario::FixedRate && args.mix > 0);
            if needs_instance && lastop_path.is_none() {
                let id = async_instance(&ctx, &mut setup).await?;
                lastop_path = Some(format!("{}/last_operation", instance_path(&id)).into());
            }
            let o = match s {
                Scenario::Catalog => run_closed(&ctx, s, Work::Catalog).await?,
                Scenario::LastOperation => {
                    let path = lastop_path
                        .clone()
                        .context("no instance for last_operation")?;
                    run_closed(&ctx, s, Work::LastOperation { path }).await?
                }
                Scenario::ProvisionCycle => run_closed(&ctx, s, Work::ProvisionCycle).await?,
                Scenario::FullCycle => run_closed(&ctx, s, Work::FullCycle).await?,
                Scenario::FixedRate => run_fixed_rate(&ctx, lastop_path.clone()).await?,
                Scenario::AsyncE2e => run_async_e2e(&ctx).await?,
            };
            eprintln!(
                "  {}: {}, p50 {}, p99 {}, errors {}",
                s.name(),
                o.result,
                o.p50_cell.clone().unwrap_or_else(|| fmt_ns(o.latency.p50)),
                o.p99_cell.clone().unwrap_or_else(|| fmt_ns(o.latency.p99)),
                o.rec.error_count()
            );
            for sample in &o.rec.samples {
                eprintln!("    error sample: {sample}");
            }
            outcomes.push(o);
        }
        Ok(())
    }
    .await;

    // Against an external broker, delete what was left behind (asynchronously, not measured).
    if broker.is_none() {
        let left = ctx.leftovers.lock().map(|l| l.clone()).unwrap_or_default();
        let mut cleanup = Rec::default();
        for (id, plan) in left {
            let path = format!(
                "{}?accepts_incomplete=true&{}",
                instance_path(&id),
                delete_query(plan)
            );
            let answer = ctx.target.send(Method::DELETE, &path, None).await;
            if !matches!(&answer, Ok((s, _)) if s.is_success() || *s == StatusCode::GONE) {
                cleanup.observe(
                    "cleanup",
                    StatusCode::ACCEPTED,
                    answer,
                    Duration::ZERO,
                    false,
                );
            }
        }
        if cleanup.error_count() > 0 {
            eprintln!(
                "cleanup: {} instances could not be deleted: {:?}",
                cleanup.error_count(),
                cleanup.samples
            );
        }
    }
    if let Some(mut b) = broker {
        if let Ok(Some(status)) = b.child.try_wait() {
            eprintln!(
                "the broker exited during the run ({status}); its log:\n{}",
                tail(&b.log, 20)
            );
        }
        let _ = b.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), b.child.wait()).await;
    }
    result?;

    let table = markdown(&outcomes);
    let flagged = outcomes.iter().filter(|o| o.rec.error_count() > 0).count();
    if args.json {
        eprint!("{table}");
        let doc = json!({
            "broker": base,
            "seconds": args.seconds,
            "connections": args.connections,
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "setup_errors": setup.error_count(),
            "scenarios": outcomes.iter().map(Outcome::json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{table}");
    }
    if flagged > 0 {
        eprintln!("{flagged} scenario(s) had errors (flagged ⚠)");
        std::process::exit(2);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if let Some(name) = &args.via_upstream {
        use osb_broker::backends::upstream::ids as up;
        let _ = IDS.set([
            up::service_id(name, DEMO_SERVICE_ID),
            up::plan_id(name, DEMO_SERVICE_ID, DEMO_PLAN_SMALL),
            up::plan_id(name, DEMO_SERVICE_ID, DEMO_PLAN_STANDARD),
        ]);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n);
    }
    rt.build()
        .context("cannot start the runtime")?
        .block_on(run(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_accepted() {
        assert_eq!(
            loopback_base("http://127.0.0.1:8080/").ok().as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert!(loopback_base("http://localhost:8080").is_err());
        assert!(loopback_base("http://10.0.0.1:8080").is_err());
        assert!(loopback_base("http://127.0.0.1:8080@example.com").is_err());
        assert!(loopback_base("https://127.0.0.1:8443").is_err());
        assert!(loopback_base("http://127.0.0.1:0").is_err());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        let p = Percentiles::of(&v);
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max, p.count),
            (50, 90, 99, 100, 100)
        );
        let empty = Percentiles::of(&[]);
        assert_eq!((empty.p50, empty.max), (0, 0));
        assert_eq!(Percentiles::of(&[7]).p99, 7);
    }

    #[test]
    fn unexpected_answers_are_errors() {
        let mut rec = Rec::default();
        let ok = rec.observe(
            "x",
            StatusCode::CREATED,
            Ok((StatusCode::CREATED, Bytes::new())),
            Duration::from_millis(1),
            true,
        );
        assert!(ok.is_some());
        assert!(
            rec.observe(
                "x",
                StatusCode::CREATED,
                Ok((StatusCode::OK, Bytes::new())),
                Duration::ZERO,
                true
            )
            .is_none()
        );
        rec.observe(
            "x",
            StatusCode::OK,
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Bytes::from_static(b"{}"))),
            Duration::ZERO,
            true,
        );
        rec.observe(
            "x",
            StatusCode::OK,
            Err("timeout".into()),
            Duration::ZERO,
            true,
        );
        assert_eq!(rec.ok, 1);
        assert_eq!(rec.error_count(), 3);
        assert_eq!(rec.errors.get("200 (expected 201)"), Some(&1));
        assert_eq!(rec.errors.get("422"), Some(&1));
        assert_eq!(rec.errors.get("timeout"), Some(&1));
        assert_eq!(rec.all_sorted(), vec![1_000_000]);
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_rate(1234567.4), "1,234,567");
        assert_eq!(fmt_rate(999.0), "999");
        assert_eq!(fmt_ns(1_500_000), "1.50 ms");
        assert_eq!(fmt_ns(25_000_000), "25.0 ms");
        assert_eq!(fmt_ns(1_023_000_000), "1.023 s");
    }
}
