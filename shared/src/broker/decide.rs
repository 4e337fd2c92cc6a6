//! The decisions of the use cases, as pure functions of the records read and the request: what a
//! provision, update, deprovision, bind or unbind does with what is already there. No I/O, no clock, no
//! ids; each use case (`instances.rs`, `bindings.rs`) reads, calls its function here, then commits and runs
//! the backend step through the pipeline. Unit-tested below, state by state.

use super::pipeline::next_generation;
use super::same_parameters;
use crate::error::{BrokerError, Result};
use crate::ids::{BindingId, OperationId};
use crate::model::Object;
use crate::ports::Versioned;
use crate::records::{Binding, BindingState, Instance, InstanceState};

/// What identifies a provision request: a repeated PUT with these is the same request.
#[derive(Debug, Clone, Copy)]
pub(super) struct ProvisionAsk<'a> {
    pub service_id: &'a str,
    pub plan_id: &'a str,
    pub organization_guid: Option<&'a str>,
    pub space_guid: Option<&'a str>,
    pub parameters: &'a Option<Object>,
}

impl ProvisionAsk<'_> {
    fn matches(&self, i: &Instance) -> bool {
        i.service_id == self.service_id
            && i.plan_id == self.plan_id
            && i.organization_guid.as_deref() == self.organization_guid
            && i.space_guid.as_deref() == self.space_guid
            && same_parameters(&i.parameters, self.parameters)
    }
}

/// What a provision does.
#[derive(Debug, PartialEq)]
pub(super) enum Provision<'a> {
    /// The same provision is in progress: answered as a repeated request (202, or 422 without
    /// `accepts_incomplete`).
    InProgress(&'a Instance),
    /// The same instance already exists: 200 with its body.
    Exists(&'a Instance),
    /// A new life of the id at `generation` (nothing there, or a failed or deleted earlier life).
    Create { generation: u64 },
}

pub(super) fn provision<'a>(
    existing: Option<&'a Instance>,
    ask: &ProvisionAsk<'_>,
    now_ms: i64,
) -> Result<Provision<'a>> {
    if let Some(cur) = existing {
        let same = ask.matches(cur);
        match cur.state {
            InstanceState::Creating if same => return Ok(Provision::InProgress(cur)),
            InstanceState::Ready | InstanceState::Updating if same => {
                return Ok(Provision::Exists(cur));
            }
            InstanceState::Deleting => {
                return Err(BrokerError::Concurrency(
                    "the service instance is being deleted".into(),
                ));
            }
            InstanceState::Creating | InstanceState::Ready | InstanceState::Updating => {
                return Err(BrokerError::Conflict(
                    "a service instance with this id already exists with different attributes"
                        .into(),
                ));
            }
            InstanceState::CreateFailed | InstanceState::Gone => {}
        }
    }
    Ok(Provision::Create {
        generation: next_generation(existing.map(|i| i.generation), now_ms),
    })
}

/// What an update does.
#[derive(Debug, PartialEq)]
pub(super) enum Update<'a> {
    /// The instance is ready for a change.
    Proceed,
    /// An update is in progress: a repeat of it answers with `operation`, anything else is a 422
    /// (the caller reads the operation to tell).
    InProgress(Option<&'a OperationId>),
}

pub(super) fn update<'a>(cur: Option<&'a Instance>, service_id: &str) -> Result<Update<'a>> {
    let Some(cur) = cur else {
        return Err(instance_not_found());
    };
    match cur.state {
        InstanceState::Ready => {}
        InstanceState::Updating => return Ok(Update::InProgress(cur.last_operation.as_ref())),
        InstanceState::Creating | InstanceState::Deleting => {
            return Err(BrokerError::Concurrency(
                "another operation on the service instance is in progress".into(),
            ));
        }
        InstanceState::CreateFailed | InstanceState::Gone => return Err(instance_not_found()),
    }
    if cur.service_id != service_id {
        return Err(BrokerError::BadRequest(format!(
            "service_id '{service_id}' is not the service of this instance"
        )));
    }
    Ok(Update::Proceed)
}

