//! End-to-end harness: builds and starts the real local broker binary (`osb-broker`, package
//! `osb-local`) on a free loopback port with its own temporary data directory and TOML configuration,
//! and talks to it over HTTP like a platform would (Basic auth, `X-Broker-API-Version: 2.17`).
//!
//! Every test starts its own broker, so tests run in parallel; the process is killed when the
//! [`Broker`] is dropped. Nothing here ever leaves the loopback interface.
//!
//! Run with `cargo test -p e2e`. The broker's log goes to `broker.log` in its temporary directory
//! and its last lines are printed when a test fails; `E2E_BROKER_LOG` sets its `RUST_LOG`.

use base64::Engine;

pub mod chaos;
pub mod receiver;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The OSB version every request announces.
pub const API_VERSION: &str = "2.17";

/// Demo catalog: the simulated PostgreSQL offering and its plans.
pub const PG_SERVICE: &str = "6d3a9a9e-6c2f-4c55-9d0e-3b1f2f6c1a01";
/// Synchronous, parameter schemas, `maintenance_info` 1.2.0, `binding_rotatable`, credential TTL.
pub const SMALL: &str = "0a7f4a34-5b0b-4b8e-8d4e-1f0d3c9a2b11";
/// Asynchronous (3 s), `maximum_polling_duration` 600.
pub const STANDARD: &str = "1b8e5b45-6c1c-4c9f-9e5f-2a1e4d0b3c22";
/// Synchronous provisioning, asynchronous bindings (2 s).
pub const ASYNC_BINDINGS: &str = "2c9f6c56-7d2d-4daf-8f60-3b2f5e1c4d33";
/// Demo catalog: the simulated queue offering (`plan_updateable: false`).
pub const QUEUE_SERVICE: &str = "7e4b0baf-7d30-4d66-8e1f-4c2a3a7d2b02";
/// Bindings need `bind_resource.app_guid`.
pub const APP_BOUND: &str = "3da07d67-8e3e-4eb0-9071-4c3f6f2d5e44";

/// A tenant of the default configuration: name, platform profile, username.
#[derive(Debug, Clone, Copy)]
pub struct TenantSpec {
    pub name: &'static str,
    pub profile: &'static str,
    pub username: &'static str,
    /// `accept_leases_from` of its configuration (TOML).
    pub accept_leases_from: &'static str,
}

/// The three tenants every test broker knows.
pub const TENANTS: [TenantSpec; 3] = [
    TenantSpec {
        name: "cf1",
        profile: "cloudfoundry",
        username: "cf1-platform",
        // Consents to no one's sharing rules: nobody's `sharing_to` can capture its provisions.
        accept_leases_from: "[]",
    },
    TenantSpec {
        name: "cf2",
        profile: "cloudfoundry",
        username: "cf2-platform",
        accept_leases_from: "\"*\"",
    },
    TenantSpec {
        name: "ks2",
        profile: "kubernetes",
        username: "ks2-platform",
        accept_leases_from: "[\"cf1\"]",
    },
];

/// The credentials of a tenant of one broker. Passwords are unique per broker, so a client can
/// never be answered by another test's broker that happens to listen on a reused port.
#[derive(Debug, Clone)]
pub struct TenantCreds {
    pub name: &'static str,
    pub profile: &'static str,
    pub username: String,
    pub password: String,
    pub accept_leases_from: &'static str,
}

/// Longest a single test may run.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest `poll_until_final` keeps polling.
pub const POLL_LIMIT: Duration = Duration::from_secs(60);
/// Longest the broker may take to answer its catalog after start.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Longest a single HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs a test body, failing it when it takes longer than [`TEST_TIMEOUT`]. The broker binary is
/// built first, outside the time bound (the build may wait for other builds of the workspace).
pub async fn bounded<F: Future>(body: F) -> F::Output {
    broker_binary();
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e package lives inside the workspace")
        .to_path_buf()
}

/// The records of one entity kind in a broker's `broker.db` as JSON, their sealed fields opened with the
/// data directory's record key (what the broker itself reads).
pub async fn stored_records(data_dir: &Path, kind: &str) -> Vec<Value> {
    let keyring = osb_broker::adapters::local_key::LocalKeyring::load(&data_dir.join("record-key"))
        .expect("the record key file");
    let rows: Vec<(String, String, Vec<u8>)> = {
        let db = rusqlite::Connection::open(data_dir.join("broker.db")).expect("broker.db");
        let mut stmt = db
            .prepare("SELECT pk, sk, body FROM items WHERE kind = ?1")
            .expect("select");
        stmt.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    };
    let mut out = Vec::with_capacity(rows.len());
    for (pk, sk, body) in rows {
        let opened = osb_broker::sealing::open_value(&pk, &sk, &body, &keyring)
            .await
            .expect("sealed fields open");
        out.push(opened.unwrap_or_else(|| serde_json::from_slice(&body).expect("json")));
    }
    out
}

