//! Response bodies of the OSB endpoints.

use super::{Credentials, MaintenanceInfo, Object};
use serde::{Deserialize, Serialize};

/// 200/201 body of provision, and 202 body (with `operation`).
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct ProvisionResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Object>,
}

/// 202 body of update, deprovision, bind and unbind.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AsyncOperationResponse {
    pub operation: String,
}

/// Body of GET instance.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InstanceResource {
    pub service_id: String,
    pub plan_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
    /// Sharing: what a lease is ("This is a lease from instance … in tenant …").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Object>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance_info: Option<MaintenanceInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Object>,
}

/// What a backend gives a binding: the 201 body of bind, stored with the binding and returned by GET binding.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct BindingResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Object>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog_drain_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_service_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<serde_json::Value>>,
}

/// Body of GET binding: the bind result plus the parameters the binding was created with.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BindingResource {
    #[serde(flatten)]
    pub result: BindingResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Object>,
}

/// State of an operation as `last_operation` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LastOperationState {
    #[serde(rename = "in progress")]
    InProgress,
    #[serde(rename = "succeeded")]
    Succeeded,
    #[serde(rename = "failed")]
    Failed,
}

/// Body of the two `last_operation` endpoints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LastOperationResponse {
    pub state: LastOperationState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_usable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_repeatable: Option<bool>,
}

/// The OSB error body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_usable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_repeatable: Option<bool>,
}