/// Whether an instance may move from its plan to `target_plan`.
pub(super) fn plan_change(
    cur: &Instance,
    current_plan: &crate::catalog::PlanRef<'_>,
    target_plan: &crate::catalog::PlanRef<'_>,
) -> Result<()> {
    if target_plan.plan.id == cur.plan_id {
        return Ok(());
    }
    // sharing: leases use the owner's plan; it cannot change under them.
    if cur.sharing.as_ref().is_some_and(|s| !s.leases.is_empty()) {
        return Err(BrokerError::Unprocessable(
            "the instance is shared through leases, which use its plan: purge or delete the leases before changing the plan".into(),
        ));
    }
    if !current_plan.plan_updateable() {
        return Err(BrokerError::Unprocessable(format!(
            "plan '{}' cannot be changed to another plan",
            current_plan.plan.name
        )));
    }
    Ok(())
}

/// What a deprovision does.
#[derive(Debug, PartialEq)]
pub(super) enum Deprovision<'a> {
    /// The delete in progress, repeated with `accepts_incomplete`: 202 with its operation.
    Repeat(&'a OperationId),
    /// Orphan mitigation: the creation in progress (this operation, if any) is cancelled by the delete.
    CancelCreation(Option<&'a OperationId>),
    /// A delete of a ready (or failed) instance.
    Proceed,
}

pub(super) fn deprovision<'a>(
    cur: Option<&'a Instance>,
    bindings: &[Versioned<Binding>],
    accepts_incomplete: bool,
) -> Result<Deprovision<'a>> {
    let Some(cur) = cur else {
        return Err(instance_gone());
    };
    let step = match cur.state {
        InstanceState::Gone => return Err(instance_gone()),
        InstanceState::Deleting => {
            return match (&cur.last_operation, accepts_incomplete) {
                (Some(op), true) => Ok(Deprovision::Repeat(op)),
                _ => Err(BrokerError::Concurrency(
                    "the service instance is already being deleted".into(),
                )),
            };
        }
        InstanceState::Updating => {
            return Err(BrokerError::Concurrency(
                "an update of the service instance is in progress".into(),
            ));
        }
        InstanceState::Creating => Deprovision::CancelCreation(cur.last_operation.as_ref()),
        InstanceState::Ready | InstanceState::CreateFailed => Deprovision::Proceed,
    };
    if let Some(b) = bindings.iter().find(|b| {
        b.item.instance_generation == cur.generation
            && matches!(
                b.item.state,
                BindingState::Creating | BindingState::Deleting
            )
    }) {
        return Err(BrokerError::Concurrency(format!(
            "an operation on binding '{}' is in progress",
            b.item.id
        )));
    }
    Ok(step)
}

/// The instance, when it can take a new binding.
pub(super) fn bindable(instance: Option<&Instance>) -> Result<&Instance> {
    let Some(inst) = instance else {
        return Err(instance_not_found());
    };
    match inst.state {
        InstanceState::Ready | InstanceState::Updating => Ok(inst),
        InstanceState::Creating => Err(BrokerError::Concurrency(
            "the service instance is still being provisioned".into(),
        )),
        InstanceState::Deleting => Err(BrokerError::Concurrency(
            "the service instance is being deleted".into(),
        )),
        InstanceState::CreateFailed | InstanceState::Gone => Err(instance_not_found()),
    }
}

/// What identifies a bind request: a repeated PUT with these is the same request.
#[derive(Debug, Clone, Copy)]
pub(super) struct BindAsk<'a> {
    pub service_id: &'a str,
    pub plan_id: &'a str,
    pub app_guid: Option<&'a str>,
    pub bind_resource: &'a Option<Object>,
    pub parameters: &'a Option<Object>,
    pub predecessor: Option<&'a BindingId>,
}

impl BindAsk<'_> {
    fn matches(&self, b: &Binding) -> bool {
        b.service_id == self.service_id
            && b.plan_id == self.plan_id
            && b.app_guid.as_deref() == self.app_guid
            && &b.bind_resource == self.bind_resource
            && same_parameters(&b.parameters, self.parameters)
            && b.predecessor_binding_id.as_ref() == self.predecessor
    }
}

