//! Catalog import: `GET /v2/catalog` of each upstream, its offerings and plans copied faithfully
//! (`dashboard_client` dropped), ids namespaced per upstream (`ids`), names with the upstream's prefix and
//! suffix, each plan's backend pointing at the upstream plan. The last good catalog of each upstream is
//! kept (`upstream-catalogs/NAME.json` in the data directory), so a start while an upstream is down still
//! serves its offerings, and an upstream that fails never takes the others' offerings with it.

#[cfg(feature = "upstream")]
use super::client::{Method, OsbClient, Sent};
use super::config::Upstream;
use super::{UpstreamPlan, ids};
use crate::catalog::{BackendConfig, Catalog, CatalogConfig, Plan, ServiceOffering};
use crate::model::{MaintenanceInfo, Object};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
#[cfg(feature = "upstream")]
use std::sync::Arc;

/// An import that went wrong (the upstream's offerings are then the last good ones, or none).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImportError {
    #[error("upstream broker '{upstream}': {reason}")]
    Fetch { upstream: String, reason: String },
    #[error("upstream broker '{upstream}': offering '{offering}': {reason}")]
    Offering {
        upstream: String,
        offering: String,
        reason: String,
    },
    #[error(
        "offering name '{name}' of upstream broker '{upstream}' is already used by {other}: set name_prefix or name_suffix in [upstream_brokers.{upstream}], or exclude it"
    )]
    NameCollision {
        upstream: String,
        name: String,
        other: String,
    },
    #[error("cannot keep the catalog of upstream broker '{upstream}' in {path}: {reason}")]
    Cache {
        upstream: String,
        path: PathBuf,
        reason: String,
    },
}

fn field<'a>(o: &'a Object, k: &str) -> Option<&'a Value> {
    o.get(k).filter(|v| !v.is_null())
}

fn opt<T: serde::de::DeserializeOwned>(o: &Object, k: &str) -> Result<Option<T>, String> {
    field(o, k)
        .map(|v| serde_json::from_value(v.clone()).map_err(|e| format!("{k}: {e}")))
        .transpose()
}

fn req_str(o: &Object, k: &str) -> Result<String, String> {
    match field(o, k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err(format!("{k} is missing or not a string")),
    }
}

/// One upstream's raw catalog as our offerings. Vendor fields we do not model are not copied.
pub fn translate(up: &Upstream, raw: &Value) -> Result<Vec<ServiceOffering>, ImportError> {
    let fetch_err = |reason: String| ImportError::Fetch {
        upstream: up.name.clone(),
        reason,
    };
    let services = raw
        .get("services")
        .and_then(|s| s.as_array())
        .ok_or_else(|| fetch_err("the catalog has no services array".into()))?;
    let mut out = Vec::new();
    for s in services {
        let so = s
            .as_object()
            .ok_or_else(|| fetch_err("a service offering is not an object".into()))?;
        let name = req_str(so, "name").map_err(fetch_err)?;
        if !up.imports(&name) {
            continue;
        }
        let offering_err = |reason: String| ImportError::Offering {
            upstream: up.name.clone(),
            offering: name.clone(),
            reason,
        };
        let up_sid = req_str(so, "id").map_err(offering_err)?;
        let mut plans = Vec::new();
        for p in field(so, "plans")
            .and_then(|p| p.as_array())
            .ok_or_else(|| offering_err("plans is missing".into()))?
        {
            let po = p
                .as_object()
                .ok_or_else(|| offering_err("a plan is not an object".into()))?;
            let up_pid = req_str(po, "id").map_err(offering_err)?;
            plans.push(Plan {
                id: ids::plan_id(&up.name, &up_sid, &up_pid),
                name: req_str(po, "name").map_err(offering_err)?,
                description: req_str(po, "description").map_err(offering_err)?,
                metadata: opt(po, "metadata").map_err(offering_err)?,
                free: opt(po, "free").map_err(offering_err)?,
                bindable: opt(po, "bindable").map_err(offering_err)?,
                plan_updateable: opt(po, "plan_updateable").map_err(offering_err)?,
                binding_rotatable: opt(po, "binding_rotatable").map_err(offering_err)?,
                schemas: field(po, "schemas").cloned(),
                maximum_polling_duration: opt(po, "maximum_polling_duration")
                    .map_err(offering_err)?,
                maintenance_info: opt::<MaintenanceInfo>(po, "maintenance_info")
                    .map_err(offering_err)?,
                backend: BackendConfig::Upstream(UpstreamPlan {
                    broker: up.name.clone(),
                    service_id: up_sid.clone(),
                    plan_id: up_pid,
                }),
            });
        }
        out.push(ServiceOffering {
            id: ids::service_id(&up.name, &up_sid),
            name: format!("{}{name}{}", up.name_prefix, up.name_suffix),
            description: req_str(so, "description").map_err(offering_err)?,
            tags: opt(so, "tags").map_err(offering_err)?.unwrap_or_default(),
            requires: opt(so, "requires")
                .map_err(offering_err)?
                .unwrap_or_default(),
            bindable: opt(so, "bindable").map_err(offering_err)?.unwrap_or(false),
            instances_retrievable: opt(so, "instances_retrievable").map_err(offering_err)?,
            bindings_retrievable: opt(so, "bindings_retrievable").map_err(offering_err)?,
            allow_context_updates: opt(so, "allow_context_updates").map_err(offering_err)?,
            plan_updateable: opt(so, "plan_updateable").map_err(offering_err)?,
            metadata: opt(so, "metadata").map_err(offering_err)?,
            // The upstream's OAuth client is its own business (and carries a secret).
            dashboard_client: None,
            plans,
        });
    }
    // The imported part alone must be a valid catalog (schemas compile, ids and names unique).
    if !out.is_empty() {
        Catalog::check(CatalogConfig {
            services: out.clone(),
        })
        .map_err(|e| fetch_err(format!("its catalog is not valid: {e}")))?;
    }
    Ok(out)
}

