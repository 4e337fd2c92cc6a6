//! Provision, update, deprovision and fetch of service instances.

use super::sharing::{DeleteSharing, ProvisionSharing, UpdateSharing};
use super::{Attempt, Broker, Reply, decide, race_retry, required, same_parameters};
use crate::catalog::{PlanRef, SchemaKind};
use crate::error::{BrokerError, Result};
use crate::ids::{InstanceId, OperationId};
use crate::model::Object;
use crate::model::requests::{DeleteQuery, ProvisionRequest, UpdateRequest};
use crate::model::responses::{InstanceResource, ProvisionResponse};
use crate::ports::backend::InstanceResult;
use crate::ports::{Bindings, Record, Versioned, Write};
use crate::records::{
    Instance, InstanceChange, InstanceState, Operation, OperationKind, OperationState, RequestMeta,
};
use crate::tenants::Tenant;

fn provision_body(i: &Instance) -> ProvisionResponse {
    ProvisionResponse {
        dashboard_url: i.dashboard_url.clone(),
        operation: None,
        metadata: i.metadata.clone(),
    }
}

/// The body of a 202 to a provision or update.
fn accepted_body(operation: &OperationId) -> ProvisionResponse {
    ProvisionResponse {
        operation: Some(operation.to_string()),
        ..Default::default()
    }
}

fn check_maintenance_info(
    plan: &PlanRef<'_>,
    requested: Option<&crate::model::MaintenanceInfo>,
) -> Result<()> {
    let Some(requested) = requested else {
        return Ok(());
    };
    match &plan.plan.maintenance_info {
        Some(mi) if mi.version == requested.version => Ok(()),
        Some(mi) => Err(BrokerError::MaintenanceInfoConflict(format!(
            "maintenance_info.version '{}' does not match the version '{}' of plan '{}'",
            requested.version, mi.version, plan.plan.name
        ))),
        None => Err(BrokerError::MaintenanceInfoConflict(format!(
            "plan '{}' has no maintenance_info, but the request names version '{}'",
            plan.plan.name, requested.version
        ))),
    }
}

