//! The service catalog: the operator's offerings and plans (OSB fields plus each plan's backend settings),
//! validated once at start-up, with the plans' parameter schemas compiled for request validation.

use crate::backends::postgresql::PostgresPlan;
use crate::backends::simulated::SimulatedPlan;
use crate::backends::upstream::UpstreamPlan;
use crate::model::{MaintenanceInfo, Object};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Largest accepted JSON schema in a plan (the OSB spec's limit).
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    pub services: Vec<ServiceOffering>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOffering {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    pub bindable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances_retrievable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindings_retrievable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_context_updates: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_updateable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Object>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_client: Option<serde_json::Value>,
    pub plans: Vec<Plan>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Object>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_updateable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_rotatable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_polling_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_info: Option<MaintenanceInfo>,
    /// How the broker fulfils the plan. Not part of the served catalog.
    #[serde(default, skip_serializing)]
    pub backend: BackendConfig,
}

/// Which backend serves a plan, with its settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackendConfig {
    Simulated(SimulatedPlan),
    /// A database per instance on a named PostgreSQL server (`[postgresql_servers.NAME]`).
    Postgresql(PostgresPlan),
    /// A plan imported from an upstream OSB broker (`[upstream_brokers.NAME]`); jobs are forwarded to it.
    Upstream(UpstreamPlan),
}

impl BackendConfig {
    /// Whether binding needs `bind_resource.app_guid`.
    pub fn requires_app(&self) -> bool {
        match self {
            BackendConfig::Simulated(s) => s.requires_app,
            BackendConfig::Postgresql(p) => p.requires_app,
            // The upstream broker decides (and answers 422 RequiresApp itself).
            BackendConfig::Upstream(_) => false,
        }
    }

    /// The PostgreSQL server the plan uses, if any.
    pub fn postgresql_server(&self) -> Option<&str> {
        match self {
            BackendConfig::Postgresql(p) => Some(&p.server),
            BackendConfig::Simulated(_) | BackendConfig::Upstream(_) => None,
        }
    }

    /// The upstream broker the plan is forwarded to, if any.
    pub fn upstream_broker(&self) -> Option<&str> {
        match self {
            BackendConfig::Upstream(u) => Some(&u.broker),
            _ => None,
        }
    }

    /// Which backend serves the plan (a plan change must stay on it).
    fn home(&self) -> Option<(&'static str, &str)> {
        match self {
            BackendConfig::Simulated(_) => None,
            BackendConfig::Postgresql(p) => Some(("postgresql", &p.server)),
            BackendConfig::Upstream(u) => Some(("upstream", &u.broker)),
        }
    }
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig::Simulated(SimulatedPlan::default())
    }
}

/// The three places a plan may declare a parameters schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaKind {
    InstanceCreate,
    InstanceUpdate,
    BindingCreate,
}

