//! The simulated backend: per-plan delay and outcome, overridable per request through the `simulate`
//! parameter, and realistic credentials. What "exists" on its side is kept in a [`Ledger`] (a SQLite file
//! in local mode, so it survives restarts): provisions and binds add entries, deprovisions and unbinds
//! remove them, so tests can compare it with the broker's records. It honours the Backend contract
//! (`ports::backend`): every call is idempotent per operation id and resource, credentials are derived
//! from the binding's identity with a server-side key (the same on every call and in every process), and
//! the handle of a job in progress carries when it is ready.

use crate::broker::SIMULATE_KEY;
use crate::catalog::{BackendConfig, Catalog};
use crate::model::responses::BindingResult;
use crate::model::{Credentials, Object};
use crate::ports::backend::{BackendError, BackendRejection, BackendResult, Done, InstanceResult};
use crate::ports::{Backend, BackendJob, BackendOutcome, Clock, iso8601_millis};
use crate::records::OperationKind;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Longest delay a request may ask for.
pub const MAX_SIMULATED_DELAY_SECS: u64 = 3600;

/// Per-plan settings of the simulated backend (`"backend": {"type": "simulated", …}` in the catalog).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedPlan {
    /// Seconds a provision, update or deprovision takes; 0 means synchronous.
    pub delay_seconds: u64,
    /// Seconds a bind or unbind takes; 0 means synchronous.
    pub bind_delay_seconds: u64,
    /// Provisions (and binds) of this plan fail.
    pub fail: bool,
    /// Deprovisions and unbinds of this plan fail.
    pub fail_deletes: bool,
    /// Binding needs `bind_resource.app_guid` (422 `RequiresApp` otherwise).
    pub requires_app: bool,
    /// When set, bindings carry `metadata.expires_at`/`renew_before` this many seconds ahead.
    pub credential_ttl_seconds: Option<u64>,
}

impl SimulatedPlan {
    pub fn validate(&self) -> Result<(), String> {
        if self.delay_seconds > MAX_SIMULATED_DELAY_SECS
            || self.bind_delay_seconds > MAX_SIMULATED_DELAY_SECS
        {
            return Err(format!(
                "simulated delays must be at most {MAX_SIMULATED_DELAY_SECS} s"
            ));
        }
        if self.credential_ttl_seconds == Some(0) {
            return Err("credential_ttl_seconds must be positive".into());
        }
        Ok(())
    }
}

/// `simulate.fail_delete`: `true` (every delete of the resource fails) or how many deletes fail first.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum FailDelete {
    Always(bool),
    Times(u32),
}

impl FailDelete {
    fn times(self) -> u32 {
        match self {
            FailDelete::Always(true) => u32::MAX,
            FailDelete::Always(false) => 0,
            FailDelete::Times(n) => n,
        }
    }
}

/// The `simulate` request parameter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Override {
    delay_seconds: Option<u64>,
    fail: Option<bool>,
    failure_description: Option<String>,
    /// On a provision or update: how the instance's deprovision fails; on a bind: its unbind.
    fail_delete: Option<FailDelete>,
}

/// One resource that exists on the simulated backend's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// `I/<tenant>/<instance>/<generation>`, and for a binding `…/B/<binding>/<binding generation>`.
    pub key: String,
    /// The operation that created it.
    pub created_by: String,
    /// How many more deletes of it fail (`u32::MAX`: all).
    pub fail_deletes: u32,
    /// The delete operation that failed last (a repeated call of it fails again without counting).
    pub last_failed_op: Option<String>,
}

impl LedgerEntry {
    /// Whether the entry is a binding (else an instance).
    pub fn is_binding(&self) -> bool {
        self.key.contains("/B/")
    }
}

/// The key of the instance a job acts on.
pub fn instance_key(tenant: &str, instance_id: &str, generation: u64) -> String {
    format!("I/{tenant}/{instance_id}/{generation}")
}

/// The key of the binding a job acts on.
pub fn binding_key(
    tenant: &str,
    instance_id: &str,
    generation: u64,
    binding_id: &str,
    binding_generation: u64,
) -> String {
    format!(
        "{}/B/{binding_id}/{binding_generation}",
        instance_key(tenant, instance_id, generation)
    )
}