impl Broker {
    pub async fn provision(
        &self,
        tenant: &Tenant,
        id: &InstanceId,
        req: ProvisionRequest,
        accepts_incomplete: bool,
        meta: &RequestMeta,
    ) -> Result<Reply<ProvisionResponse>> {
        let plan = self.resolve_plan(tenant, req.service_id.as_deref(), req.plan_id.as_deref())?;
        required(req.organization_guid.as_deref(), "organization_guid")?;
        required(req.space_guid.as_deref(), "space_guid")?;
        // --- sharing (broker/sharing/provision.rs): sharing keys split off; a lease request ends here ---
        let (req, sharing_params, mut prefetched, mut rules) = match self
            .sharing_on_provision(tenant, id, &plan, req, meta)
            .await?
        {
            ProvisionSharing::Done(reply) => return Ok(reply),
            ProvisionSharing::Owner {
                req,
                params,
                prefetched,
                rules,
            } => (*req, params, prefetched, rules),
        };
        // --- end sharing ---
        check_maintenance_info(&plan, req.maintenance_info.as_ref())?;
        self.validate_parameters(&plan, SchemaKind::InstanceCreate, &req.parameters)?;
        super::check_stored_size(&[req.parameters.as_ref(), req.context.as_ref()], |n| {
            BrokerError::BadRequest(format!(
                "parameters and context hold {n} bytes of JSON, more than the {} bytes an instance may keep",
                super::MAX_STORED_PLATFORM_BYTES
            ))
        })?;

        let (req, sharing_params) = (&req, &sharing_params);
        race_retry("the service instance", || {
            // What the sharing hook read serves the first round only.
            let (prefetched, rules) = (prefetched.take(), rules.take());
            async move {
                let now = self.clock.now_ms();
                let existing = match prefetched {
                    Some(read) => read,
                    None => self.store.get_instance(&tenant.name, id).await?,
                };
                let ask = decide::ProvisionAsk {
                    service_id: &plan.service.id,
                    plan_id: &plan.plan.id,
                    organization_guid: req.organization_guid.as_deref(),
                    space_guid: req.space_guid.as_deref(),
                    parameters: &req.parameters,
                };
                let generation =
                    match decide::provision(existing.as_ref().map(|v| &v.item), &ask, now)? {
                        decide::Provision::InProgress(cur) => {
                            let mut body = provision_body(cur);
                            body.operation = cur.last_operation.as_ref().map(|o| o.to_string());
                            return self
                                .repeated_in_progress(
                                    &tenant.name,
                                    id,
                                    cur.last_operation.as_ref(),
                                    accepts_incomplete,
                                    body,
                                )
                                .await
                                .map(Attempt::Done);
                        }
                        decide::Provision::Exists(cur) => {
                            return Ok(Attempt::Done(Reply::Ok(provision_body(cur))));
                        }
                        decide::Provision::Create { generation } => generation,
                    };
                let op_id = self.ids.operation_id();
                let target = super::Target {
                    tenant: &tenant.name,
                    instance_id: id,
                    generation,
                    binding: None,
                };
                let mut job = self.job(
                    OperationKind::Provision,
                    &op_id,
                    &target,
                    &plan.service.id,
                    &plan.plan.id,
                    req.parameters.clone(),
                    now,
                );
                job.context = req.context.clone();
                job.organization_guid = req.organization_guid.clone();
                job.space_guid = req.space_guid.clone();
                let estimate = self.plan_job(&job, accepts_incomplete)?;
                let mut instance = Instance {
                    tenant: tenant.name.clone(),
                    id: id.clone(),
                    generation,
                    service_id: plan.service.id.clone(),
                    plan_id: plan.plan.id.clone(),
                    organization_guid: req.organization_guid.clone(),
                    space_guid: req.space_guid.clone(),
                    context: req.context.clone(),
                    parameters: req.parameters.clone(),
                    maintenance_info: req
                        .maintenance_info
                        .clone()
                        .or_else(|| plan.plan.maintenance_info.clone()),
                    dashboard_url: None,
                    metadata: None,
                    state: InstanceState::Creating,
                    last_operation: Some(op_id.clone()),
                    provisioned_at: None,
                    created_at: now,
                    updated_at: now,
                    sharing: None,
                    lease: None,
                };
                // --- sharing: a new owner's token and sharing rules, written with it ---
                let mut sharing_writes = Vec::new();
                if let Some((s, w)) = self
                    .owner_setup(tenant, id, generation, &plan, sharing_params, rules, now)
                    .await?
                {
                    instance.sharing = Some(s);
                    sharing_writes = w;
                }
                let mut op = Operation::start(&job, estimate.is_some(), meta);
                op.retry_after_secs = estimate.unwrap_or(1).max(1);
                op.deadline = estimate.and_then(|_| self.deadline(&plan, now));
                let version = existing.as_ref().map(|v| v.version);
                let mut writes = vec![
                    Write::upsert(Record::Instance(instance), version),
                    Write::create(Record::Operation(op.clone())),
                ];
                writes.extend(sharing_writes);
                super::sharing::too_many(writes.len())?;
                let Some(launched) = self.launch(writes, 0, op).await? else {
                    return Ok(Attempt::Retry);
                };
                launched
                    .into_reply(accepted_body, |done| {
                        Reply::Created(match &done.resource {
                            Some(Record::Instance(i)) => provision_body(i),
                            _ => ProvisionResponse::default(),
                        })
                    })
                    .map(Attempt::Done)
            }
        })
        .await
    }

