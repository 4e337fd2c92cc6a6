//! Bind (and rotate), unbind and fetch of service bindings.

use super::{Attempt, Broker, Reply, decide, race_retry, required};
use crate::catalog::SchemaKind;
use crate::error::{BrokerError, Result};
use crate::ids::{BindingId, InstanceId};
use crate::model::requests::{BindRequest, DeleteQuery};
use crate::model::responses::{BindingResource, BindingResult};
use crate::ports::{Bindings, Record, Versioned, Write};
use crate::records::{
    Binding, BindingState, Instance, InstanceState, Operation, OperationKind, RequestMeta,
};
use crate::tenants::Tenant;

fn binding_not_found() -> BrokerError {
    BrokerError::NotFound("the service binding does not exist".into())
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

    /// The instance rewritten at the version it was read at: committed with a bind or unbind, so that a
    /// delete (or a purge of a lease) that read the instance before cannot commit too, and one that
    /// committed first makes this one re-read.
    fn touch_instance(&self, now: i64) -> Option<Write> {
        let (Some(inst), Some(version)) = (&self.instance, self.instance_version) else {
            return None;
        };
        let mut touched = inst.clone();
        touched.updated_at = now;
        Some(Write::replace(Record::Instance(touched), version))
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
                let p = BindingId::parse(p).map_err(|e| BrokerError::BadRequest(e.to_string()))?;
                if &p == id {
                    return Err(BrokerError::BadRequest(
                        "predecessor_binding_id must name another binding than the one being created"
                            .into(),
                    ));
                }
                Some(p)
            }
        };
        if plan.plan.backend.requires_app() && req.app_guid().is_none() {
            return Err(BrokerError::RequiresApp(
                "this service needs an application to bind to: send bind_resource.app_guid".into(),
            ));
        }
        self.validate_parameters(&plan, SchemaKind::BindingCreate, &req.parameters)?;
        super::check_stored_size(
            &[
                req.parameters.as_ref(),
                req.context.as_ref(),
                req.bind_resource.as_ref(),
            ],
            |n| {
                BrokerError::BadRequest(format!(
                    "parameters, context and bind_resource hold {n} bytes of JSON, more than the {} bytes a binding may keep",
                    super::MAX_STORED_PLATFORM_BYTES
                ))
            },
        )?;

        race_retry("the service binding", || async {
            let now = self.clock.now_ms();
            let mut wanted = vec![id.clone()];
            wanted.extend(predecessor.iter().cloned());
            let view = self
                .binding_view(&tenant.name, instance_id, &wanted)
                .await?;
            let instance = decide::bindable(view.instance.as_ref())?;
            super::sharing::check_bindable(instance)?; // sharing: an orphaned lease cannot be bound
            let ask = decide::BindAsk {
                service_id: &plan.service.id,
                plan_id: &plan.plan.id,
                app_guid: req.app_guid(),
                bind_resource: &req.bind_resource,
                parameters: &req.parameters,
                predecessor: predecessor.as_ref(),
            };
            // Any record under this id, of whatever generation: a new binding replaces it.
            let any_life = view.bindings.iter().find(|b| &b.item.id == id);
            let (generation, version) = match decide::bind(
                instance,
                view.binding(id).map(|v| &v.item),
                any_life,
                predecessor
                    .as_ref()
                    .map(|p| (p, view.binding(p).map(|v| &v.item))),
                &ask,
                now,
            )? {
                decide::Bind::InProgress(cur) => {
                    return self
                        .repeated_in_progress(
                            &tenant.name,
                            instance_id,
                            cur.last_operation.as_ref(),
                            accepts_incomplete,
                            BindingResult::default(),
                        )
                        .await
                        .map(Attempt::Done);
                }
                decide::Bind::Exists(cur) => {
                    return Ok(Attempt::Done(Reply::Ok(
                        cur.result.clone().unwrap_or_default(),
                    )));
                }
                decide::Bind::Create {
                    generation,
                    replaces,
                } => (generation, replaces),
            };
            let op_id = self.ids.operation_id();
            let target = super::Target {
                tenant: &tenant.name,
                instance_id,
                generation: instance.generation,
                binding: Some((id, generation)),
            };
            let mut job = self.job(
                OperationKind::Bind,
                &op_id,
                &target,
                &plan.service.id,
                &plan.plan.id,
                req.parameters.clone(),
                now,
            );
            job.context = req.context.clone();
            job.bind_resource = match (req.bind_resource.clone(), req.app_guid()) {
                (Some(mut r), Some(app)) => {
                    r.insert("app_guid".into(), app.into());
                    Some(r)
                }
                (r, None) => r,
                (None, Some(app)) => Some(serde_json::Map::from_iter([(
                    "app_guid".into(),
                    app.into(),
                )])),
            };
            let estimate = self.plan_job(&job, accepts_incomplete)?;
            let binding = Binding {
                tenant: tenant.name.clone(),
                instance_id: instance_id.clone(),
                instance_generation: instance.generation,
                id: id.clone(),
                generation,
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
            op.retry_after_secs = estimate.unwrap_or(1).max(1);
            op.deadline = estimate.and_then(|_| self.deadline(&plan, now));
            // sharing: a lease binds its owner's backing instance
            super::sharing::target_job(Some(instance), &mut op);
            let mut writes = vec![
                Write::upsert(Record::Binding(binding), version),
                Write::create(Record::Operation(op.clone())),
            ];
            writes.extend(view.touch_instance(now));
            let Some(launched) = self.launch(writes, 0, op).await? else {
                return Ok(Attempt::Retry);
            };
            launched
                .into_reply(
                    |_| BindingResult::default(),
                    |done| {
                        Reply::Created(match done.resource {
                            Some(Record::Binding(b)) => b.result.unwrap_or_default(),
                            _ => BindingResult::default(),
                        })
                    },
                )
                .map(Attempt::Done)
        })
        .await
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
        race_retry("the service binding", || async {
            let now = self.clock.now_ms();
            let view = self
                .binding_view(&tenant.name, instance_id, std::slice::from_ref(id))
                .await?;
            let mut writes = Vec::new();
            match decide::unbind(
                view.instance.as_ref(),
                view.binding(id).map(|v| &v.item),
                query.accepts_incomplete,
            )? {
                decide::Unbind::Repeat(op) => {
                    return Ok(Attempt::Done(Reply::Accepted {
                        operation: op.clone(),
                        body: (),
                    }));
                }
                // Orphan mitigation: deleting a binding being created stops the creation.
                decide::Unbind::CancelCreation(op) => {
                    writes.extend(
                        self.cancel_operation(&tenant.name, instance_id, op, now)
                            .await?
                            .into_iter()
                            .flatten(),
                    );
                }
                decide::Unbind::Proceed => {}
            }
            let (Some(instance), Some(Versioned { item: cur, version })) =
                (view.instance.as_ref(), view.binding(id).cloned())
            else {
                return Err(decide::binding_gone());
            };

            let op_id = self.ids.operation_id();
            let target = super::Target {
                tenant: &tenant.name,
                instance_id,
                generation: instance.generation,
                binding: Some((id, cur.generation)),
            };
            let job = self.job(
                OperationKind::Unbind,
                &op_id,
                &target,
                &cur.service_id,
                &cur.plan_id,
                None,
                now,
            );
            let estimate = self.plan_job(&job, query.accepts_incomplete)?;
            let mut op = Operation::start(&job, estimate.is_some(), meta);
            op.retry_after_secs = estimate.unwrap_or(1).max(1);
            op.deadline = estimate.and_then(|_| {
                self.catalog
                    .plan_by_id(&cur.plan_id)
                    .and_then(|p| self.deadline(&p, now))
            });
            // sharing: a lease's credentials are revoked on its owner's backing instance
            super::sharing::target_job(Some(instance), &mut op);
            let mut binding = cur.clone();
            binding.last_operation = Some(op_id.clone());
            binding.updated_at = now;
            binding.state = BindingState::Deleting;
            let resource = writes.len();
            writes.push(Write::replace(Record::Binding(binding), version));
            writes.push(Write::create(Record::Operation(op.clone())));
            writes.extend(view.touch_instance(now));
            let Some(launched) = self.launch(writes, resource, op).await? else {
                return Ok(Attempt::Retry);
            };
            launched
                .into_reply(|_| (), |_| Reply::Ok(()))
                .map(Attempt::Done)
        })
        .await
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