/// Builds `osb-broker` once per test process and returns its path.
pub fn broker_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", "osb-local", "--bin", "osb-broker"])
            .current_dir(&root)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run cargo to build osb-broker");
        assert!(
            out.status.success(),
            "cargo build -p osb-local --bin osb-broker failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(d) => {
                let d = PathBuf::from(d);
                if d.is_absolute() { d } else { root.join(d) }
            }
            None => root.join("target"),
        };
        let bin = target
            .join("debug")
            .join(format!("osb-broker{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

/// A fresh id, unique within the test process (ids only need to be unique per broker anyway).
pub fn unique_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{prefix}-{:04}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("cannot bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A running local broker with its own data directory. Killed on drop.
pub struct Broker {
    dir: tempfile::TempDir,
    extra: String,
    /// `RUST_LOG` of the broker process (`E2E_BROKER_LOG` overrides the default `info`).
    rust_log: String,
    secret: String,
    port: u16,
    /// The admin API's port (`[admin] listen`).
    admin_port: u16,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Broker {
    /// Starts a broker with the three default tenants and the demo catalog; `config_toml_extra` is put
    /// in the configuration file before the tenant tables (top-level keys, or whole tables).
    pub async fn start(config_toml_extra: &str) -> Broker {
        let rust_log = std::env::var("E2E_BROKER_LOG").unwrap_or_else(|_| "info".into());
        Broker::start_logging(config_toml_extra, &rust_log).await
    }

    /// [`Broker::start`] with the broker logging at `rust_log` (e.g. `debug`, to check what logs hold).
    pub async fn start_logging(config_toml_extra: &str, rust_log: &str) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("osb-e2e-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let secret = format!(
            "{}-{}",
            unique_id("pw"),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default()
        );
        let mut broker = Broker {
            dir,
            extra: config_toml_extra.to_owned(),
            rust_log: rust_log.to_owned(),
            secret,
            port: 0,
            admin_port: 0,
            child: None,
            http: new_http_client(),
        };
        broker.launch(None).await;
        broker
    }

    /// The broker process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// [`Broker::start`] with nothing extra.
    pub async fn start_default() -> Broker {
        Broker::start("").await
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The admin API's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// The operator's password (username `operator`).
    pub fn admin_password(&self) -> String {
        format!("admin-{}", self.secret)
    }

    /// A GET of the admin API with `auth` (username, password; `None`: no credentials): status and body.
    pub async fn admin_get(&self, path: &str, auth: Option<(&str, &str)>) -> (u16, Value) {
        self.admin_request(Method::GET, path, auth).await
    }

    /// A request to the admin API with `auth`: status and JSON body (`Null` when none).
    pub async fn admin_request(
        &self,
        method: Method,
        path: &str,
        auth: Option<(&str, &str)>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.admin_url()));
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.expect("admin request");
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("broker.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    /// Everything the broker printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn write_config(&self) {
        let mut cfg = format!(
            "listen = {}\ndata_dir = {}\n{}\n",
            toml_string(&format!("127.0.0.1:{}", self.port)),
            toml_string(&self.data_dir().to_string_lossy()),
            self.extra
        );
        cfg.push_str(&format!(
            "\n[admin]\nlisten = {}\nusername = \"operator\"\npassword = {}\n",
            toml_string(&format!("127.0.0.1:{}", self.admin_port)),
            toml_string(&self.admin_password())
        ));
        for t in self.tenants() {
            cfg.push_str(&format!(
                "\n[[tenants]]\nname = {}\nprofile = {}\nusername = {}\npassword = {}\naccept_leases_from = {}\n",
                toml_string(t.name),
                toml_string(t.profile),
                toml_string(&t.username),
                toml_string(&t.password),
                t.accept_leases_from
            ));
        }
        std::fs::write(self.config_path(), cfg).expect("cannot write the broker configuration");
    }

    /// Starts the process (on `port`, or a free one) and waits until it answers its catalog. A port
    /// taken by someone else between probing and binding is retried on another free port.
    async fn launch(&mut self, port: Option<u16>) {
        let mut port = port;
        let mut failures = Vec::new();
        for _ in 0..4 {
            self.port = port.take().unwrap_or_else(free_port);
            if self.admin_port == 0 || !failures.is_empty() {
                self.admin_port = free_port();
            }
            self.write_config();
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "the broker did not start:\n{}\n--- log ---\n{}",
            failures.join("\n"),
            self.log()
        );
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open the log file: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot clone the log file: {e}"))?;
        let child = Command::new(broker_binary())
            .arg("--config")
            .arg(self.config_path())
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot spawn {}: {e}", broker_binary().display()))?;
        self.child = Some(child);
        // A new connection pool: connections to a killed process must not be reused.
        self.http = new_http_client();
        let client = self.client("cf1");
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "port {}: the broker exited with {status}",
                    self.port
                ));
            }
            if let Ok(r) = client.request(Method::GET, "/v2/catalog").send().await
                && r.status().as_u16() == 200
            {
                return Ok(());
            }
            if started.elapsed() > START_LIMIT {
                self.kill();
                return Err(format!(
                    "port {}: no catalog within {START_LIMIT:?}",
                    self.port
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the broker at once (SIGKILL): no graceful shutdown, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs the broker binary once more on this broker's configuration with `args` in front (e.g.
    /// `reencrypt`), while the broker itself is stopped: its exit status (`None`: still running after
    /// `limit`, then killed) and everything it printed.
    pub fn run_binary(
        &self,
        args: &[&str],
        limit: Duration,
    ) -> (Option<std::process::ExitStatus>, String) {
        let out = self.dir.path().join("run.log");
        let log = std::fs::File::create(&out).expect("run log");
        let log2 = log.try_clone().expect("run log");
        let mut child = Command::new(broker_binary())
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("spawn the broker binary");
        let started = Instant::now();
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (status, std::fs::read_to_string(&out).unwrap_or_default())
    }

    /// Starts the broker again on the same data directory (killing it first if it still runs), on the
    /// same port when it is still free.
    pub async fn restart(&mut self) {
        self.kill();
        let port = self.port;
        self.launch(Some(port)).await;
    }

    /// The credentials of the three default tenants of this broker.
    pub fn tenants(&self) -> Vec<TenantCreds> {
        TENANTS
            .iter()
            .map(|t| TenantCreds {
                name: t.name,
                profile: t.profile,
                username: t.username.to_owned(),
                password: format!("{}-secret-{}", t.name, self.secret),
                accept_leases_from: t.accept_leases_from,
            })
            .collect()
    }

    /// The credentials of one of the default tenants.
    pub fn tenant(&self, name: &str) -> TenantCreds {
        self.tenants()
            .into_iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tenant '{name}' in the e2e configuration"))
    }

    /// A client authenticated as one of the default tenants.
    pub fn client(&self, tenant_name: &str) -> Client {
        let t = self.tenant(tenant_name);
        self.client_with(&t.username, &t.password)
    }

    /// A client with arbitrary credentials (for authentication tests).
    pub fn client_with(&self, username: &str, password: &str) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base_url(),
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!(
                "--- last lines of the broker log ({}) ---",
                self.log_path().display()
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn new_http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("cannot build the HTTP client")
}

/// A response: status, headers and the body (as JSON when it is JSON, `Value::Null` otherwise).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status code, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {} with body {}",
            self.status, self.text
        );
        self
    }

    /// Asserts an OSB error: the status, a JSON object body with a non-empty `description`, and, when
    /// given, the `error` code.
    #[track_caller]
    pub fn expect_error(&self, status: u16, error: Option<&str>) -> &Self {
        self.expect(status);
        assert!(
            self.is_json(),
            "error response without a JSON content type: {:?} {}",
            self.header("content-type"),
            self.text
        );
        assert!(
            self.json.is_object(),
            "error body is not a JSON object: {}",
            self.text
        );
        if let Some(d) = self.json.get("description") {
            assert!(
                d.as_str().is_some_and(|d| !d.trim().is_empty()),
                "description must be a non-empty string: {}",
                self.text
            );
        } else {
            panic!("error body without a description: {}", self.text);
        }
        if let Some(code) = error {
            assert_eq!(
                self.json["error"].as_str(),
                Some(code),
                "error code of {}",
                self.text
            );
        }
        self
    }

    /// The body's `description`.
    pub fn description(&self) -> &str {
        self.json["description"].as_str().unwrap_or_default()
    }

    pub fn is_json(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"))
    }

    /// The `operation` of a 202 body.
    #[track_caller]
    pub fn operation(&self) -> String {
        match self.json["operation"].as_str() {
            Some(op) if !op.is_empty() => op.to_owned(),
            _ => panic!("no operation in {}", self.text),
        }
    }

    /// `state` of a last_operation body.
    pub fn state(&self) -> &str {
        self.json["state"].as_str().unwrap_or_default()
    }

    /// `Retry-After`, in seconds.
    pub fn retry_after(&self) -> Option<u64> {
        self.header("retry-after")
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Sends a request and reads the whole answer.
pub async fn send(rb: RequestBuilder) -> Resp {
    let r = rb.send().await.expect("HTTP request failed");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("cannot read the response body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        json,
        text,
    }
}

/// An OSB client of one tenant.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    username: String,
    password: String,
}

impl Client {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with nothing added: no credentials, no version header.
    pub fn raw(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// A request with Basic auth and `X-Broker-API-Version: 2.17`.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.raw(method, path)
            .basic_auth(&self.username, Some(&self.password))
            .header("X-Broker-API-Version", API_VERSION)
    }

    pub async fn get(&self, path: &str) -> Resp {
        send(self.request(Method::GET, path)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        send(self.request(Method::PUT, path).json(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        send(self.request(Method::PATCH, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        send(self.request(Method::DELETE, path)).await
    }

    /// Polls a `last_operation` path until the state is final (or the answer is anything but 200
    /// "in progress", e.g. 410 after a delete), sleeping `Retry-After` seconds between polls.
    /// Panics after [`POLL_LIMIT`].
    pub async fn poll_until_final(&self, path: &str) -> Resp {
        let started = Instant::now();
        loop {
            let r = self.get(path).await;
            if r.status != 200 || r.state() != "in progress" {
                return r;
            }
            assert!(
                started.elapsed() < POLL_LIMIT,
                "{path} still in progress after {POLL_LIMIT:?}: {}",
                r.text
            );
            let wait = r.retry_after().unwrap_or(1).clamp(1, 5);
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
    }

    /// Provisions (accepting async) and waits until the instance is ready; panics otherwise.
    pub async fn provision_ready(&self, id: &str, body: &Value) {
        let r = self
            .put(
                &format!("{}?accepts_incomplete=true", instance_path(id)),
                body,
            )
            .await;
        match r.status {
            201 => {}
            202 => {
                let done = self.poll_until_final(&instance_last_op_path(id)).await;
                done.expect(200);
                assert_eq!(
                    done.state(),
                    "succeeded",
                    "provision of {id}: {}",
                    done.text
                );
            }
            _ => panic!("provision of {id}: HTTP {} {}", r.status, r.text),
        }
    }

    /// Binds (accepting async) and waits until the binding is ready; returns the binding as fetched.
    pub async fn bind_ready(&self, instance_id: &str, binding_id: &str, body: &Value) -> Value {
        let path = binding_path(instance_id, binding_id);
        let r = self
            .put(&format!("{path}?accepts_incomplete=true"), body)
            .await;
        match r.status {
            201 => {}
            202 => {
                let done = self
                    .poll_until_final(&binding_last_op_path(instance_id, binding_id))
                    .await;
                done.expect(200);
                assert_eq!(
                    done.state(),
                    "succeeded",
                    "bind of {binding_id}: {}",
                    done.text
                );
            }
            _ => panic!("bind of {binding_id}: HTTP {} {}", r.status, r.text),
        }
        let got = self.get(&path).await;
        got.expect(200);
        got.json
    }
}

// ---- paths -----------------------------------------------------------------------------------

pub fn instance_path(id: &str) -> String {
    format!("/v2/service_instances/{id}")
}

pub fn instance_last_op_path(id: &str) -> String {
    format!("/v2/service_instances/{id}/last_operation")
}

pub fn binding_path(instance_id: &str, binding_id: &str) -> String {
    format!("/v2/service_instances/{instance_id}/service_bindings/{binding_id}")
}

pub fn binding_last_op_path(instance_id: &str, binding_id: &str) -> String {
    format!("{}/last_operation", binding_path(instance_id, binding_id))
}

/// The service offering of a demo plan.
pub fn service_of(plan_id: &str) -> &'static str {
    if plan_id == APP_BOUND {
        QUEUE_SERVICE
    } else {
        PG_SERVICE
    }
}

/// `service_id=…&plan_id=…`, the query DELETE requires.
pub fn ids_query(plan_id: &str) -> String {
    format!("service_id={}&plan_id={plan_id}", service_of(plan_id))
}

/// `DELETE` path of an instance, with the required ids and `accepts_incomplete`.
pub fn deprovision_path(id: &str, plan_id: &str, accepts_incomplete: bool) -> String {
    format!(
        "{}?{}&accepts_incomplete={accepts_incomplete}",
        instance_path(id),
        ids_query(plan_id)
    )
}

/// `DELETE` path of a binding, with the required ids and `accepts_incomplete`.
pub fn unbind_path(
    instance_id: &str,
    binding_id: &str,
    plan_id: &str,
    accepts_incomplete: bool,
) -> String {
    format!(
        "{}?{}&accepts_incomplete={accepts_incomplete}",
        binding_path(instance_id, binding_id),
        ids_query(plan_id)
    )
}

// ---- bodies ----------------------------------------------------------------------------------

/// A provision body as Cloud Foundry sends it.
pub fn provision_body(plan_id: &str, parameters: Option<Value>) -> Value {
    let mut b = json!({
        "service_id": service_of(plan_id),
        "plan_id": plan_id,
        "organization_guid": "org-guid-e2e",
        "space_guid": "space-guid-e2e",
        "context": {
            "platform": "cloudfoundry",
            "organization_guid": "org-guid-e2e",
            "organization_name": "e2e-org",
            "space_guid": "space-guid-e2e",
            "space_name": "e2e-space",
            "instance_name": "e2e-instance"
        }
    });
    if let Some(p) = parameters {
        b["parameters"] = p;
    }
    b
}

/// A provision body as Kubernetes sends it.
pub fn provision_body_k8s(plan_id: &str, parameters: Option<Value>) -> Value {
    let mut b = json!({
        "service_id": service_of(plan_id),
        "plan_id": plan_id,
        "organization_guid": "cluster-e2e",
        "space_guid": "namespace-e2e",
        "context": {
            "platform": "kubernetes",
            "namespace": "namespace-e2e",
            "clusterid": "cluster-e2e",
            "instance_name": "e2e-instance"
        }
    });
    if let Some(p) = parameters {
        b["parameters"] = p;
    }
    b
}

/// A bind body for an application.
pub fn bind_body(plan_id: &str, parameters: Option<Value>) -> Value {
    let mut b = json!({
        "service_id": service_of(plan_id),
        "plan_id": plan_id,
        "bind_resource": {"app_guid": "app-guid-e2e"},
        "context": {
            "platform": "cloudfoundry",
            "organization_guid": "org-guid-e2e",
            "organization_name": "e2e-org",
            "space_guid": "space-guid-e2e",
            "space_name": "e2e-space"
        }
    });
    if let Some(p) = parameters {
        b["parameters"] = p;
    }
    b
}

/// `{"simulate": {"delay_seconds": n}}`.
pub fn delay(seconds: u64) -> Value {
    json!({"simulate": {"delay_seconds": seconds}})
}

/// An `X-Broker-API-Originating-Identity` value: `<platform> <base64 of the JSON value>`.
pub fn originating_identity(platform: &str, value: &Value) -> String {
    format!(
        "{platform} {}",
        base64::engine::general_purpose::STANDARD.encode(value.to_string())
    )
}

/// An instance's own parameters from a GET instance body: without the owner's sharing view
/// (`x_osb_cmdb`, shown to the owner of a shareable offering's instance, DESIGN §7).
pub fn own_parameters(instance: &Value) -> Value {
    let mut p = instance["parameters"].clone();
    if let Some(o) = p.as_object_mut() {
        o.remove("x_osb_cmdb");
    }
    p
}

/// A query-string value, percent-encoded.
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `webhook=…&secret=…`: the query parameters that register a webhook for an operation.
pub fn webhook_query(url: &str, secret: &str) -> String {
    format!("webhook={}&secret={}", urlencode(url), urlencode(secret))
}

/// Local-mode configuration for tests with webhook receivers on loopback over plain http: short
/// timeouts, the given retry delays, no jitter.
pub fn loopback_webhooks_config(delays_secs: &[u64]) -> String {
    let delays: Vec<String> = delays_secs.iter().map(u64::to_string).collect();
    format!(
        r#"
[webhooks]
allow_http = true
allow_loopback = true

[webhook_delivery]
connect_timeout_ms = 500
timeout_ms = 800

[webhook_delivery.retry]
delays_secs = [{}]
jitter = 0.0
"#,
        delays.join(", ")
    )
}
