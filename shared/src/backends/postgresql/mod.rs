//! The PostgreSQL backend: on a shared server, a database and a `NOLOGIN` owner role per instance, a
//! `LOGIN` role per binding (member of the owner, `SET ROLE` to it by default). Every step checks what
//! exists first, so a job started again with the same operation id (a crash between two statements, a
//! redelivered message) completes without an error; deletes of what is gone succeed. One advisory lock
//! serialises the broker's admin statements on a server. See docs/design.md "The PostgreSQL backend".
//!
//! Binding passwords are derived (HMAC-SHA256 with the backend's key over the server, the role and the
//! bind's operation id), never stored: a bind started again after a crash between `CREATE ROLE` and the
//! broker's commit derives the same password and sets it again, so the credentials the broker finally
//! commits always open the role. Only a SCRAM-SHA-256 verifier of it is ever sent to the server.

pub mod config;
pub mod conn;
pub mod names;
mod steps;

use crate::catalog::{BackendConfig, Catalog};
use crate::model::Object;
use crate::ports::backend::{BackendError, BackendRejection, BackendResult};
use crate::ports::{Backend, BackendJob, BackendOutcome};
use crate::records::OperationKind;
use async_trait::async_trait;
use config::Server;
use conn::{Pool, StepError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use config::{ServerConfig, ServerConfigError, TlsMode};
pub use names::InstanceNames;

/// The log filter directive every binary adds: the PostgreSQL client logs each statement's text at
/// `debug`, and a `CREATE ROLE` statement carries a binding's password verifier.
pub const SQL_LOG_DIRECTIVE: &str = "tokio_postgres=warn";

/// The provision and update parameter naming the extensions to create.
pub const EXTENSIONS_PARAM: &str = "extensions";

/// Seconds `last_operation` suggests waiting for an asynchronous job of this backend.
const ESTIMATE_SECS: u64 = 2;

/// Per-plan settings (`"backend": {"type": "postgresql", "server": "main", …}` in the catalog).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresPlan {
    /// The name of a `[postgresql_servers.NAME]` section.
    pub server: String,
    /// Connections one binding's role may open (`CONNECTION LIMIT`); unlimited when absent.
    #[serde(default)]
    pub connection_limit: Option<u32>,
    /// `statement_timeout` of the binding roles in the instance's database, milliseconds.
    #[serde(default)]
    pub statement_timeout_ms: Option<u64>,
    /// Extensions a provision or update may ask for (`parameters.extensions`).
    #[serde(default)]
    pub extensions: Vec<String>,
    /// When set, a binding's role is valid this long (`VALID UNTIL`) and its metadata says so.
    #[serde(default)]
    pub credential_ttl_seconds: Option<u64>,
    /// Jobs run by the worker (the platform must send `accepts_incomplete=true`); synchronous otherwise.
    #[serde(default)]
    pub asynchronous: bool,
    /// Binding needs `bind_resource.app_guid` (422 `RequiresApp` otherwise).
    #[serde(default)]
    pub requires_app: bool,
}

fn valid_extension_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= names::MAX_NAME_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl PostgresPlan {
    pub fn validate(&self) -> Result<(), String> {
        if self.server.trim().is_empty() {
            return Err("backend.server must name a postgresql server".into());
        }
        if self.connection_limit == Some(0) {
            return Err("backend.connection_limit must be positive".into());
        }
        if self.statement_timeout_ms == Some(0) {
            return Err("backend.statement_timeout_ms must be positive".into());
        }
        if self.credential_ttl_seconds == Some(0) {
            return Err("backend.credential_ttl_seconds must be positive".into());
        }
        if let Some(e) = self.extensions.iter().find(|e| !valid_extension_name(e)) {
            return Err(format!(
                "backend.extensions: '{e}' is not an extension name (lowercase letters, digits, '_', '-')"
            ));
        }
        Ok(())
    }
}

/// Parameter keys the broker itself reads (sharing) and that reach the backend untouched.
const BROKER_KEYS: [&str; 2] = ["x_osb_cmdb", "sharing_token"];

