//! OSB v2.17 wire types: request bodies as the platform sends them and response bodies as the broker answers.
//! Required fields are `Option` here so that a missing one gets a precise 400 rather than a generic parse error.

pub mod requests;
pub mod responses;

use serde::{Deserialize, Serialize};

/// `maintenance_info` of a plan or a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceInfo {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A JSON object (the OSB `parameters`, `context`, `metadata` fields are objects).
pub type Object = serde_json::Map<String, serde_json::Value>;

/// Credentials of a binding. `Debug` never shows them, so they cannot leak into a log line by accident.
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Credentials(pub Object);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} fields, redacted)", self.0.len())
    }
}