    pub async fn update(
        &self,
        tenant: &Tenant,
        id: &InstanceId,
        req: UpdateRequest,
        accepts_incomplete: bool,
        meta: &RequestMeta,
    ) -> Result<Reply<ProvisionResponse>> {
        let service_id = required(req.service_id.as_deref(), "service_id")?;
        self.resolve_service(tenant, service_id)?;
        if let Some(p) = &req.plan_id {
            required(Some(p), "plan_id")?;
        }
        race_retry("the service instance", || async {
            let now = self.clock.now_ms();
            let read = self.store.get_instance(&tenant.name, id).await?;
            if let decide::Update::InProgress(op_id) =
                decide::update(read.as_ref().map(|v| &v.item), service_id)?
            {
                // A re-sent PATCH of the update in progress answers 202 with the same operation.
                let cur = &read.as_ref().expect("decided on an instance").item;
                return self
                    .repeated_update(tenant, cur, op_id, &req, accepts_incomplete)
                    .await
                    .map(Attempt::Done);
            }
            let Some(Versioned { item: cur, version }) = read else {
                return Err(decide::instance_not_found());
            };
            // --- sharing (broker/sharing/update.rs): a lease's update, an owner's x_osb_cmdb update ---
            match self
                .sharing_on_update(tenant, &cur, version, &req, meta)
                .await?
            {
                UpdateSharing::NotSharing => {}
                UpdateSharing::Done(reply) => return Ok(Attempt::Done(reply)),
                UpdateSharing::Retry => return Ok(Attempt::Retry),
            }
            let current_plan = self.catalog.plan_by_id(&cur.plan_id).ok_or_else(|| {
                BrokerError::Unprocessable(format!(
                    "the instance's plan '{}' is no longer in the catalog",
                    cur.plan_id
                ))
            })?;
            let target_plan = match &req.plan_id {
                Some(p) => self.resolve_plan(tenant, Some(service_id), Some(p))?,
                None => current_plan,
            };
            decide::plan_change(&cur, &current_plan, &target_plan)?;
            check_maintenance_info(&target_plan, req.maintenance_info.as_ref())?;
            self.validate_parameters(&target_plan, SchemaKind::InstanceUpdate, &req.parameters)?;

            let change = InstanceChange {
                plan_id: target_plan.plan.id.clone(),
                parameters: merge_parameters(&cur.parameters, &req.parameters),
                context: req.context.clone().or_else(|| cur.context.clone()),
                maintenance_info: req.maintenance_info.clone().or_else(|| {
                    if target_plan.plan.id != cur.plan_id {
                        target_plan.plan.maintenance_info.clone()
                    } else {
                        cur.maintenance_info.clone()
                    }
                }),
            };
            super::check_stored_size(
                &[change.parameters.as_ref(), change.context.as_ref()],
                |n| {
                    BrokerError::Unprocessable(format!(
                        "with this update the instance's parameters and context would hold {n} bytes of JSON, more than the {} bytes an instance may keep",
                        super::MAX_STORED_PLATFORM_BYTES
                    ))
                },
            )?;
            let op_id = self.ids.operation_id();
            let target = super::Target {
                tenant: &tenant.name,
                instance_id: id,
                generation: cur.generation,
                binding: None,
            };
            let mut job = self.job(
                OperationKind::Update,
                &op_id,
                &target,
                &cur.service_id,
                &target_plan.plan.id,
                req.parameters.clone(),
                now,
            );
            job.context = req.context.clone();
            let estimate = self.plan_job(&job, accepts_incomplete)?;
            let mut op = Operation::start(&job, estimate.is_some(), meta);
            op.change = Some(change);
            op.retry_after_secs = estimate.unwrap_or(1).max(1);
            op.deadline = estimate.and_then(|_| self.deadline(&target_plan, now));
            let mut instance = cur.clone();
            instance.last_operation = Some(op_id.clone());
            instance.updated_at = now;
            instance.state = InstanceState::Updating;
            let writes = vec![
                Write::replace(Record::Instance(instance), version),
                Write::create(Record::Operation(op.clone())),
            ];
            let Some(launched) = self.launch(writes, 0, op).await? else {
                return Ok(Attempt::Retry);
            };
            launched
                .into_reply(accepted_body, |done| {
                    Reply::Ok(ProvisionResponse {
                        dashboard_url: match &done.resource {
                            Some(Record::Instance(i)) => i.dashboard_url.clone(),
                            _ => None,
                        },
                        ..Default::default()
                    })
                })
                .map(Attempt::Done)
        })
        .await
    }