/// Where the last good catalog of an upstream is kept.
pub fn cache_path(data_dir: &Path, upstream: &str) -> PathBuf {
    data_dir
        .join("upstream-catalogs")
        .join(format!("{upstream}.json"))
}

/// Where every offering and plan an upstream ever listed is kept (its raw catalog shape): plans that
/// vanished upstream stay routable across restarts, so their instances' deprovisions and unbinds still
/// reach the upstream and no upstream resource is left that no plan leads to.
pub fn known_path(data_dir: &Path, upstream: &str) -> PathBuf {
    data_dir
        .join("upstream-catalogs")
        .join(format!("{upstream}.known.json"))
}

/// `known` with every offering and plan of `latest` added or updated (by id); nothing is ever removed.
pub fn remember(known: &Value, latest: &Value) -> Value {
    let mut services: Vec<Value> = known["services"].as_array().cloned().unwrap_or_default();
    for s in latest["services"].as_array().into_iter().flatten() {
        match services.iter_mut().find(|k| k["id"] == s["id"]) {
            None => services.push(s.clone()),
            Some(k) => {
                let mut plans: Vec<Value> = k["plans"].as_array().cloned().unwrap_or_default();
                for p in s["plans"].as_array().into_iter().flatten() {
                    match plans.iter_mut().find(|q| q["id"] == p["id"]) {
                        Some(q) => *q = p.clone(),
                        None => plans.push(p.clone()),
                    }
                }
                let mut updated = s.clone();
                updated["plans"] = Value::Array(plans);
                *k = updated;
            }
        }
    }
    serde_json::json!({ "services": services })
}

/// Writes `bytes` to `path` aside, then renames: a crash never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(feature = "upstream")]
/// `GET /v2/catalog` of one upstream (no identity: not a user's request).
pub async fn fetch(client: &OsbClient) -> Result<Value, ImportError> {
    let err = |reason: String| ImportError::Fetch {
        upstream: client.upstream.name.clone(),
        reason,
    };
    match client
        .send(Method::Get, "/v2/catalog", &[], None, None, None)
        .await
    {
        Sent::Answer {
            status: 200,
            body: Some(b),
            ..
        } => Ok(b),
        Sent::Answer { status: 200, .. } => Err(err("the catalog is not JSON".into())),
        Sent::Answer { status, .. } => Err(err(format!("GET /v2/catalog answered {status}"))),
        Sent::NotSent(e) | Sent::Lost(e) => Err(err(e)),
    }
}

