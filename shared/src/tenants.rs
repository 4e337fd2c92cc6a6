//! Tenants: the platforms registered with the broker, each with its own HTTP Basic credentials.
//! Authentication compares digests of the presented credentials with every tenant's in constant time.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// A secret string (password, token). Never printed: `Debug` and `Display` redact it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A tenant as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Unique name; namespaces every instance and binding id of the tenant.
    pub name: String,
    /// Platform hint, e.g. `cloudfoundry` or `kubernetes`.
    #[serde(default)]
    pub profile: Option<String>,
    pub username: String,
    pub password: Secret,
    /// Service offering ids this tenant may see and use; all when absent.
    #[serde(default)]
    pub services: Option<Vec<String>>,
    /// Whose `sharing_to` rules may turn this tenant's provisions into leases: a list of tenant names,
    /// `"*"` for every tenant, or none (the default). Sharing tokens are always accepted.
    #[serde(default)]
    pub accept_leases_from: AcceptLeases,
}

/// Which tenants' owners may turn a tenant's provisions into leases through `sharing_to`.
///
/// The default is none: a rule is written by another tenant, so without the operator's word it must not
/// be able to capture this tenant's provisions (its applications would write into a database someone else
/// controls). A sharing token needs no such consent: the leaser presents it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AcceptLeases {
    #[default]
    None,
    Any,
    From(std::collections::BTreeSet<String>),
}

impl AcceptLeases {
    pub fn accepts(&self, owner_tenant: &str) -> bool {
        match self {
            AcceptLeases::None => false,
            AcceptLeases::Any => true,
            AcceptLeases::From(names) => names.contains(owner_tenant),
        }
    }
}

impl<'de> Deserialize<'de> for AcceptLeases {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            All(String),
            Names(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::All(s) if s == "*" => Ok(AcceptLeases::Any),
            Raw::All(other) => Err(serde::de::Error::custom(format!(
                "accept_leases_from must be \"*\" or a list of tenant names, not \"{other}\""
            ))),
            Raw::Names(names) if names.is_empty() => Ok(AcceptLeases::None),
            Raw::Names(names) => Ok(AcceptLeases::From(names.into_iter().collect())),
        }
    }
}

/// An authenticated tenant.
#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    pub profile: Option<String>,
    pub services: Option<HashSet<String>>,
    pub accept_leases_from: AcceptLeases,
    credential_digest: [u8; 32],
}

impl Tenant {
    /// Whether the tenant may see and use the service offering.
    pub fn can_use(&self, service_id: &str) -> bool {
        self.services
            .as_ref()
            .is_none_or(|s| s.contains(service_id))
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TenantError {
    #[error("no tenant is configured")]
    None,
    #[error("tenant name '{0}' must be 1-64 characters of a-z, 0-9, '-' or '_'")]
    InvalidName(String),
    #[error("duplicate tenant name '{0}'")]
    DuplicateName(String),
    #[error("tenants '{0}' and '{1}' share a username")]
    DuplicateUsername(String, String),
    #[error(
        "tenant '{0}': username and password must not be empty, and the username must not contain ':'"
    )]
    InvalidCredentials(String),
    #[error("tenant '{tenant}' lists unknown service '{service}'")]
    UnknownService { tenant: String, service: String },
    #[error("tenant '{tenant}': accept_leases_from names unknown tenant '{other}'")]
    UnknownLeaseSource { tenant: String, other: String },
}

/// Whether `name` is a valid tenant name: 1-64 characters of a-z, 0-9, '-' or '_'.
pub fn valid_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn digest(username: &[u8], password: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((username.len() as u64).to_be_bytes());
    h.update(username);
    h.update(password);
    h.finalize().into()
}

/// All configured tenants.
#[derive(Debug)]
pub struct Tenants {
    list: Vec<Arc<Tenant>>,
}