/// What a bind does.
#[derive(Debug, PartialEq)]
pub(super) enum Bind<'a> {
    InProgress(&'a Binding),
    Exists(&'a Binding),
    /// A new binding at `generation`, replacing the record of an earlier life of the id (read at
    /// `replaces`) if there is one.
    Create {
        generation: u64,
        replaces: Option<u64>,
    },
}

/// `current` is the binding of the instance's current generation under the id, `any_life` the record
/// under the id whatever its generation (a new binding replaces it), `predecessor` the binding named by
/// `predecessor_binding_id`.
pub(super) fn bind<'a>(
    instance: &Instance,
    current: Option<&'a Binding>,
    any_life: Option<&Versioned<Binding>>,
    predecessor: Option<(&BindingId, Option<&Binding>)>,
    ask: &BindAsk<'_>,
    now_ms: i64,
) -> Result<Bind<'a>> {
    if let Some((p, found)) = predecessor
        && found.is_none_or(|b| b.state != BindingState::Ready)
    {
        return Err(BrokerError::BadRequest(format!(
            "predecessor_binding_id '{p}' is not an existing binding of this instance"
        )));
    }
    if let Some(cur) = current {
        let same = ask.matches(cur);
        match cur.state {
            BindingState::Creating if same => return Ok(Bind::InProgress(cur)),
            BindingState::Ready if same => return Ok(Bind::Exists(cur)),
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
    // A new binding (an existing one with other attributes was a 409 above).
    if instance.service_id != ask.service_id || instance.plan_id != ask.plan_id {
        return Err(BrokerError::BadRequest(format!(
            "service_id and plan_id must be those of the instance (plan '{}')",
            instance.plan_id
        )));
    }
    Ok(Bind::Create {
        generation: next_generation(any_life.map(|v| v.item.generation), now_ms),
        replaces: any_life.map(|v| v.version),
    })
}

/// What an unbind does.
#[derive(Debug, PartialEq)]
pub(super) enum Unbind<'a> {
    /// The unbind in progress, repeated with `accepts_incomplete`: 202 with its operation.
    Repeat(&'a OperationId),
    /// Orphan mitigation: the bind in progress (this operation, if any) is cancelled.
    CancelCreation(Option<&'a OperationId>),
    Proceed,
}

/// `binding` is the binding of the instance's current generation under the id.
pub(super) fn unbind<'a>(
    instance: Option<&Instance>,
    binding: Option<&'a Binding>,
    accepts_incomplete: bool,
) -> Result<Unbind<'a>> {
    if instance.is_none_or(|i| i.state == InstanceState::Gone) {
        return Err(binding_gone());
    }
    let Some(cur) = binding else {
        return Err(binding_gone());
    };
    Ok(match cur.state {
        BindingState::Gone => return Err(binding_gone()),
        BindingState::Deleting => {
            return match (&cur.last_operation, accepts_incomplete) {
                (Some(op), true) => Ok(Unbind::Repeat(op)),
                _ => Err(BrokerError::Concurrency(
                    "the service binding is already being deleted".into(),
                )),
            };
        }
        BindingState::Creating => Unbind::CancelCreation(cur.last_operation.as_ref()),
        BindingState::Ready | BindingState::CreateFailed => Unbind::Proceed,
    })
}

pub(super) fn instance_not_found() -> BrokerError {
    BrokerError::NotFound("the service instance does not exist".into())
}

pub(super) fn instance_gone() -> BrokerError {
    BrokerError::Gone("the service instance does not exist".into())
}