impl SchemaKind {
    const ALL: [SchemaKind; 3] = [
        SchemaKind::InstanceCreate,
        SchemaKind::InstanceUpdate,
        SchemaKind::BindingCreate,
    ];
    fn path(self) -> [&'static str; 2] {
        match self {
            SchemaKind::InstanceCreate => ["service_instance", "create"],
            SchemaKind::InstanceUpdate => ["service_instance", "update"],
            SchemaKind::BindingCreate => ["service_binding", "create"],
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CatalogError {
    #[error("catalog has no services")]
    Empty,
    #[error("duplicate service id '{0}'")]
    DuplicateServiceId(String),
    #[error("duplicate service name '{0}'")]
    DuplicateServiceName(String),
    #[error("duplicate plan id '{0}'")]
    DuplicatePlanId(String),
    #[error("service '{service}' has two plans named '{plan}'")]
    DuplicatePlanName { service: String, plan: String },
    #[error("service '{0}' has no plans")]
    NoPlans(String),
    #[error("{what} must not be empty")]
    EmptyField { what: String },
    #[error("plan '{plan}': {reason}")]
    InvalidPlan { plan: String, reason: String },
    #[error("service '{service}': {reason}")]
    InvalidService { service: String, reason: String },
}

/// A plan found in the catalog together with its offering.
#[derive(Debug, Clone, Copy)]
pub struct PlanRef<'a> {
    pub service: &'a ServiceOffering,
    pub plan: &'a Plan,
}

impl PlanRef<'_> {
    pub fn bindable(&self) -> bool {
        self.plan.bindable.unwrap_or(self.service.bindable)
    }
    pub fn plan_updateable(&self) -> bool {
        self.plan
            .plan_updateable
            .or(self.service.plan_updateable)
            .unwrap_or(false)
    }
    pub fn binding_rotatable(&self) -> bool {
        self.plan.binding_rotatable.unwrap_or(false)
    }
    pub fn instances_retrievable(&self) -> bool {
        self.service.instances_retrievable.unwrap_or(false)
    }
    pub fn bindings_retrievable(&self) -> bool {
        self.service.bindings_retrievable.unwrap_or(false)
    }
    pub fn allow_context_updates(&self) -> bool {
        self.service.allow_context_updates.unwrap_or(false)
    }
    /// Whether the offering is marked `metadata.shareable: true`.
    pub fn shareable(&self) -> bool {
        self.service
            .metadata
            .as_ref()
            .and_then(|m| m.get("shareable"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }
}

/// A validated catalog. It can be replaced while the broker runs ([`Catalog::replace`], the upstream
/// brokers' catalogs refreshed): every reader sees one whole version. A version is never freed once
/// published, so what a reader borrowed stays valid without a guard; a new version is published only
/// when the catalog changed (an upstream changed its offerings), so this costs one catalog's memory per
/// change, not per refresh.
pub struct Catalog {
    current: std::sync::RwLock<&'static CatalogVersion>,
    version: std::sync::atomic::AtomicU64,
}

struct CatalogVersion {
    config: CatalogConfig,
    plans: HashMap<String, (usize, usize)>,
    services: HashMap<String, usize>,
    validators: HashMap<(String, SchemaKind), jsonschema::Validator>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.now();
        f.debug_struct("Catalog")
            .field("services", &v.config.services.len())
            .field("plans", &v.plans.len())
            .finish()
    }
}

fn non_empty(what: impl Fn() -> String, s: &str) -> Result<(), CatalogError> {
    if s.trim().is_empty() {
        return Err(CatalogError::EmptyField { what: what() });
    }
    Ok(())
}

impl Catalog {
    /// Validates the configuration: unique ids and names, at least one plan per offering, well-formed
    /// `maintenance_info` versions (semver), schemas that declare `$schema`, are at most 64 kB and compile.
    pub fn new(config: CatalogConfig) -> Result<Self, CatalogError> {
        if config.services.is_empty() {
            return Err(CatalogError::Empty);
        }
        Catalog::new_possibly_empty(config)
    }

    /// [`Catalog::new`] accepting no services (a broker whose offerings all come from upstream brokers
    /// that have not answered yet).
    pub fn new_possibly_empty(config: CatalogConfig) -> Result<Self, CatalogError> {
        let version: &'static CatalogVersion = Box::leak(Box::new(Catalog::build(config)?));
        Ok(Catalog {
            current: std::sync::RwLock::new(version),
            version: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Validates `config` as [`Catalog::new_possibly_empty`] does, keeping nothing.
    pub fn check(config: CatalogConfig) -> Result<(), CatalogError> {
        Catalog::build(config).map(drop)
    }

    fn build(config: CatalogConfig) -> Result<CatalogVersion, CatalogError> {
        let mut services = HashMap::new();
        let mut names = HashSet::new();
        let mut plans = HashMap::new();
        let mut validators = HashMap::new();
        for (si, s) in config.services.iter().enumerate() {
            non_empty(|| "service id".into(), &s.id)?;
            non_empty(|| format!("name of service '{}'", s.id), &s.name)?;
            non_empty(
                || format!("description of service '{}'", s.id),
                &s.description,
            )?;
            if services.insert(s.id.clone(), si).is_some() {
                return Err(CatalogError::DuplicateServiceId(s.id.clone()));
            }
            if !names.insert(s.name.clone()) {
                return Err(CatalogError::DuplicateServiceName(s.name.clone()));
            }
            if s.plans.is_empty() {
                return Err(CatalogError::NoPlans(s.id.clone()));
            }
            for r in &s.requires {
                if !matches!(
                    r.as_str(),
                    "syslog_drain" | "route_forwarding" | "volume_mount"
                ) {
                    return Err(CatalogError::InvalidService {
                        service: s.id.clone(),
                        reason: format!("unknown 'requires' value '{r}'"),
                    });
                }
            }
            // An instance lives on one backend: a plan change cannot move it to another.
            let updateable = s.plan_updateable == Some(true)
                || s.plans.iter().any(|p| p.plan_updateable == Some(true));
            if updateable
                && s.plans
                    .iter()
                    .any(|p| p.backend.home() != s.plans[0].backend.home())
            {
                return Err(CatalogError::InvalidService {
                    service: s.id.clone(),
                    reason: "plans that can be changed into each other must use the same backend (and postgresql server or upstream broker)".into(),
                });
            }
            let mut plan_names = HashSet::new();
            for (pi, p) in s.plans.iter().enumerate() {
                non_empty(|| format!("a plan id of service '{}'", s.id), &p.id)?;
                non_empty(|| format!("name of plan '{}'", p.id), &p.name)?;
                non_empty(|| format!("description of plan '{}'", p.id), &p.description)?;
                if plans.insert(p.id.clone(), (si, pi)).is_some() {
                    return Err(CatalogError::DuplicatePlanId(p.id.clone()));
                }
                if !plan_names.insert(p.name.clone()) {
                    return Err(CatalogError::DuplicatePlanName {
                        service: s.id.clone(),
                        plan: p.name.clone(),
                    });
                }
                let invalid = |reason: String| CatalogError::InvalidPlan {
                    plan: p.id.clone(),
                    reason,
                };
                if let Some(mi) = &p.maintenance_info {
                    semver::Version::parse(&mi.version).map_err(|e| {
                        invalid(format!(
                            "maintenance_info.version '{}' is not semver 2.0: {e}",
                            mi.version
                        ))
                    })?;
                }
                if p.maximum_polling_duration == Some(0) {
                    return Err(invalid(
                        "maximum_polling_duration must be a positive number of seconds".into(),
                    ));
                }
                match &p.backend {
                    BackendConfig::Simulated(sim) => sim.validate().map_err(invalid)?,
                    BackendConfig::Postgresql(pg) => pg.validate().map_err(invalid)?,
                    BackendConfig::Upstream(u) => u.validate().map_err(invalid)?,
                }
                if let Some(schemas) = &p.schemas {
                    if !schemas.is_object() {
                        return Err(invalid("schemas must be an object".into()));
                    }
                    for kind in SchemaKind::ALL {
                        let [a, b] = kind.path();
                        let Some(schema) = schemas.get(a).and_then(|x| x.get(b)) else {
                            continue;
                        };
                        let Some(params) = schema.get("parameters") else {
                            continue;
                        };
                        let v = compile_schema(params)
                            .map_err(|e| invalid(format!("schemas.{a}.{b}.parameters: {e}")))?;
                        validators.insert((p.id.clone(), kind), v);
                    }
                }
            }
        }
        Ok(CatalogVersion {
            config,
            plans,
            services,
            validators,
        })
    }

    fn now(&self) -> &'static CatalogVersion {
        *self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `next`'s content as this catalog's (readers see the old or the new version, never a mix
    /// within one call). Returns the new version number.
    pub fn replace(&self, next: Catalog) -> u64 {
        let v = next.now();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = v;
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            .saturating_add(1)
    }

    /// Grows by one at each [`Catalog::replace`] (caches of the served catalog compare it).
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The configuration of the current version.
    pub fn config(&self) -> &CatalogConfig {
        &self.now().config
    }

    pub fn services(&self) -> &[ServiceOffering] {
        &self.now().config.services
    }

    pub fn service(&self, service_id: &str) -> Option<&ServiceOffering> {
        let v = self.now();
        v.services.get(service_id).map(|&i| &v.config.services[i])
    }

    /// Looks a plan up by id, whatever its offering.
    pub fn plan_by_id(&self, plan_id: &str) -> Option<PlanRef<'_>> {
        let v = self.now();
        v.plans.get(plan_id).map(|&(si, pi)| {
            let service = &v.config.services[si];
            PlanRef {
                service,
                plan: &service.plans[pi],
            }
        })
    }

    /// Validates `parameters` against the plan's schema of that kind; no schema means anything goes.
    /// Returns up to five readable messages on failure.
    pub fn validate_parameters(
        &self,
        plan_id: &str,
        kind: SchemaKind,
        parameters: &serde_json::Value,
    ) -> Result<(), Vec<String>> {
        let Some(v) = self.now().validators.get(&(plan_id.to_owned(), kind)) else {
            return Ok(());
        };
        let errors: Vec<String> = v
            .iter_errors(parameters)
            .take(5)
            .map(|e| {
                let path = e.instance_path().to_string();
                if path.is_empty() {
                    e.to_string()
                } else {
                    format!("{path}: {e}")
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn compile_schema(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    if !schema.is_object() {
        return Err("must be a JSON schema object".into());
    }
    let size = serde_json::to_vec(schema).map(|v| v.len()).unwrap_or(0);
    if size > MAX_SCHEMA_BYTES {
        return Err(format!("is {size} bytes, more than the 64 kB allowed"));
    }
    if schema.get("$schema").and_then(|s| s.as_str()).is_none() {
        return Err("must declare \"$schema\"".into());
    }
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog(v: serde_json::Value) -> Result<Catalog, CatalogError> {
        Catalog::new(serde_json::from_value(v).expect("catalog config parses"))
    }

    fn plan(id: &str, name: &str) -> serde_json::Value {
        json!({"id": id, "name": name, "description": "d"})
    }

    #[test]
    fn the_demo_catalog_is_valid() {
        let c = crate::config::demo_catalog().expect("demo catalog is valid");
        assert!(c.services().iter().any(|s| s.metadata.as_ref().and_then(|m| m.get("shareable")) == Some(&json!(true))));
    }

    #[test]
    fn a_replaced_catalog_is_seen_whole_and_what_was_borrowed_stays_valid() {
        let one = |name: &str| json!({"services": [{"id": "s", "name": name, "description": "d", "bindable": true, "plans": [plan("p", "x")]}]});
        let c = catalog(one("first")).expect("valid");
        let old = c.service("s").expect("there");
        assert_eq!(c.version(), 1);
        assert_eq!(c.replace(catalog(one("second")).expect("valid")), 2);
        assert_eq!(c.version(), 2);
        assert_eq!(c.service("s").expect("there").name, "second");
        assert_eq!(
            old.name, "first",
            "a reader of the old version is unaffected"
        );
        assert!(Catalog::check(serde_json::from_value(one("ok")).expect("parses")).is_ok());
        assert!(Catalog::check(CatalogConfig { services: vec![] }).is_ok());
        assert!(Catalog::new(CatalogConfig { services: vec![] }).is_err());
    }

    #[test]
    fn duplicate_ids_and_names_are_refused() {
        let two = |a: serde_json::Value, b: serde_json::Value| json!({"services": [a, b]});
        let svc = |id: &str, name: &str, plans: serde_json::Value| json!({"id": id, "name": name, "description": "d", "bindable": true, "plans": plans});
        assert_eq!(
            catalog(two(
                svc("s", "a", json!([plan("p1", "x")])),
                svc("s", "b", json!([plan("p2", "x")]))
            ))
            .err(),
            Some(CatalogError::DuplicateServiceId("s".into()))
        );
        assert_eq!(
            catalog(two(
                svc("s1", "a", json!([plan("p1", "x")])),
                svc("s2", "a", json!([plan("p2", "x")]))
            ))
            .err(),
            Some(CatalogError::DuplicateServiceName("a".into()))
        );
        assert_eq!(
            catalog(two(
                svc("s1", "a", json!([plan("p1", "x")])),
                svc("s2", "b", json!([plan("p1", "y")]))
            ))
            .err(),
            Some(CatalogError::DuplicatePlanId("p1".into()))
        );
        assert!(matches!(
            catalog(
                json!({"services": [svc("s1", "a", json!([plan("p1", "x"), plan("p2", "x")]))]})
            ),
            Err(CatalogError::DuplicatePlanName { .. })
        ));
        assert_eq!(
            catalog(json!({"services": [svc("s1", "a", json!([]))]})).err(),
            Some(CatalogError::NoPlans("s1".into()))
        );
    }

    #[test]
    fn bad_schemas_and_versions_are_refused() {
        let with_plan = |p: serde_json::Value| json!({"services": [{"id": "s", "name": "n", "description": "d", "bindable": true, "plans": [p]}]});
        let mut p = plan("p", "x");
        p["schemas"] = json!({"service_instance": {"create": {"parameters": {"type": "object"}}}});
        assert!(
            matches!(catalog(with_plan(p)), Err(CatalogError::InvalidPlan { reason, .. }) if reason.contains("$schema"))
        );
        let mut p = plan("p", "x");
        p["maintenance_info"] = json!({"version": "one"});
        assert!(
            matches!(catalog(with_plan(p)), Err(CatalogError::InvalidPlan { reason, .. }) if reason.contains("semver"))
        );
        let mut p = plan("p", "x");
        p["schemas"] = json!({"service_instance": {"create": {"parameters": {"$schema": "http://json-schema.org/draft-04/schema#", "type": 12}}}});
        assert!(catalog(with_plan(p)).is_err());
    }

    #[test]
    fn parameters_are_checked_against_the_plan_schema() {
        let mut p = plan("p", "x");
        p["schemas"] = json!({"service_instance": {"create": {"parameters": {
            "$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
            "properties": {"size": {"type": "integer", "maximum": 10}}, "additionalProperties": false}}}});
        let c = catalog(json!({"services": [{"id": "s", "name": "n", "description": "d", "bindable": true, "plans": [p]}]}))
            .expect("valid");
        assert!(
            c.validate_parameters("p", SchemaKind::InstanceCreate, &json!({"size": 3}))
                .is_ok()
        );
        let errs = c
            .validate_parameters("p", SchemaKind::InstanceCreate, &json!({"size": 30}))
            .expect_err("too big");
        assert!(errs[0].contains("/size"), "{errs:?}");
        assert!(
            c.validate_parameters("p", SchemaKind::InstanceCreate, &json!({"other": 1}))
                .is_err()
        );
        // No update schema: anything goes.
        assert!(
            c.validate_parameters("p", SchemaKind::InstanceUpdate, &json!({"other": 1}))
                .is_ok()
        );
    }
}
