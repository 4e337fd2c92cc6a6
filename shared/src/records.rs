//! What the broker stores: instances, bindings and operations, each namespaced by tenant,
//! and the state machine their `state` fields follow.

use crate::identity::OriginatingIdentity;
use crate::ids::{BindingId, InstanceId, OperationId};
use crate::model::responses::{BindingResult, LastOperationState};
use crate::model::{MaintenanceInfo, Object};
use crate::ports::BackendJob;
use serde::{Deserialize, Serialize};

/// Life of an instance.
///
/// ```text
/// (absent|Gone|CreateFailed) --provision--> Creating --ok--> Ready --update--> Updating --> Ready
///                                              |--fail--> CreateFailed           (fail: Ready, unchanged)
/// Ready|Creating|CreateFailed --deprovision--> Deleting --ok--> Gone   (fail: Ready)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Creating,
    Ready,
    CreateFailed,
    Updating,
    Deleting,
    Gone,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub tenant: String,
    pub id: InstanceId,
    /// Incremented each time the id is provisioned again after a delete, so old bindings never reappear.
    pub generation: u64,
    pub service_id: String,
    pub plan_id: String,
    #[serde(default)]
    pub organization_guid: Option<String>,
    #[serde(default)]
    pub space_guid: Option<String>,
    #[serde(default)]
    pub context: Option<Object>,
    #[serde(default)]
    pub parameters: Option<Object>,
    #[serde(default)]
    pub maintenance_info: Option<MaintenanceInfo>,
    #[serde(default)]
    pub dashboard_url: Option<String>,
    #[serde(default)]
    pub metadata: Option<Object>,
    pub state: InstanceState,
    #[serde(default)]
    pub last_operation: Option<OperationId>,
    /// When provisioning succeeded; `None` for an instance whose creation never finished.
    #[serde(default)]
    pub provisioned_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    // --- sharing (broker/sharing/) ---
    /// Set on an owner instance of a shareable offering: its sharing rules, token and leases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing: Option<crate::sharing::OwnerSharing>,
    /// Set on a lease: the owner instance it uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<crate::sharing::LeaseOf>,
}

/// Life of a binding: like an instance's, without updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingState {
    Creating,
    Ready,
    CreateFailed,
    Deleting,
    Gone,
}

fn first_generation() -> u64 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub tenant: String,
    pub instance_id: InstanceId,
    pub instance_generation: u64,
    pub id: BindingId,
    /// Incremented each time the binding id is bound again after an unbind or a failed bind (the backend's
    /// identity of the binding, see `ports::backend`).
    #[serde(default = "first_generation")]
    pub generation: u64,
    pub service_id: String,
    pub plan_id: String,
    #[serde(default)]
    pub app_guid: Option<String>,
    #[serde(default)]
    pub bind_resource: Option<Object>,
    #[serde(default)]
    pub context: Option<Object>,
    #[serde(default)]
    pub parameters: Option<Object>,
    #[serde(default)]
    pub predecessor_binding_id: Option<BindingId>,
    pub state: BindingState,
    /// Credentials and the rest of the 201 body, once the backend produced them.
    #[serde(default)]
    pub result: Option<BindingResult>,
    #[serde(default)]
    pub last_operation: Option<OperationId>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Provision,
    Update,
    Deprovision,
    Bind,
    Unbind,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Provision => "provision",
            OperationKind::Update => "update",
            OperationKind::Deprovision => "deprovision",
            OperationKind::Bind => "bind",
            OperationKind::Unbind => "unbind",
        }
    }
    pub fn is_binding(self) -> bool {
        matches!(self, OperationKind::Bind | OperationKind::Unbind)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    InProgress,
    Succeeded,
    Failed,
}

impl From<OperationState> for LastOperationState {
    fn from(s: OperationState) -> Self {
        match s {
            OperationState::InProgress => LastOperationState::InProgress,
            OperationState::Succeeded => LastOperationState::Succeeded,
            OperationState::Failed => LastOperationState::Failed,
        }
    }
}

/// What an update asks to change; applied to the instance when the update succeeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceChange {
    pub plan_id: String,
    #[serde(default)]
    pub parameters: Option<Object>,
    #[serde(default)]
    pub context: Option<Object>,
    #[serde(default)]
    pub maintenance_info: Option<MaintenanceInfo>,
}