impl Tenants {
    /// Validates names and credentials. `known_service` tells whether a service id exists in the catalog.
    pub fn new(
        configs: Vec<TenantConfig>,
        known_service: impl Fn(&str) -> bool,
    ) -> Result<Self, TenantError> {
        if configs.is_empty() {
            return Err(TenantError::None);
        }
        let mut names = HashSet::new();
        let mut users: Vec<(&str, &str)> = Vec::new();
        let mut list = Vec::new();
        for c in &configs {
            if !valid_tenant_name(&c.name) {
                return Err(TenantError::InvalidName(c.name.clone()));
            }
            if !names.insert(c.name.as_str()) {
                return Err(TenantError::DuplicateName(c.name.clone()));
            }
            if c.username.is_empty() || c.username.contains(':') || c.password.expose().is_empty() {
                return Err(TenantError::InvalidCredentials(c.name.clone()));
            }
            if let Some((other, _)) = users.iter().find(|(_, u)| *u == c.username) {
                return Err(TenantError::DuplicateUsername(
                    (*other).to_owned(),
                    c.name.clone(),
                ));
            }
            users.push((&c.name, &c.username));
            if let Some(services) = &c.services
                && let Some(s) = services.iter().find(|s| !known_service(s))
            {
                return Err(TenantError::UnknownService {
                    tenant: c.name.clone(),
                    service: s.clone(),
                });
            }
            if let AcceptLeases::From(others) = &c.accept_leases_from
                && let Some(o) = others
                    .iter()
                    .find(|o| !configs.iter().any(|t| &t.name == *o))
            {
                return Err(TenantError::UnknownLeaseSource {
                    tenant: c.name.clone(),
                    other: o.clone(),
                });
            }
            list.push(Arc::new(Tenant {
                name: c.name.clone(),
                profile: c.profile.clone(),
                services: c.services.as_ref().map(|s| s.iter().cloned().collect()),
                accept_leases_from: c.accept_leases_from.clone(),
                credential_digest: digest(c.username.as_bytes(), c.password.expose().as_bytes()),
            }));
        }
        Ok(Tenants { list })
    }

    /// The tenant whose credentials these are. Every tenant is compared, in constant time, whatever matches.
    pub fn authenticate(&self, username: &[u8], password: &[u8]) -> Option<Arc<Tenant>> {
        let presented = digest(username, password);
        let mut found = None;
        for t in &self.list {
            if bool::from(t.credential_digest.ct_eq(&presented)) {
                found = Some(t.clone());
            }
        }
        found
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.list.iter()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.list.iter().find(|t| t.name == name)
    }

    /// The names of all tenants.
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.list.iter().map(|t| t.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, user: &str, pass: &str) -> TenantConfig {
        TenantConfig {
            name: name.into(),
            profile: None,
            username: user.into(),
            password: Secret::new(pass),
            services: None,
            accept_leases_from: AcceptLeases::None,
        }
    }

    #[test]
    fn authenticates_exactly_the_matching_tenant() {
        let t = Tenants::new(vec![cfg("cf1", "u1", "p1"), cfg("ks2", "u2", "p2")], |_| {
            true
        })
        .expect("valid tenants");
        assert_eq!(
            t.authenticate(b"u1", b"p1").map(|t| t.name.clone()),
            Some("cf1".into())
        );
        assert_eq!(
            t.authenticate(b"u2", b"p2").map(|t| t.name.clone()),
            Some("ks2".into())
        );
        assert!(t.authenticate(b"u1", b"p2").is_none());
        assert!(
            t.authenticate(b"u1p", b"1").is_none(),
            "username/password boundary matters"
        );
        assert!(t.authenticate(b"", b"").is_none());
    }

    #[test]
    fn refuses_bad_configuration() {
        assert_eq!(
            Tenants::new(vec![], |_| true).err(),
            Some(TenantError::None)
        );
        assert!(matches!(
            Tenants::new(vec![cfg("Bad Name", "u", "p")], |_| true),
            Err(TenantError::InvalidName(_))
        ));
        assert!(matches!(
            Tenants::new(vec![cfg("a", "u", "p"), cfg("a", "v", "p")], |_| true),
            Err(TenantError::DuplicateName(_))
        ));
        assert!(matches!(
            Tenants::new(vec![cfg("a", "u", "p"), cfg("b", "u", "q")], |_| true),
            Err(TenantError::DuplicateUsername(..))
        ));
        assert!(matches!(
            Tenants::new(vec![cfg("a", "u", "")], |_| true),
            Err(TenantError::InvalidCredentials(_))
        ));
        let mut c = cfg("a", "u", "p");
        c.services = Some(vec!["nope".into()]);
        assert!(matches!(
            Tenants::new(vec![c], |s| s == "yes"),
            Err(TenantError::UnknownService { .. })
        ));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert!(!format!("{:?}", cfg("a", "u", "hunter2")).contains("hunter2"));
    }
}
