//! The randomized invariant run against the local binary: clients of several tenants fire random
//! provision / update / bind / unbind / deprovision requests (sync and async, re-sent requests,
//! orphan-mitigation deletes, webhooks on async operations) while the broker is killed with SIGKILL at
//! random moments and restarted. Afterwards, with everything drained, the run checks:
//!
//! - every operation is final and every callback delivered or final;
//! - the simulated backend's ledger equals the records that are not gone (no leaked and no missing
//!   resource, no binding alive under a deleted instance);
//! - every answer a client got that it could be sure of agrees with the final state (the same credentials
//!   for a binding, the instance there or not);
//! - no 5xx but the failures the run injected (a process that is down answers nothing at all);
//! - every webhook registered on an operation that was accepted (202) was delivered (by `webhook-id`).
//!
//! Seeded: the same seed makes the same choices (timing still varies). `run` is used by the short run in
//! the test command (`tests/tests/invariants.rs`) and by the soak benchmark (`chaos-soak`).

use crate::receiver::{Receiver, Reply};
use crate::{Broker, PG_SERVICE, SMALL};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const HOOK_SECRET: &str = "chaos-webhook-secret";

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub seed: u64,
    /// How long clients send requests.
    pub duration: Duration,
    /// Tenants taking part (of `cf1`, `cf2`, `ks2`).
    pub tenants: Vec<&'static str>,
    pub clients_per_tenant: usize,
    /// Instances each client works on (its own ids), and bindings per instance.
    pub instances_per_client: usize,
    pub bindings_per_instance: usize,
    /// A kill comes after a pause drawn from this range (milliseconds).
    pub kill_every_ms: (u64, u64),
}

impl ChaosConfig {
    /// The seed from `CHAOS_SEED` when set, else from the clock.
    pub fn seed_from_env() -> u64 {
        std::env::var("CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
    }
}

#[derive(Debug, Default)]
pub struct ChaosReport {
    pub seed: u64,
    pub requests: usize,
    /// Requests that got no answer (the broker was down or killed mid-request).
    pub unanswered: usize,
    pub kills: usize,
    pub elapsed: Duration,
    pub webhooks_expected: usize,
    pub webhooks_delivered: usize,
    pub ledger_entries: usize,
    pub violations: Vec<String>,
}

impl ChaosReport {
    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(0.001)
    }
}

/// What a client knows about one of its resources.
#[derive(Debug, Clone, PartialEq)]
enum Known {
    Absent,
    Exists,
    /// Exists with these credentials (bindings).
    Bound(Value),
    /// Accepted (202): its final state is decided by polling.
    Pending(String),
    /// A creation that failed asynchronously: it needs a delete.
    Failed,
    /// The answer was lost (kill) or was a 422: the client does not know.
    Unknown,
}

struct Instance {
    id: String,
    known: Known,
    bindings: BTreeMap<String, Known>,
    /// The body of the provision that created it, while no update changed its parameters (a re-send
    /// of it must be answered 200).
    resend: Option<Value>,
    /// The body each binding was created with.
    bind_bodies: HashMap<String, Value>,
}

struct Shared {
    base: RwLock<String>,
    http: Mutex<reqwest::Client>,
    violations: Mutex<Vec<String>>,
    requests: AtomicUsize,
    unanswered: AtomicUsize,
    /// Operations answered 202 with a webhook.
    hooked: Mutex<BTreeSet<String>>,
    stop: AtomicBool,
}

impl Shared {
    fn violation(&self, v: String) {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(v);
    }
}

struct Answer {
    status: u16,
    json: Value,
}

fn new_http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client")
}

