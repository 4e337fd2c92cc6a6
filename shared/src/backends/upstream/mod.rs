//! The upstream backend: plans imported from an existing OSB broker (`[upstream_brokers.NAME]`) are
//! forwarded to it, this broker acting as an OSB client. Upstream instance and binding ids are derived from
//! the job's identity (`ids`), so a repeated step re-sends the same idempotent request. Mutations always
//! carry `accepts_incomplete=true`; a 202 becomes a job in progress whose handle holds the upstream's
//! `operation`, polled with `last_operation`. A provision or bind whose outcome is unknown or broken (5xx,
//! a malformed 201/202, another 2xx, a timeout, a `failed` last operation) is deleted upstream before it
//! is reported failed: the spec's orphan mitigation, its retries recorded in the operation's handle.
//! See docs/upstream.md.

#[cfg(feature = "upstream")]
mod backend;
#[cfg(feature = "upstream")]
pub mod client;
pub mod config;
pub mod ids;
pub mod import;
pub mod redact;

#[cfg(feature = "upstream")]
pub use backend::UpstreamBackend;
pub use config::{Upstream, UpstreamConfig, UpstreamConfigError};
use serde::{Deserialize, Serialize};

/// A plan's settings (`"backend": {"type": "upstream", …}`), written by the catalog import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamPlan {
    /// The name of the `[upstream_brokers.NAME]` section.
    pub broker: String,
    /// The offering's and plan's ids at the upstream.
    pub service_id: String,
    pub plan_id: String,
}

impl UpstreamPlan {
    pub fn validate(&self) -> Result<(), String> {
        for (what, v) in [
            ("broker", &self.broker),
            ("service_id", &self.service_id),
            ("plan_id", &self.plan_id),
        ] {
            if v.trim().is_empty() {
                return Err(format!("backend.{what} must not be empty"));
            }
        }
        Ok(())
    }
}
