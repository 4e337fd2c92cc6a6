//! Parsing of the `x_osb_cmdb` parameters (and a top-level `sharing_token`): snake_case canonical keys,
//! kebab-case aliases, unknown keys refused naming the key. The sharing keys are removed from the
//! parameters the instance keeps and the backend sees.

use crate::model::Object;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The parameter object all sharing settings live under.
pub const KEY: &str = "x_osb_cmdb";
/// The token parameter (also accepted at the top level of `parameters` on provision).
pub const TOKEN_KEY: &str = "sharing_token";

/// Keys of one constraint set of `sharing_to`.
pub const CONSTRAINT_KEYS: [&str; 11] = [
    "tenant",
    "profile",
    "org_name",
    "space_name",
    "org_guid",
    "space_guid",
    "instance_name",
    "namespace",
    "originating_identity_username",
    "originating_identity_groups",
    "service_instance_guid",
];

/// One constraint set: canonical key → string (groups: array of strings).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConstraintSet(pub BTreeMap<String, Value>);

impl ConstraintSet {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.as_str())
    }
    pub fn groups(&self) -> Vec<&str> {
        self.0
            .get("originating_identity_groups")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|g| g.as_str()).collect())
            .unwrap_or_default()
    }
    pub fn tenant(&self) -> &str {
        self.get("tenant").unwrap_or_default()
    }

    /// What the set lacks to pin one instance, if anything: the set must name the instance
    /// (`instance_name` or `service_instance_guid`) and where it lives (`space_guid`, or `space_name`
    /// with its org; `namespace`; or the originating identity keys). Only a pinned set can make a lease:
    /// a looser one would turn any provision of the offering by that tenant into a lease.
    pub fn missing_pin(&self) -> Option<&'static str> {
        let has = |k: &str| self.0.contains_key(k);
        if !has("instance_name") && !has("service_instance_guid") {
            return Some("the instance: 'instance_name' or 'service_instance_guid'");
        }
        let place = has("space_guid")
            || (has("space_name") && (has("org_guid") || has("org_name")))
            || has("namespace")
            || has("originating_identity_username")
            || has("originating_identity_groups");
        if !place {
            return Some(
                "where the instance lives: 'space_guid' (or 'space_name' with 'org_guid' or 'org_name'), 'namespace', or 'originating_identity_username' / 'originating_identity_groups'",
            );
        }
        None
    }
}

/// What the owner asks of its token on update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAction {
    Regenerate,
    Revoke,
}

/// A lease named in an update's `x_osb_cmdb.leases`: its instance guid, and its tenant when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSelector {
    pub tenant: Option<String>,
    pub instance_guid: String,
}

/// The sharing parameters of one request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SharingParams {
    /// `x_osb_cmdb` was present at all.
    pub present: bool,
    pub sharing_to: Option<Vec<ConstraintSet>>,
    /// Provision: the token presented to create a lease (never logged, never stored).
    pub token: Option<String>,
    /// Update: regenerate or revoke the owner's token.
    pub token_action: Option<TokenAction>,
    /// Update: the leases to keep (the others are purged).
    pub leases: Option<Vec<LeaseSelector>>,
    pub purge_leases_on_delete: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

fn canonical(key: &str) -> String {
    key.replace('-', "_")
}

fn bad(msg: impl Into<String>) -> ParamError {
    ParamError(msg.into())
}

/// Which request the parameters come with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Provision,
    Update,
}

