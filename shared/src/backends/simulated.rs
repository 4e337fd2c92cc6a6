//! The simulated backend: per-plan delay and outcome, overridable per request through the `simulate`
//! parameter, and realistic generated credentials. It keeps no state: the job's handle carries when it
//! is ready and how it ends, so a restart of the broker changes nothing.

use crate::broker::SIMULATE_KEY;
use crate::catalog::{BackendConfig, Catalog};
use crate::model::responses::BindingResult;
use crate::model::{Credentials, Object};
use crate::ports::backend::{BackendRejection, Done, InstanceResult};
use crate::ports::{Backend, BackendJob, BackendOutcome, Clock, rfc3339_ms};
use crate::records::OperationKind;
use async_trait::async_trait;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

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

/// The `simulate` request parameter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Override {
    delay_seconds: Option<u64>,
    fail: Option<bool>,
    failure_description: Option<String>,
}

pub struct SimulatedBackend {
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
}

impl SimulatedBackend {
    pub fn new(catalog: Arc<Catalog>, clock: Arc<dyn Clock>) -> Self {
        SimulatedBackend { catalog, clock }
    }

    fn plan(&self, job: &BackendJob) -> SimulatedPlan {
        match self
            .catalog
            .plan_by_id(&job.plan_id)
            .map(|p| &p.plan.backend)
        {
            Some(BackendConfig::Simulated(s)) => s.clone(),
            None => SimulatedPlan::default(),
        }
    }

    /// Delay and outcome of the job: the plan's, overridden by the request's `simulate` parameter.
    fn behaviour(&self, job: &BackendJob) -> Result<(u64, Option<String>), BackendRejection> {
        let plan = self.plan(job);
        let ov = match job.parameters.as_ref().and_then(|p| p.get(SIMULATE_KEY)) {
            None => Override::default(),
            Some(v) => serde_json::from_value::<Override>(v.clone()).map_err(|e| {
                BackendRejection(format!(
                    "parameters.simulate must be {{\"delay_seconds\": integer, \"fail\": bool, \"failure_description\": string}}: {e}"
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
        let can_fail = matches!(
            job.kind,
            OperationKind::Provision | OperationKind::Update | OperationKind::Bind
        );
        let fail = can_fail
            && ov
                .fail
                .unwrap_or(plan.fail && job.kind != OperationKind::Update);
        let failure = fail.then(|| {
            ov.failure_description.unwrap_or_else(|| {
                format!(
                    "simulated failure of {} (simulated backend)",
                    job.kind.as_str()
                )
            })
        });
        Ok((delay, failure))
    }

    fn finish(&self, job: &BackendJob, failure: Option<String>) -> BackendOutcome {
        if let Some(d) = failure {
            return BackendOutcome::Failed(d);
        }
        BackendOutcome::Done(match job.kind {
            OperationKind::Provision | OperationKind::Update => Done::Instance(InstanceResult {
                dashboard_url: Some(format!(
                    "https://dashboard.simulated.invalid/instances/{}",
                    job.instance_id
                )),
                metadata: None,
            }),
            OperationKind::Bind => Done::Binding(self.credentials(job)),
            OperationKind::Deprovision | OperationKind::Unbind => Done::Deleted,
        })
    }

    /// Realistic database credentials, new random user and password for every binding.
    fn credentials(&self, job: &BackendJob) -> BindingResult {
        let mut rng = rand::rng();
        let mut word = |n: usize| -> String {
            (&mut rng)
                .sample_iter(&Alphanumeric)
                .take(n)
                .map(char::from)
                .collect()
        };
        let username = format!("u_{}", word(10).to_lowercase());
        let password = word(32);
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
        let metadata = self.plan(job).credential_ttl_seconds.map(|ttl| {
            let now = self.clock.now_ms() / 1000;
            let mut m = Object::new();
            m.insert(
                "expires_at".into(),
                json!(rfc3339_ms((now + ttl as i64) * 1000)),
            );
            m.insert(
                "renew_before".into(),
                json!(rfc3339_ms((now + (ttl as i64) * 4 / 5) * 1000)),
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

/// The handle of a job in progress: `sim:<ready at, unix ms>:<failure or empty>`.
fn encode_handle(ready_at: i64, failure: &Option<String>) -> String {
    format!("sim:{ready_at}:{}", failure.as_deref().unwrap_or(""))
}

fn decode_handle(handle: &str) -> Option<(i64, Option<String>)> {
    let rest = handle.strip_prefix("sim:")?;
    let (ready, failure) = rest.split_once(':')?;
    Some((
        ready.parse().ok()?,
        (!failure.is_empty()).then(|| failure.to_owned()),
    ))
}

#[async_trait]
impl Backend for SimulatedBackend {
    fn plan_job(&self, job: &BackendJob) -> Result<Option<u64>, BackendRejection> {
        let (delay, _) = self.behaviour(job)?;
        Ok((delay > 0).then_some(delay))
    }

    async fn start(&self, job: &BackendJob) -> BackendOutcome {
        let (delay, failure) = match self.behaviour(job) {
            Ok(b) => b,
            Err(e) => return BackendOutcome::Failed(e.0),
        };
        if delay == 0 {
            return self.finish(job, failure);
        }
        let ready_at = job.started_at + (delay as i64) * 1000;
        self.poll(job, &encode_handle(ready_at, &failure)).await
    }

    async fn poll(&self, job: &BackendJob, handle: &str) -> BackendOutcome {
        let Some((ready_at, failure)) = decode_handle(handle) else {
            return BackendOutcome::Failed("the simulated backend does not know this job".into());
        };
        let now = self.clock.now_ms();
        if now >= ready_at {
            return self.finish(job, failure);
        }
        let remaining_ms = ready_at - now;
        BackendOutcome::InProgress {
            handle: handle.to_owned(),
            retry_after_secs: ((remaining_ms + 999) / 1000).max(1) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip() {
        assert_eq!(decode_handle(&encode_handle(42, &None)), Some((42, None)));
        assert_eq!(
            decode_handle(&encode_handle(7, &Some("boom: x".into()))),
            Some((7, Some("boom: x".into())))
        );
        assert_eq!(decode_handle("other"), None);
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ms(1_500), "1970-01-01T00:00:01.5Z");
    }
}