    pub async fn deprovision(
        &self,
        tenant: &Tenant,
        id: &InstanceId,
        query: DeleteQuery,
        meta: &RequestMeta,
    ) -> Result<Reply<()>> {
        required(query.service_id.as_deref(), "service_id")?;
        required(query.plan_id.as_deref(), "plan_id")?;
        race_retry("the service instance", || async {
            let now = self.clock.now_ms();
            // The instance and all its bindings in one read (the bindings guard below needs them).
            let read = self
                .store
                .get_instance_with_bindings(&tenant.name, id, Bindings::All)
                .await?;
            let mut writes = Vec::new();
            match decide::deprovision(
                read.instance.as_ref().map(|v| &v.item),
                &read.bindings,
                query.accepts_incomplete,
            )? {
                decide::Deprovision::Repeat(op) => {
                    return Ok(Attempt::Done(Reply::Accepted {
                        operation: op.clone(),
                        body: (),
                    }));
                }
                // Orphan mitigation: deleting an instance being created stops the creation.
                decide::Deprovision::CancelCreation(op) => {
                    writes.extend(
                        self.cancel_operation(&tenant.name, id, op, now)
                            .await?
                            .into_iter()
                            .flatten(),
                    );
                }
                decide::Deprovision::Proceed => {}
            }
            let Some(Versioned { item: cur, version }) = read.instance else {
                return Err(decide::instance_gone());
            };
            // --- sharing (broker/sharing/delete.rs): a lease is deleted here; an owner's leases block or are purged ---
            let purge = match self
                .sharing_on_deprovision(&cur, version, &read.bindings, meta)
                .await?
            {
                DeleteSharing::NotSharing => None,
                DeleteSharing::Done(reply) => return Ok(Attempt::Done(reply)),
                DeleteSharing::Retry => return Ok(Attempt::Retry),
                DeleteSharing::Purge(p) => Some(p),
            };
            let op_id = self.ids.operation_id();
            let target = super::Target {
                tenant: &tenant.name,
                instance_id: id,
                generation: cur.generation,
                binding: None,
            };
            let job = self.job(
                OperationKind::Deprovision,
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
            let mut instance = cur.clone();
            instance.last_operation = Some(op_id.clone());
            instance.updated_at = now;
            instance.state = InstanceState::Deleting;
            let mut purge_operations = Vec::new();
            if let Some(p) = purge {
                // A purge is not undone by a failed delete: the leases stay orphaned (docs/design.md).
                p.apply_to(&mut instance);
                writes.extend(p.writes);
                purge_operations = p.operations;
                // The leases' unbinds reach the backend before the owner's deprovision does.
                op.after = purge_operations.clone();
                // The instance and its operation join the batch: all must fit one transaction.
                super::sharing::too_many(writes.len() + 2)?;
            }
            let resource = writes.len();
            writes.push(Write::replace(Record::Instance(instance), version));
            writes.push(Write::create(Record::Operation(op.clone())));
            let Some(launched) = self.launch(writes, resource, op).await? else {
                return Ok(Attempt::Retry);
            };
            self.enqueue_all(&purge_operations).await?;
            launched
                .into_reply(|_| (), |_| Reply::Ok(()))
                .map(Attempt::Done)
        })
        .await
    }

    /// A PATCH while an update is in progress: the same change answers 202 with the update's operation
    /// (422 `AsyncRequired` without `accepts_incomplete` when it runs asynchronously); any other is a 422.
    async fn repeated_update(
        &self,
        tenant: &Tenant,
        cur: &Instance,
        op_id: Option<&OperationId>,
        req: &UpdateRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<ProvisionResponse>> {
        if let Some(op_id) = op_id {
            let key = crate::records::OperationKey {
                tenant: tenant.name.clone(),
                instance_id: cur.id.clone(),
                operation_id: op_id.clone(),
            };
            if let Some(op) = self.store.get_operation(&key).await?
                && same_change(&op.item, cur, req)
            {
                if !accepts_incomplete {
                    return Err(if op.item.asynchronous {
                        BrokerError::AsyncRequired(
                            "this update is in progress asynchronously; send accepts_incomplete=true to follow it".into(),
                        )
                    } else {
                        BrokerError::Concurrency(
                            "the same update is being processed; retry when it is over".into(),
                        )
                    });
                }
                return Ok(Reply::Accepted {
                    operation: op_id.clone(),
                    body: accepted_body(op_id),
                });
            }
        }
        Err(BrokerError::Concurrency(
            "another update of the service instance is in progress".into(),
        ))
    }

    /// GET instance: 404 while it is being created or after it failed or was deleted, 422 while updating.
    pub async fn fetch_instance(
        &self,
        tenant: &Tenant,
        id: &InstanceId,
    ) -> Result<InstanceResource> {
        let Some(Versioned { item: cur, .. }) = self.store.get_instance(&tenant.name, id).await?
        else {
            return Err(decide::instance_not_found());
        };
        match cur.state {
            InstanceState::Ready => {}
            // A delete that cancelled the creation: the instance never existed for the platform.
            InstanceState::Deleting if cur.provisioned_at.is_none() => {
                return Err(decide::instance_not_found());
            }
            InstanceState::Deleting => {}
            InstanceState::Updating => {
                return Err(BrokerError::Concurrency(
                    "the service instance is being updated".into(),
                ));
            }
            InstanceState::Creating | InstanceState::CreateFailed | InstanceState::Gone => {
                return Err(decide::instance_not_found());
            }
        }
        if let Some(plan) = self.catalog.plan_by_id(&cur.plan_id)
            && !plan.instances_retrievable()
        {
            return Err(BrokerError::BadRequest(
                    "the service offering does not allow fetching instances (instances_retrievable is false)"
                        .into(),
                ));
        }
        // --- sharing: a lease's description, the owner's sharing view ---
        let (parameters, description) = self.sharing_view(&cur).await?;
        Ok(InstanceResource {
            service_id: cur.service_id,
            plan_id: cur.plan_id,
            dashboard_url: cur.dashboard_url,
            description,
            parameters,
            maintenance_info: cur.maintenance_info,
            metadata: cur.metadata,
        })
    }

    /// Marks an in-progress operation failed because the resource is being deleted (orphan mitigation);
    /// returns the write to commit with the delete, or `None` when there is nothing to cancel.
    pub(super) async fn cancel_operation(
        &self,
        tenant: &str,
        instance_id: &InstanceId,
        op_id: Option<&crate::ids::OperationId>,
        now: i64,
    ) -> Result<Option<Vec<Write>>> {
        let Some(op_id) = op_id else { return Ok(None) };
        let key = crate::records::OperationKey {
            tenant: tenant.to_owned(),
            instance_id: instance_id.clone(),
            operation_id: op_id.clone(),
        };
        let Some(Versioned {
            item: mut op,
            version,
        }) = self.store.get_operation(&key).await?
        else {
            return Ok(None);
        };
        if op.is_final() {
            return Ok(None);
        }
        op.finish(
            OperationState::Failed,
            Some(format!(
                "{} cancelled: a delete was requested while it was in progress",
                op.kind.as_str()
            )),
            now,
        );
        // The cancelled creation's webhook (if any) reports the failure.
        let (status, body) = super::webhooks::failure_body(&op);
        let mut writes: Vec<Write> =
            super::webhooks::callback_on_finish(&mut op, status, &body, now)?
                .into_iter()
                .collect();
        writes.push(Write::replace(Record::Operation(op), version));
        Ok(Some(writes))
    }
}

/// PATCH semantics: parameters not named in the request keep their values.
fn merge_parameters(current: &Option<Object>, requested: &Option<Object>) -> Option<Object> {
    match (current, requested) {
        (c, None) => c.clone(),
        (None, Some(r)) => Some(r.clone()),
        (Some(c), Some(r)) => {
            let mut m = c.clone();
            for (k, v) in r {
                m.insert(k.clone(), v.clone());
            }
            Some(m)
        }
    }
}

/// Whether a re-sent PATCH asks for the change already in progress.
fn same_change(op: &Operation, cur: &Instance, req: &UpdateRequest) -> bool {
    let Some(change) = &op.change else {
        return false;
    };
    let plan = req.plan_id.as_deref().unwrap_or(&cur.plan_id);
    change.plan_id == plan && same_parameters(&op.parameters, &req.parameters)
}

/// Applies a finished update to the instance.
pub(super) fn apply_change(
    instance: &mut Instance,
    change: &InstanceChange,
    result: InstanceResult,
) {
    instance.plan_id = change.plan_id.clone();
    instance.parameters = change.parameters.clone();
    instance.context = change.context.clone();
    instance.maintenance_info = change.maintenance_info.clone();
    if result.dashboard_url.is_some() {
        instance.dashboard_url = result.dashboard_url;
    }
    if result.metadata.is_some() {
        instance.metadata = result.metadata;
    }
    instance.state = InstanceState::Ready;
}
