//! Bind (and rotate), unbind and fetch of service bindings.

use super::{Broker, MAX_RACE_RETRIES, Reply, required, same_parameters};
use crate::catalog::SchemaKind;
use crate::error::{BrokerError, Result};
use crate::ids::{BindingId, InstanceId};
use crate::model::requests::{BindRequest, DeleteQuery};
use crate::model::responses::{BindingResource, BindingResult};
use crate::ports::backend::Done;
use crate::ports::{BackendOutcome, Bindings, Record, StoreError, Versioned, Write};
use crate::records::{
    Binding, BindingState, Instance, InstanceState, Operation, OperationKind, OperationState,
    RequestMeta,
};
use crate::tenants::Tenant;

fn binding_not_found() -> BrokerError {
    BrokerError::NotFound("the service binding does not exist".into())
}

fn binding_gone() -> BrokerError {
    BrokerError::Gone("the service binding does not exist".into())
}

/// The instance and the requested bindings of its current generation, read together.
pub(super) struct BindingView {
    instance: Option<Instance>,
    /// The version the instance was read at.
    instance_version: Option<u64>,
    bindings: Vec<Versioned<Binding>>,
}

impl BindingView {
    /// The binding of the instance's current generation (bindings of an earlier life of the id are gone).
    pub(super) fn binding(&self, id: &BindingId) -> Option<&Versioned<Binding>> {
        let generation = self.instance.as_ref()?.generation;
        self.bindings
            .iter()
            .find(|b| &b.item.id == id && b.item.instance_generation == generation)
    }

    /// The instance, when it can take a new binding.
    fn bindable_instance(&self) -> Result<&Instance> {
        let Some(inst) = &self.instance else {
            return Err(BrokerError::NotFound(
                "the service instance does not exist".into(),
            ));
        };
        match inst.state {
            InstanceState::Ready | InstanceState::Updating => Ok(inst),
            InstanceState::Creating => Err(BrokerError::Concurrency(
                "the service instance is still being provisioned".into(),
            )),
            InstanceState::Deleting => Err(BrokerError::Concurrency(
                "the service instance is being deleted".into(),
            )),
            InstanceState::CreateFailed | InstanceState::Gone => Err(BrokerError::NotFound(
                "the service instance does not exist".into(),
            )),
        }
    }
}

impl Broker {
    /// One store read for the instance and the named bindings.
    pub(super) async fn binding_view(
        &self,
        tenant: &str,
        instance_id: &InstanceId,
        ids: &[BindingId],
    ) -> Result<BindingView> {
        let read = self
            .store
            .get_instance_with_bindings(tenant, instance_id, Bindings::Ids(ids))
            .await?;
        Ok(BindingView {
            instance_version: read.instance.as_ref().map(|v| v.version),
            instance: read.instance.map(|v| v.item),
            bindings: read.bindings,
        })
    }