/// Where an operation lives, and the only thing a queue message carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OperationKey {
    pub tenant: String,
    pub instance_id: InstanceId,
    pub operation_id: OperationId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub tenant: String,
    pub instance_id: InstanceId,
    #[serde(default)]
    pub binding_id: Option<BindingId>,
    pub id: OperationId,
    pub kind: OperationKind,
    /// The life of the instance (`Instance::generation`) the operation acts on.
    #[serde(default = "first_generation")]
    pub generation: u64,
    /// The life of the binding (`Binding::generation`); 0 for instance operations.
    #[serde(default)]
    pub binding_generation: u64,
    /// The offering and plan the backend job runs on (for an update: the target plan).
    #[serde(default)]
    pub service_id: String,
    #[serde(default)]
    pub plan_id: String,
    pub state: OperationState,
    /// Whether the broker answered 202 for it.
    pub asynchronous: bool,
    #[serde(default)]
    pub description: Option<String>,
    /// The backend's handle for a job it is still doing.
    #[serde(default)]
    pub backend_handle: Option<String>,
    /// The backend's estimate of when to look again, in seconds (the `Retry-After` of `last_operation`).
    pub retry_after_secs: u64,
    /// When the operation must be over (the plan's `maximum_polling_duration`), unix milliseconds.
    #[serde(default)]
    pub deadline: Option<i64>,
    #[serde(default)]
    pub change: Option<InstanceChange>,
    /// The parameters of the request as sent (what the backend job gets).
    #[serde(default)]
    pub parameters: Option<Object>,
    #[serde(default)]
    pub instance_usable: Option<bool>,
    #[serde(default)]
    pub update_repeatable: Option<bool>,
    #[serde(default)]
    pub originating_identity: Option<OriginatingIdentity>,
    #[serde(default)]
    pub request_identity: Option<String>,
    /// The platform's webhook while the operation runs; moved into its `Callback` when it finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookRegistration>,
    /// Whether a webhook was registered (kept after the registration moved to the callback).
    #[serde(default)]
    pub has_webhook: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// Sharing: the instance the backend job acts on when it is not this operation's own (a lease's
    /// bindings are made on its owner's backing instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_target: Option<crate::sharing::BackendTarget>,
    /// Operations that must be final before this one's backend step runs (an owner's deprovision waits
    /// for the unbinds of the leases it purged, so they never reach a backend that already deleted the
    /// instance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<OperationKey>,
    /// A provision or bind that the backend completed after the operation was finalized otherwise (a
    /// delete cancelled it) and whose undo has not succeeded yet: listed as unfinished, so the sweep
    /// re-drives the undo until it does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compensation_pending: bool,
    /// The request's `context`, for backends that forward it (an upstream broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Object>,
    /// A bind's `bind_resource`, for backends that forward it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_resource: Option<Object>,
    /// A provision's top-level `organization_guid` / `space_guid`, for backends that forward them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_guids: Option<(Option<String>, Option<String>)>,
}

impl Operation {
    /// A new operation for a backend job: in progress, or, with `asynchronous == false`, about to be
    /// finished at once.
    pub fn start(job: &BackendJob, asynchronous: bool, meta: &RequestMeta) -> Self {
        Operation {
            tenant: job.tenant.clone(),
            instance_id: job.instance_id.clone(),
            binding_id: job.binding_id.clone(),
            id: job.operation_id.clone(),
            kind: job.kind,
            generation: job.generation,
            binding_generation: job.binding_generation,
            service_id: job.service_id.clone(),
            plan_id: job.plan_id.clone(),
            state: OperationState::InProgress,
            asynchronous,
            description: None,
            backend_handle: None,
            retry_after_secs: 1,
            deadline: None,
            change: None,
            parameters: job.parameters.clone(),
            instance_usable: None,
            update_repeatable: None,
            originating_identity: meta.originating_identity.clone(),
            request_identity: meta.request_identity.clone(),
            // A webhook is sent only for operations the broker answers with 202.
            webhook: meta.webhook.clone().filter(|_| asynchronous),
            has_webhook: asynchronous && meta.webhook.is_some(),
            created_at: job.started_at,
            updated_at: job.started_at,
            backend_target: None,
            after: Vec::new(),
            compensation_pending: false,
            context: job.context.clone(),
            bind_resource: job.bind_resource.clone(),
            platform_guids: (job.organization_guid.is_some() || job.space_guid.is_some())
                .then(|| (job.organization_guid.clone(), job.space_guid.clone())),
        }
    }

    /// The backend job this operation runs.
    pub fn job(&self) -> BackendJob {
        let (tenant, instance_id, generation) = match &self.backend_target {
            Some(t) => (t.tenant.clone(), t.instance_id.clone(), t.generation),
            None => (
                self.tenant.clone(),
                self.instance_id.clone(),
                self.generation,
            ),
        };
        BackendJob {
            kind: self.kind,
            operation_id: self.id.clone(),
            tenant,
            instance_id,
            generation,
            binding_id: self.binding_id.clone(),
            binding_generation: self.binding_generation,
            lease: self
                .backend_target
                .as_ref()
                .filter(|_| self.binding_id.is_some())
                .map(|_| (self.tenant.clone(), self.instance_id.clone())),
            service_id: self.service_id.clone(),
            plan_id: self.plan_id.clone(),
            parameters: self.parameters.clone(),
            started_at: self.created_at,
            context: self.context.clone(),
            originating_identity: self.originating_identity.clone(),
            accepts_incomplete: self.asynchronous,
            bind_resource: self.bind_resource.clone(),
            organization_guid: self.platform_guids.as_ref().and_then(|g| g.0.clone()),
            space_guid: self.platform_guids.as_ref().and_then(|g| g.1.clone()),
        }
    }

