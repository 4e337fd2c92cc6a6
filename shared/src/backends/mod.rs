//! Backends that really do the work behind a plan: the simulated backend, the PostgreSQL backend
//! (one per named server), the upstream backend (one per upstream OSB broker), and the [`Dispatcher`] the broker holds, which routes each job by its plan.

pub mod postgresql;
pub mod simulated;
pub mod upstream;

use crate::catalog::{BackendConfig, Catalog};
use crate::ports::backend::{BackendRejection, BackendResult};
use crate::ports::{Backend, BackendJob};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The broker's one backend: sends each job to the backend its plan names (`job.plan_id` in the
/// catalog). A plan the catalog no longer has goes to the simulated backend, as before there was a choice.
pub struct Dispatcher {
    catalog: Arc<Catalog>,
    simulated: Arc<dyn Backend>,
    postgresql: BTreeMap<String, Arc<dyn Backend>>,
    upstream: BTreeMap<String, Arc<dyn Backend>>,
}

/// A plan names a PostgreSQL server or an upstream broker the configuration does not have.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UnknownServer {
    #[error(
        "plan '{plan}': backend.server '{server}' is not a configured postgresql server (add [postgresql_servers.{server}])"
    )]
    Postgresql { plan: String, server: String },
    #[error(
        "plan '{plan}': backend.broker '{broker}' is not a configured upstream broker (add [upstream_brokers.{broker}])"
    )]
    Upstream { plan: String, broker: String },
}

impl Dispatcher {
    /// Checks that every PostgreSQL plan of the catalog names one of `postgresql`'s servers, and every
    /// upstream plan one of `upstream`'s brokers.
    pub fn new(
        catalog: Arc<Catalog>,
        simulated: Arc<dyn Backend>,
        postgresql: BTreeMap<String, Arc<dyn Backend>>,
        upstream: BTreeMap<String, Arc<dyn Backend>>,
    ) -> Result<Self, UnknownServer> {
        for s in catalog.services() {
            for p in &s.plans {
                if let Some(server) = p.backend.postgresql_server()
                    && !postgresql.contains_key(server)
                {
                    return Err(UnknownServer::Postgresql {
                        plan: p.id.clone(),
                        server: server.to_owned(),
                    });
                }
                if let Some(broker) = p.backend.upstream_broker()
                    && !upstream.contains_key(broker)
                {
                    return Err(UnknownServer::Upstream {
                        plan: p.id.clone(),
                        broker: broker.to_owned(),
                    });
                }
            }
        }
        Ok(Dispatcher {
            catalog,
            simulated,
            postgresql,
            upstream,
        })
    }

    /// The backend of the job's plan and its name (a metrics label).
    fn route(&self, job: &BackendJob) -> (&'static str, &Arc<dyn Backend>) {
        let routed = self
            .catalog
            .plan_by_id(&job.plan_id)
            .and_then(|p| match &p.plan.backend {
                BackendConfig::Postgresql(pg) => {
                    self.postgresql.get(&pg.server).map(|b| ("postgresql", b))
                }
                BackendConfig::Upstream(u) => self.upstream.get(&u.broker).map(|b| ("upstream", b)),
                BackendConfig::Simulated(_) => None,
            });
        routed.unwrap_or(("simulated", &self.simulated))
    }
}

/// Counts a backend call that failed with an error (the backend could not be asked or broke; not an
/// operation it reported failed).
fn count_error(backend: &'static str, result: BackendResult) -> BackendResult {
    if result.is_err() {
        crate::metrics::global().backend_error(backend);
    }
    result
}

#[async_trait]
impl Backend for Dispatcher {
    fn plan_job(&self, job: &BackendJob) -> Result<Option<u64>, BackendRejection> {
        self.route(job).1.plan_job(job)
    }

    async fn start(&self, job: &BackendJob) -> BackendResult {
        let (name, backend) = self.route(job);
        count_error(name, backend.start(job).await)
    }

    async fn poll(&self, job: &BackendJob, handle: &str) -> BackendResult {
        let (name, backend) = self.route(job);
        count_error(name, backend.poll(job, handle).await)
    }
}