/// Splits the sharing parameters off `parameters` (removing them) and parses them.
pub fn take(
    parameters: &mut Option<Object>,
    request: Request,
) -> Result<SharingParams, ParamError> {
    let Some(params) = parameters.as_mut() else {
        return Ok(SharingParams::default());
    };
    let mut out = SharingParams::default();
    // Both spellings are removed (neither may reach the backend or the stored parameters); giving both
    // is ambiguous.
    let mut both =
        |canonical: &str, kebab: &str| match (params.remove(canonical), params.remove(kebab)) {
            (Some(_), Some(_)) => Err(bad(format!(
                "parameters '{canonical}' and '{kebab}' are the same parameter: give one"
            ))),
            (a, b) => Ok(a.or(b)),
        };
    let top_token = both(TOKEN_KEY, "sharing-token")?;
    let cmdb = both(KEY, "x-osb-cmdb")?;
    if let Some(t) = top_token {
        if request == Request::Update {
            return Err(bad(format!(
                "parameter '{TOKEN_KEY}' goes under '{KEY}' on update ('regenerate' or 'revoke')"
            )));
        }
        out.token = Some(token_string(&t)?);
    }
    let Some(cmdb) = cmdb else {
        return Ok(out);
    };
    out.present = true;
    let Value::Object(cmdb) = cmdb else {
        return Err(bad(format!("parameter '{KEY}' must be an object")));
    };
    let mut seen = std::collections::HashSet::new();
    for (key, value) in cmdb {
        if !seen.insert(canonical(&key)) {
            return Err(bad(format!(
                "'{KEY}.{}' is given twice (snake_case and kebab-case spell the same key)",
                canonical(&key)
            )));
        }
        match canonical(&key).as_str() {
            "sharing_to" => out.sharing_to = Some(parse_sharing_to(&value)?),
            "sharing_token" => match request {
                Request::Provision => {
                    if out.token.is_some() {
                        return Err(bad("give the sharing token once"));
                    }
                    out.token = Some(token_string(&value)?);
                }
                Request::Update => {
                    out.token_action = Some(match value.as_str() {
                        Some("regenerate") => TokenAction::Regenerate,
                        Some("revoke") => TokenAction::Revoke,
                        _ => {
                            return Err(bad(format!(
                                "'{KEY}.sharing_token' on update must be \"regenerate\" or \"revoke\""
                            )));
                        }
                    })
                }
            },
            "leases" => {
                if request == Request::Provision {
                    return Err(bad(format!("'{KEY}.leases' can only be given on update")));
                }
                out.leases = Some(parse_leases(&value)?);
            }
            "purge_leases_on_delete" => match value {
                Value::Bool(b) => out.purge_leases_on_delete = Some(b),
                _ => {
                    return Err(bad(format!(
                        "'{KEY}.purge_leases_on_delete' must be a boolean"
                    )));
                }
            },
            _ => return Err(bad(format!("unknown key '{key}' in '{KEY}'"))),
        }
    }
    if out.token.is_some() && out.sharing_to.is_some() {
        return Err(bad(
            "a provision with a sharing token creates a lease and cannot share it further",
        ));
    }
    Ok(out)
}

fn token_string(v: &Value) -> Result<String, ParamError> {
    match v.as_str() {
        Some(s) if !s.is_empty() && s.len() <= 256 => Ok(s.to_owned()),
        // Never echo the value: it may be a token.
        _ => Err(bad(format!("'{TOKEN_KEY}' must be a non-empty string"))),
    }
}

fn parse_sharing_to(v: &Value) -> Result<Vec<ConstraintSet>, ParamError> {
    let Value::Array(sets) = v else {
        return Err(bad(format!(
            "'{KEY}.sharing_to' must be an array of objects"
        )));
    };
    sets.iter().map(parse_set).collect()
}

fn parse_set(v: &Value) -> Result<ConstraintSet, ParamError> {
    let Value::Object(o) = v else {
        return Err(bad(format!(
            "each entry of '{KEY}.sharing_to' must be an object"
        )));
    };
    let mut set = BTreeMap::new();
    for (key, value) in o {
        let k = canonical(key);
        if !CONSTRAINT_KEYS.contains(&k.as_str()) {
            return Err(bad(format!(
                "unknown key '{key}' in '{KEY}.sharing_to' (known: {})",
                CONSTRAINT_KEYS.join(", ")
            )));
        }
        let value = if k == "originating_identity_groups" {
            parse_groups(value)?
        } else {
            match value.as_str() {
                Some(s) if !s.is_empty() => Value::String(s.to_owned()),
                _ => {
                    return Err(bad(format!(
                        "'{key}' in '{KEY}.sharing_to' must be a non-empty string"
                    )));
                }
            }
        };
        if set.insert(k, value).is_some() {
            return Err(bad(format!(
                "key '{key}' is given twice in one '{KEY}.sharing_to' entry"
            )));
        }
    }
    let Some(tenant) = set
        .get("tenant")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
    else {
        return Err(bad(format!(
            "each entry of '{KEY}.sharing_to' needs a 'tenant'"
        )));
    };
    if !crate::tenants::valid_tenant_name(&tenant) {
        return Err(bad(format!(
            "'tenant' in '{KEY}.sharing_to' must be a tenant name (1-64 characters of a-z, 0-9, '-' or '_')"
        )));
    }
    let set = ConstraintSet(set);
    if let Some(missing) = set.missing_pin() {
        return Err(bad(format!(
            "each entry of '{KEY}.sharing_to' must pin one instance; this one for tenant '{tenant}' does not name {missing}"
        )));
    }
    Ok(set)
}