    /// Marks the operation finished.
    pub fn finish(&mut self, state: OperationState, description: Option<String>, now: i64) {
        self.state = state;
        self.description = description;
        self.backend_handle = None;
        self.updated_at = now;
        if state == OperationState::Failed {
            match self.kind {
                OperationKind::Update => {
                    self.instance_usable = Some(true);
                    self.update_repeatable = Some(true);
                }
                OperationKind::Deprovision => self.instance_usable = Some(true),
                _ => {}
            }
        }
    }

    pub fn key(&self) -> OperationKey {
        OperationKey {
            tenant: self.tenant.clone(),
            instance_id: self.instance_id.clone(),
            operation_id: self.id.clone(),
        }
    }
    pub fn is_final(&self) -> bool {
        self.state != OperationState::InProgress
    }
}

/// Who asked, for the audit trail kept on each operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestMeta {
    pub originating_identity: Option<OriginatingIdentity>,
    pub request_identity: Option<String>,
    /// The validated `webhook` + `secret` query parameters, if the platform sent them.
    pub webhook: Option<WebhookRegistration>,
}

/// A platform's callback for an async operation: the validated URL, the secret whose UTF-8 bytes key the
/// signatures, and the OSB version of the request. `Debug` shows neither the secret nor the URL's path.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRegistration {
    pub url: String,
    pub secret: String,
    #[serde(default)]
    pub api_version: Option<String>,
}

impl std::fmt::Debug for WebhookRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRegistration")
            .field("url", &crate::webhooks::policy::redacted(&self.url))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Delivery state of a webhook callback.
///
/// ```text
/// Pending --lease--> Sending --2xx--> Delivered
///                       |--410--> Gone        |--blocked/invalid URL--> Blocked
///                       |--failure--> Retrying --lease--> Sending ...   |--schedule over--> GaveUp
/// Pending --body over the cap--> TooLarge
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackState {
    Pending,
    Sending,
    Retrying,
    Delivered,
    Gone,
    Blocked,
    TooLarge,
    GaveUp,
}

impl CallbackState {
    /// Delivery is over: nothing more will be sent unless the operator re-drives a given-up delivery.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            CallbackState::Pending | CallbackState::Sending | CallbackState::Retrying
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackState::Pending => "pending",
            CallbackState::Sending => "sending",
            CallbackState::Retrying => "retrying",
            CallbackState::Delivered => "delivered",
            CallbackState::Gone => "gone",
            CallbackState::Blocked => "blocked",
            CallbackState::TooLarge => "too_large",
            CallbackState::GaveUp => "gave_up",
        }
    }
}

/// One delivery attempt as recorded: never the body, the secret, a signature or the full URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub number: u32,
    pub started_at: i64,
    pub duration_ms: u64,
    pub outcome: String,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub remote_ip: Option<String>,
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    /// When the next attempt is due (unix ms), if there is one.
    #[serde(default)]
    pub next_attempt_at: Option<i64>,
}

/// The webhook callback of a finished operation: what to send (serialized once), where, and how its
/// delivery went. Stored next to the operation (same key, `W#` prefix); the queue message is its key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    pub tenant: String,
    pub instance_id: InstanceId,
    #[serde(default)]
    pub binding_id: Option<BindingId>,
    pub operation_id: OperationId,
    pub kind: OperationKind,
    pub url: String,
    /// Removed once delivery is final (kept, sealed, after giving up: the operator may re-drive it).
    #[serde(default)]
    pub secret: Option<String>,
    /// The exact bytes sent on every attempt (the synchronous call's body); removed like `secret`.
    #[serde(default)]
    pub body: Option<String>,
    /// The HTTP status the synchronous call would have answered.
    pub status: u16,
    /// The operation's final state.
    pub outcome: OperationState,
    pub completed_at: i64,
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub request_identity: Option<String>,
    pub state: CallbackState,
    /// Earliest time of the next attempt (unix ms).
    pub next_attempt_at: i64,
    /// While `Sending`: until when the sender that took the lease owns the attempt.
    #[serde(default)]
    pub lease_until: Option<i64>,
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callback")
            .field("tenant", &self.tenant)
            .field("instance_id", &self.instance_id)
            .field("operation_id", &self.operation_id)
            .field("url", &crate::webhooks::policy::redacted(&self.url))
            .field("state", &self.state)
            .field("attempts", &self.attempts.len())
            .finish_non_exhaustive()
    }
}

impl Callback {
    pub fn key(&self) -> OperationKey {
        OperationKey {
            tenant: self.tenant.clone(),
            instance_id: self.instance_id.clone(),
            operation_id: self.operation_id.clone(),
        }
    }
}