fn job_key(job: &BackendJob) -> String {
    match &job.binding_id {
        // A lease's binding on its owner's instance: the lease is part of its name.
        Some(b) if job.lease.is_some() => {
            let (lt, li) = job
                .lease
                .as_ref()
                .map(|(t, i)| (t.as_str(), i.as_str()))
                .unwrap_or_default();
            binding_key(
                &job.tenant,
                job.instance_id.as_str(),
                job.generation,
                &format!("L/{lt}/{li}/{}", b.as_str()),
                job.binding_generation,
            )
        }
        Some(b) => binding_key(
            &job.tenant,
            job.instance_id.as_str(),
            job.generation,
            b.as_str(),
            job.binding_generation,
        ),
        None => instance_key(&job.tenant, job.instance_id.as_str(), job.generation),
    }
}

/// Where the simulated backend keeps what exists on its side.
pub trait Ledger: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<LedgerEntry>, BackendError>;
    /// Adds or replaces the entry.
    fn put(&self, entry: &LedgerEntry) -> Result<(), BackendError>;
    /// Removes the entry and every entry under it (an instance's bindings).
    fn remove_tree(&self, key: &str) -> Result<(), BackendError>;
    fn list(&self) -> Result<Vec<LedgerEntry>, BackendError>;
    /// Whether its calls do file I/O, so that the backend makes them on blocking threads rather than on
    /// the async runtime's (where one call waiting on a disk write would hold up every request).
    fn blocking(&self) -> bool {
        false
    }
}

/// A ledger in memory (tests; AWS, where the simulated backend is a demo whose Lambda instances do not share
/// memory: credentials stay the same everywhere because they are derived, not stored).
#[derive(Default)]
pub struct MemoryLedger(Mutex<BTreeMap<String, LedgerEntry>>);

impl MemoryLedger {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, LedgerEntry>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Ledger for MemoryLedger {
    fn get(&self, key: &str) -> Result<Option<LedgerEntry>, BackendError> {
        Ok(self.map().get(key).cloned())
    }
    fn put(&self, entry: &LedgerEntry) -> Result<(), BackendError> {
        self.map().insert(entry.key.clone(), entry.clone());
        Ok(())
    }
    fn remove_tree(&self, key: &str) -> Result<(), BackendError> {
        let under = format!("{key}/");
        self.map()
            .retain(|k, _| k != key && !k.starts_with(under.as_str()));
        Ok(())
    }
    fn list(&self) -> Result<Vec<LedgerEntry>, BackendError> {
        Ok(self.map().values().cloned().collect())
    }
}

/// The local-mode ledger: a SQLite file of its own next to the broker's database (the backend's world is
/// not the broker's records), so a restarted broker finds what it created.
#[cfg(feature = "embedded")]
pub struct SqliteLedger(Mutex<rusqlite::Connection>);

#[cfg(feature = "embedded")]
impl SqliteLedger {
    pub fn open(path: &std::path::Path) -> Result<Self, BackendError> {
        let conn = rusqlite::Connection::open(path).map_err(ledger_error)?;
        conn.execute_batch(
            // A simulation's world: committed writes survive a crash or kill of the process (the WAL is
            // in the OS's cache), not a power loss; no fsync ever slows the requests that call it.
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = OFF;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS resources (key TEXT PRIMARY KEY, body TEXT NOT NULL);",
        )
        .map_err(ledger_error)?;
        Ok(SqliteLedger(Mutex::new(conn)))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(feature = "embedded")]
fn ledger_error(e: impl std::fmt::Display) -> BackendError {
    BackendError(format!("simulated backend ledger: {e}"))
}

#[cfg(feature = "embedded")]
fn decode_entry(body: String) -> Result<LedgerEntry, BackendError> {
    serde_json::from_str(&body).map_err(ledger_error)
}

#[cfg(feature = "embedded")]
impl Ledger for SqliteLedger {
    fn blocking(&self) -> bool {
        true
    }
    fn get(&self, key: &str) -> Result<Option<LedgerEntry>, BackendError> {
        use rusqlite::OptionalExtension;
        self.conn()
            .prepare_cached("SELECT body FROM resources WHERE key = ?1")
            .map_err(ledger_error)?
            .query_row([key], |r| r.get::<_, String>(0))
            .optional()
            .map_err(ledger_error)?
            .map(decode_entry)
            .transpose()
    }
    fn put(&self, entry: &LedgerEntry) -> Result<(), BackendError> {
        let body = serde_json::to_string(entry).map_err(ledger_error)?;
        self.conn()
            .prepare_cached(
                "INSERT INTO resources (key, body) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET body = excluded.body",
            )
            .map_err(ledger_error)?
            .execute([&entry.key, &body])
            .map_err(ledger_error)?;
        Ok(())
    }
    fn remove_tree(&self, key: &str) -> Result<(), BackendError> {
        // `substr`, not LIKE: ids may hold `_`, a LIKE wildcard.
        let under = format!("{key}/");
        self.conn()
            .prepare_cached(
                "DELETE FROM resources WHERE key = ?1 OR substr(key, 1, length(?2)) = ?2",
            )
            .map_err(ledger_error)?
            .execute([key, &under])
            .map_err(ledger_error)?;
        Ok(())
    }
    fn list(&self) -> Result<Vec<LedgerEntry>, BackendError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT body FROM resources ORDER BY key")
            .map_err(ledger_error)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(ledger_error)?;
        rows.map(|r| r.map_err(ledger_error).and_then(decode_entry))
            .collect()
    }
}

#[derive(Clone)]
pub struct SimulatedBackend {
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    ledger: Arc<dyn Ledger>,
    /// Derives credentials from a binding's identity.
    key: [u8; 32],
}

/// How a job behaves: its delay, whether it fails (and how), and what its resource's deletes will do.
struct Behaviour {
    delay: u64,
    failure: Option<String>,
    fail_deletes: Option<u32>,
}

impl SimulatedBackend {
    pub fn new(
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
        ledger: Arc<dyn Ledger>,
        key: [u8; 32],
    ) -> Self {
        SimulatedBackend {
            catalog,
            clock,
            ledger,
            key,
        }
    }