    pub async fn bind(
        &self,
        tenant: &Tenant,
        instance_id: &InstanceId,
        id: &BindingId,
        req: BindRequest,
        accepts_incomplete: bool,
        meta: &RequestMeta,
    ) -> Result<Reply<BindingResult>> {
        let plan = self.resolve_plan(tenant, req.service_id.as_deref(), req.plan_id.as_deref())?;
        if !plan.bindable() {
            return Err(BrokerError::BadRequest(format!(
                "plan '{}' is not bindable",
                plan.plan.name
            )));
        }
        let predecessor = match &req.predecessor_binding_id {
            None => None,
            Some(p) => {
                if !plan.binding_rotatable() {
                    return Err(BrokerError::BadRequest(format!(
                        "plan '{}' does not allow binding rotation (binding_rotatable is false)",
                        plan.plan.name
                    )));
                }
                Some(BindingId::parse(p).map_err(|e| BrokerError::BadRequest(e.to_string()))?)
            }
        };
        let crate::catalog::BackendConfig::Simulated(sim) = &plan.plan.backend;
        if sim.requires_app && req.app_guid().is_none() {
            return Err(BrokerError::RequiresApp(
                "this service needs an application to bind to: send bind_resource.app_guid".into(),
            ));
        }
        self.validate_parameters(&plan, SchemaKind::BindingCreate, &req.parameters)?;

        for _ in 0..MAX_RACE_RETRIES {
            let now = self.clock.now_ms();
            let mut wanted = vec![id.clone()];
            wanted.extend(predecessor.iter().cloned());
            let view = self
                .binding_view(&tenant.name, instance_id, &wanted)
                .await?;
            let instance = view.bindable_instance()?;
            super::sharing::check_bindable(instance)?; // sharing: an orphaned lease cannot be bound
            if instance.service_id != plan.service.id || instance.plan_id != plan.plan.id {
                return Err(BrokerError::BadRequest(format!(
                    "service_id and plan_id must be those of the instance (plan '{}')",
                    instance.plan_id
                )));
            }
            if let Some(p) = &predecessor {
                match view.binding(p) {
                    Some(b) if b.item.state == BindingState::Ready => {}
                    _ => {
                        return Err(BrokerError::BadRequest(format!(
                            "predecessor_binding_id '{p}' is not an existing binding of this instance"
                        )));
                    }
                }
            }
            // Any record under this id, of whatever generation: a new binding replaces it.
            let existing = view.bindings.iter().find(|b| &b.item.id == id);
            if let Some(Versioned { item: cur, .. }) = view.binding(id) {
                let same = cur.service_id == plan.service.id
                    && cur.plan_id == plan.plan.id
                    && cur.app_guid.as_deref() == req.app_guid()
                    && cur.bind_resource == req.bind_resource
                    && same_parameters(&cur.parameters, &req.parameters)
                    && cur.predecessor_binding_id == predecessor;
                match cur.state {
                    BindingState::Creating if same => {
                        let operation = cur.last_operation.clone().ok_or_else(|| {
                            BrokerError::Store(StoreError::Corrupt(
                                "binding without operation".into(),
                            ))
                        })?;
                        return Ok(Reply::Accepted {
                            operation,
                            body: BindingResult::default(),
                        });
                    }
                    BindingState::Ready if same => {
                        return Ok(Reply::Ok(cur.result.clone().unwrap_or_default()));
                    }
                    BindingState::Deleting => {
                        return Err(BrokerError::Concurrency(
                            "the service binding is being deleted".into(),
                        ));
                    }
                    BindingState::Creating | BindingState::Ready => {
                        return Err(BrokerError::Conflict(
                            "a service binding with this id already exists with different attributes"
                                .into(),
                        ));
                    }
                    BindingState::CreateFailed | BindingState::Gone => {}
                }
            }
            let op_id = self.ids.operation_id();
            let job = self.job(
                OperationKind::Bind,
                &op_id,
                &tenant.name,
                instance_id,
                Some(id),
                &plan.service.id,
                &plan.plan.id,
                req.parameters.clone(),
                now,
            );
            let estimate = self.plan_job(&job, accepts_incomplete)?;
            let mut binding = Binding {
                tenant: tenant.name.clone(),
                instance_id: instance_id.clone(),
                instance_generation: instance.generation,
                id: id.clone(),
                service_id: plan.service.id.clone(),
                plan_id: plan.plan.id.clone(),
                app_guid: req.app_guid().map(str::to_owned),
                bind_resource: req.bind_resource.clone(),
                context: req.context.clone(),
                parameters: req.parameters.clone(),
                predecessor_binding_id: predecessor.clone(),
                state: BindingState::Creating,
                result: None,
                last_operation: Some(op_id.clone()),
                created_at: now,
                updated_at: now,
            };
            let mut op = Operation::start(&job, estimate.is_some(), meta);
            // sharing: a lease binds its owner's backing instance
            let job = super::sharing::target_job(Some(instance), &mut op, job);
            // sharing: a bind on a lease rewrites the lease's record (version-checked), so it cannot
            // commit across a purge or a delete of the lease: one of them loses and re-reads.
            let lease_touch = match (&instance.lease, view.instance_version) {
                (Some(_), Some(v)) => {
                    let mut touched = instance.clone();
                    touched.updated_at = now;
                    Some(Write::replace(Record::Instance(touched), v))
                }
                _ => None,
            };
            let version = existing.as_ref().map(|v| v.version);
            match estimate {
                Some(secs) => {
                    op.retry_after_secs = secs.max(1);
                    op.deadline = self.deadline(&plan, now);
                    let mut writes = vec![
                        Write::upsert(Record::Binding(binding), version),
                        Write::create(Record::Operation(op.clone())),
                    ];
                    writes.extend(lease_touch);
                    if !self.commit_then_enqueue(writes, Some(&op.key())).await? {
                        continue;
                    }
                    return Ok(Reply::Accepted {
                        operation: op_id,
                        body: BindingResult::default(),
                    });
                }
                None => {
                    let outcome = self.backend.start(&job).await;
                    let BackendOutcome::Done(Done::Binding(result)) = outcome else {
                        return Err(match outcome {
                            BackendOutcome::Failed(d) => BrokerError::BackendFailed(d),
                            _ => BrokerError::BackendFailed(
                                "the backend did not finish the binding synchronously".into(),
                            ),
                        });
                    };
                    binding.state = BindingState::Ready;
                    binding.result = Some(result.clone());
                    op.finish(OperationState::Succeeded, None, now);
                    let mut writes = vec![
                        Write::upsert(Record::Binding(binding), version),
                        Write::create(Record::Operation(op)),
                    ];
                    let on_lease = lease_touch.is_some();
                    writes.extend(lease_touch);
                    if !self.commit_then_enqueue(writes, None).await? {
                        if on_lease {
                            // The lease changed meanwhile (purged, deleted): the credentials just made on
                            // the owner's instance are not recorded anywhere, so revoke them now.
                            let mut unbind = job.clone();
                            unbind.kind = OperationKind::Unbind;
                            if !matches!(self.backend.start(&unbind).await, BackendOutcome::Done(_))
                            {
                                tracing::error!(binding = %id, "could not revoke the credentials of a bind that lost a race on its lease");
                            }
                        }
                        continue;
                    }
                    return Ok(Reply::Created(result));
                }
            }
        }
        Err(BrokerError::Concurrency(
            "the service binding is being changed by another request".into(),
        ))
    }