#[cfg(feature = "upstream")]
/// Fetches every upstream's catalog and keeps each one that translates into valid offerings as its last
/// good catalog. Returns what failed (those upstreams keep their last good catalog).
pub async fn refresh_cache(upstreams: &[Upstream], data_dir: &Path) -> Vec<ImportError> {
    let mut failures = Vec::new();
    for up in upstreams {
        let result = async {
            let client = OsbClient::new(Arc::new(up.clone())).map_err(|e| ImportError::Fetch {
                upstream: up.name.clone(),
                reason: e.0,
            })?;
            let raw = fetch(&client).await?;
            translate(up, &raw)?;
            let path = cache_path(data_dir, &up.name);
            let cache_err = |reason: String| ImportError::Cache {
                upstream: up.name.clone(),
                path: path.clone(),
                reason,
            };
            // What it ever listed first: a crash between the two writes loses no plan.
            let known_file = known_path(data_dir, &up.name);
            let known = std::fs::read(&known_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .unwrap_or(Value::Null);
            write_atomically(
                &known_file,
                &serde_json::to_vec(&remember(&known, &raw)).unwrap_or_default(),
            )
            .map_err(|e| cache_err(e.to_string()))?;
            write_atomically(&path, &serde_json::to_vec(&raw).unwrap_or_default())
                .map_err(|e| cache_err(e.to_string()))?;
            Ok::<(), ImportError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "upstream catalog not refreshed; its last good catalog stays");
            failures.push(e);
        }
    }
    failures
}

/// Adds the last good catalog of every upstream to `config`. An upstream with no catalog yet adds nothing
/// (warned); a name used twice is an error naming both.
pub fn merge_cached(
    config: &mut CatalogConfig,
    upstreams: &[Upstream],
    data_dir: &Path,
) -> Result<(), ImportError> {
    let mut names: HashMap<String, String> = config
        .services
        .iter()
        .map(|s| (s.name.clone(), "the static catalog".to_owned()))
        .collect();
    for up in upstreams {
        let path = cache_path(data_dir, &up.name);
        let raw: Value = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImportError::Cache {
                upstream: up.name.clone(),
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(_) => {
                tracing::warn!(upstream = %up.name, "no catalog of this upstream broker yet: none of its offerings is served");
                continue;
            }
        };
        let mut current = CatalogConfig {
            services: translate(up, &raw)?,
        };
        for s in &current.services {
            if let Some(other) = names.get(&s.name) {
                return Err(ImportError::NameCollision {
                    upstream: up.name.clone(),
                    name: s.name.clone(),
                    other: other.clone(),
                });
            }
            names.insert(s.name.clone(), format!("upstream broker '{}'", up.name));
        }
        // Plans this upstream listed before and no longer does: kept, so that their instances' jobs
        // still reach it after a restart.
        let known = std::fs::read(known_path(data_dir, &up.name))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|k| translate(up, &k).ok());
        if let Some(services) = known {
            let before: Vec<String> = current.services.iter().map(|s| s.name.clone()).collect();
            keep_vanished_plans(&mut current, &CatalogConfig { services });
            for s in &current.services {
                if !before.contains(&s.name) && names.contains_key(&s.name) {
                    // A vanished offering whose name another one took now: its plans cannot be served.
                    continue;
                }
                names.insert(s.name.clone(), format!("upstream broker '{}'", up.name));
            }
            let mine = format!("upstream broker '{}'", up.name);
            current.services.retain(|s| {
                before.contains(&s.name) || names.get(&s.name).is_some_and(|n| *n == mine)
            });
        }
        config.services.extend(current.services);
    }
    Ok(())
}

