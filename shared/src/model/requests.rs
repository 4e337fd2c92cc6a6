//! Request bodies and query strings of the OSB endpoints.

use super::{MaintenanceInfo, Object};
use serde::Deserialize;

/// Body of `PUT /v2/service_instances/:id`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ProvisionRequest {
    pub service_id: Option<String>,
    pub plan_id: Option<String>,
    pub context: Option<Object>,
    pub organization_guid: Option<String>,
    pub space_guid: Option<String>,
    pub parameters: Option<Object>,
    pub maintenance_info: Option<MaintenanceInfo>,
}

/// Body of `PATCH /v2/service_instances/:id`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct UpdateRequest {
    pub service_id: Option<String>,
    pub plan_id: Option<String>,
    pub context: Option<Object>,
    pub parameters: Option<Object>,
    pub previous_values: Option<PreviousValues>,
    pub maintenance_info: Option<MaintenanceInfo>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct PreviousValues {
    pub service_id: Option<String>,
    pub plan_id: Option<String>,
    pub organization_id: Option<String>,
    pub space_id: Option<String>,
    pub maintenance_info: Option<MaintenanceInfo>,
}

/// Body of `PUT /v2/service_instances/:id/service_bindings/:binding_id`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct BindRequest {
    pub service_id: Option<String>,
    pub plan_id: Option<String>,
    pub context: Option<Object>,
    pub app_guid: Option<String>,
    pub bind_resource: Option<Object>,
    pub parameters: Option<Object>,
    pub predecessor_binding_id: Option<String>,
}

impl BindRequest {
    /// The application the binding is for: `bind_resource.app_guid`, else the deprecated top-level `app_guid`.
    pub fn app_guid(&self) -> Option<&str> {
        self.bind_resource
            .as_ref()
            .and_then(|r| r.get("app_guid"))
            .and_then(|v| v.as_str())
            .or(self.app_guid.as_deref())
            .filter(|s| !s.is_empty())
    }
}

/// `?accepts_incomplete=` on PUT/PATCH.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct AsyncQuery {
    #[serde(default)]
    pub accepts_incomplete: bool,
}

/// Query of DELETE instance/binding: `service_id` and `plan_id` are required by the spec.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct DeleteQuery {
    #[serde(default)]
    pub accepts_incomplete: bool,
    pub service_id: Option<String>,
    pub plan_id: Option<String>,
}

/// Query of the two `last_operation` endpoints.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct LastOperationQuery {
    pub service_id: Option<String>,
    pub plan_id: Option<String>,
    pub operation: Option<String>,
}

/// Query of GET instance/binding (hints only).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct FetchQuery {
    pub service_id: Option<String>,
    pub plan_id: Option<String>,
}