    pub async fn unbind(
        &self,
        tenant: &Tenant,
        instance_id: &InstanceId,
        id: &BindingId,
        query: DeleteQuery,
        meta: &RequestMeta,
    ) -> Result<Reply<()>> {
        required(query.service_id.as_deref(), "service_id")?;
        required(query.plan_id.as_deref(), "plan_id")?;
        for _ in 0..MAX_RACE_RETRIES {
            let now = self.clock.now_ms();
            let view = self
                .binding_view(&tenant.name, instance_id, std::slice::from_ref(id))
                .await?;
            if view
                .instance
                .as_ref()
                .is_none_or(|i| i.state == InstanceState::Gone)
            {
                return Err(binding_gone());
            }
            let Some(Versioned { item: cur, version }) = view.binding(id).cloned() else {
                return Err(binding_gone());
            };
            let mut writes = Vec::new();
            match cur.state {
                BindingState::Gone => return Err(binding_gone()),
                BindingState::Deleting => {
                    return match (&cur.last_operation, query.accepts_incomplete) {
                        (Some(op), true) => Ok(Reply::Accepted {
                            operation: op.clone(),
                            body: (),
                        }),
                        _ => Err(BrokerError::Concurrency(
                            "the service binding is already being deleted".into(),
                        )),
                    };
                }
                BindingState::Creating => {
                    if let Some(w) = self
                        .cancel_operation(
                            &tenant.name,
                            instance_id,
                            cur.last_operation.as_ref(),
                            now,
                        )
                        .await?
                    {
                        writes.extend(w);
                    }
                }
                BindingState::Ready | BindingState::CreateFailed => {}
            }
            let op_id = self.ids.operation_id();
            let job = self.job(
                OperationKind::Unbind,
                &op_id,
                &tenant.name,
                instance_id,
                Some(id),
                &cur.service_id,
                &cur.plan_id,
                None,
                now,
            );
            let estimate = self.plan_job(&job, query.accepts_incomplete)?;
            let mut op = Operation::start(&job, estimate.is_some(), meta);
            // sharing: a lease's credentials are revoked on its owner's backing instance
            let job = super::sharing::target_job(view.instance.as_ref(), &mut op, job);
            let mut binding = cur.clone();
            binding.last_operation = Some(op_id.clone());
            binding.updated_at = now;
            match estimate {
                Some(secs) => {
                    op.retry_after_secs = secs.max(1);
                    op.deadline = self
                        .catalog
                        .plan_by_id(&cur.plan_id)
                        .and_then(|p| self.deadline(&p, now));
                    binding.state = BindingState::Deleting;
                    writes.push(Write::replace(Record::Binding(binding), version));
                    writes.push(Write::create(Record::Operation(op.clone())));
                    if !self.commit_then_enqueue(writes, Some(&op.key())).await? {
                        continue;
                    }
                    return Ok(Reply::Accepted {
                        operation: op_id,
                        body: (),
                    });
                }
                None => {
                    let outcome = self.backend.start(&job).await;
                    if let BackendOutcome::Failed(d) = outcome {
                        return Err(BrokerError::BackendFailed(d));
                    }
                    binding.state = BindingState::Gone;
                    binding.result = None;
                    op.finish(OperationState::Succeeded, None, now);
                    writes.push(Write::replace(Record::Binding(binding), version));
                    writes.push(Write::create(Record::Operation(op)));
                    if !self.commit_then_enqueue(writes, None).await? {
                        continue;
                    }
                    return Ok(Reply::Ok(()));
                }
            }
        }
        Err(BrokerError::Concurrency(
            "the service binding is being changed by another request".into(),
        ))
    }

    /// GET binding: 404 unless the binding exists and is complete.
    pub async fn fetch_binding(
        &self,
        tenant: &Tenant,
        instance_id: &InstanceId,
        id: &BindingId,
    ) -> Result<BindingResource> {
        let view = self
            .binding_view(&tenant.name, instance_id, std::slice::from_ref(id))
            .await?;
        if view
            .instance
            .as_ref()
            .is_none_or(|i| matches!(i.state, InstanceState::Gone | InstanceState::CreateFailed))
        {
            return Err(binding_not_found());
        }
        let Some(Versioned { item: b, .. }) = view.binding(id).cloned() else {
            return Err(binding_not_found());
        };
        // A binding being deleted is still there only if it was ever created (has its result).
        let exists = match b.state {
            BindingState::Ready => true,
            BindingState::Deleting => b.result.is_some(),
            _ => false,
        };
        if !exists {
            return Err(binding_not_found());
        }
        if let Some(plan) = self.catalog.plan_by_id(&b.plan_id)
            && !plan.bindings_retrievable()
        {
            return Err(BrokerError::BadRequest(
                    "the service offering does not allow fetching bindings (bindings_retrievable is false)"
                        .into(),
                ));
        }
        Ok(BindingResource {
            result: b.result.unwrap_or_default(),
            parameters: b.parameters,
        })
    }
}