    /// What exists on the backend's side.
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    fn plan(&self, job: &BackendJob) -> SimulatedPlan {
        match self
            .catalog
            .plan_by_id(&job.plan_id)
            .map(|p| &p.plan.backend)
        {
            Some(BackendConfig::Simulated(s)) => s.clone(),
            _ => SimulatedPlan::default(),
        }
    }

    /// Delay and outcome of the job: the plan's, overridden by the request's `simulate` parameter.
    fn behaviour(&self, job: &BackendJob) -> Result<Behaviour, BackendRejection> {
        let plan = self.plan(job);
        let ov = match job.parameters.as_ref().and_then(|p| p.get(SIMULATE_KEY)) {
            None => Override::default(),
            Some(v) => serde_json::from_value::<Override>(v.clone()).map_err(|e| {
                BackendRejection(format!(
                    "parameters.simulate must be {{\"delay_seconds\": integer, \"fail\": bool, \"failure_description\": string, \"fail_delete\": bool or integer}}: {e}"
                ))
            })?,
        };
        let default_delay = match job.kind {
            OperationKind::Bind | OperationKind::Unbind => plan.bind_delay_seconds,
            _ => plan.delay_seconds,
        };
        let delay = ov.delay_seconds.unwrap_or(default_delay);
        if delay > MAX_SIMULATED_DELAY_SECS {
            return Err(BackendRejection(format!(
                "parameters.simulate.delay_seconds must be at most {MAX_SIMULATED_DELAY_SECS}"
            )));
        }
        let fail = match job.kind {
            OperationKind::Provision | OperationKind::Bind => ov.fail.unwrap_or(plan.fail),
            OperationKind::Update => ov.fail.unwrap_or(false),
            OperationKind::Deprovision | OperationKind::Unbind => plan.fail_deletes,
        };
        let failure = fail.then(|| {
            ov.failure_description.clone().unwrap_or_else(|| {
                format!(
                    "simulated failure of {} (simulated backend)",
                    job.kind.as_str()
                )
            })
        });
        Ok(Behaviour {
            delay,
            failure,
            fail_deletes: ov.fail_delete.map(FailDelete::times),
        })
    }