async fn send(
    shared: &Shared,
    creds: &(String, String),
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Option<Answer> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let base = shared
        .base
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let http = shared
        .http
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut rb = http
        .request(method, format!("{base}{path}"))
        .basic_auth(&creds.0, Some(&creds.1))
        .header("X-Broker-API-Version", "2.17");
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let r = match rb.send().await {
        Ok(r) => r,
        Err(_) => {
            // Down (or killed mid-request): a platform backs off before it retries.
            shared.unanswered.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            return None;
        }
    };
    let status = r.status().as_u16();
    let Ok(text) = r.text().await else {
        shared.unanswered.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    Some(Answer {
        status,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
    })
}

/// One client: it owns its instances (no other client touches them), so what it was answered last is
/// what the final state must be, unless it could not know.
struct ClientRun {
    tenant: &'static str,
    creds: (String, String),
    shared: Arc<Shared>,
    rng: StdRng,
    hook: String,
    instances: Vec<Instance>,
}

impl ClientRun {
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Option<Answer> {
        let a = send(&self.shared, &self.creds, method.clone(), path, body).await?;
        Some(a)
    }

    fn unexpected(&self, what: &str, a: &Answer) {
        self.shared.violation(format!(
            "{} {what}: unexpected {} {}",
            self.tenant, a.status, a.json
        ));
    }

    /// Query string for an async request, with a webhook half of the time.
    fn async_query(&mut self) -> (String, bool) {
        if self.rng.random_bool(0.5) {
            (
                format!(
                    "accepts_incomplete=true&{}",
                    crate::webhook_query(&self.hook, HOOK_SECRET)
                ),
                true,
            )
        } else {
            ("accepts_incomplete=true".into(), false)
        }
    }

    /// The query string of a request: async (with a webhook half of the time) or not.
    fn query(&mut self, asynchronous: bool) -> (String, bool) {
        if asynchronous {
            self.async_query()
        } else {
            ("accepts_incomplete=false".into(), false)
        }
    }

    /// The `simulate` parameter and query of a provision or bind: its delay, an injected failure, and
    /// sometimes a later delete that fails once.
    fn creation(&mut self, asynchronous: bool, fail: bool) -> (Value, String, bool) {
        let mut simulate = json!({"delay_seconds": if asynchronous { 1 } else { 0 }});
        if fail {
            simulate["fail"] = json!(true);
        }
        if self.rng.random_bool(0.15) {
            simulate["fail_delete"] = json!(1);
        }
        let (query, hooked) = self.query(asynchronous);
        (simulate, query, hooked)
    }

    fn accepted(&self, a: &Answer, hooked: bool) -> Known {
        let op = a.json["operation"].as_str().unwrap_or_default().to_owned();
        if hooked && !op.is_empty() {
            self.shared
                .hooked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(op.clone());
        }
        Known::Pending(op)
    }

    async fn step(&mut self) {
        let k = self.rng.random_range(0..self.instances.len());
        let known = self.instances[k].known.clone();
        let id = self.instances[k].id.clone();
        let path = format!("/v2/service_instances/{id}");
        let roll = self.rng.random_range(0..100);
        match known {
            Known::Absent => self.provision(k).await,
            // Orphan mitigation after a lost answer, or the same provision again.
            Known::Unknown if roll < 25 => self.deprovision(k).await,
            Known::Unknown if roll < 50 => self.provision(k).await,
            Known::Pending(op) => self.poll_instance(k, &op).await,
            Known::Failed => self.deprovision(k).await,
            Known::Unknown => self.poll_instance_latest(k).await,
            Known::Exists | Known::Bound(_) => {
                if roll < 45 {
                    self.bind(k).await
                } else if roll < 65 {
                    self.unbind(k).await
                } else if roll < 80 {
                    self.update(k, &path).await
                } else if roll < 88 && self.instances[k].resend.is_some() {
                    // Re-sent identical provision: 200.
                    self.provision(k).await
                } else {
                    self.deprovision(k).await
                }
            }
        }
    }

    async fn provision(&mut self, k: usize) {
        let id = self.instances[k].id.clone();
        let asynchronous = self.rng.random_bool(0.4);
        let fail = self.rng.random_bool(0.1);
        let (simulate, query, hooked) = self.creation(asynchronous, fail);
        let mut body = json!({
            "service_id": PG_SERVICE, "plan_id": SMALL,
            "organization_guid": "org", "space_guid": "space",
            "parameters": {"simulate": simulate}
        });
        // A re-send is identical to the provision that created the instance.
        if matches!(self.instances[k].known, Known::Exists | Known::Bound(_))
            && let Some(b) = &self.instances[k].resend
        {
            body = b.clone();
        }
        let was = self.instances[k].known.clone();
        let a = self
            .call(
                Method::PUT,
                &format!("/v2/service_instances/{id}?{query}"),
                Some(&body),
            )
            .await;
        let Some(a) = a else {
            self.instances[k].known = Known::Unknown;
            return;
        };
        self.instances[k].known = match a.status {
            201 if matches!(was, Known::Absent | Known::Unknown | Known::Failed) => Known::Exists,
            200 if matches!(was, Known::Exists | Known::Bound(_) | Known::Unknown) => {
                was_or_exists(&was)
            }
            202 => self.accepted(&a, hooked),
            502 if fail => Known::Absent,
            409 | 422 => Known::Unknown,
            _ => {
                self.unexpected(&format!("provision {id} (was {was:?})"), &a);
                Known::Unknown
            }
        };
        if self.instances[k].known == Known::Exists && !matches!(was, Known::Exists) {
            if matches!(was, Known::Absent | Known::Failed) {
                self.instances[k]
                    .bindings
                    .values_mut()
                    .for_each(|b| *b = Known::Absent);
            }
            self.instances[k].resend = (a.status == 201).then_some(body);
        }
        if matches!(self.instances[k].known, Known::Pending(_)) {
            self.instances[k].resend = None;
        }
    }

    async fn update(&mut self, k: usize, path: &str) {
        let asynchronous = self.rng.random_bool(0.3);
        let gb = self.rng.random_range(1..100);
        let (query, hooked) = self.query(asynchronous);
        let body = json!({"service_id": PG_SERVICE,
            "parameters": {"storage_gb": gb, "simulate": {"delay_seconds": if asynchronous { 1 } else { 0 }}}});
        self.instances[k].resend = None;
        let Some(a) = self
            .call(Method::PATCH, &format!("{path}?{query}"), Some(&body))
            .await
        else {
            self.instances[k].known = Known::Unknown;
            return;
        };
        match a.status {
            200 => {}
            202 => {
                let p = self.accepted(&a, hooked);
                if let Known::Pending(op) = p {
                    self.poll_until(k, &op).await;
                }
            }
            422 => {}
            _ => self.unexpected("update", &a),
        }
    }

    async fn deprovision(&mut self, k: usize) {
        let id = self.instances[k].id.clone();
        // The simulated plan's deletes are synchronous: accepts_incomplete changes nothing but is sent
        // as platforms do, with a webhook sometimes.
        let (query, hooked) = if self.rng.random_bool(0.5) {
            self.async_query()
        } else {
            ("accepts_incomplete=false".into(), false)
        };
        let path =
            format!("/v2/service_instances/{id}?service_id={PG_SERVICE}&plan_id={SMALL}&{query}");
        let Some(a) = self.call(Method::DELETE, &path, None).await else {
            self.instances[k].known = Known::Unknown;
            return;
        };
        let inst = &mut self.instances[k];
        match a.status {
            200 | 410 => {
                inst.known = Known::Absent;
                inst.bindings.values_mut().for_each(|b| *b = Known::Absent);
            }
            202 => {
                inst.known = Known::Unknown;
                let _ = hooked;
            }
            422 => inst.known = Known::Unknown,
            // A failed delete (fail_delete) leaves the instance as it was; one the client lost track of
            // (a provision unanswered when the broker was killed) may be such an instance too.
            502 if matches!(inst.known, Known::Exists | Known::Bound(_) | Known::Unknown) => {}
            _ => {
                let was = inst.known.clone();
                self.unexpected(&format!("deprovision {id} (was {was:?})"), &a);
                self.instances[k].known = Known::Unknown;
            }
        }
    }

    async fn bind(&mut self, k: usize) {
        let id = self.instances[k].id.clone();
        let b = self.rng.random_range(0..self.instances[k].bindings.len());
        let bid = self.instances[k]
            .bindings
            .keys()
            .nth(b)
            .cloned()
            .unwrap_or_default();
        let was = self.instances[k].bindings[&bid].clone();
        let asynchronous = self.rng.random_bool(0.3);
        let fail = self.rng.random_bool(0.08) && matches!(was, Known::Absent);
        let (simulate, query, hooked) = self.creation(asynchronous, fail);
        let mut body = json!({"service_id": PG_SERVICE, "plan_id": SMALL, "parameters": {"simulate": simulate}});
        // A re-sent bind is identical to the one that made the binding.
        if matches!(was, Known::Bound(_))
            && let Some(b) = self.instances[k].bind_bodies.get(&bid)
        {
            body = b.clone();
        }
        let path = format!("/v2/service_instances/{id}/service_bindings/{bid}?{query}");
        let Some(a) = self.call(Method::PUT, &path, Some(&body)).await else {
            self.instances[k].bindings.insert(bid, Known::Unknown);
            return;
        };
        let next = match a.status {
            201 | 200 => {
                let creds = a.json["credentials"].clone();
                if let Known::Bound(old) = &was
                    && old != &creds
                {
                    self.shared.violation(format!(
                        "{} bind {id}/{bid}: credentials changed on a re-sent bind",
                        self.tenant
                    ));
                }
                Known::Bound(creds)
            }
            202 => {
                if let Known::Pending(op) = self.accepted(&a, hooked) {
                    self.poll_binding(k, &bid, &op).await
                } else {
                    Known::Unknown
                }
            }
            502 if fail => Known::Absent,
            404 | 409 | 422 => Known::Unknown,
            _ => {
                self.unexpected(&format!("bind {id}/{bid} (was {was:?})"), &a);
                Known::Unknown
            }
        };
        if matches!(next, Known::Bound(_)) && !matches!(was, Known::Bound(_)) {
            self.instances[k].bind_bodies.insert(bid.clone(), body);
        }
        self.instances[k].bindings.insert(bid, next);
    }

    async fn unbind(&mut self, k: usize) {
        let id = self.instances[k].id.clone();
        let b = self.rng.random_range(0..self.instances[k].bindings.len());
        let bid = self.instances[k]
            .bindings
            .keys()
            .nth(b)
            .cloned()
            .unwrap_or_default();
        let path = format!(
            "/v2/service_instances/{id}/service_bindings/{bid}?service_id={PG_SERVICE}&plan_id={SMALL}&accepts_incomplete=false"
        );
        let Some(a) = self.call(Method::DELETE, &path, None).await else {
            self.instances[k].bindings.insert(bid, Known::Unknown);
            return;
        };
        let next = match a.status {
            200 | 410 => Known::Absent,
            // A failed unbind (fail_delete) leaves the binding as it was.
            502 => self.instances[k].bindings[&bid].clone(),
            422 => Known::Unknown,
            _ => {
                self.unexpected(&format!("unbind {id}/{bid}"), &a);
                Known::Unknown
            }
        };
        self.instances[k].bindings.insert(bid, next);
    }

    async fn poll_instance(&mut self, k: usize, op: &str) {
        self.poll_until(k, op).await;
    }

    /// Polls an accepted instance operation until it is final; records the instance's state.
    async fn poll_until(&mut self, k: usize, op: &str) {
        let id = self.instances[k].id.clone();
        for _ in 0..20 {
            let path = format!("/v2/service_instances/{id}/last_operation?operation={op}");
            let Some(a) = self.call(Method::GET, &path, None).await else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            match (a.status, a.json["state"].as_str()) {
                (200, Some("in progress")) => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                (200, Some("succeeded")) => {
                    if self.instances[k].known != Known::Exists
                        && !matches!(self.instances[k].known, Known::Bound(_))
                    {
                        self.instances[k].known = Known::Exists;
                    }
                    return;
                }
                (200, Some("failed")) => {
                    // A failed provision needs a delete; a failed update leaves the instance as it was.
                    if matches!(self.instances[k].known, Known::Pending(_)) {
                        self.instances[k].known = Known::Failed;
                    }
                    return;
                }
                (410, _) => {
                    self.instances[k].known = Known::Absent;
                    return;
                }
                _ => {
                    self.unexpected(&format!("last_operation {id}"), &a);
                    self.instances[k].known = Known::Unknown;
                    return;
                }
            }
        }
        self.instances[k].known = Known::Unknown;
    }

    /// After a lost answer: what is the instance now?
    async fn poll_instance_latest(&mut self, k: usize) {
        let id = self.instances[k].id.clone();
        let Some(a) = self
            .call(Method::GET, &format!("/v2/service_instances/{id}"), None)
            .await
        else {
            return;
        };
        // A GET that answers 200 shows an instance that exists; anything else: delete to be sure.
        if a.status == 200 {
            self.instances[k].known = Known::Exists;
            self.instances[k].bindings.values_mut().for_each(|b| {
                if !matches!(b, Known::Absent) {
                    *b = Known::Unknown
                }
            });
        } else {
            self.deprovision(k).await;
        }
    }

    async fn poll_binding(&mut self, k: usize, bid: &str, op: &str) -> Known {
        let id = self.instances[k].id.clone();
        for _ in 0..20 {
            let path = format!(
                "/v2/service_instances/{id}/service_bindings/{bid}/last_operation?operation={op}"
            );
            let Some(a) = self.call(Method::GET, &path, None).await else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            match (a.status, a.json["state"].as_str()) {
                (200, Some("in progress")) => tokio::time::sleep(Duration::from_millis(300)).await,
                (200, Some("succeeded")) => {
                    let got = self
                        .call(
                            Method::GET,
                            &format!("/v2/service_instances/{id}/service_bindings/{bid}"),
                            None,
                        )
                        .await;
                    return match got {
                        Some(g) if g.status == 200 => Known::Bound(g.json["credentials"].clone()),
                        _ => Known::Unknown,
                    };
                }
                (200, Some("failed")) => return Known::Unknown,
                (410, _) => return Known::Absent,
                _ => {
                    self.unexpected(&format!("binding last_operation {id}/{bid}"), &a);
                    return Known::Unknown;
                }
            }
        }
        Known::Unknown
    }
}

fn was_or_exists(was: &Known) -> Known {
    match was {
        Known::Bound(_) | Known::Exists => was.clone(),
        _ => Known::Exists,
    }
}

/// The records of the broker's database: instances and bindings as JSON, and how many operations and
/// callbacks are not final.
struct Records {
    instances: Vec<Value>,
    bindings: Vec<Value>,
    unfinished_operations: i64,
    unfinished_callbacks: i64,
}

async fn read_records(data_dir: &std::path::Path) -> Records {
    let db = rusqlite::Connection::open(data_dir.join("broker.db")).expect("broker.db");
    let (instances, bindings) = (
        crate::stored_records(data_dir, "instance").await,
        crate::stored_records(data_dir, "binding").await,
    );
    let count = |kind: &str| -> i64 {
        db.query_row(
            "SELECT count(*) FROM items WHERE kind = ?1 AND unfinished = 1",
            [kind],
            |r| r.get(0),
        )
        .expect("count")
    };
    Records {
        instances,
        bindings,
        unfinished_operations: count("operation"),
        unfinished_callbacks: count("callback"),
    }
}

fn read_ledger(data_dir: &std::path::Path) -> BTreeSet<String> {
    let db = rusqlite::Connection::open(data_dir.join("simulated-backend.db")).expect("ledger");
    let mut stmt = db.prepare("SELECT key FROM resources").expect("select");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .map(|k| k.expect("row"))
        .collect()
}

/// The ledger the records call for: instances that are not gone (or failed), and the ready bindings of
/// their current generation.
fn expected_ledger(records: &Records) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut live: HashMap<(String, String), u64> = HashMap::new();
    for i in &records.instances {
        let state = i["state"].as_str().unwrap_or_default();
        if matches!(state, "ready" | "updating" | "deleting") {
            let (t, id, g) = (
                i["tenant"].as_str().unwrap_or_default().to_owned(),
                i["id"].as_str().unwrap_or_default().to_owned(),
                i["generation"].as_u64().unwrap_or_default(),
            );
            out.insert(format!("I/{t}/{id}/{g}"));
            live.insert((t, id), g);
        }
    }
    for b in &records.bindings {
        let (t, i) = (
            b["tenant"].as_str().unwrap_or_default().to_owned(),
            b["instance_id"].as_str().unwrap_or_default().to_owned(),
        );
        let gen_ok =
            live.get(&(t.clone(), i.clone())) == b["instance_generation"].as_u64().as_ref();
        if gen_ok && b["state"] == "ready" {
            out.insert(format!(
                "I/{t}/{i}/{}/B/{}/{}",
                b["instance_generation"],
                b["id"].as_str().unwrap_or_default(),
                b["generation"]
            ));
        }
    }
    out
}

