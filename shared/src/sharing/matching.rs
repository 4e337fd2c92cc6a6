//! Whether a provision request matches an owner's constraint set (DESIGN §7): every key of the set must
//! match; when a name and its guid are both given the name is ignored; every listed group must be present.

use super::ConstraintSet;
use crate::identity::OriginatingIdentity;
use crate::model::Object;

/// What a provision request says about where the new instance lives, the facts sets are matched against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFacts {
    pub tenant: String,
    pub profile: Option<String>,
    pub org_name: Option<String>,
    pub org_guid: Option<String>,
    pub space_name: Option<String>,
    pub space_guid: Option<String>,
    pub instance_name: Option<String>,
    pub namespace: Option<String>,
    pub username: Option<String>,
    pub groups: Vec<String>,
    pub instance_guid: String,
}

fn ctx_str(ctx: Option<&Object>, key: &str) -> Option<String> {
    ctx.and_then(|c| c.get(key))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

impl RequestFacts {
    /// Facts of a provision: the context (`platform`, CF org/space/instance names and guids, Kubernetes
    /// namespace), the top-level guids, the originating identity, the tenant (and its profile hint when
    /// the context names no platform) and the new instance's id.
    #[allow(clippy::too_many_arguments)]
    pub fn of(
        tenant: &str,
        tenant_profile: Option<&str>,
        instance_guid: &str,
        context: Option<&Object>,
        organization_guid: Option<&str>,
        space_guid: Option<&str>,
        identity: Option<&OriginatingIdentity>,
    ) -> Self {
        RequestFacts {
            tenant: tenant.to_owned(),
            profile: ctx_str(context, "platform").or_else(|| tenant_profile.map(str::to_owned)),
            org_name: ctx_str(context, "organization_name"),
            org_guid: ctx_str(context, "organization_guid")
                .or_else(|| organization_guid.map(str::to_owned)),
            space_name: ctx_str(context, "space_name"),
            space_guid: ctx_str(context, "space_guid").or_else(|| space_guid.map(str::to_owned)),
            instance_name: ctx_str(context, "instance_name"),
            namespace: ctx_str(context, "namespace"),
            username: identity.and_then(|i| i.user()).map(str::to_owned),
            groups: identity
                .map(|i| i.groups().into_iter().map(str::to_owned).collect())
                .unwrap_or_default(),
            instance_guid: instance_guid.to_owned(),
        }
    }

    /// Whether every key of the set matches these facts.
    pub fn matches(&self, set: &ConstraintSet) -> bool {
        let eq = |want: Option<&str>, have: &Option<String>| match want {
            None => true,
            Some(w) => have.as_deref() == Some(w),
        };
        // A name next to its guid is documentation only.
        let name = |name_key: &str, guid_key: &str| {
            if set.get(guid_key).is_some() {
                None
            } else {
                set.get(name_key)
            }
        };
        // A set that does not pin one instance (stored before sets had to) matches nothing.
        set.missing_pin().is_none()
            && set.tenant() == self.tenant
            && eq(set.get("profile"), &self.profile)
            && eq(name("org_name", "org_guid"), &self.org_name)
            && eq(set.get("org_guid"), &self.org_guid)
            && eq(name("space_name", "space_guid"), &self.space_name)
            && eq(set.get("space_guid"), &self.space_guid)
            && eq(
                name("instance_name", "service_instance_guid"),
                &self.instance_name,
            )
            && eq(
                set.get("service_instance_guid"),
                &Some(self.instance_guid.clone()),
            )
            && eq(set.get("namespace"), &self.namespace)
            && eq(set.get("originating_identity_username"), &self.username)
            && set
                .groups()
                .iter()
                .all(|g| self.groups.iter().any(|h| h == g))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn set(v: serde_json::Value) -> ConstraintSet {
        serde_json::from_value(v).unwrap()
    }

    fn cf() -> RequestFacts {
        RequestFacts {
            tenant: "cf2".into(),
            profile: Some("cloudfoundry".into()),
            org_name: Some("org".into()),
            org_guid: Some("org-g".into()),
            space_name: Some("space".into()),
            space_guid: Some("space-g".into()),
            instance_name: Some("db".into()),
            instance_guid: "i-1".into(),
            ..Default::default()
        }
    }

    /// `extra` added to a set pinned to the instance `db` in space `space-g` of tenant `cf2`.
    fn pinned(extra: serde_json::Value) -> ConstraintSet {
        let mut v = json!({"tenant": "cf2", "space_guid": "space-g", "instance_name": "db"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        set(v)
    }

    #[test]
    fn every_key_must_match_and_guid_wins_over_name() {
        let f = cf();
        assert!(f.matches(&pinned(json!({}))));
        assert!(!f.matches(&pinned(json!({"tenant": "cf1"}))));
        assert!(f.matches(&pinned(json!({"org_name": "org"}))));
        assert!(!f.matches(&pinned(json!({"space_guid": "nope"}))));
        // the wrong name is ignored next to the right guid
        assert!(f.matches(&pinned(json!({"org_name": "wrong", "org_guid": "org-g"}))));
        assert!(!f.matches(&pinned(json!({"org_name": "wrong"}))));
        assert!(f.matches(&pinned(
            json!({"instance_name": "x", "service_instance_guid": "i-1"})
        )));
        assert!(!f.matches(&pinned(json!({"service_instance_guid": "i-2"}))));
        assert!(!f.matches(&pinned(json!({"instance_name": "other-db"}))));
        assert!(!f.matches(&pinned(json!({"profile": "kubernetes"}))));
    }

    #[test]
    fn a_set_that_pins_no_instance_matches_nothing() {
        let f = cf();
        // Rules stored before sets had to pin one instance: they would match every provision.
        for loose in [
            json!({"tenant": "cf2"}),
            json!({"tenant": "cf2", "space_guid": "space-g"}),
            json!({"tenant": "cf2", "instance_name": "db"}),
            json!({"tenant": "cf2", "org_guid": "org-g", "instance_name": "db"}),
        ] {
            assert!(!f.matches(&set(loose.clone())), "{loose}");
        }
    }

    #[test]
    fn every_listed_group_must_be_present() {
        let f = RequestFacts {
            tenant: "ks2".into(),
            namespace: Some("ns".into()),
            username: Some("u".into()),
            groups: vec!["a".into(), "b".into()],
            instance_guid: "g".into(),
            ..Default::default()
        };
        let ks = |extra: serde_json::Value| {
            let mut v = json!({"tenant": "ks2", "service_instance_guid": "g"});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            set(v)
        };
        assert!(f.matches(&ks(json!({"namespace": "ns",
            "originating_identity_username": "u", "originating_identity_groups": ["b", "a"]}))));
        assert!(!f.matches(&ks(json!({"originating_identity_groups": ["a", "c"]}))));
        assert!(!f.matches(&ks(json!({"originating_identity_username": "v"}))));
        assert!(!f.matches(&ks(json!({"namespace": "other"}))));
    }
}