pub(super) fn binding_gone() -> BrokerError {
    BrokerError::Gone("the service binding does not exist".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::ids::InstanceId;
    use serde_json::json;

    const ALL_INSTANCE: [InstanceState; 6] = [
        InstanceState::Creating,
        InstanceState::Ready,
        InstanceState::Updating,
        InstanceState::Deleting,
        InstanceState::CreateFailed,
        InstanceState::Gone,
    ];
    const ALL_BINDING: [BindingState; 5] = [
        BindingState::Creating,
        BindingState::Ready,
        BindingState::Deleting,
        BindingState::CreateFailed,
        BindingState::Gone,
    ];
    const NOW: i64 = 1_000;

    fn op(n: u8) -> OperationId {
        OperationId::parse(&format!("op-{n}")).unwrap()
    }

    fn instance(state: InstanceState) -> Instance {
        Instance {
            tenant: "t".into(),
            id: InstanceId::parse("i1").unwrap(),
            generation: 7,
            service_id: "svc".into(),
            plan_id: "small".into(),
            organization_guid: Some("org".into()),
            space_guid: Some("space".into()),
            context: None,
            parameters: Some(json!({"a": 1}).as_object().unwrap().clone()),
            maintenance_info: None,
            dashboard_url: None,
            metadata: None,
            state,
            last_operation: Some(op(1)),
            provisioned_at: None,
            created_at: 0,
            updated_at: 0,
            sharing: None,
            lease: None,
        }
    }

    fn binding(state: BindingState, instance_generation: u64) -> Binding {
        Binding {
            tenant: "t".into(),
            instance_id: InstanceId::parse("i1").unwrap(),
            instance_generation,
            id: BindingId::parse("b1").unwrap(),
            generation: 3,
            service_id: "svc".into(),
            plan_id: "small".into(),
            app_guid: Some("app".into()),
            bind_resource: None,
            context: None,
            parameters: None,
            predecessor_binding_id: None,
            state,
            result: None,
            last_operation: Some(op(2)),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn provision_ask(params: &Option<Object>) -> ProvisionAsk<'_> {
        ProvisionAsk {
            service_id: "svc",
            plan_id: "small",
            organization_guid: Some("org"),
            space_guid: Some("space"),
            parameters: params,
        }
    }

    fn code(e: BrokerError) -> &'static str {
        match e {
            BrokerError::Concurrency(_) => "concurrency",
            BrokerError::Conflict(_) => "conflict",
            BrokerError::NotFound(_) => "not found",
            BrokerError::Gone(_) => "gone",
            BrokerError::BadRequest(_) => "bad request",
            BrokerError::Unprocessable(_) => "unprocessable",
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_provision_decides_by_the_state_of_what_is_there() {
        let same = Some(json!({"a": 1}).as_object().unwrap().clone());
        let other = Some(json!({"a": 2}).as_object().unwrap().clone());
        assert_eq!(
            provision(None, &provision_ask(&same), NOW).unwrap(),
            Provision::Create { generation: 1_000 }
        );
        for state in ALL_INSTANCE {
            let cur = instance(state);
            let got = provision(Some(&cur), &provision_ask(&same), NOW).map_err(code);
            let want = match state {
                InstanceState::Creating => Ok(Provision::InProgress(&cur)),
                InstanceState::Ready | InstanceState::Updating => Ok(Provision::Exists(&cur)),
                InstanceState::Deleting => Err("concurrency"),
                InstanceState::CreateFailed | InstanceState::Gone => {
                    Ok(Provision::Create { generation: 1_000 })
                }
            };
            assert_eq!(got, want, "same request, {state:?}");
            let got = provision(Some(&cur), &provision_ask(&other), 0).map_err(code);
            let want = match state {
                InstanceState::Creating | InstanceState::Ready | InstanceState::Updating => {
                    Err("conflict")
                }
                InstanceState::Deleting => Err("concurrency"),
                InstanceState::CreateFailed | InstanceState::Gone => {
                    Ok(Provision::Create { generation: 8 })
                }
            };
            assert_eq!(got, want, "other parameters, {state:?}");
        }
    }

    #[test]
    fn a_provision_with_another_org_space_or_plan_is_another_request() {
        let params = Some(json!({"a": 1}).as_object().unwrap().clone());
        let cur = instance(InstanceState::Ready);
        let asks = [
            ProvisionAsk {
                plan_id: "large",
                ..provision_ask(&params)
            },
            ProvisionAsk {
                organization_guid: Some("org2"),
                ..provision_ask(&params)
            },
            ProvisionAsk {
                space_guid: None,
                ..provision_ask(&params)
            },
        ];
        for ask in asks {
            assert_eq!(
                provision(Some(&cur), &ask, NOW).map_err(code),
                Err("conflict"),
                "{ask:?}"
            );
        }
    }

    #[test]
    fn an_update_needs_a_ready_instance_of_its_service() {
        assert_eq!(update(None, "svc").map_err(code), Err("not found"));
        for state in ALL_INSTANCE {
            let cur = instance(state);
            let want = match state {
                InstanceState::Ready => Ok(Update::Proceed),
                InstanceState::Updating => Ok(Update::InProgress(cur.last_operation.as_ref())),
                InstanceState::Creating | InstanceState::Deleting => Err("concurrency"),
                InstanceState::CreateFailed | InstanceState::Gone => Err("not found"),
            };
            assert_eq!(update(Some(&cur), "svc").map_err(code), want, "{state:?}");
        }
        let cur = instance(InstanceState::Ready);
        assert_eq!(
            update(Some(&cur), "other").map_err(code),
            Err("bad request")
        );
    }

    #[test]
    fn a_deprovision_decides_by_the_state_and_the_bindings_in_progress() {
        assert_eq!(deprovision(None, &[], true).map_err(code), Err("gone"));
        for state in ALL_INSTANCE {
            let cur = instance(state);
            for accepts in [false, true] {
                let want = match state {
                    InstanceState::Gone => Err("gone"),
                    InstanceState::Deleting if accepts => Ok(Deprovision::Repeat(&op(1))),
                    InstanceState::Deleting | InstanceState::Updating => Err("concurrency"),
                    InstanceState::Creating => Ok(Deprovision::CancelCreation(Some(&op(1)))),
                    InstanceState::Ready | InstanceState::CreateFailed => Ok(Deprovision::Proceed),
                };
                let got = deprovision(Some(&cur), &[], accepts).map_err(code);
                assert_eq!(got, want, "{state:?}, accepts_incomplete={accepts}");
            }
        }
        let cur = instance(InstanceState::Ready);
        let versioned = |b| Versioned {
            item: b,
            version: 1,
        };
        for state in ALL_BINDING {
            let busy = [versioned(binding(state, cur.generation))];
            let want = match state {
                BindingState::Creating | BindingState::Deleting => Err("concurrency"),
                _ => Ok(Deprovision::Proceed),
            };
            assert_eq!(deprovision(Some(&cur), &busy, false).map_err(code), want);
            // A binding of an earlier life of the id does not hold the delete up.
            let earlier = [versioned(binding(state, cur.generation - 1))];
            assert_eq!(
                deprovision(Some(&cur), &earlier, false).map_err(code),
                Ok(Deprovision::Proceed)
            );
        }
    }

    #[test]
    fn only_a_ready_or_updating_instance_takes_bindings() {
        assert_eq!(bindable(None).map(|_| ()).map_err(code), Err("not found"));
        for state in ALL_INSTANCE {
            let cur = instance(state);
            let want = match state {
                InstanceState::Ready | InstanceState::Updating => Ok(()),
                InstanceState::Creating | InstanceState::Deleting => Err("concurrency"),
                InstanceState::CreateFailed | InstanceState::Gone => Err("not found"),
            };
            assert_eq!(
                bindable(Some(&cur)).map(|_| ()).map_err(code),
                want,
                "{state:?}"
            );
        }
    }

    fn bind_ask() -> BindAsk<'static> {
        BindAsk {
            service_id: "svc",
            plan_id: "small",
            app_guid: Some("app"),
            bind_resource: &None,
            parameters: &None,
            predecessor: None,
        }
    }

    #[test]
    fn a_bind_decides_by_the_state_of_the_binding_there() {
        let inst = instance(InstanceState::Ready);
        assert_eq!(
            bind(&inst, None, None, None, &bind_ask(), NOW).unwrap(),
            Bind::Create {
                generation: 1_000,
                replaces: None
            }
        );
        for state in ALL_BINDING {
            let cur = binding(state, inst.generation);
            let record = Versioned {
                item: cur.clone(),
                version: 4,
            };
            let got = bind(&inst, Some(&cur), Some(&record), None, &bind_ask(), 0).map_err(code);
            let want = match state {
                BindingState::Creating => Ok(Bind::InProgress(&cur)),
                BindingState::Ready => Ok(Bind::Exists(&cur)),
                BindingState::Deleting => Err("concurrency"),
                BindingState::CreateFailed | BindingState::Gone => Ok(Bind::Create {
                    generation: 4,
                    replaces: Some(4),
                }),
            };
            assert_eq!(got, want, "same request, {state:?}");
            let other = BindAsk {
                app_guid: Some("another-app"),
                ..bind_ask()
            };
            let got = bind(&inst, Some(&cur), Some(&record), None, &other, 0).map_err(code);
            let want = match state {
                BindingState::Creating | BindingState::Ready => Err("conflict"),
                BindingState::Deleting => Err("concurrency"),
                BindingState::CreateFailed | BindingState::Gone => Ok(Bind::Create {
                    generation: 4,
                    replaces: Some(4),
                }),
            };
            assert_eq!(got, want, "other app, {state:?}");
        }
    }

    #[test]
    fn a_bind_with_another_plan_is_a_conflict_when_the_binding_exists_and_a_bad_request_when_new() {
        let inst = instance(InstanceState::Ready);
        let other_plan = BindAsk {
            plan_id: "large",
            ..bind_ask()
        };
        let cur = binding(BindingState::Ready, inst.generation);
        assert_eq!(
            bind(&inst, Some(&cur), None, None, &other_plan, NOW).map_err(code),
            Err("conflict")
        );
        assert_eq!(
            bind(&inst, None, None, None, &other_plan, NOW).map_err(code),
            Err("bad request")
        );
    }

    #[test]
    fn a_rotation_needs_a_ready_predecessor() {
        let inst = instance(InstanceState::Ready);
        let p = BindingId::parse("b0").unwrap();
        let ask = BindAsk {
            predecessor: Some(&p),
            ..bind_ask()
        };
        for state in ALL_BINDING {
            let pred = binding(state, inst.generation);
            let got = bind(&inst, None, None, Some((&p, Some(&pred))), &ask, NOW).map_err(code);
            let want = match state {
                BindingState::Ready => Ok(Bind::Create {
                    generation: 1_000,
                    replaces: None,
                }),
                _ => Err("bad request"),
            };
            assert_eq!(got, want, "predecessor {state:?}");
        }
        assert_eq!(
            bind(&inst, None, None, Some((&p, None)), &ask, NOW).map_err(code),
            Err("bad request")
        );
    }

    #[test]
    fn an_unbind_decides_by_the_state_of_the_binding() {
        let inst = instance(InstanceState::Ready);
        let b = binding(BindingState::Ready, inst.generation);
        assert_eq!(unbind(None, Some(&b), true).map_err(code), Err("gone"));
        let gone = instance(InstanceState::Gone);
        assert_eq!(
            unbind(Some(&gone), Some(&b), true).map_err(code),
            Err("gone")
        );
        assert_eq!(unbind(Some(&inst), None, true).map_err(code), Err("gone"));
        for state in ALL_BINDING {
            let cur = binding(state, inst.generation);
            for accepts in [false, true] {
                let want = match state {
                    BindingState::Gone => Err("gone"),
                    BindingState::Deleting if accepts => Ok(Unbind::Repeat(&op(2))),
                    BindingState::Deleting => Err("concurrency"),
                    BindingState::Creating => Ok(Unbind::CancelCreation(Some(&op(2)))),
                    BindingState::Ready | BindingState::CreateFailed => Ok(Unbind::Proceed),
                };
                let got = unbind(Some(&inst), Some(&cur), accepts).map_err(code);
                assert_eq!(got, want, "{state:?}, accepts_incomplete={accepts}");
            }
        }
    }
}
