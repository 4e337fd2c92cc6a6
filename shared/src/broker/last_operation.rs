//! The two `last_operation` endpoints: state of an instance's or a binding's operation, with the
//! backend's `Retry-After` estimate while it runs and 410 once an async delete has finished.

use super::Broker;
use crate::error::{BrokerError, Result};
use crate::ids::{BindingId, InstanceId, OperationId};
use crate::model::responses::LastOperationResponse;
use crate::ports::Versioned;
use crate::records::{Operation, OperationKey, OperationKind, OperationState};
use crate::tenants::Tenant;

/// A `last_operation` answer: the body and, while in progress, the seconds for `Retry-After`.
#[derive(Debug, Clone, PartialEq)]
pub struct LastOperation {
    pub body: LastOperationResponse,
    pub retry_after_secs: Option<u64>,
}

fn describe(op: &Operation) -> LastOperation {
    let in_progress = op.state == OperationState::InProgress;
    let description = op.description.clone().or_else(|| {
        Some(match op.state {
            OperationState::InProgress => format!("{} in progress", op.kind.as_str()),
            OperationState::Succeeded => format!("{} succeeded", op.kind.as_str()),
            OperationState::Failed => format!("{} failed", op.kind.as_str()),
        })
    });
    LastOperation {
        body: LastOperationResponse {
            state: op.state.into(),
            description,
            instance_usable: op.instance_usable,
            update_repeatable: op.update_repeatable,
        },
        retry_after_secs: in_progress.then_some(op.retry_after_secs.max(1)),
    }
}

fn parse_operation(operation: Option<&str>) -> Result<Option<OperationId>> {
    operation
        .filter(|o| !o.is_empty())
        .map(|o| {
            OperationId::parse(o).map_err(|_| {
                BrokerError::BadRequest("operation is not an operation id of this broker".into())
            })
        })
        .transpose()
}

impl Broker {
    /// Loads the polled operation; a platform polling a stalled operation re-drives it.
    async fn load_operation(
        &self,
        tenant: &Tenant,
        instance_id: &InstanceId,
        operation_id: &OperationId,
    ) -> Result<Operation> {
        let key = OperationKey {
            tenant: tenant.name.clone(),
            instance_id: instance_id.clone(),
            operation_id: operation_id.clone(),
        };
        match self.store.get_operation(&key).await? {
            Some(op) => {
                if let Err(e) = self.redrive_if_stalled(&op).await {
                    tracing::error!(error = %e, operation = %operation_id, "re-driving a stalled operation failed");
                }
                Ok(op.item)
            }
            None => Err(BrokerError::BadRequest(format!(
                "operation '{operation_id}' is not an operation of this resource"
            ))),
        }
    }

    pub async fn instance_last_operation(
        &self,
        tenant: &Tenant,
        instance_id: &InstanceId,
        operation: Option<&str>,
    ) -> Result<LastOperation> {
        let requested = parse_operation(operation)?;
        let Some(Versioned { item: instance, .. }) =
            self.store.get_instance(&tenant.name, instance_id).await?
        else {
            return Err(BrokerError::NotFound(
                "the service instance does not exist".into(),
            ));
        };
        // --- sharing: a lease has no operation of its own; it says what it is ---
        if let Some(lease) = &instance.lease {
            if instance.state == crate::records::InstanceState::Gone {
                return Err(BrokerError::Gone(
                    "the service instance has been deleted".into(),
                ));
            }
            return Ok(LastOperation {
                body: LastOperationResponse {
                    state: crate::model::responses::LastOperationState::Succeeded,
                    description: Some(lease.description()),
                    instance_usable: None,
                    update_repeatable: None,
                },
                retry_after_secs: None,
            });
        }
        let Some(op_id) = requested.or(instance.last_operation) else {
            return Err(BrokerError::NotFound(
                "the service instance has no operation".into(),
            ));
        };
        let op = self.load_operation(tenant, instance_id, &op_id).await?;
        if op.kind.is_binding() {
            return Err(BrokerError::BadRequest(format!(
                "operation '{op_id}' is an operation of a binding"
            )));
        }
        if op.kind == OperationKind::Deprovision && op.state == OperationState::Succeeded {
            return Err(BrokerError::Gone(
                "the service instance has been deleted".into(),
            ));
        }
        Ok(describe(&op))
    }

    pub async fn binding_last_operation(
        &self,
        tenant: &Tenant,
        instance_id: &InstanceId,
        binding_id: &BindingId,
        operation: Option<&str>,
    ) -> Result<LastOperation> {
        let requested = parse_operation(operation)?;
        let not_found = || BrokerError::NotFound("the service binding does not exist".into());
        // A binding of an earlier life of the instance id (deleted, provisioned again) is gone for good.
        let view = self
            .binding_view(&tenant.name, instance_id, std::slice::from_ref(binding_id))
            .await?;
        let Some(Versioned { item: binding, .. }) = view.binding(binding_id).cloned() else {
            return Err(not_found());
        };
        let Some(op_id) = requested.or(binding.last_operation) else {
            return Err(not_found());
        };
        let op = self.load_operation(tenant, instance_id, &op_id).await?;
        if op.binding_id.as_ref() != Some(binding_id) {
            return Err(BrokerError::BadRequest(format!(
                "operation '{op_id}' is not an operation of this binding"
            )));
        }
        if op.kind == OperationKind::Unbind && op.state == OperationState::Succeeded {
            return Err(BrokerError::Gone(
                "the service binding has been deleted".into(),
            ));
        }
        Ok(describe(&op))
    }
}