/// Groups as a JSON array of strings or a JSON-encoded string of one.
fn parse_groups(v: &Value) -> Result<Value, ParamError> {
    let err = || {
        bad(format!(
            "'originating_identity_groups' in '{KEY}.sharing_to' must be an array of strings or a JSON-encoded one"
        ))
    };
    let arr = match v {
        Value::Array(a) => a.clone(),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(a)) => a,
            _ => return Err(err()),
        },
        _ => return Err(err()),
    };
    if arr.iter().any(|g| !g.is_string()) {
        return Err(err());
    }
    Ok(Value::Array(arr))
}

fn parse_leases(v: &Value) -> Result<Vec<LeaseSelector>, ParamError> {
    const VIEW_KEYS: [&str; 10] = [
        "tenant",
        "profile",
        "org_name",
        "org_guid",
        "space_name",
        "space_guid",
        "namespace",
        "instance_name",
        "instance_guid",
        "created_at",
    ];
    let Value::Array(items) = v else {
        return Err(bad(format!("'{KEY}.leases' must be an array")));
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::String(s) => out.push(LeaseSelector {
                tenant: None,
                instance_guid: s.clone(),
            }),
            Value::Object(o) => {
                let mut sel = LeaseSelector {
                    tenant: None,
                    instance_guid: String::new(),
                };
                for (key, value) in o {
                    let k = canonical(key);
                    if !VIEW_KEYS.contains(&k.as_str()) {
                        return Err(bad(format!("unknown key '{key}' in '{KEY}.leases'")));
                    }
                    match k.as_str() {
                        "tenant" => sel.tenant = value.as_str().map(str::to_owned),
                        "instance_guid" => {
                            sel.instance_guid = value.as_str().unwrap_or_default().to_owned()
                        }
                        _ => {}
                    }
                }
                if sel.instance_guid.is_empty() {
                    return Err(bad(format!(
                        "each entry of '{KEY}.leases' needs an 'instance_guid'"
                    )));
                }
                out.push(sel);
            }
            _ => {
                return Err(bad(format!(
                    "each entry of '{KEY}.leases' must be an instance guid or an object"
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Option<Object> {
        v.as_object().cloned()
    }

    #[test]
    fn kebab_aliases_and_groups_as_string_become_canonical_and_are_removed() {
        let mut p = params(json!({"storage_gb": 2, "x_osb_cmdb": {"sharing-to": [
            {"tenant": "ks2", "namespace": "ns", "instance_name": "db", "originating-identity-groups": "[\"a\",\"b\"]"}],
            "purge-leases-on-delete": true}}));
        let s = take(&mut p, Request::Provision).unwrap();
        assert_eq!(p, params(json!({"storage_gb": 2})));
        let sets = s.sharing_to.unwrap();
        assert_eq!(sets[0].groups(), vec!["a", "b"]);
        assert_eq!(sets[0].get("namespace"), Some("ns"));
        assert_eq!(s.purge_leases_on_delete, Some(true));
    }

    #[test]
    fn both_spellings_of_one_key_are_refused_and_never_left_in_the_parameters() {
        for v in [
            json!({"sharing_token": "osbst_a", "sharing-token": "osbst_b"}),
            json!({"x_osb_cmdb": {}, "x-osb-cmdb": {}}),
            json!({"x_osb_cmdb": {"sharing_to": [], "sharing-to": []}}),
        ] {
            let mut p = params(v.clone());
            let e = take(&mut p, Request::Provision).expect_err("ambiguous");
            assert!(
                e.0.contains("give one") || e.0.contains("twice"),
                "{v}: {}",
                e.0
            );
        }
        let mut p = params(json!({"sharing-token": "osbst_x", "a": 1}));
        let s = take(&mut p, Request::Provision).unwrap();
        assert_eq!(s.token.as_deref(), Some("osbst_x"));
        assert_eq!(p, params(json!({"a": 1})));
    }

    #[test]
    fn unknown_keys_are_refused_naming_them() {
        for v in [
            json!({"x_osb_cmdb": {"sharing_to": [{"tenant": "a", "instance_name": "i", "namespace": "n", "colour": "x"}]}}),
            json!({"x_osb_cmdb": {"sharing_too": []}}),
        ] {
            let e = take(&mut params(v), Request::Provision).unwrap_err();
            assert!(e.0.contains("colour") || e.0.contains("sharing_too"), "{e}");
        }
        let e = take(
            &mut params(json!({"x_osb_cmdb": {"sharing_to": [{"org_name": "o"}]}})),
            Request::Provision,
        )
        .unwrap_err();
        assert!(e.0.contains("needs a 'tenant'"), "{e}");
    }

    #[test]
    fn a_set_must_pin_one_instance_and_where_it_lives() {
        let missing = |set: Value| {
            take(
                &mut params(json!({"x_osb_cmdb": {"sharing_to": [set]}})),
                Request::Provision,
            )
            .map(|_| ())
            .map_err(|e| e.0)
        };
        // The seed's loose rules: a tenant alone, a space alone, an instance name without a place.
        for set in [
            json!({"tenant": "cf2"}),
            json!({"tenant": "cf2", "space_guid": "s"}),
            json!({"tenant": "cf2", "org_guid": "o", "instance_name": "db"}),
            json!({"tenant": "cf2", "space_name": "s", "instance_name": "db"}),
            json!({"tenant": "cf2", "profile": "cloudfoundry", "service_instance_guid": "g"}),
        ] {
            let e = missing(set.clone()).expect_err("not pinned");
            assert!(e.contains("must pin one instance"), "{set}: {e}");
            assert!(e.contains("'cf2'"), "{set}: {e}");
        }
        for set in [
            json!({"tenant": "cf2", "space_guid": "s", "instance_name": "db"}),
            json!({"tenant": "cf2", "space_name": "s", "org_name": "o", "instance_name": "db"}),
            json!({"tenant": "ks2", "namespace": "n", "instance_name": "db"}),
            json!({"tenant": "ks2", "originating_identity_username": "u", "service_instance_guid": "g"}),
            json!({"tenant": "ks2", "originating_identity_groups": ["g"], "instance_name": "db"}),
        ] {
            assert_eq!(missing(set.clone()), Ok(()), "{set}");
        }
        let e = missing(json!({"tenant": "CF 2", "space_guid": "s", "instance_name": "db"}))
            .expect_err("bad name");
        assert!(e.contains("must be a tenant name"), "{e}");
    }

    #[test]
    fn tokens_top_level_or_nested_and_never_echoed() {
        let s = take(
            &mut params(json!({"sharing_token": "abc"})),
            Request::Provision,
        )
        .unwrap();
        assert_eq!(s.token.as_deref(), Some("abc"));
        let s = take(
            &mut params(json!({"x_osb_cmdb": {"sharing_token": "abc"}})),
            Request::Provision,
        )
        .unwrap();
        assert_eq!(s.token.as_deref(), Some("abc"));
        let s = take(
            &mut params(json!({"x_osb_cmdb": {"sharing_token": "revoke"}})),
            Request::Update,
        )
        .unwrap();
        assert_eq!(s.token_action, Some(TokenAction::Revoke));
        let e = take(
            &mut params(json!({"x_osb_cmdb": {"sharing_token": "secret-value"}})),
            Request::Update,
        )
        .unwrap_err();
        assert!(!e.0.contains("secret-value"));
    }
}