    /// The job's end: what it does to the ledger and what it answers. Idempotent: a repeated call for
    /// the same resource and operation answers the same.
    fn finish(&self, job: &BackendJob, b: Behaviour) -> BackendResult {
        if let Some(d) = b.failure {
            return Ok(BackendOutcome::Failed(d));
        }
        let key = job_key(job);
        match job.kind {
            OperationKind::Provision | OperationKind::Bind => {
                if self.ledger.get(&key)?.is_none() {
                    self.ledger.put(&LedgerEntry {
                        key,
                        created_by: job.operation_id.to_string(),
                        fail_deletes: b.fail_deletes.unwrap_or(0),
                        last_failed_op: None,
                    })?;
                }
                Ok(BackendOutcome::Done(if job.kind == OperationKind::Bind {
                    Done::Binding(self.credentials(job))
                } else {
                    Done::Instance(self.instance_result(job))
                }))
            }
            OperationKind::Update => {
                if let (Some(n), Some(mut entry)) = (b.fail_deletes, self.ledger.get(&key)?) {
                    entry.fail_deletes = n;
                    self.ledger.put(&entry)?;
                }
                Ok(BackendOutcome::Done(Done::Instance(
                    self.instance_result(job),
                )))
            }
            OperationKind::Deprovision | OperationKind::Unbind => {
                if let Some(mut entry) = self.ledger.get(&key)? {
                    let op = job.operation_id.to_string();
                    if entry.last_failed_op.as_deref() == Some(op.as_str()) {
                        return Ok(BackendOutcome::Failed(delete_failure(job)));
                    }
                    if entry.fail_deletes > 0 {
                        if entry.fail_deletes != u32::MAX {
                            entry.fail_deletes -= 1;
                        }
                        entry.last_failed_op = Some(op);
                        self.ledger.put(&entry)?;
                        return Ok(BackendOutcome::Failed(delete_failure(job)));
                    }
                }
                self.ledger.remove_tree(&key)?;
                Ok(BackendOutcome::Done(Done::Deleted))
            }
        }
    }

    /// `finish`, on a blocking thread when the ledger does file I/O.
    async fn finish_off_runtime(&self, job: &BackendJob, b: Behaviour) -> BackendResult {
        if !self.ledger.blocking() {
            return self.finish(job, b);
        }
        let (this, job) = (self.clone(), job.clone());
        tokio::task::spawn_blocking(move || this.finish(&job, b))
            .await
            .map_err(|e| BackendError(format!("simulated backend: {e}")))?
    }

    fn instance_result(&self, job: &BackendJob) -> InstanceResult {
        InstanceResult {
            dashboard_url: Some(format!(
                "https://dashboard.simulated.invalid/instances/{}",
                job.instance_id
            )),
            metadata: None,
        }
    }

    /// `n` characters of `alphabet` derived from the binding's identity (HMAC-SHA256 with the backend's key).
    fn derived(&self, job: &BackendJob, label: &str, alphabet: &[u8], n: usize) -> String {
        let mut out = String::with_capacity(n);
        let mut counter = 0u32;
        while out.len() < n {
            let msg = format!("{label}\n{counter}\n{}", job_key(job));
            let mac = crate::sharing::token::hmac_sha256(&self.key, msg.as_bytes());
            for byte in mac {
                // Rejection sampling keeps the characters uniform.
                let limit = 256 - (256 % alphabet.len());
                if (byte as usize) < limit && out.len() < n {
                    out.push(alphabet[byte as usize % alphabet.len()] as char);
                }
            }
            counter += 1;
        }
        out
    }