/// Runs the clients and the killer, drains, and checks the invariants.
pub async fn run(cfg: ChaosConfig) -> ChaosReport {
    let started = Instant::now();
    let receiver = Receiver::start(vec![Reply::Status(200)]).await;
    let mut broker = Broker::start(&crate::loopback_webhooks_config(&[1, 1, 2, 2, 5, 5, 10])).await;
    let shared = Arc::new(Shared {
        base: RwLock::new(broker.base_url()),
        http: Mutex::new(new_http()),
        violations: Mutex::new(Vec::new()),
        requests: AtomicUsize::new(0),
        unanswered: AtomicUsize::new(0),
        hooked: Mutex::new(BTreeSet::new()),
        stop: AtomicBool::new(false),
    });
    let mut master = StdRng::seed_from_u64(cfg.seed);
    let mut clients = Vec::new();
    for tenant in &cfg.tenants {
        let t = broker.tenant(tenant);
        for c in 0..cfg.clients_per_tenant {
            let instances = (0..cfg.instances_per_client)
                .map(|i| Instance {
                    id: format!("chaos-c{c}-i{i}"),
                    known: Known::Absent,
                    bindings: (0..cfg.bindings_per_instance)
                        .map(|b| (format!("b{b}"), Known::Absent))
                        .collect(),
                    resend: None,
                    bind_bodies: HashMap::new(),
                })
                .collect();
            clients.push(ClientRun {
                tenant,
                creds: (t.username.clone(), t.password.clone()),
                shared: shared.clone(),
                rng: StdRng::seed_from_u64(master.random()),
                hook: receiver.url("/chaos/hook"),
                instances,
            });
        }
    }
    let deadline = Instant::now() + cfg.duration;
    let mut tasks = Vec::new();
    for mut client in clients {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
                client.step().await;
            }
            client
        }));
    }
    // The killer: SIGKILL at random moments, restart on the same data directory.
    let mut kills = 0;
    let mut killer = StdRng::seed_from_u64(master.random());
    while Instant::now() < deadline {
        let pause = killer.random_range(cfg.kill_every_ms.0..=cfg.kill_every_ms.1);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if Instant::now() >= deadline {
            break;
        }
        broker.kill();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(killer.random_range(0..200))).await;
        broker.restart().await;
        *shared.http.lock().unwrap_or_else(|e| e.into_inner()) = new_http();
        *shared.base.write().unwrap_or_else(|e| e.into_inner()) = broker.base_url();
    }
    let mut finished = Vec::new();
    for t in tasks {
        finished.push(t.await.expect("client task"));
    }
    let elapsed = started.elapsed();

    // Drain: no operation in progress, no callback pending (the broker resumes both at start).
    let data = broker.data_dir();
    let drain_deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = read_records(&data).await;
        if r.unfinished_operations == 0 && r.unfinished_callbacks == 0 {
            break;
        }
        if Instant::now() > drain_deadline {
            shared.violation(format!(
                "not drained after 90 s: {} operations in progress, {} callbacks pending",
                r.unfinished_operations, r.unfinished_callbacks
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    broker.kill();

    let records = read_records(&data).await;
    let ledger = read_ledger(&data);
    let expected = expected_ledger(&records);
    for leaked in ledger.difference(&expected) {
        shared.violation(format!("leaked on the backend (no live record): {leaked}"));
    }
    for missing in expected.difference(&ledger) {
        shared.violation(format!("missing on the backend (a live record): {missing}"));
    }
    // What the clients were sure of agrees with the records.
    let instance_state: HashMap<(String, String), (String, u64)> = records
        .instances
        .iter()
        .map(|i| {
            (
                (
                    i["tenant"].as_str().unwrap_or_default().to_owned(),
                    i["id"].as_str().unwrap_or_default().to_owned(),
                ),
                (
                    i["state"].as_str().unwrap_or_default().to_owned(),
                    i["generation"].as_u64().unwrap_or_default(),
                ),
            )
        })
        .collect();
    let binding_of: HashMap<(String, String, String), &Value> = records
        .bindings
        .iter()
        .map(|b| {
            (
                (
                    b["tenant"].as_str().unwrap_or_default().to_owned(),
                    b["instance_id"].as_str().unwrap_or_default().to_owned(),
                    b["id"].as_str().unwrap_or_default().to_owned(),
                ),
                b,
            )
        })
        .collect();
    for c in &finished {
        for inst in &c.instances {
            let key = (c.tenant.to_owned(), inst.id.clone());
            let state = instance_state.get(&key).map(|(s, _)| s.as_str());
            let exists = matches!(state, Some("ready"));
            match &inst.known {
                Known::Exists | Known::Bound(_) if !exists => shared.violation(format!(
                    "{}/{}: answered as existing, final state {state:?}",
                    c.tenant, inst.id
                )),
                Known::Absent if exists => shared.violation(format!(
                    "{}/{}: answered as deleted, final state {state:?}",
                    c.tenant, inst.id
                )),
                _ => {}
            }
            if !exists {
                continue;
            }
            let generation = instance_state.get(&key).map(|(_, g)| *g);
            for (bid, known) in &inst.bindings {
                let rec = binding_of
                    .get(&(c.tenant.to_owned(), inst.id.clone(), bid.clone()))
                    .filter(|b| b["instance_generation"].as_u64() == generation);
                let ready = rec.is_some_and(|b| b["state"] == "ready");
                match known {
                    Known::Bound(creds) => {
                        let stored = rec.map(|b| b["result"]["credentials"].clone());
                        if !ready || stored.as_ref() != Some(creds) {
                            shared.violation(format!(
                                "{}/{}/{bid}: bound with credentials the final state does not hold (ready: {ready})",
                                c.tenant, inst.id
                            ));
                        }
                    }
                    Known::Absent if ready => shared.violation(format!(
                        "{}/{}/{bid}: answered as unbound, final state ready",
                        c.tenant, inst.id
                    )),
                    _ => {}
                }
            }
        }
    }
    // Every webhook of an accepted operation was delivered.
    let hooked = shared
        .hooked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let delivered: BTreeSet<String> = receiver
        .received()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    for op in hooked.difference(&delivered) {
        shared.violation(format!("webhook of operation {op} never delivered"));
    }
    let violations = shared
        .violations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    ChaosReport {
        seed: cfg.seed,
        requests: shared.requests.load(Ordering::Relaxed),
        unanswered: shared.unanswered.load(Ordering::Relaxed),
        kills,
        elapsed,
        webhooks_expected: hooked.len(),
        webhooks_delivered: hooked.intersection(&delivered).count(),
        ledger_entries: ledger.len(),
        violations,
    }
}