/// The extensions a provision or update asks for, checked against the plan's list.
fn requested_extensions(
    plan: &PostgresPlan,
    params: Option<&Object>,
) -> Result<Vec<String>, BackendRejection> {
    let Some(params) = params else {
        return Ok(Vec::new());
    };
    if let Some(k) = params
        .keys()
        .find(|k| k.as_str() != EXTENSIONS_PARAM && !BROKER_KEYS.contains(&k.as_str()))
    {
        return Err(BackendRejection(format!(
            "unknown parameter '{k}': this plan accepts '{EXTENSIONS_PARAM}' (a list of extension names)"
        )));
    }
    let Some(v) = params.get(EXTENSIONS_PARAM) else {
        return Ok(Vec::new());
    };
    let list: Vec<String> = serde_json::from_value(v.clone()).map_err(|_| {
        BackendRejection(format!(
            "parameters.{EXTENSIONS_PARAM} must be a list of extension names"
        ))
    })?;
    let mut out: Vec<String> = Vec::new();
    for e in list {
        if !plan.extensions.contains(&e) {
            let allowed = if plan.extensions.is_empty() {
                "none".to_owned()
            } else {
                plan.extensions.join(", ")
            };
            // Only names from the plan's list are echoed: a refused name is not repeated verbatim
            // beyond a bounded, printable form.
            let shown: String = e
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(63)
                .collect();
            return Err(BackendRejection(format!(
                "extension '{shown}' is not allowed by this plan (allowed: {allowed})"
            )));
        }
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

/// Fault injection for tests: called after each completed step with its name; `true` stops the job there.
pub type FaultHook = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The PostgreSQL backend of one named server.
pub struct PostgresBackend {
    catalog: Arc<Catalog>,
    pool: Pool,
    /// Derives binding passwords.
    key: [u8; 32],
    /// Fault injection for tests: called after each completed step with its name; `true` stops the job
    /// there with an error, as a crash would (the admin connection is dropped).
    fault: Option<FaultHook>,
}

impl PostgresBackend {
    /// The backend of `server`; `key` derives binding passwords (keep it: a new key gives binds in
    /// progress new passwords, which they set again, but not the binds already finished).
    pub fn new(catalog: Arc<Catalog>, server: Server, key: [u8; 32]) -> Result<Self, BackendError> {
        let pool = Pool::new(Arc::new(server)).map_err(|e| BackendError(e.0))?;
        Ok(PostgresBackend {
            catalog,
            pool,
            key,
            fault: None,
        })
    }

    /// The same backend stopping after the first step for which `fault` answers `true` (tests of a
    /// crash between two statements).
    pub fn with_fault(mut self, fault: FaultHook) -> Self {
        self.fault = Some(fault);
        self
    }

    pub fn server(&self) -> &Server {
        &self.pool.server
    }

    /// The names of the instance a job acts on.
    pub fn names(&self, job: &BackendJob) -> InstanceNames {
        InstanceNames::new(
            &self.server().prefix,
            &job.tenant,
            job.instance_id.as_str(),
            job.generation,
        )
    }

    fn plan(&self, job: &BackendJob) -> Result<PostgresPlan, BackendRejection> {
        match self
            .catalog
            .plan_by_id(&job.plan_id)
            .map(|p| &p.plan.backend)
        {
            Some(BackendConfig::Postgresql(p)) if p.server == self.server().name => Ok(p.clone()),
            _ => Err(BackendRejection(format!(
                "plan '{}' is not served by postgresql server '{}'",
                job.plan_id,
                self.server().name
            ))),
        }
    }

    /// What the job needs, checked: the plan and the extensions it asks for.
    fn check(&self, job: &BackendJob) -> Result<(PostgresPlan, Vec<String>), BackendRejection> {
        let plan = self.plan(job)?;
        let exts = match job.kind {
            OperationKind::Provision | OperationKind::Update => {
                requested_extensions(&plan, job.parameters.as_ref())?
            }
            _ => Vec::new(),
        };
        Ok((plan, exts))
    }
}

/// How a step ended when it did not complete: retried later (`Retry`), or decided for good (`Failed`).
#[derive(Debug)]
enum StepOutcome {
    Retry(StepError),
    Failed(String),
}

impl From<StepError> for StepOutcome {
    fn from(e: StepError) -> Self {
        StepOutcome::Retry(e)
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    fn plan_job(&self, job: &BackendJob) -> Result<Option<u64>, BackendRejection> {
        let (plan, _) = self.check(job)?;
        Ok(plan.asynchronous.then_some(ESTIMATE_SECS))
    }

    async fn start(&self, job: &BackendJob) -> BackendResult {
        let (plan, exts) = match self.check(job) {
            Ok(c) => c,
            Err(e) => return Ok(BackendOutcome::Failed(e.0)),
        };
        match self.run(job, &plan, &exts).await {
            Ok(done) => Ok(BackendOutcome::Done(done)),
            Err(StepOutcome::Failed(d)) => Ok(BackendOutcome::Failed(d)),
            Err(StepOutcome::Retry(e)) => Err(BackendError(e.0)),
        }
    }

    /// Jobs of this backend finish in `start` (asynchronous plans run them in the worker), so there is
    /// never a handle to look at: a poll runs the job again, which is idempotent.
    async fn poll(&self, job: &BackendJob, _handle: &str) -> BackendResult {
        self.start(job).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan() -> PostgresPlan {
        serde_json::from_value(json!({"server": "main", "extensions": ["pgcrypto", "citext"]}))
            .unwrap()
    }

    #[test]
    fn requested_extensions_must_be_on_the_plan_list() {
        let p = plan();
        let params = |v: serde_json::Value| v.as_object().cloned();
        assert_eq!(
            requested_extensions(
                &p,
                params(json!({"extensions": ["citext", "citext"]})).as_ref()
            )
            .unwrap(),
            vec!["citext".to_owned()]
        );
        let e = requested_extensions(&p, params(json!({"extensions": ["plpython3u"]})).as_ref())
            .unwrap_err();
        assert_eq!(
            e.0,
            "extension 'plpython3u' is not allowed by this plan (allowed: pgcrypto, citext)"
        );
        assert!(
            requested_extensions(&p, params(json!({"extensions": "citext"})).as_ref()).is_err()
        );
        assert!(requested_extensions(&p, params(json!({"size": 3})).as_ref()).is_err());
        assert!(
            requested_extensions(&p, params(json!({"x_osb_cmdb": {}})).as_ref())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn plan_settings_are_validated() {
        assert!(plan().validate().is_ok());
        let mut p = plan();
        p.connection_limit = Some(0);
        assert!(p.validate().is_err());
        let mut p = plan();
        p.extensions = vec!["bad name".into()];
        assert!(p.validate().is_err());
        assert!(
            serde_json::from_value::<PostgresPlan>(json!({"server": "m", "colour": 1})).is_err()
        );
    }
}