    /// Realistic database credentials, derived from the binding's identity: the same on every call.
    fn credentials(&self, job: &BackendJob) -> BindingResult {
        const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let username = format!("u_{}", self.derived(job, "username", LOWER, 10));
        let password = self.derived(job, "password", ALNUM, 32);
        let db: String = job
            .instance_id
            .as_str()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect::<String>()
            .to_lowercase();
        let host = format!("db-{db}.simulated.invalid");
        let database = format!("db_{db}");
        let mut creds = Object::new();
        creds.insert(
            "uri".into(),
            json!(format!(
                "postgresql://{username}:{password}@{host}:5432/{database}"
            )),
        );
        creds.insert(
            "jdbcUrl".into(),
            json!(format!(
                "jdbc:postgresql://{host}:5432/{database}?user={username}&password={password}"
            )),
        );
        creds.insert("hostname".into(), json!(host));
        creds.insert("port".into(), json!(5432));
        creds.insert("name".into(), json!(database));
        creds.insert("username".into(), json!(username));
        creds.insert("password".into(), json!(password));
        // Counted from when the bind was accepted, so a repeated call answers the same times.
        let metadata = self.plan(job).credential_ttl_seconds.map(|ttl| {
            let ttl_ms = (ttl as i64).saturating_mul(1000);
            let mut m = Object::new();
            m.insert(
                "expires_at".into(),
                json!(iso8601_millis(job.started_at + ttl_ms)),
            );
            m.insert(
                "renew_before".into(),
                json!(iso8601_millis(job.started_at + ttl_ms * 4 / 5)),
            );
            m
        });
        BindingResult {
            credentials: Some(Credentials(creds)),
            metadata,
            endpoints: Some(vec![
                json!({"host": host, "ports": ["5432"], "protocol": "tcp"}),
            ]),
            ..Default::default()
        }
    }
}

fn delete_failure(job: &BackendJob) -> String {
    format!(
        "simulated failure of {} (simulated backend)",
        job.kind.as_str()
    )
}

/// The handle of a job in progress: `sim:<ready at, unix ms>`.
fn encode_handle(ready_at: i64) -> String {
    format!("sim:{ready_at}")
}

fn decode_handle(handle: &str) -> Option<i64> {
    handle.strip_prefix("sim:")?.parse().ok()
}

/// Seconds until `ready_at`, at least 1.
fn retry_after(ready_at: i64, now: i64) -> u64 {
    ((ready_at - now + 999) / 1000).max(1) as u64
}

#[async_trait]
impl Backend for SimulatedBackend {
    fn plan_job(&self, job: &BackendJob) -> Result<Option<u64>, BackendRejection> {
        let b = self.behaviour(job)?;
        Ok((b.delay > 0).then_some(b.delay))
    }

    async fn start(&self, job: &BackendJob) -> BackendResult {
        let b = match self.behaviour(job) {
            Ok(b) => b,
            Err(e) => return Ok(BackendOutcome::Failed(e.0)),
        };
        if b.delay == 0 {
            return self.finish_off_runtime(job, b).await;
        }
        let ready_at = job.started_at + (b.delay as i64) * 1000;
        self.poll(job, &encode_handle(ready_at)).await
    }

    async fn poll(&self, job: &BackendJob, handle: &str) -> BackendResult {
        let Some(ready_at) = decode_handle(handle) else {
            return Ok(BackendOutcome::Failed(
                "the simulated backend does not know this job".into(),
            ));
        };
        let now = self.clock.now_ms();
        if now < ready_at {
            return Ok(BackendOutcome::InProgress {
                handle: handle.to_owned(),
                retry_after_secs: retry_after(ready_at, now),
            });
        }
        match self.behaviour(job) {
            Ok(b) => self.finish_off_runtime(job, b).await,
            Err(e) => Ok(BackendOutcome::Failed(e.0)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip() {
        assert_eq!(decode_handle(&encode_handle(42)), Some(42));
        assert_eq!(decode_handle("other"), None);
        assert_eq!(retry_after(10_001, 10_000), 1);
        assert_eq!(retry_after(12_500, 10_000), 3);
    }

    #[test]
    fn memory_ledger_removes_an_instance_with_its_bindings_only() {
        let l = MemoryLedger::default();
        let entry = |key: String| LedgerEntry {
            key,
            created_by: "op".into(),
            fail_deletes: 0,
            last_failed_op: None,
        };
        l.put(&entry(instance_key("t", "i_1", 1))).unwrap();
        l.put(&entry(binding_key("t", "i_1", 1, "b", 1))).unwrap();
        l.put(&entry(instance_key("t", "i_10", 1))).unwrap();
        l.put(&entry(instance_key("t", "i_1", 2))).unwrap();
        l.remove_tree(&instance_key("t", "i_1", 1)).unwrap();
        let keys: Vec<String> = l.list().unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec!["I/t/i_1/2".to_owned(), "I/t/i_10/1".to_owned()]);
    }
}