/// Keeps in `next` the upstream plans of `current` that the refreshed upstream catalogs no longer have
/// (and their offerings, unless a new offering took the name): instances of them still exist, and their
/// jobs (deprovision, unbind) must still reach their upstream. After a restart `merge_cached` keeps them
/// from the upstream's known plans (`known_path`).
pub fn keep_vanished_plans(next: &mut CatalogConfig, current: &CatalogConfig) {
    for s in &current.services {
        let upstream_plans: Vec<&Plan> = s
            .plans
            .iter()
            .filter(|p| matches!(p.backend, BackendConfig::Upstream(_)))
            .collect();
        if upstream_plans.is_empty() {
            continue;
        }
        if let Some(n) = next.services.iter_mut().find(|n| n.id == s.id) {
            for p in upstream_plans {
                if !n.plans.iter().any(|q| q.id == p.id) {
                    n.plans.push(p.clone());
                }
            }
        } else if !next.services.iter().any(|n| n.name == s.name) {
            let mut kept = s.clone();
            kept.plans
                .retain(|p| matches!(p.backend, BackendConfig::Upstream(_)));
            next.services.push(kept);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn upstream(toml_extra: &str) -> Upstream {
        let c: super::super::UpstreamConfig = toml::from_str(&format!(
            "url = 'http://127.0.0.1:1'\nusername = 'u'\npassword = 'p'\n{toml_extra}"
        ))
        .unwrap();
        c.validate("up").unwrap()
    }

    fn raw() -> Value {
        json!({"services": [{
            "id": "svc-1", "name": "db", "description": "a database", "bindable": true,
            "tags": ["sql"], "requires": ["syslog_drain"], "instances_retrievable": true, "bindings_retrievable": true,
            "allow_context_updates": true, "plan_updateable": true, "metadata": {"displayName": "DB"},
            "dashboard_client": {"id": "c", "secret": "s3cret", "redirect_uri": "https://x"},
            "x-vendor": 1,
            "plans": [{
                "id": "plan-1", "name": "small", "description": "small", "free": false, "bindable": true,
                "plan_updateable": false, "maximum_polling_duration": 120,
                "maintenance_info": {"version": "1.0.0", "description": "first"},
                "metadata": {"bullets": ["a"]},
                "schemas": {"service_instance": {"create": {"parameters": {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"}}}}
            }]
        }, {"id": "svc-2", "name": "cache", "description": "c", "bindable": false,
            "plans": [{"id": "plan-2", "name": "p", "description": "p"}]}]})
    }

    #[test]
    fn offerings_are_copied_faithfully_with_namespaced_ids() {
        let up = upstream("name_prefix = 'up-'");
        let s = translate(&up, &raw()).unwrap();
        assert_eq!(s.len(), 2);
        let db = &s[0];
        assert_eq!(db.id, ids::service_id("up", "svc-1"));
        assert_eq!(db.name, "up-db");
        assert!(db.dashboard_client.is_none());
        let served = serde_json::to_value(db).unwrap();
        let mut expected = raw()["services"][0].clone();
        let o = expected.as_object_mut().unwrap();
        o.remove("dashboard_client");
        o.remove("x-vendor");
        o["id"] = json!(db.id);
        o["name"] = json!("up-db");
        o["plans"][0]["id"] = json!(ids::plan_id("up", "svc-1", "plan-1"));
        assert_eq!(served, expected, "every OSB field copied, nothing else");
        assert_eq!(
            db.plans[0].backend,
            BackendConfig::Upstream(UpstreamPlan {
                broker: "up".into(),
                service_id: "svc-1".into(),
                plan_id: "plan-1".into()
            })
        );
        // Stable: the same input gives the same ids.
        assert_eq!(
            translate(&up, &raw()).unwrap()[0].plans[0].id,
            db.plans[0].id
        );
    }

    #[test]
    fn plans_that_vanish_upstream_stay_until_restart() {
        let up = upstream("");
        let current = CatalogConfig {
            services: translate(&up, &raw()).unwrap(),
        };
        let mut fewer = raw();
        fewer["services"].as_array_mut().unwrap().truncate(1);
        fewer["services"][0]["plans"][0]["id"] = json!("plan-new");
        fewer["services"][0]["plans"][0]["name"] = json!("new");
        let mut next = CatalogConfig {
            services: translate(&up, &fewer).unwrap(),
        };
        keep_vanished_plans(&mut next, &current);
        let ids: Vec<&str> = next
            .services
            .iter()
            .flat_map(|s| s.plans.iter().map(|p| p.id.as_str()))
            .collect();
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert!(ids.contains(&ids::plan_id("up", "svc-1", "plan-1").as_str()));
        assert!(ids.contains(&ids::plan_id("up", "svc-2", "plan-2").as_str()));
        assert!(Catalog::check(next).is_ok());
    }

    #[test]
    fn plans_that_vanished_upstream_stay_routable_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let up = upstream("");
        let mut fewer = raw();
        fewer["services"].as_array_mut().unwrap().truncate(1);
        fewer["services"][0]["plans"][0]["id"] = json!("plan-new");
        fewer["services"][0]["plans"][0]["name"] = json!("new");
        // What refresh_cache keeps after the upstream listed raw(), then fewer.
        let known = remember(&remember(&Value::Null, &raw()), &fewer);
        std::fs::create_dir_all(dir.path().join("upstream-catalogs")).unwrap();
        std::fs::write(known_path(dir.path(), "up"), known.to_string()).unwrap();
        std::fs::write(cache_path(dir.path(), "up"), fewer.to_string()).unwrap();
        let mut config = CatalogConfig { services: vec![] };
        merge_cached(&mut config, std::slice::from_ref(&up), dir.path()).unwrap();
        let ids: Vec<&str> = config
            .services
            .iter()
            .flat_map(|s| s.plans.iter().map(|p| p.id.as_str()))
            .collect();
        assert!(
            ids.contains(&ids::plan_id("up", "svc-1", "plan-new").as_str()),
            "{ids:?}"
        );
        assert!(
            ids.contains(&ids::plan_id("up", "svc-1", "plan-1").as_str()),
            "{ids:?}"
        );
        assert!(
            ids.contains(&ids::plan_id("up", "svc-2", "plan-2").as_str()),
            "{ids:?}"
        );
        assert!(Catalog::new(config).is_ok());
        // Remembering changes nothing that is already known.
        assert_eq!(remember(&known, &fewer), known);
    }

    #[test]
    fn include_and_exclude_filter_by_upstream_name() {
        assert_eq!(
            translate(&upstream("include = ['cache']"), &raw())
                .unwrap()
                .len(),
            1
        );
        let s = translate(&upstream("exclude = ['cache']"), &raw()).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "db");
    }

    #[test]
    fn an_invalid_upstream_catalog_is_refused() {
        let mut bad = raw();
        bad["services"][0]["plans"][0]["schemas"]["service_instance"]["create"]["parameters"] =
            json!({"type": "object"});
        assert!(matches!(
            translate(&upstream(""), &bad),
            Err(ImportError::Fetch { .. })
        ));
        assert!(translate(&upstream(""), &json!({"nope": 1})).is_err());
    }

    #[test]
    fn cached_catalogs_merge_and_names_must_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let up = upstream("");
        let path = cache_path(dir.path(), "up");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, raw().to_string()).unwrap();
        let mut config: CatalogConfig = serde_json::from_value(json!({"services": [
            {"id": "s0", "name": "static", "description": "d", "bindable": true, "plans": [{"id": "p0", "name": "p", "description": "d"}]}
        ]})).unwrap();
        merge_cached(&mut config, std::slice::from_ref(&up), dir.path()).unwrap();
        assert_eq!(config.services.len(), 3);
        assert!(Catalog::new(config).is_ok());
        let mut clash: CatalogConfig = serde_json::from_value(json!({"services": [
            {"id": "s0", "name": "db", "description": "d", "bindable": true, "plans": [{"id": "p0", "name": "p", "description": "d"}]}
        ]})).unwrap();
        let e = merge_cached(&mut clash, &[up], dir.path()).unwrap_err();
        assert!(matches!(e, ImportError::NameCollision { .. }));
        assert!(
            e.to_string().contains("'db'") && e.to_string().contains("name_prefix"),
            "{e}"
        );
        // No cache: nothing added, no error.
        let mut none = CatalogConfig { services: vec![] };
        merge_cached(&mut none, &[upstream("")], &dir.path().join("empty")).unwrap();
        assert!(none.services.is_empty());
    }
}
